//! Matching table and column names the way PostgreSQL resolves them: unquoted
//! names are case-insensitive (folded to lower case by the parser), an
//! unqualified name in a rule matches any schema, and a qualified rule
//! matches an unqualified reference only through the `search_path` given.

use crate::TableRef;

/// A table pattern from a rule: `orders`, `public.orders`, `*.orders`, `audit.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<String>,
    name: String,
}

impl TablePattern {
    /// Parses `schema.table`, `table`, with `*` for any part.
    pub fn parse(pattern: &str) -> Self {
        let lower = pattern.trim().to_lowercase();
        match lower.split_once('.') {
            Some((s, t)) => Self {
                schema: Some(s.to_string()).filter(|s| s != "*"),
                name: t.to_string(),
            },
            None => Self {
                schema: None,
                name: lower,
            },
        }
    }

    /// Whether `table` matches, resolving an unqualified reference through
    /// `search_path` (e.g. `["public"]`).
    pub fn matches(&self, table: &TableRef, search_path: &[&str]) -> bool {
        let name_ok = self.name == "*" || self.name == table.name.to_lowercase();
        if !name_ok {
            return false;
        }
        match (&self.schema, &table.schema) {
            (None, _) => true,
            (Some(want), Some(have)) => *want == have.to_lowercase(),
            (Some(want), None) => search_path.iter().any(|s| s.eq_ignore_ascii_case(want)),
        }
    }
}

/// Renders a table reference as `schema.name` (or `name`).
pub fn display_table(t: &TableRef) -> String {
    match &t.schema {
        Some(s) => format!("{s}.{}", t.name),
        None => t.name.clone(),
    }
}

/// Whether a function name (possibly `schema.func`) matches a pattern such as
/// `pg_read_file`, `pg_catalog.pg_read_file` or `lo_*`.
pub fn function_matches(pattern: &str, function: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let function = function.to_lowercase();
    let bare = function.rsplit('.').next().unwrap_or(&function);
    let candidates: &[&str] = if pattern.contains('.') {
        &[&function]
    } else {
        &[bare]
    };
    candidates.iter().any(|f| match pattern.strip_suffix('*') {
        Some(prefix) => {
            f.starts_with(prefix.rsplit('.').next().unwrap_or(prefix)) || f.starts_with(prefix)
        }
        None => *f == pattern,
    })
}

/// The actions a rule may name (`insert`, `update`, `delete`, `truncate`).
pub const ACTIONS: &[&str] = &["insert", "update", "delete", "truncate"];

/// Checks a rule's `actions`: an error naming the rule and the unknown
/// action, for `configure` to return.
pub fn check_actions(rule: &str, actions: &[String]) -> Result<(), String> {
    match actions
        .iter()
        .find(|a| !ACTIONS.contains(&a.to_lowercase().as_str()))
    {
        Some(a) => Err(format!(
            "rule \"{rule}\": unknown action \"{a}\" (known: insert, update, delete, truncate)"
        )),
        None => Ok(()),
    }
}

/// Whether `table` is in a rule's scope: any table when `patterns` is
/// empty, else one the patterns name (through `search_path`).
pub fn in_scope(patterns: &[TablePattern], table: &TableRef, search_path: &[&str]) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(table, search_path))
}

/// ` (through ...)` for an action done by code the statement runs; empty
/// for one the statement does itself.
pub fn route(action: &crate::TableAction) -> String {
    action
        .via
        .as_deref()
        .map(|v| format!(" (through {v})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: Option<&str>, name: &str) -> TableRef {
        TableRef {
            schema: schema.map(str::to_string),
            name: name.into(),
        }
    }

    #[test]
    fn table_patterns() {
        let p = TablePattern::parse("public.Orders");
        assert!(p.matches(&t(Some("public"), "orders"), &[]));
        assert!(p.matches(&t(None, "orders"), &["public"]));
        assert!(!p.matches(&t(None, "orders"), &["sales"]));
        assert!(!p.matches(&t(Some("sales"), "orders"), &["public"]));
        assert!(TablePattern::parse("orders").matches(&t(Some("x"), "ORDERS"), &[]));
        assert!(TablePattern::parse("audit.*").matches(&t(Some("audit"), "log"), &[]));
    }

    #[test]
    fn function_patterns() {
        assert!(function_matches("pg_read_file", "pg_catalog.pg_read_file"));
        assert!(function_matches("lo_*", "lo_import"));
        assert!(!function_matches("lo_*", "slow_fn"));
        assert!(function_matches("dblink*", "public.dblink_exec"));
        assert!(!function_matches("public.dblink", "dblink"));
    }
}
