//! Walks one statement's parse tree (as JSON, so no node type is missed) and
//! collects what a policy needs.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{StatementSummary, TableName};

#[derive(Default)]
struct Acc {
    read: BTreeSet<(Option<String>, String)>,
    written: BTreeSet<(Option<String>, String)>,
    functions: BTreeSet<String>,
    ctes: BTreeSet<String>,
    unbounded_write: bool,
    is_copy: bool,
    copy_program: bool,
    explain_analyze: bool,
    executes: BTreeSet<String>,
}

/// Summarizes one `RawStmt.stmt` node.
pub fn statement(node: &Value) -> StatementSummary {
    let (kind_node, fields) = match node
        .get("node")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
    {
        Some((k, v)) => (k.as_str(), v),
        None => ("", &Value::Null),
    };
    let mut acc = Acc::default();
    walk(node, &mut acc, false);
    let kind = kind_of(kind_node, fields);
    let to_names = |set: &BTreeSet<(Option<String>, String)>, ctes: &BTreeSet<String>| {
        set.iter()
            .filter(|(s, n)| !(s.is_none() && ctes.contains(n)))
            .map(|(s, n)| TableName {
                schema: s.clone(),
                name: n.clone(),
            })
            .collect()
    };
    StatementSummary {
        kind,
        tables_read: to_names(&acc.read, &acc.ctes),
        tables_written: to_names(&acc.written, &acc.ctes),
        functions: acc.functions.into_iter().collect(),
        has_where: !acc.unbounded_write,
        is_copy: acc.is_copy,
        copy_program: acc.copy_program,
        explain_analyze: acc.explain_analyze,
        undoes_read_only: undoes_read_only(node),
        executes: acc.executes.into_iter().collect(),
        prepared_query: None, // filled from the typed tree (see `summarize`)
        prepared_name: match kind_node {
            "PrepareStmt" | "DeallocateStmt" => fields
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            _ => None,
        },
    }
}

/// Whether a constant subtree holds the integer 1 (`READ ONLY` is 1,
/// `READ WRITE` 0).
fn holds_one(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(1),
        Value::Object(m) => m.values().any(holds_one),
        Value::Array(a) => a.iter().any(holds_one),
        _ => false,
    }
}

/// GUCs that make a session or transaction read-only.
const READ_ONLY_SETTINGS: &[&str] = &["default_transaction_read_only", "transaction_read_only"];

/// Whether a parse tree could make the session writable (see
/// [`StatementSummary::undoes_read_only`]). Fails closed: a
/// `transaction_read_only` mode whose value is not plainly 1 counts.
fn undoes_read_only(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(set)) = m.get("VariableSetStmt") {
                let name = str_field(set, "name").to_lowercase();
                let kind = set.get("kind").and_then(Value::as_i64).unwrap_or(0);
                // VariableSetKind 6: RESET ALL.
                if kind == 6 || READ_ONLY_SETTINGS.contains(&name.as_str()) {
                    return true;
                }
            }
            if let Some(Value::Object(def)) = m.get("DefElem") {
                if str_field(def, "defname") == "transaction_read_only"
                    && !def.get("arg").is_some_and(holds_one)
                {
                    return true;
                }
            }
            m.values().any(undoes_read_only)
        }
        Value::Array(a) => a.iter().any(undoes_read_only),
        _ => false,
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn bool_field(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Strings of a list of `{"node": {"String": {"sval": ...}}}` nodes.
fn name_parts(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

/// Fields whose RangeVars are written by the statement that holds them.
fn is_write_field(node_kind: &str, field: &str, fields: &Map<String, Value>) -> bool {
    match (node_kind, field) {
        ("CopyStmt", "relation") => bool_field(fields, "is_from"),
        (_, "relation" | "relations" | "view" | "rel") => node_kind != "RangeSubselect",
        _ => false,
    }
}

fn walk(v: &Value, acc: &mut Acc, write: bool) {
    match v {
        // Typed (non-Node) fields are inlined structs: recognize a RangeVar
        // or FuncCall by its fields.
        Value::Object(map) if map.contains_key("relname") && map.contains_key("inh") => {
            visit("RangeVar", map, acc, write)
        }
        Value::Object(map) if map.contains_key("funcname") && map.contains_key("funcformat") => {
            visit("FuncCall", map, acc, write)
        }
        Value::Object(map) => {
            for (k, child) in map {
                let is_node = k.chars().next().is_some_and(|c| c.is_ascii_uppercase());
                match (is_node, child.as_object()) {
                    (true, Some(fields)) => visit(k, fields, acc, write),
                    _ => walk(child, acc, write),
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                walk(i, acc, write);
            }
        }
        _ => {}
    }
}

fn visit(kind: &str, fields: &Map<String, Value>, acc: &mut Acc, write: bool) {
    match kind {
        "RangeVar" => {
            let schema =
                Some(str_field(fields, "schemaname").to_lowercase()).filter(|s| !s.is_empty());
            let name = str_field(fields, "relname").to_lowercase();
            let entry = (schema, name);
            if write {
                acc.written.insert(entry);
            } else {
                acc.read.insert(entry);
            }
            return;
        }
        "FuncCall" => {
            let name = name_parts(fields.get("funcname")).join(".");
            if !name.is_empty() {
                acc.functions.insert(name);
            }
        }
        "DeleteStmt" | "UpdateStmt" if fields.get("where_clause").is_none_or(Value::is_null) => {
            acc.unbounded_write = true;
        }
        "ExecuteStmt" => {
            let name = str_field(fields, "name");
            if !name.is_empty() {
                acc.executes.insert(name.to_string());
            }
        }
        "CopyStmt" => {
            acc.is_copy = true;
            acc.copy_program |= bool_field(fields, "is_program");
        }
        "ExplainStmt" => {
            let analyze = fields
                .get("options")
                .and_then(Value::as_array)
                .is_some_and(|opts| {
                    opts.iter().any(|o| {
                        let defname = o.pointer("/node/DefElem/defname").and_then(Value::as_str);
                        let off = o
                            .pointer("/node/DefElem/arg/node/String/sval")
                            .and_then(Value::as_str)
                            .is_some_and(|v| matches!(v, "false" | "off" | "0"));
                        defname == Some("analyze") && !off
                    })
                });
            acc.explain_analyze |= analyze;
        }
        "CommonTableExpr" => {
            acc.ctes.insert(str_field(fields, "ctename").to_lowercase());
        }
        "DropStmt" => {
            if let Some(objects) = fields.get("objects").and_then(Value::as_array) {
                for o in objects {
                    let parts = name_parts(o.pointer("/node/List/items"));
                    match parts.as_slice() {
                        [name] => {
                            acc.written.insert((None, name.clone()));
                        }
                        [schema, name] => {
                            acc.written.insert((Some(schema.clone()), name.clone()));
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
    for (field, child) in fields {
        if kind == "FuncCall" && field == "funcname" {
            continue;
        }
        walk(
            child,
            acc,
            is_write_field(kind, field, fields) || (write && field == "relation"),
        );
    }
}

fn kind_of(node: &str, fields: &Value) -> String {
    let k = match node {
        "SelectStmt" => "select",
        "InsertStmt" => "insert",
        "UpdateStmt" => "update",
        "DeleteStmt" => "delete",
        "MergeStmt" => "merge",
        "CopyStmt" => "copy",
        "TruncateStmt" => "truncate",
        "AlterSystemStmt" => "alter-system",
        "DropStmt"
        | "DropRoleStmt"
        | "DropdbStmt"
        | "DropOwnedStmt"
        | "DropTableSpaceStmt"
        | "DropSubscriptionStmt"
        | "DropUserMappingStmt" => "drop",
        "GrantStmt" | "GrantRoleStmt" => {
            if fields
                .get("is_grant")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                "grant"
            } else {
                "revoke"
            }
        }
        "VariableSetStmt" => {
            let name = fields.get("name").and_then(Value::as_str).unwrap_or("");
            let kind = fields.get("kind").and_then(Value::as_i64).unwrap_or(0);
            // VariableSetKind: 1 VAR_SET_VALUE, 2 DEFAULT, 3 CURRENT, 4 MULTI, 5 RESET, 6 RESET_ALL.
            match (name, kind) {
                ("role", _) => "set-role",
                ("session_authorization", _) => "set-session-authorization",
                (_, 5) | (_, 6) => "reset",
                _ => "set",
            }
        }
        "VariableShowStmt" => "show",
        "TransactionStmt" => "transaction",
        "CallStmt" => "call",
        "DoStmt" => "do",
        "ExplainStmt" => "explain",
        "PrepareStmt" => "prepare",
        "ExecuteStmt" => "execute",
        "DeallocateStmt" => "deallocate",
        "ListenStmt" => "listen",
        "UnlistenStmt" => "unlisten",
        "NotifyStmt" => "notify",
        "VacuumStmt" => "vacuum",
        "LockStmt" => "lock",
        "DeclareCursorStmt" => "declare",
        "FetchStmt" => "fetch",
        "ClosePortalStmt" => "close",
        "LoadStmt" => "load",
        "CheckPointStmt" => "checkpoint",
        "DiscardStmt" => "discard",
        "ReindexStmt" => "reindex",
        "ClusterStmt" => "cluster",
        "RefreshMatViewStmt" => "refresh",
        "RenameStmt" => "alter",
        n if n.starts_with("Create")
            || n == "IndexStmt"
            || n == "ViewStmt"
            || n == "DefineStmt"
            || n == "RuleStmt"
            || n == "CompositeTypeStmt" =>
        {
            "create"
        }
        n if n.starts_with("Alter") => "alter",
        "" => "empty",
        _ => "other",
    };
    k.to_string()
}
