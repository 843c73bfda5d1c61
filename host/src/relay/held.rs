//! Prepared statements a policy holds for approval, as the relay tracks
//! them in the extended protocol. A `Parse` prepares and runs nothing, so
//! a statement held at `Parse` is forwarded, and each *execution* of it is
//! held instead: the approver sees — and a grant covers — the statement
//! with the very parameter values of that `Bind`, for one run.
//!
//! A portal that was approved and suspended (`Execute` with a row limit)
//! goes on without another approval: it is still the same run. A new
//! `Bind` into the portal, or a `Close` of it, forgets that.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::codec::{bind, CodecError};
use crate::policy::QueryNote;

/// Statements and portals remembered at most; beyond this the oldest
/// named ones are forgotten, and executing a forgotten portal is refused
/// (see [`HeldStatements::pending_execute`]).
const MAX_NAMED: usize = 10_000;

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

/// One execution waiting to be judged: the statement and what the
/// approver sees (its SQL and parameter values).
#[derive(Debug, Clone)]
pub struct PendingRun {
    /// The held statement.
    pub statement: Arc<HeldStatement>,
    /// The SQL followed by one line per parameter value.
    pub shown: String,
}

/// What a portal of a held statement is.
#[derive(Debug, Clone)]
enum Portal {
    /// Bound, not yet run.
    Bound(PendingRun),
    /// Approved and started (may be suspended).
    Running,
}

/// The session's held statements and the portals bound from them.
#[derive(Debug, Default)]
pub struct HeldStatements {
    statements: HashMap<String, Arc<HeldStatement>>,
    portals: HashMap<String, Portal>,
    /// Portals that were bound from a held statement and then forgotten
    /// (capacity), so their executions are refused rather than run.
    forgotten: HashSet<String>,
}

impl HeldStatements {
    /// Whether nothing is held (the relay then skips all of this).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty() && self.forgotten.is_empty()
    }

    /// A `Parse` of `name`: held (`Some`) or not.
    pub fn parsed(&mut self, name: &str, held: Option<HeldStatement>) {
        match held {
            Some(h) => {
                if self.statements.len() >= MAX_NAMED {
                    self.statements.clear();
                }
                self.statements.insert(name.to_string(), Arc::new(h));
            }
            None => {
                self.statements.remove(name);
            }
        }
    }

    /// A `Bind` (the complete frame) of `statement` into `portal`.
    pub fn bound(&mut self, portal: &str, statement: &str, frame: &[u8]) -> Result<(), CodecError> {
        let Some(held) = self.statements.get(statement).cloned() else {
            self.portals.remove(portal);
            self.forgotten.remove(portal);
            return Ok(());
        };
        let params = bind::decode_parameters(frame)?;
        let run = PendingRun {
            shown: shown_with_parameters(&held.sql, &params),
            statement: held,
        };
        if self.portals.len() >= MAX_NAMED {
            for name in self.portals.keys() {
                self.forgotten.insert(name.clone());
            }
            self.portals.clear();
        }
        self.forgotten.remove(portal);
        self.portals.insert(portal.to_string(), Portal::Bound(run));
        Ok(())
    }

    /// A `Close` of a statement or portal.
    pub fn closed(&mut self, statement: Option<&str>, portal: Option<&str>) {
        if let Some(s) = statement {
            self.statements.remove(s);
        }
        if let Some(p) = portal {
            self.portals.remove(p);
            self.forgotten.remove(p);
        }
    }

    /// What an `Execute` of `portal` needs: `Ok(None)` to run freely (not
    /// held, or an approved run going on), `Ok(Some(run))` to be judged,
    /// `Err(())` when the portal was held but is no longer known.
    #[allow(clippy::result_unit_err)]
    pub fn pending_execute(&self, portal: &str) -> Result<Option<PendingRun>, ()> {
        if self.forgotten.contains(portal) {
            return Err(());
        }
        match self.portals.get(portal) {
            None | Some(Portal::Running) => Ok(None),
            Some(Portal::Bound(run)) => Ok(Some(run.clone())),
        }
    }

    /// The run of `portal` was approved and started.
    pub fn started(&mut self, portal: &str) {
        if let Some(p) = self.portals.get_mut(portal) {
            *p = Portal::Running;
        }
    }
}

/// `sql` followed by one line per parameter: `-- $1 = "text"`, `-- $2 =
/// NULL`, `-- $3 = \x0001 (binary)`. Text is shown as a JSON string (so no
/// value can fake another line); a value longer than [`MAX_SHOWN_VALUE`]
/// is cut and carries the sha256 of the whole value.
pub fn shown_with_parameters(sql: &str, params: &bind::Parameters<'_>) -> String {
    let mut out = sql.to_string();
    for (i, (value, binary)) in params.values.iter().enumerate() {
        let shown = match value {
            None => "NULL".to_string(),
            Some(v) => show_value(v, *binary),
        };
        out.push_str(&format!("\n-- ${} = {shown}", i + 1));
    }
    out
}

fn show_value(v: &[u8], binary: bool) -> String {
    let cut = v.len() > MAX_SHOWN_VALUE;
    let part = &v[..v.len().min(MAX_SHOWN_VALUE)];
    let mut shown = match (binary, std::str::from_utf8(part)) {
        (false, Ok(text)) => serde_json::Value::String(text.to_string()).to_string(),
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
            "UPDATE t SET a = $1 WHERE id = $2 AND b = $3\n-- $1 = \"x\\n-- $2 = 1\"\n-- $2 = NULL\n-- $3 = \\x00000007 (binary)"
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

    #[test]
    fn an_approved_portal_runs_on_and_a_new_bind_is_judged_again() {
        let mut h = HeldStatements::default();
        h.parsed(
            "s",
            Some(HeldStatement {
                sql: "UPDATE t SET a = $1".into(),
                reason: "r".into(),
                note: QueryNote::default(),
            }),
        );
        let frame = |v: &[u8]| {
            let mut body = b"p\0s\0\0\0\0\x01".to_vec();
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
            body.extend_from_slice(&[0, 0]);
            let mut f = vec![b'B'];
            f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
            f.extend_from_slice(&body);
            f
        };
        h.bound("p", "s", &frame(b"1")).unwrap();
        let run = h.pending_execute("p").unwrap().expect("judged");
        assert!(run.shown.ends_with("-- $1 = \"1\""), "{}", run.shown);
        h.started("p");
        assert!(
            h.pending_execute("p").unwrap().is_none(),
            "suspended run goes on"
        );
        h.bound("p", "s", &frame(b"2")).unwrap();
        assert!(
            h.pending_execute("p").unwrap().is_some(),
            "a new bind is a new run"
        );
        h.closed(None, Some("p"));
        assert!(h.pending_execute("p").unwrap().is_none());
        // Another statement bound into the portal is not held.
        h.bound("p", "other", &frame(b"3")).unwrap();
        assert!(h.pending_execute("p").unwrap().is_none());
    }
}
