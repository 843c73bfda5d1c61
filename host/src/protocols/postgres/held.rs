//! Prepared statements a policy holds for approval, as the relay tracks
//! them. A `Parse` (or a SQL `PREPARE`) prepares and runs nothing, so a
//! statement held there is forwarded, and each *run* of it is held instead
//! — protocol `Execute` of a portal bound from it, or SQL `EXECUTE` of it
//! anywhere in a statement: the approver sees, and a grant covers, the
//! statement with the very values of that run, for one run.
//!
//! The tracker sees what the client sends, not what the server did: after
//! an error the server skips every message up to `Sync`, so a `Close`, a
//! new `Parse` or a `Bind` the tracker saw may never have happened. The
//! tracker therefore only ever gives up a hold when the server must have
//! done what the message says — the message is the first of its batch —
//! and otherwise keeps holding (a run of a statement that is in fact
//! harmless then asks for approval: fail closed). A named portal that is
//! bound again while the tracker knows it (the server refuses that) is
//! not trusted at all until it is closed.
//!
//! A portal that was approved and suspended (`Execute` with a row limit)
//! goes on without another approval: it is still the same run.

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::QueryNote;
use crate::protocols::postgres::codec::{bind, CodecError};

/// Held statements, and portals of them, remembered at most; past this a
/// new hold is refused (never an old one forgotten).
const MAX_HELD: usize = 1_000;

/// Longest parameter value shown whole to an approver; longer ones are
/// shown cut, with the sha256 of the whole value so the grant still covers
/// exactly that value.
const MAX_SHOWN_VALUE: usize = 256;

/// A prepared statement a policy asked approval for.
#[derive(Debug)]
pub struct HeldStatement {
    /// Its SQL.
    pub sql: String,
    /// Why approval is needed.
    pub reason: String,
    /// The policy's note (approval terms, deciding plugin and rule).
    pub note: QueryNote,
}

/// One run waiting to be judged: the statement and what the approver sees
/// (its SQL and the run's values).
#[derive(Debug, Clone)]
pub struct PendingRun {
    /// The held statement.
    pub statement: Arc<HeldStatement>,
    /// The SQL followed by the run's values.
    pub shown: String,
}

/// What an `Execute` of a portal needs.
#[derive(Debug, Clone)]
pub enum Execution {
    /// Not held, or an approved run going on: forward it.
    Free,
    /// A run of a held statement: judge it.
    Judge(PendingRun),
    /// The tracker cannot tell what the portal runs: refuse it.
    Refuse(&'static str),
}

/// The tracker is full: the hold is refused rather than an older one lost.
#[derive(Debug, thiserror::Error)]
#[error("this session holds {MAX_HELD} prepared statements or portals for approval already; close some (or reconnect) first")]
pub struct Full;

/// Why a `Bind` was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Its parameters could not be read.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The tracker is full.
    #[error(transparent)]
    Full(#[from] Full),
}

/// What a portal of a held statement is.
#[derive(Debug, Clone)]
enum Portal {
    /// Bound, not yet run.
    Bound(PendingRun),
    /// Approved and started (may be suspended).
    Running,
    /// Bound again, or rebound after a possible error: unknown.
    Uncertain,
}

/// The session's held statements and the portals bound from them.
#[derive(Debug, Default)]
pub struct HeldStatements {
    statements: HashMap<String, Arc<HeldStatement>>,
    portals: HashMap<String, Portal>,
    /// Portals bound again in the batch not yet ended by `Sync` while
    /// they held a run of a held statement (or an unknown one).
    replaced: Vec<String>,
}

impl HeldStatements {
    /// Whether nothing is held (the relay then skips all of this).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty()
    }

    /// The held statement `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<Arc<HeldStatement>> {
        self.statements.get(name).cloned()
    }

    /// A `Parse` (or SQL `PREPARE`) of `name` that a policy holds.
    pub fn hold(&mut self, name: &str, held: HeldStatement) -> Result<(), Full> {
        if !self.statements.contains_key(name) && self.statements.len() >= MAX_HELD {
            return Err(Full);
        }
        self.statements.insert(name.to_string(), Arc::new(held));
        Ok(())
    }

    /// A `Parse` of `name` that no policy holds, first in its batch or not.
    /// Only the unnamed statement is replaced by a `Parse` (a named one must
    /// be closed first), and only a first-in-batch `Parse` surely ran.
    pub fn parsed_free(&mut self, name: &str, first_in_batch: bool) {
        if name.is_empty() && first_in_batch {
            self.statements.remove(name);
        }
    }

    /// A `Close` of a statement, first in its batch or not.
    pub fn closed_statement(&mut self, name: &str, first_in_batch: bool) {
        if first_in_batch {
            self.statements.remove(name);
        }
    }

    /// A `Close` of a portal, first in its batch or not.
    pub fn closed_portal(&mut self, portal: &str, first_in_batch: bool) {
        if first_in_batch {
            self.portals.remove(portal);
        }
    }

    /// A `Bind` (the complete frame) of `statement` into `portal`.
    pub fn bound(
        &mut self,
        portal: &str,
        statement: &str,
        frame: &[u8],
        first_in_batch: bool,
    ) -> Result<(), BindError> {
        let known = self.portals.contains_key(portal);
        if known {
            // A Bind the server refuses (no such statement, a wrong count
            // of values) leaves the old portal in place: what this one
            // binds holds for its batch only (an Execute after a refused
            // Bind is skipped), not after it.
            self.replaced.push(portal.to_string());
        }
        // The server refuses to bind a named portal that exists; the
        // unnamed one it replaces, unless the Bind is skipped after an error.
        let trusted = !known || (portal.is_empty() && first_in_batch);
        let Some(held) = self.statements.get(statement).cloned() else {
            match (known, trusted) {
                (false, _) => {}
                (true, true) => {
                    self.portals.remove(portal);
                }
                (true, false) => {
                    self.portals.insert(portal.to_string(), Portal::Uncertain);
                }
            }
            return Ok(());
        };
        let params = bind::decode_parameters(frame)?;
        if !known && self.portals.len() >= MAX_HELD {
            return Err(Full.into());
        }
        let state = match trusted {
            true => Portal::Bound(PendingRun {
                shown: shown_with_parameters(&held.sql, &params),
                statement: held,
            }),
            false => Portal::Uncertain,
        };
        self.portals.insert(portal.to_string(), state);
        Ok(())
    }

    /// What an `Execute` of `portal` needs.
    pub fn execution(&self, portal: &str) -> Execution {
        match self.portals.get(portal) {
            None | Some(Portal::Running) => Execution::Free,
            Some(Portal::Bound(run)) => Execution::Judge(run.clone()),
            Some(Portal::Uncertain) => Execution::Refuse(
                "the gateway cannot tell which values this portal was bound with (it was bound again, or after an error in the same batch); close it and bind it again at the start of a batch",
            ),
        }
    }

    /// A portal among `portals` that a SQL `FETCH` or `MOVE` would run
    /// without its approval (bound from a held statement, or unknown to the
    /// tracker after a rebind).
    pub fn fetched_unapproved<'p>(
        &self,
        portals: impl IntoIterator<Item = &'p str>,
    ) -> Option<&'p str> {
        portals
            .into_iter()
            .find(|p| !matches!(self.execution(p), Execution::Free))
    }

    /// A `Sync` ended the batch: a portal bound again in it over a held run
    /// is unknown from now on (the server may have kept the old one), until
    /// it is bound again and run in one batch, or closed.
    pub fn batch_end(&mut self) {
        for portal in self.replaced.drain(..) {
            self.portals.insert(portal, Portal::Uncertain);
        }
    }

    /// The run of `portal` was approved and started.
    pub fn started(&mut self, portal: &str) {
        if let Some(p) = self.portals.get_mut(portal) {
            *p = Portal::Running;
        }
    }
}

/// What the relay does about approvals for one `Query` or `Parse`.
#[derive(Debug)]
pub enum Step {
    /// Nothing to hold.
    Pass,
    /// Prepared statements were held: forward it; their runs are judged.
    Deferred,
    /// Hold it now: what the approver sees, the terms, and why.
    Hold {
        /// The statement as the approver sees it.
        shown: String,
        /// The approval terms (and the deciding plugin and rule).
        note: QueryNote,
        /// Why.
        reason: String,
    },
    /// Refuse it.
    Refuse(String),
}

/// A `Parse` as [`step`] needs it.
pub struct ParseInfo<'a> {
    /// The statement name.
    pub name: &'a str,
    /// The parameter types the client declared (4 bytes each).
    pub param_types: &'a [u8],
    /// Whether it is the first message of its batch.
    pub first_in_batch: bool,
}

/// Decides [`Step`] for `sql` (a simple `Query`, or the `Parse` `parse`)
/// that the policy judged `verdict` with `note`: a held `Parse` or SQL
/// `PREPARE` is deferred to its runs; a statement that runs held
/// statements (`EXECUTE name`, anywhere in it) is held as their run.
pub fn step(
    held: &mut HeldStatements,
    verdict: &crate::policy::Verdict,
    note: &QueryNote,
    sql: &str,
    parse: Option<ParseInfo<'_>>,
) -> Step {
    use crate::policy::Verdict;
    if matches!(verdict, Verdict::Deny { .. }) {
        // Refused here, so the server never sees it: nothing changes.
        return Step::Pass;
    }
    let wanted = matches!(verdict, Verdict::RequireApproval { .. });
    if !wanted && held.is_empty() {
        if let Some(p) = &parse {
            held.parsed_free(p.name, p.first_in_batch);
        }
        return Step::Pass;
    }
    let summary = note
        .summary
        .clone()
        .unwrap_or_else(|| crate::protocols::postgres::sql::shared_cache().get(sql));
    let runs: Vec<Arc<HeldStatement>> = summary
        .statements
        .iter()
        .flat_map(|st| st.executes.iter())
        .filter_map(|name| held.get(name))
        .collect();
    let prepares: Vec<&str> = summary
        .statements
        .iter()
        .filter(|st| st.kind == "prepare")
        .filter_map(|st| st.prepared_name.as_deref())
        .collect();
    // What approving it means: its own terms, or those of what it runs.
    let (reason, terms) = match (verdict, runs.first()) {
        (Verdict::RequireApproval { reason }, _) => (reason.clone(), note.clone()),
        (_, Some(run)) => (run.reason.clone(), run.note.clone()),
        (_, None) => {
            if let Some(p) = &parse {
                held.parsed_free(p.name, p.first_in_batch);
            }
            return Step::Pass;
        }
    };
    let mut terms = terms;
    terms.summary = note.summary.clone();
    let base: String = runs
        .iter()
        .map(|r| format!("{}\n-- run by:\n", r.sql))
        .collect::<String>()
        + sql;
    let held_as = |shown: String| HeldStatement {
        sql: shown,
        reason: reason.clone(),
        note: terms.clone(),
    };
    // A SQL PREPARE of a held statement: its runs are judged too.
    for name in &prepares {
        if let Err(e) = held.hold(name, held_as(base.clone())) {
            return Step::Refuse(e.to_string());
        }
    }
    match parse {
        Some(p) => match held.hold(p.name, held_as(shown_statement(&base, p.param_types))) {
            Ok(()) => Step::Deferred,
            Err(e) => Step::Refuse(e.to_string()),
        },
        None if wanted && !prepares.is_empty() && prepares.len() == summary.statements.len() => {
            Step::Deferred
        }
        None => Step::Hold {
            shown: base,
            note: terms,
            reason,
        },
    }
}

/// What an approver sees of a run: one line per parameter value first —
/// `-- $1 = "text"`, `-- $2 = NULL`, `-- $3 = \x0001 (binary)` — then
/// `sql` (so text in the SQL cannot pose as a value above it). Text is shown
/// as a JSON string (no value can fake another line); a value longer than
/// [`MAX_SHOWN_VALUE`] is cut and carries the sha256 of the whole value.
pub fn shown_with_parameters(sql: &str, params: &bind::Parameters<'_>) -> String {
    let mut out = String::new();
    for (i, (value, binary)) in params.values.iter().enumerate() {
        let shown = match value {
            None => "NULL".to_string(),
            Some(v) => show_value(v, *binary),
        };
        out.push_str(&format!("-- ${} = {shown}\n", i + 1));
    }
    out.push_str(sql);
    out
}

/// A held statement's text as the approver sees it: the parameter types the
/// client declared (they can change which function or operator runs), then
/// the SQL.
pub fn shown_statement(sql: &str, param_types: &[u8]) -> String {
    let types: Vec<String> = param_types
        .chunks_exact(4)
        .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]).to_string())
        .collect();
    match types.is_empty() {
        true => sql.to_string(),
        false => format!("-- parameter types (OIDs): {}\n{sql}", types.join(", ")),
    }
}

fn show_value(v: &[u8], binary: bool) -> String {
    let cut = v.len() > MAX_SHOWN_VALUE;
    let part = &v[..v.len().min(MAX_SHOWN_VALUE)];
    // Text that is not ASCII is shown as its bytes: the server reads them
    // in the session's client encoding, which may not be UTF-8.
    let mut shown = match (binary, std::str::from_utf8(part)) {
        (false, Ok(text)) if text.is_ascii() => {
            serde_json::Value::String(text.to_string()).to_string()
        }
        (false, _) if !part.is_ascii() => {
            let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex} (text that is not ASCII, as the bytes sent: the server reads them in the session's client_encoding)")
        }
        _ => {
            let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}{}", if binary { " (binary)" } else { "" })
        }
    };
    if cut {
        shown.push_str(&format!(
            " … ({} bytes, sha256 {})",
            v.len(),
            crate::plugins::sha256_hex(v)
        ));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_ascii_is_shown_as_its_bytes() {
        assert_eq!(show_value(b"abc", false), "\"abc\"");
        let shown = show_value("\u{e9}".as_bytes(), false);
        assert!(
            shown.starts_with("\\xc3a9 (text that is not ASCII"),
            "{shown}"
        );
    }

    fn params<'a>(values: &[(Option<&'a [u8]>, bool)]) -> bind::Parameters<'a> {
        bind::Parameters {
            values: values.to_vec(),
        }
    }

    #[test]
    fn each_value_is_shown_and_no_value_can_fake_another_line() {
        let shown = shown_with_parameters(
            "UPDATE t SET a = $1 WHERE id = $2 AND b = $3",
            &params(&[
                (Some(b"x\n-- $2 = 1"), false),
                (None, false),
                (Some(&[0, 0, 0, 7]), true),
            ]),
        );
        assert_eq!(
            shown,
            "-- $1 = \"x\\n-- $2 = 1\"\n-- $2 = NULL\n-- $3 = \\x00000007 (binary)\nUPDATE t SET a = $1 WHERE id = $2 AND b = $3"
        );
        assert_eq!(
            shown_statement("SELECT f($1)", &[0, 0, 0, 23]),
            "-- parameter types (OIDs): 23\nSELECT f($1)"
        );
    }

    #[test]
    fn long_values_that_differ_past_the_cut_are_shown_differently() {
        let a = vec![b'a'; 1000];
        let mut b = a.clone();
        b[999] = b'b';
        let sa = shown_with_parameters("SELECT $1", &params(&[(Some(&a), false)]));
        let sb = shown_with_parameters("SELECT $1", &params(&[(Some(&b), false)]));
        assert_ne!(sa, sb);
        assert!(sa.len() < 700, "{}", sa.len());
    }

    fn frame(portal: &str, statement: &str, v: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(portal.as_bytes());
        body.push(0);
        body.extend_from_slice(statement.as_bytes());
        body.push(0);
        body.extend_from_slice(&[0, 0, 0, 1]);
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v);
        body.extend_from_slice(&[0, 0]);
        let mut f = vec![b'B'];
        f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(&body);
        f
    }

    fn held(sql: &str) -> HeldStatement {
        HeldStatement {
            sql: sql.into(),
            reason: "r".into(),
            note: QueryNote::default(),
        }
    }

    fn judged(h: &HeldStatements, portal: &str) -> Option<String> {
        match h.execution(portal) {
            Execution::Judge(run) => Some(run.shown),
            _ => None,
        }
    }

    #[test]
    fn an_approved_portal_runs_on_and_a_new_bind_is_judged_again() {
        let mut h = HeldStatements::default();
        h.hold("s", held("UPDATE t SET a = $1")).unwrap();
        h.bound("", "s", &frame("", "s", b"1"), true).unwrap();
        assert!(judged(&h, "").unwrap().starts_with("-- $1 = \"1\""));
        h.started("");
        assert!(
            matches!(h.execution(""), Execution::Free),
            "suspended run goes on"
        );
        h.bound("", "s", &frame("", "s", b"2"), true).unwrap();
        assert!(judged(&h, "").unwrap().starts_with("-- $1 = \"2\""));
        // Another statement bound into the unnamed portal at a batch start.
        h.bound("", "other", &frame("", "other", b"3"), true)
            .unwrap();
        assert!(matches!(h.execution(""), Execution::Free));
    }

    #[test]
    fn nothing_is_given_up_on_a_message_the_server_may_have_skipped() {
        let mut h = HeldStatements::default();
        h.hold("", held("DELETE FROM t WHERE id = $1")).unwrap();
        h.hold("s", held("DELETE FROM t WHERE id = $1")).unwrap();
        // Mid-batch Parse of the unnamed statement, Close of a named one:
        // skipped after an error, so the holds stay.
        h.parsed_free("", false);
        h.closed_statement("s", false);
        assert!(h.get("").is_some() && h.get("s").is_some());
        // A named statement is never replaced by a Parse.
        h.parsed_free("s", true);
        assert!(h.get("s").is_some());
        // A portal of a held statement rebound mid-batch is not trusted.
        h.bound("", "", &frame("", "", b"1"), true).unwrap();
        h.bound("", "benign", &frame("", "benign", b"2"), false)
            .unwrap();
        assert!(matches!(h.execution(""), Execution::Refuse(_)));
        // A named portal bound again (the server refuses that) is not trusted.
        h.bound("p", "s", &frame("p", "s", b"1"), true).unwrap();
        h.bound("p", "s", &frame("p", "s", b"9"), true).unwrap();
        assert!(matches!(h.execution("p"), Execution::Refuse(_)));
        h.closed_portal("p", true);
        assert!(matches!(h.execution("p"), Execution::Free));
        // At a batch start, the holds go.
        h.parsed_free("", true);
        h.closed_statement("s", true);
        assert!(h.get("").is_none() && h.get("s").is_none());
    }

    #[test]
    fn a_full_tracker_refuses_new_holds_and_keeps_the_old_ones() {
        let mut h = HeldStatements::default();
        for i in 0..MAX_HELD {
            h.hold(&format!("s{i}"), held("DELETE FROM t")).unwrap();
        }
        assert!(h.hold("one-more", held("DELETE FROM t")).is_err());
        assert!(h.get("s0").is_some(), "no hold is forgotten");
    }
}
