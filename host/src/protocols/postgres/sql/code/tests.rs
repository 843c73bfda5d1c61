//! Effects of code inside the database, against a catalog held in memory.

use std::collections::HashMap;

use super::*;

#[derive(Default)]
struct Fake {
    routines: HashMap<String, Vec<Routine>>,
    fired: HashMap<String, Vec<Fired>>,
    views: HashMap<String, String>,
}

impl CodeCatalog for Fake {
    fn routines(&self, name: &str) -> Option<Vec<Routine>> {
        let bare = name.rsplit('.').next().unwrap_or(name);
        self.routines.get(bare).cloned()
    }
    fn fired(&self, table: &TableName) -> Vec<Fired> {
        self.fired.get(&table.name).cloned().unwrap_or_default()
    }
    fn view_definitions(&self, table: &TableName) -> Vec<String> {
        self.views.get(&table.name).cloned().into_iter().collect()
    }
    fn cascades(&self, table: &TableName) -> Vec<Cascade> {
        if table.name == "customers" {
            vec![Cascade {
                table: TableName {
                    schema: Some("public".into()),
                    name: "orders".into(),
                },
                constraint: "orders_customer_id_fkey".into(),
                on_delete: Some(Action::Delete),
                on_update: None,
            }]
        } else {
            Vec::new()
        }
    }
    fn parents(&self, table: &TableName) -> Vec<TableName> {
        if table.name == "orders_2026" {
            vec![TableName {
                schema: Some("public".into()),
                name: "orders".into(),
            }]
        } else {
            Vec::new()
        }
    }
}

fn routine(name: &str, language: &str, source: &str) -> Routine {
    let returns = if source.contains("RETURN NEW") {
        "trigger"
    } else {
        "void"
    };
    let definition = format!(
        "CREATE OR REPLACE FUNCTION public.{name}() RETURNS {returns} LANGUAGE {language} AS $function${source}$function$"
    );
    Routine {
        schema: "public".into(),
        name: name.into(),
        language: language.into(),
        source: source.into(),
        definition,
    }
}

fn fake() -> Fake {
    let mut f = Fake::default();
    for r in [
        routine("wipe", "sql", "DELETE FROM orders"),
        routine("careful", "sql", "DELETE FROM orders WHERE id = 1"),
        routine("outer_fn", "sql", "SELECT wipe()"),
        routine(
            "pl_wipe",
            "plpgsql",
            "BEGIN IF true THEN UPDATE orders SET status = 'x'; END IF; END",
        ),
        routine(
            "pl_dynamic",
            "plpgsql",
            "BEGIN EXECUTE 'DELETE FROM ' || 'orders'; END",
        ),
        routine(
            "pl_role",
            "plpgsql",
            "DECLARE x text; BEGIN x := set_config('role', 'postgres', false); END",
        ),
        routine("c_fn", "c", "c_fn"),
        routine("loop_a", "sql", "SELECT loop_b()"),
        routine("loop_b", "sql", "SELECT loop_a()"),
        routine(
            "audit_wipe",
            "plpgsql",
            "BEGIN DELETE FROM audit; RETURN NEW; END",
        ),
    ] {
        f.routines.insert(r.name.clone(), vec![r]);
    }
    f.routines.insert(
        "now".into(),
        vec![Routine {
            schema: "pg_catalog".into(),
            name: "now".into(),
            language: "internal".into(),
            source: "now".into(),
            definition: String::new(),
        }],
    );
    f.fired.insert(
        "customers".into(),
        vec![Fired::Trigger {
            via: "trigger t on public.customers".into(),
            routine: f.routines["audit_wipe"][0].clone(),
        }],
    );
    f.fired.insert(
        "notes".into(),
        vec![Fired::Rule {
            via: "rule r on public.notes".into(),
            definition:
                "CREATE RULE r AS ON INSERT TO public.notes DO ALSO DELETE FROM public.orders"
                    .into(),
        }],
    );
    f.views.insert(
        "open_orders".into(),
        "SELECT id, status FROM orders WHERE status = 'new'".into(),
    );
    f
}

fn effects(sql: &str) -> (Vec<String>, CodeEffects) {
    let summary = summarize(sql);
    assert_eq!(summary.parse_error, None, "{sql}");
    let code = effects_of_code(&summary.statements[0], &fake());
    let actions = code
        .actions
        .iter()
        .map(|a| {
            format!(
                "{} {}{} via {}",
                a.action.as_str(),
                a.table.name,
                if a.bounded { "" } else { " unbounded" },
                a.via.as_deref().unwrap_or("-")
            )
        })
        .collect();
    (actions, code)
}

#[test]
fn a_function_s_writes_are_the_caller_s() {
    let (a, code) = effects("SELECT wipe()");
    assert_eq!(a, ["delete orders unbounded via function public.wipe"]);
    assert!(code.unknown.is_empty(), "{:?}", code.unknown);
    let (a, _) = effects("SELECT careful()");
    assert_eq!(a, ["delete orders via function public.careful"]);
    // Through another function, and through CALL.
    let (a, _) = effects("SELECT 1 FROM (SELECT outer_fn()) x");
    assert_eq!(a, ["delete orders unbounded via function public.wipe"]);
    let (a, _) = effects("CALL wipe()");
    assert_eq!(a, ["delete orders unbounded via function public.wipe"]);
}

#[test]
fn pl_pgsql_bodies_are_read_and_what_cannot_be_read_is_unknown() {
    let (a, code) = effects("SELECT pl_wipe()");
    assert_eq!(a, ["update orders unbounded via function public.pl_wipe"]);
    assert!(code.unknown.is_empty(), "{:?}", code.unknown);
    let (_, code) = effects("SELECT pl_dynamic()");
    assert!(
        code.unknown.iter().any(|u| u.contains("dynamic SQL")),
        "{:?}",
        code.unknown
    );
    let (_, code) = effects("SELECT pl_role()");
    assert!(code.switches_role);
    let (_, code) = effects("SELECT c_fn()");
    assert!(
        code.unknown.iter().any(|u| u.contains("written in c")),
        "{:?}",
        code.unknown
    );
    let (_, code) = effects("SELECT no_such_function()");
    assert!(
        code.unknown
            .iter()
            .any(|u| u.contains("not in the catalog")),
        "{:?}",
        code.unknown
    );
    // Built-ins are known to do nothing to tables.
    let (a, code) = effects("SELECT now()");
    assert!(
        a.is_empty() && code.unknown.is_empty(),
        "{a:?} {:?}",
        code.unknown
    );
    // Cycles end.
    let (_, code) = effects("SELECT loop_a()");
    assert!(code.unknown.is_empty(), "{:?}", code.unknown);
}

#[test]
fn triggers_rules_and_views_are_followed_from_writes() {
    let (a, code) = effects("UPDATE customers SET name = 'x' WHERE id = 1");
    assert!(code.unknown.is_empty(), "{:?}", code.unknown);
    assert_eq!(
        a,
        ["delete audit unbounded via trigger t on public.customers, function public.audit_wipe"]
    );
    let (a, _) = effects("INSERT INTO notes VALUES (1)");
    assert_eq!(a, ["delete orders unbounded via rule r on public.notes"]);
    let (a, _) = effects("UPDATE open_orders SET status = 'x' WHERE id = 2");
    assert_eq!(a, ["update orders via view open_orders"]);
    let (a, _) = effects("DELETE FROM customers WHERE id = 1");
    assert_eq!(
        a,
        [
            "delete orders via foreign key orders_customer_id_fkey to customers",
            "delete audit unbounded via trigger t on public.customers, function public.audit_wipe"
        ]
    );
    let (a, _) = effects("DELETE FROM orders_2026 WHERE id > 0");
    assert_eq!(a, ["delete orders via partition orders_2026"]);
    // apply() folds them into the statement, has_where included.
    let mut s = summarize("INSERT INTO notes VALUES (1)")
        .statements
        .remove(0);
    assert!(s.has_where);
    let code = effects_of_code(&s, &fake());
    apply(&mut s, code);
    assert!(!s.has_where);
    assert!(s
        .actions
        .iter()
        .any(|a| a.table.name == "orders" && a.action == Action::Delete));
}
