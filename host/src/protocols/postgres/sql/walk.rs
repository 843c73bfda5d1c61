//! Walks one statement's parse tree (as JSON, so no node type is missed) and
//! collects what a policy needs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{Action, StatementSummary, TableAction, TableName};

#[derive(Default)]
struct Acc {
    read: BTreeSet<(Option<String>, String)>,
    written: BTreeSet<(Option<String>, String)>,
    functions: BTreeSet<String>,
    /// CTE names visible where the walk is, innermost scope last.
    cte_scopes: Vec<Vec<String>>,
    /// Actions by table and kind, with whether every spelling is bounded.
    actions: BTreeMap<(TableName, Action), bool>,
    is_copy: bool,
    copy_program: bool,
    explain_analyze: bool,
    switches_role: bool,
    changes_parsing: bool,
    server_files: bool,
    creates_code: bool,
    unknown: BTreeSet<String>,
    executes: BTreeSet<String>,
    fetches: BTreeSet<String>,
    declares: Option<String>,
    closes: Option<String>,
    deallocates: Option<String>,
}

impl Acc {
    fn act(&mut self, table: TableName, action: Action, bounded: bool) {
        let entry = self.actions.entry((table, action)).or_insert(true);
        *entry &= bounded;
    }

    fn is_cte(&self, name: &str) -> bool {
        self.cte_scopes.iter().flatten().any(|c| c == name)
    }
}

/// Functions that read or write files on the database server, or list its
/// directories (core and `adminpack`).
const SERVER_FILE_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "lo_import",
    "lo_export",
    "pg_file_write",
    "pg_file_sync",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_logdir_ls",
];

/// Built-ins that run SQL given to them as text (what it reads or writes
/// cannot be seen in the statement).
const SQL_TEXT_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "dblink",
    "dblink_exec",
];

/// Settings whose change is a role switch.
const ROLE_SETTINGS: &[&str] = &["role", "session_authorization"];

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
    let to_names = |set: &BTreeSet<(Option<String>, String)>| {
        set.iter()
            .map(|(s, n)| TableName {
                schema: s.clone(),
                name: n.clone(),
            })
            .collect()
    };
    let has_where = acc
        .actions
        .iter()
        .all(|((_, a), bounded)| *bounded || !matches!(a, Action::Update | Action::Delete));
    // EXPLAIN without ANALYZE plans the statement but runs none of it.
    let runs = kind_node != "ExplainStmt" || acc.explain_analyze;
    let actions = if runs {
        acc.actions
            .into_iter()
            .map(|((table, action), bounded)| TableAction {
                table,
                action,
                bounded,
                via: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    StatementSummary {
        kind,
        tables_read: to_names(&acc.read),
        tables_written: to_names(&acc.written),
        functions: acc.functions.into_iter().collect(),
        has_where,
        actions,
        switches_role: acc.switches_role,
        changes_parsing: acc.changes_parsing,
        server_files: acc.server_files,
        creates_code: acc.creates_code,
        unknown_effects: acc.unknown.into_iter().collect(),
        is_copy: acc.is_copy,
        copy_program: acc.copy_program,
        explain_analyze: acc.explain_analyze,
        undoes_read_only: undoes_read_only(node),
        executes: acc.executes.into_iter().collect(),
        fetches: acc.fetches.into_iter().collect(),
        declares: acc.declares,
        closes: acc.closes,
        deallocates: acc.deallocates,
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
        // `ALTER ROLE/DATABASE ... SET`'s inline `setstmt`.
        Value::Object(map) if map.contains_key("is_local") && map.contains_key("jumble_args") => {
            visit("VariableSetStmt", map, acc, write)
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

/// The table an inline `RangeVar` (or a `{"node": {"RangeVar": ..}}`) names.
fn table_of(v: Option<&Value>) -> Option<TableName> {
    let v = v?;
    let fields = v
        .pointer("/node/RangeVar")
        .unwrap_or(v)
        .as_object()
        .filter(|m| m.contains_key("relname"))?;
    Some(TableName {
        schema: Some(str_field(fields, "schemaname").to_lowercase()).filter(|s| !s.is_empty()),
        name: str_field(fields, "relname").to_lowercase(),
    })
}

/// Whether a condition names a column (or is `WHERE CURRENT OF`): a
/// condition of constants alone (`WHERE true`, `WHERE 1 = 1`) bounds nothing.
fn names_a_column(v: Option<&Value>) -> bool {
    fn any(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                m.contains_key("ColumnRef")
                    || m.contains_key("CurrentOfExpr")
                    || m.values().any(any)
            }
            Value::Array(a) => a.iter().any(any),
            _ => false,
        }
    }
    v.is_some_and(any)
}

/// The text of a string constant, through casts (`'role'::text`).
fn const_string(v: &Value) -> Option<String> {
    let node = v.get("node").unwrap_or(v);
    if let Some(c) = node.get("AConst") {
        return c
            .pointer("/val/Sval/sval")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    const_string(node.pointer("/TypeCast/arg")?)
}

/// `set_config(name, ...)` switches roles when `name` is a role setting or
/// is not a constant (it could be one).
fn set_config_switches_role(fields: &Map<String, Value>) -> bool {
    let first = fields
        .get("args")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    match first.and_then(const_string) {
        Some(name) => ROLE_SETTINGS.contains(&name.trim().to_lowercase().as_str()),
        None => true,
    }
}

/// The setting the gateway's reading of SQL depends on: with it off,
/// backslashes escape in ordinary string literals, and PostgreSQL would
/// split a statement into other tokens than the gateway does.
const PARSING_SETTING: &str = "standard_conforming_strings";

/// The client encoding setting: a switch to an encoding the gateway does
/// not read is refused (text that is not ASCII is read only once the
/// server has said which encoding it reads, see the relay's pump).
const ENCODING_SETTING: &str = "client_encoding";

/// Whether an encoding name (a constant, or `None` when it is not one) may
/// be one the gateway does not read.
fn not_read(name: Option<String>) -> bool {
    name.is_none_or(|n| !crate::protocols::postgres::codec::encoding::is_read(&n))
}

/// `SET client_encoding` / `SET NAMES` to an encoding the gateway does not
/// read (or to a value that is not a constant). `RESET` and `DEFAULT`
/// return to the session's start-up encoding, which it reads.
fn sets_unread_encoding(fields: &Map<String, Value>) -> bool {
    // VariableSetKind 1: SET name = value.
    let kind = fields.get("kind").and_then(Value::as_i64).unwrap_or(0);
    let value = fields
        .get("args")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(const_string);
    kind == 1 && not_read(value)
}

/// `set_config(name, value, ...)` may turn [`PARSING_SETTING`] off or
/// switch `client_encoding` to an encoding the gateway does not read: the
/// name is one of them, or not a constant.
fn set_config_changes_parsing(fields: &Map<String, Value>) -> bool {
    let args = fields.get("args").and_then(Value::as_array);
    let constant = |i: usize| args.and_then(|a| a.get(i)).and_then(const_string);
    match constant(0) {
        Some(name) if name.trim().eq_ignore_ascii_case(PARSING_SETTING) => {
            !constant(1).is_some_and(|v| is_on(&v))
        }
        Some(name) if name.trim().eq_ignore_ascii_case(ENCODING_SETTING) => not_read(constant(1)),
        Some(_) => false,
        None => true,
    }
}

/// Whether a `SET` (`VariableSetStmt`) gives its setting plainly `on`
/// (`SET x = on`, `true`, `yes`, `1`); `RESET`, `DEFAULT` and anything
/// else count as a change.
fn sets_plainly_on(fields: &Map<String, Value>) -> bool {
    // VariableSetKind 1: SET name = value.
    let kind = fields.get("kind").and_then(Value::as_i64).unwrap_or(0);
    let args = fields.get("args").and_then(Value::as_array);
    kind == 1
        && args.is_some_and(|a| {
            a.len() == 1
                && a.first()
                    .and_then(|v| {
                        const_string(v).or_else(|| {
                            v.get("node")
                                .unwrap_or(v)
                                .pointer("/AConst/val/Ival/ival")
                                .and_then(Value::as_i64)
                                .map(|i| i.to_string())
                        })
                    })
                    .is_some_and(|v| is_on(&v))
        })
}

/// A boolean setting's spellings of on.
fn is_on(value: &str) -> bool {
    matches!(
        value.trim().to_lowercase().as_str(),
        "on" | "true" | "yes" | "1" | "t" | "y"
    )
}

/// The value at `path` (`a/b/c`) under an object's fields.
fn at<'a>(fields: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let v = fields.get(first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        v.pointer(&format!("/{rest}"))
    }
}

/// Records what a data-changing statement does to its table.
fn note_actions(kind: &str, fields: &Map<String, Value>, acc: &mut Acc) {
    let target = || table_of(fields.get("relation"));
    match kind {
        "InsertStmt" => {
            let Some(t) = target() else { return };
            if at(fields, "on_conflict_clause/action").and_then(Value::as_i64)
                == Some(ON_CONFLICT_UPDATE)
            {
                // Only rows that conflict with the listed VALUES change.
                let listed = at(fields, "select_stmt/node/SelectStmt/values_lists")
                    .and_then(Value::as_array)
                    .is_some_and(|l| !l.is_empty());
                let bounded =
                    listed || names_a_column(at(fields, "on_conflict_clause/where_clause"));
                acc.act(t.clone(), Action::Update, bounded);
            }
            acc.act(t, Action::Insert, true);
        }
        "UpdateStmt" | "DeleteStmt" => {
            let Some(t) = target() else { return };
            let action = if kind == "UpdateStmt" {
                Action::Update
            } else {
                Action::Delete
            };
            acc.act(t, action, names_a_column(fields.get("where_clause")));
        }
        "MergeStmt" => {
            let Some(t) = target() else { return };
            let clauses = fields.get("merge_when_clauses").and_then(Value::as_array);
            for c in clauses.into_iter().flatten() {
                let Some(c) = c.pointer("/node/MergeWhenClause") else {
                    continue;
                };
                // The join condition pairs rows; it does not limit which
                // target rows a branch touches. Only the branch's own
                // condition does.
                let bounded = names_a_column(c.get("condition"));
                match c.get("command_type").and_then(Value::as_i64) {
                    Some(CMD_UPDATE) => acc.act(t.clone(), Action::Update, bounded),
                    Some(CMD_DELETE) => acc.act(t.clone(), Action::Delete, bounded),
                    Some(CMD_INSERT) => acc.act(t.clone(), Action::Insert, true),
                    _ => {}
                }
            }
        }
        "TruncateStmt" => {
            let relations = fields.get("relations").and_then(Value::as_array);
            for r in relations.into_iter().flatten() {
                if let Some(t) = table_of(Some(r)) {
                    acc.act(t, Action::Truncate, false);
                }
            }
            if fields.get("behavior").and_then(Value::as_i64) == Some(DROP_CASCADE) {
                acc.unknown.insert(
                    "TRUNCATE ... CASCADE also empties every table that references these, which the statement does not name".into(),
                );
            }
        }
        "CopyStmt" if bool_field(fields, "is_from") => {
            if let Some(t) = target() {
                acc.act(t, Action::Insert, true);
            }
        }
        _ => {}
    }
}

/// `CmdType` values (pg_query's protobuf enum).
const CMD_UPDATE: i64 = 3;
const CMD_INSERT: i64 = 4;
const CMD_DELETE: i64 = 5;
/// `DropBehavior::DropCascade`.
const DROP_CASCADE: i64 = 2;
/// `OnConflictAction::OnconflictUpdate`.
const ON_CONFLICT_UPDATE: i64 = 3;

/// Node kinds that create or change code run inside the database, or a
/// view (what writes through it do is code too).
const CODE_KINDS: &[&str] = &[
    // A view: writes through it land in other tables, and through its
    // rules (pg_settings' set_config) anywhere.
    "ViewStmt",
    // Operators, aggregates and types name functions a later statement
    // runs under another spelling (`a ## b`, `agg(x)`).
    "DefineStmt",
    "CreateFunctionStmt",
    "AlterFunctionStmt",
    "CreateTrigStmt",
    "CreateEventTrigStmt",
    "AlterEventTrigStmt",
    "RuleStmt",
    "CreatePLangStmt",
    "CreateTransformStmt",
];

fn visit(kind: &str, fields: &Map<String, Value>, acc: &mut Acc, write: bool) {
    note_actions(kind, fields, acc);
    acc.creates_code |= CODE_KINDS.contains(&kind);
    match kind {
        "RangeVar" => {
            let schema =
                Some(str_field(fields, "schemaname").to_lowercase()).filter(|s| !s.is_empty());
            let raw = str_field(fields, "relname");
            let name = raw.to_lowercase();
            if write {
                acc.written.insert((schema, name));
            } else if schema.is_some() || !acc.is_cte(raw) {
                // An unqualified name a visible CTE defines reads the CTE.
                acc.read.insert((schema, name));
            }
            return;
        }
        "FuncCall" => {
            let parts = name_parts(fields.get("funcname"));
            let base = parts.last().map(String::as_str).unwrap_or("");
            acc.server_files |= SERVER_FILE_FUNCTIONS.contains(&base);
            acc.switches_role |= base == "set_config" && set_config_switches_role(fields);
            acc.changes_parsing |= base == "set_config" && set_config_changes_parsing(fields);
            if SQL_TEXT_FUNCTIONS.contains(&base) {
                acc.unknown.insert(format!(
                    "{base} runs SQL given as text, which the gateway cannot see"
                ));
            }
            let name = parts.join(".");
            if !name.is_empty() {
                acc.functions.insert(name);
            }
        }
        "VariableSetStmt" => {
            let name = str_field(fields, "name").to_lowercase();
            acc.switches_role |= ROLE_SETTINGS.contains(&name.as_str());
            acc.changes_parsing |= name == PARSING_SETTING && !sets_plainly_on(fields);
            acc.changes_parsing |= name == ENCODING_SETTING && sets_unread_encoding(fields);
        }
        "ExecuteStmt" => {
            let name = str_field(fields, "name");
            if !name.is_empty() {
                acc.executes.insert(name.to_string());
            }
        }
        "DeclareCursorStmt" => {
            acc.declares = Some(str_field(fields, "portalname").to_string());
        }
        "ClosePortalStmt" => {
            acc.closes =
                Some(str_field(fields, "portalname").to_string()).filter(|n| !n.is_empty());
        }
        "DeallocateStmt" => {
            acc.deallocates = Some(str_field(fields, "name").to_string()).filter(|n| !n.is_empty());
        }
        "CreateTableAsStmt"
            if fields
                .get("query")
                .and_then(|q| q.pointer("/node/ExecuteStmt"))
                .is_some() =>
        {
            acc.unknown.insert(
                "CREATE TABLE AS EXECUTE stores the rows of a prepared statement, which the gateway does not see here".into(),
            );
        }
        "FetchStmt" => {
            acc.fetches
                .insert(str_field(fields, "portalname").to_string());
        }
        "CopyStmt" => {
            acc.is_copy = true;
            let program = bool_field(fields, "is_program");
            acc.copy_program |= program;
            acc.server_files |= program || !str_field(fields, "filename").is_empty();
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
    let scoped = enter_with(fields, acc);
    for (field, child) in fields {
        if (kind == "FuncCall" && field == "funcname") || (scoped && field == "with_clause") {
            continue;
        }
        walk(
            child,
            acc,
            is_write_field(kind, field, fields) || (write && field == "relation"),
        );
    }
    if scoped {
        acc.cte_scopes.pop();
    }
}

/// Walks a statement's `WITH` clause with PostgreSQL's scoping — a CTE sees
/// the CTEs before it (all of them when `RECURSIVE`), so in
/// `WITH customers AS (SELECT * FROM customers)` the inner name is the
/// table — then opens the scope in which the statement's body sees all of
/// them. Returns whether a scope was opened (the caller closes it).
fn enter_with(fields: &Map<String, Value>, acc: &mut Acc) -> bool {
    let Some(with) = fields.get("with_clause").and_then(Value::as_object) else {
        return false;
    };
    let ctes: Vec<&Value> = with
        .get("ctes")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<String> = ctes
        .iter()
        .filter_map(|c| c.pointer("/node/CommonTableExpr/ctename"))
        .filter_map(Value::as_str)
        // As the parser left them: unquoted names folded, quoted ones
        // exact, so `WITH "T" AS ...` does not hide table t.
        .map(str::to_string)
        .collect();
    let recursive = bool_field(with, "recursive");
    for (i, cte) in ctes.iter().enumerate() {
        let visible = if recursive {
            names.clone()
        } else {
            names.iter().take(i).cloned().collect()
        };
        acc.cte_scopes.push(visible);
        walk(cte, acc, false);
        acc.cte_scopes.pop();
    }
    acc.cte_scopes.push(names);
    true
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
