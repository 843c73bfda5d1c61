//! What the summary says about SQL that policies care about, including the
//! shapes people use to slip a statement past a naive filter.

use super::*;

fn one(sql: &str) -> StatementSummary {
    let s = summarize(sql);
    assert_eq!(s.parse_error, None, "{sql}");
    assert_eq!(s.statements.len(), 1, "{sql}");
    s.statements.into_iter().next().unwrap()
}

fn names(t: &[TableName]) -> Vec<String> {
    t.iter()
        .map(|t| match &t.schema {
            Some(s) => format!("{s}.{}", t.name),
            None => t.name.clone(),
        })
        .collect()
}

#[test]
fn kinds_and_tables() {
    let s = one("SELECT c.name FROM public.customers c JOIN orders o ON o.customer_id = c.id");
    assert_eq!(s.kind, "select");
    assert_eq!(names(&s.tables_read), ["orders", "public.customers"]);
    assert!(s.tables_written.is_empty());

    let s = one("update ORDERS set status = 'x' where id = 1");
    assert_eq!(s.kind, "update");
    assert_eq!(names(&s.tables_written), ["orders"]);
    assert!(s.has_where);

    let s = one("DELETE FROM sales.orders");
    assert_eq!(s.kind, "delete");
    assert_eq!(names(&s.tables_written), ["sales.orders"]);
    assert!(!s.has_where);
}

#[test]
fn writes_hidden_in_ctes_and_explain_are_seen() {
    let s = one("WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d");
    assert_eq!(s.kind, "select");
    assert_eq!(names(&s.tables_written), ["orders"]);
    assert!(!s.has_where);
    assert!(
        s.tables_read.is_empty(),
        "the CTE name is not a table: {:?}",
        s.tables_read
    );

    let s = one("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM orders");
    assert_eq!(s.kind, "explain");
    assert!(s.explain_analyze);
    assert!(!s.has_where);
    assert!(!one("EXPLAIN DELETE FROM orders").explain_analyze);
    assert!(!one("EXPLAIN (ANALYZE false) DELETE FROM orders").explain_analyze);
}

#[test]
fn functions_anywhere_are_found() {
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT ARRAY[pg_catalog.pg_read_file('/etc/passwd')]",
        "SELECT * FROM orders WHERE id IN (SELECT length(pg_read_file('x')))",
        "SELECT CASE WHEN true THEN pg_read_file('x') END",
        "SELECT (pg_read_file('x'))::text",
        "SELECT coalesce(null, PG_READ_FILE('x'))",
    ] {
        let s = one(sql);
        assert!(
            s.functions.iter().any(|f| f.ends_with("pg_read_file")),
            "{sql}: {:?}",
            s.functions
        );
    }
}

#[test]
fn copy_and_role_switching() {
    let s = one("COPY orders TO PROGRAM 'curl http://x'");
    assert!(s.is_copy && s.copy_program);
    assert_eq!(names(&s.tables_read), ["orders"]);
    let s = one("COPY orders FROM STDIN");
    assert!(s.is_copy && !s.copy_program);
    assert_eq!(names(&s.tables_written), ["orders"]);
    assert_eq!(one("SET ROLE admin").kind, "set-role");
    assert_eq!(
        one("set session authorization postgres").kind,
        "set-session-authorization"
    );
    assert_eq!(one("RESET ALL").kind, "reset");
    assert_eq!(one("SET search_path = x").kind, "set");
    assert_eq!(one("DROP TABLE public.orders").kind, "drop");
    assert_eq!(
        names(&one("DROP TABLE public.orders").tables_written),
        ["public.orders"]
    );
    assert_eq!(
        one("ALTER SYSTEM SET work_mem = '1GB'").kind,
        "alter-system"
    );
    assert_eq!(one("DO $$ BEGIN PERFORM 1; END $$").kind, "do");
    assert_eq!(one("TRUNCATE orders").kind, "truncate");
}

#[test]
fn multiple_statements_and_garbage() {
    let s = summarize("SELECT 1; DELETE FROM orders; SELECT 2");
    assert_eq!(s.statements.len(), 3);
    assert_eq!(s.statements[1].kind, "delete");
    assert!(!s.fingerprint.is_empty());

    let bad = summarize("SELEC * FROM");
    assert!(bad.parse_error.is_some());
    assert!(bad.statements.is_empty());

    // Same fingerprint for statements that differ only in constants.
    assert_eq!(
        summarize("SELECT * FROM t WHERE id = 1").fingerprint,
        summarize("SELECT * FROM t WHERE id = 42").fingerprint
    );
}

#[test]
fn cache_returns_the_same_summary() {
    let cache = SummaryCache::default();
    let a = cache.get("SELECT 1");
    let b = cache.get("SELECT 1");
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn texts_that_differ_only_in_constants_share_one_summary_that_fits_both() {
    let pairs = [
        (
            "SELECT * FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = 2",
        ),
        ("DELETE FROM t WHERE id = 1", "DELETE FROM t WHERE id = 'x'"),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_read_file('x')",
        ),
        (
            "WITH d AS (DELETE FROM t WHERE a = 1 RETURNING *) SELECT 1",
            "WITH d AS (DELETE FROM t WHERE a = 2 RETURNING *) SELECT 2",
        ),
    ];
    let cache = SummaryCache::default();
    for (a, b) in pairs {
        let first = cache.get(a);
        let second = cache.get(b);
        assert!(Arc::ptr_eq(&first, &second), "{a} / {b}");
        assert_eq!(*second, summarize(b), "{b}");
    }
    // Strings that are more than constants: never shared.
    let a = cache.get("COPY t TO PROGRAM 'cat'");
    let b = cache.get("COPY t TO PROGRAM 'rm -rf /'");
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(*b, summarize("COPY t TO PROGRAM 'rm -rf /'"));
    // EXPLAIN options are constants that change the summary: never shared.
    let off = cache.get("EXPLAIN (ANALYZE off) DELETE FROM t");
    let on = cache.get("EXPLAIN (ANALYZE on) DELETE FROM t");
    assert!(!off.statements[0].explain_analyze);
    assert!(on.statements[0].explain_analyze);
}

#[test]
fn prepare_execute_and_deallocate_name_their_statement() {
    assert_eq!(
        one("PREPARE w AS DELETE FROM t WHERE id = $1")
            .prepared_name
            .as_deref(),
        Some("w")
    );
    assert_eq!(one("EXECUTE w(5)").executes, ["w"]);
    assert_eq!(one("EXPLAIN ANALYZE EXECUTE w(5)").executes, ["w"]);
    assert_eq!(one("CREATE TABLE c AS EXECUTE w(5)").executes, ["w"]);
    assert_eq!(one("DEALLOCATE w").prepared_name.as_deref(), Some("w"));
    assert_eq!(one("DEALLOCATE ALL").prepared_name, None);
    assert_eq!(
        one("PREPARE w (int) AS UPDATE orders SET total = 0 WHERE id = $1")
            .prepared_query
            .as_deref(),
        Some("UPDATE orders SET total = 0 WHERE id = $1")
    );
    assert_eq!(one("SELECT 1").prepared_query, None);
    assert_eq!(one("SELECT 1").prepared_name, None);
}

fn actions(sql: &str) -> Vec<String> {
    one(sql)
        .actions
        .iter()
        .map(|a| {
            let table = names(std::slice::from_ref(&a.table)).join("");
            let bound = if a.bounded { "" } else { " unbounded" };
            format!("{} {table}{bound}", a.action.as_str())
        })
        .collect()
}

#[test]
fn every_spelling_of_an_update_or_delete_is_one_action() {
    let cases: &[(&str, &[&str])] = &[
        ("DELETE FROM orders", &["delete orders unbounded"]),
        (
            "DELETE FROM orders WHERE true",
            &["delete orders unbounded"],
        ),
        (
            "DELETE FROM orders WHERE 1 = 1",
            &["delete orders unbounded"],
        ),
        ("DELETE FROM orders WHERE id = 3", &["delete orders"]),
        (
            "UPDATE orders SET status = 'x' WHERE id = 3",
            &["update orders"],
        ),
        (
            "WITH d AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM d",
            &["delete orders unbounded"],
        ),
        (
            "WITH u AS (UPDATE public.orders SET status = 'x' WHERE id = 1 RETURNING 1) SELECT 1",
            &["update public.orders"],
        ),
        (
            "MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DELETE",
            &["delete orders unbounded"],
        ),
        (
            "MERGE INTO orders o USING (SELECT 1 AS id) s ON o.id = s.id \
             WHEN MATCHED AND o.id = 1 THEN UPDATE SET status = 'x' \
             WHEN NOT MATCHED THEN INSERT (customer_id, product, amount) VALUES (1, 'p', 1)",
            &["insert orders", "update orders"],
        ),
        (
            "INSERT INTO orders (id, customer_id, product, amount) VALUES (1, 1, 'p', 1) \
             ON CONFLICT (id) DO UPDATE SET status = 'x'",
            &["insert orders", "update orders"],
        ),
        (
            "INSERT INTO orders SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET status = 'x'",
            &["insert orders", "update orders unbounded"],
        ),
        (
            "INSERT INTO orders (id) VALUES (1) ON CONFLICT DO NOTHING",
            &["insert orders"],
        ),
        (
            "EXPLAIN ANALYZE UPDATE orders SET status = 'x'",
            &["update orders unbounded"],
        ),
        ("EXPLAIN UPDATE orders SET status = 'x'", &[]),
        (
            "PREPARE p AS DELETE FROM orders WHERE id = $1",
            &["delete orders"],
        ),
        (
            "TRUNCATE orders, audit.log",
            &["truncate orders unbounded", "truncate audit.log unbounded"],
        ),
        ("COPY orders FROM STDIN", &["insert orders"]),
        ("SELECT * FROM orders", &[]),
    ];
    for (sql, want) in cases {
        assert_eq!(actions(sql), *want, "{sql}");
    }
    assert!(
        !one("MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DELETE")
            .has_where
    );
    assert!(!one("DELETE FROM orders WHERE true").has_where);
    assert!(
        !one("EXPLAIN DELETE FROM orders").has_where,
        "plain EXPLAIN keeps the flag"
    );
}

#[test]
fn a_cte_name_hides_a_table_only_where_postgres_would() {
    // A write target is always a table, whatever CTE shares its name.
    let s = one("WITH orders AS (SELECT 1) UPDATE orders SET status = 'x' WHERE id = 1");
    assert_eq!(names(&s.tables_written), ["orders"]);
    // A non-recursive CTE's own body reads the table of that name.
    let s = one("WITH customers AS (SELECT * FROM customers) SELECT * FROM customers");
    assert_eq!(names(&s.tables_read), ["customers"]);
    // A CTE inside a subquery does not hide the table outside it.
    let s =
        one("SELECT * FROM (WITH customers AS (SELECT 1) SELECT * FROM customers) x, customers");
    assert_eq!(names(&s.tables_read), ["customers"]);
    // A quoted CTE name is another name than the folded table name.
    let s = one("WITH \"SALARIES\" AS (SELECT 1) SELECT * FROM salaries");
    assert_eq!(names(&s.tables_read), ["salaries"]);
    // ... and where it is visible, it is no table.
    let s = one("WITH customers AS (SELECT 1) SELECT * FROM customers");
    assert!(s.tables_read.is_empty(), "{:?}", s.tables_read);
    let s = one("WITH RECURSIVE t AS (SELECT 1 UNION ALL SELECT * FROM t) SELECT * FROM t");
    assert!(s.tables_read.is_empty(), "{:?}", s.tables_read);
}

#[test]
fn changes_to_how_strings_are_read_are_flagged() {
    for sql in [
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO false",
        "set session STANDARD_CONFORMING_STRINGS = 0",
        "SET LOCAL standard_conforming_strings = off",
        "RESET standard_conforming_strings",
        "SET standard_conforming_strings TO DEFAULT",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config(lower('STANDARD_CONFORMING_STRINGS'), 'off', false)",
        "ALTER ROLE alice SET standard_conforming_strings = off",
        "ALTER DATABASE shop SET standard_conforming_strings = off",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'big5'",
        "SELECT set_config('client_encoding', 'GBK', false)",
        "SET client_encoding = 'windows932'",
        "SET client_encoding = 'S.JIS'",
        "SET client_encoding = 'KOI8U'",
        "SELECT set_config('client_encoding', lower('LATIN1'), false)",
    ] {
        assert!(one(sql).changes_parsing, "{sql}");
    }
    // Encodings the gateway reads: allowed.
    for sql in [
        "SET client_encoding = 'LATIN1'",
        "SET NAMES 'WIN1252'",
        "SELECT set_config('client_encoding', 'LATIN9', false)",
    ] {
        assert!(!one(sql).changes_parsing, "{sql}");
    }
    for sql in [
        // What pg_dump writes at the top of a dump.
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings = 1",
        "SET standard_conforming_strings TO 'true'",
        "SELECT set_config('standard_conforming_strings', 'on', false)",
        "SELECT set_config('search_path', 'public', false)",
        "SHOW standard_conforming_strings",
        "SET NAMES 'UTF8'",
        "SET client_encoding = 'utf-8'",
        "RESET client_encoding",
    ] {
        assert!(!one(sql).changes_parsing, "{sql}");
    }
}

#[test]
fn role_switches_server_files_and_code_are_flagged() {
    for sql in [
        "SET ROLE postgres",
        "set local role postgres",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT pg_catalog.set_config('ROLE', 'postgres', true)",
        "SELECT set_config('session_authorization'::text, 'postgres', false)",
        "SELECT set_config(lower('ROLE'), 'postgres', false)",
        "SELECT 1 FROM (SELECT set_config('role', 'postgres', false)) x",
    ] {
        assert!(one(sql).switches_role, "{sql}");
    }
    for sql in [
        "SELECT set_config('search_path', 'public', false)",
        "SET search_path = public",
        "SELECT current_setting('role')",
    ] {
        assert!(!one(sql).switches_role, "{sql}");
    }
    for sql in [
        "COPY orders FROM '/etc/passwd'",
        "COPY orders TO '/tmp/x'",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_catalog.pg_ls_dir('.')",
        "SELECT lo_import('/etc/passwd')",
    ] {
        assert!(one(sql).server_files, "{sql}");
    }
    for sql in [
        "COPY orders FROM STDIN",
        "COPY orders TO STDOUT",
        "SELECT 1",
    ] {
        assert!(!one(sql).server_files, "{sql}");
    }
    for sql in [
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN END$$",
        "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE RULE r AS ON INSERT TO orders DO ALSO DELETE FROM customers",
        "ALTER FUNCTION f() SECURITY DEFINER",
        "CREATE OPERATOR pg_temp.## (leftarg = text, rightarg = text, function = pg_notify)",
        "CREATE AGGREGATE pg_temp.a (text) (sfunc = textcat, stype = text)",
        "CREATE VIEW v AS SELECT 1",
    ] {
        assert!(one(sql).creates_code, "{sql}");
    }
    assert!(!one("CREATE TABLE t (id int)").creates_code);
    // TRUNCATE ... CASCADE empties tables it does not name.
    assert!(!one("TRUNCATE orders CASCADE").unknown_effects.is_empty());
    assert!(one("TRUNCATE orders").unknown_effects.is_empty());
}

#[test]
fn deeply_nested_text_is_refused_not_a_crash() {
    // pg_query's decoder stops at 100 levels of nesting; reaching it took
    // more than a 2 MiB thread stack (a test thread's) in debug builds.
    for n in [45usize, 100, 5000] {
        let plus = summarize(&format!("SELECT {}1", "1+".repeat(n)));
        let parens = summarize(&format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)));
        if n > 60 {
            assert!(plus.parse_error.is_some(), "{n}");
        }
        let _ = parens;
    }
}

#[test]
fn a_cached_set_config_summary_is_never_reused_for_a_role_switch() {
    let cache = SummaryCache::default();
    let harmless = cache.get("SELECT set_config('application_name', 'x', false)");
    assert!(!harmless.statements[0].switches_role);
    let switch = cache.get("SELECT set_config('role', 'postgres', false)");
    assert!(switch.statements[0].switches_role);
}
