//! How the client→server side judges a statement beyond the policy's own
//! verdict: the summary it is judged by, what the host itself refuses
//! (read-only sessions, a pinned upstream role), the statements a SQL
//! `PREPARE` prepares, and the statements after which the gateway can no
//! longer read what follows (unread code, a switch of how strings parse).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Shared;
use crate::policy::{QueryEvent, QueryNote, Verdict};
use crate::protocols::postgres::codec::error_response::ErrorFields;
use crate::protocols::postgres::codec::sqlstate;

/// Why the host itself refuses the statement summarized in `note` before
/// any plugin sees it: a read-only session's write, or what could leave a
/// pinned session's upstream role. Notes who decided.
pub(super) fn host_refusal(shared: &Shared, note: &mut QueryNote) -> Option<String> {
    let summary = note.summary.as_ref()?;
    let refusal = shared
        .read_only
        .then(|| super::super::read_only::violation(summary))
        .flatten()
        .map(|why| ("read-only token", "read-only", why));
    let refusal = refusal.or_else(|| {
        let role = shared.upstream_role.as_deref()?;
        super::super::role_lock::violation(summary, role)
            .map(|why| ("upstream role", "role-lock", why))
    });
    let (decider, rule, why) = refusal?;
    note.decided_by = Some(decider.into());
    note.rule = Some(rule.into());
    Some(why)
}

/// Why a statement whose text is not ASCII is refused in the middle of
/// a batch.
pub(super) const NON_ASCII_MID_BATCH: &str = "a statement whose text is not ASCII must start its batch (send Sync before it): until the server has answered what runs before it, the gateway cannot know which client_encoding the server reads it in";

/// Why the rest of a batch is refused after code the gateway cannot read.
pub(super) const UNREAD_CODE_REFUSAL: &str = "after a statement that runs code the gateway cannot read (DO, dynamic SQL), the batch must end (Sync) before the next statement: that code may change how the server reads what follows";

/// Statements and portals that run code the gateway cannot read, and the
/// `ReadyForQuery` the next statement waits for.
#[derive(Default)]
pub(super) struct UnreadCode {
    /// Statements and portals that run such code.
    pub names: super::super::marked_names::MarkedNames,
    /// Such a portal ran in the batch not yet ended by Sync.
    pub in_batch: bool,
    /// The `ReadyForQuery` to wait for before judging the next statement.
    pub barrier: u64,
}

/// Whether the statement judged in `note` runs code the gateway cannot
/// read: a `DO` block, dynamic SQL, a routine it could not read.
pub(super) fn runs_unread_code(note: &QueryNote) -> bool {
    note.summary.as_ref().is_some_and(|s| {
        s.statements
            .iter()
            .any(|st| st.kind == "do" || !st.unknown_effects.is_empty())
    })
}

/// Whether the statement judged in `note` may turn
/// `standard_conforming_strings` off.
pub(super) fn changes_parsing(note: &QueryNote) -> bool {
    note.summary
        .as_ref()
        .is_some_and(|s| s.statements.iter().any(|st| st.changes_parsing))
}

/// Why a statement that may turn `standard_conforming_strings` off is
/// refused.
pub(super) const PARSING_REFUSAL: &str = "standard_conforming_strings must stay on, and client_encoding one the gateway reads (UTF8, SQL_ASCII or a single-byte encoding such as LATIN1 or WIN1252), through this gateway: otherwise PostgreSQL would read the statements that follow differently from the gateway's checks; use E'...' strings for escapes, and convert multibyte text such as SJIS or BIG5 to UTF-8 in the client";

/// Whether the statement judged in `note` creates or changes code or
/// relations (the target's code cache is then out of date).
pub(super) fn changes_catalog(note: &QueryNote) -> bool {
    note.summary.as_ref().is_some_and(|s| {
        s.statements
            .iter()
            .any(|st| st.creates_code || matches!(st.kind.as_str(), "create" | "alter" | "drop"))
    })
}

/// The summary the host and the policy judge `sql` by — with the effects
/// of the code it runs — or `None` when neither reads SQL.
pub(super) async fn judged_summary(
    shared: &Shared,
    sql: &str,
) -> Option<Arc<crate::protocols::postgres::sql::QuerySummary>> {
    let catalog = &shared.catalog;
    if !shared.judges_sql {
        return None;
    }
    let base = crate::protocols::postgres::sql::shared_cache().get(sql);
    Some(
        catalog
            .with_code_effects(sql, base, shared.wants_rows)
            .await,
    )
}

/// A SQL `PREPARE` is also judged by the statement it prepares, as if that
/// were sent alone: a rule about updates to a table then holds (or
/// refuses) `PREPARE w AS UPDATE ...` too, and the relay holds each
/// `EXECUTE w` as a run of it. Returns the strictest verdict over the
/// prepared statements with its note (deciding plugin, rule, approval
/// terms); the caller keeps the stricter of this and its own.
pub(super) async fn judge_prepared(shared: &Shared, note: &QueryNote) -> (Verdict, QueryNote) {
    // A policy that made no summary did not read the SQL (pass-through):
    // nothing to judge, and no parse added to its hot path.
    let Some(summary) = note.summary.as_ref() else {
        return (Verdict::Allow, QueryNote::default());
    };
    let prepares = summary.statements.iter().filter(|st| st.kind == "prepare");
    let mut strictest = Verdict::Allow;
    let mut strictest_note = QueryNote::default();
    for st in prepares {
        let Some(prepared) = st.prepared_query.as_deref() else {
            // Fail closed: what cannot be read cannot be judged.
            let unreadable = QueryNote {
                decided_by: Some("gateway".into()),
                rule: Some("unreadable-prepare".into()),
                ..Default::default()
            };
            let verdict = Verdict::Deny {
                reason: "the gateway could not read the statement this PREPARE prepares, so it cannot judge it; prepare it with the extended protocol (a driver's prepared statement) instead".into(),
            };
            return (verdict, unreadable);
        };
        let mut inner = QueryNote {
            summary: judged_summary(shared, prepared).await,
            ..Default::default()
        };
        let verdict = shared
            .policy()
            .on_query(QueryEvent::Simple { sql: prepared }, &mut inner);
        if verdict.strictness() > strictest.strictness() {
            strictest = verdict;
            strictest_note = inner;
        }
    }
    (strictest, strictest_note)
}

/// The error a refused statement gets, for a verdict that refuses.
pub(super) fn denial_bytes(verdict: &Verdict) -> Option<Bytes> {
    let fields = match verdict {
        Verdict::Allow => return None,
        Verdict::Deny { reason } => {
            ErrorFields::error(sqlstate::INSUFFICIENT_PRIVILEGE, reason.clone()).with_hint(
                "the statement was not run; change it, or ask the gateway operator about the rule",
            )
        }
        Verdict::RequireApproval { reason } => ErrorFields::error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("statement needs approval: {reason}"),
        )
        .with_hint("this message cannot be held for approval; ask the gateway operator"),
    };
    let mut b = BytesMut::new();
    fields.encode(&mut b);
    Some(b.freeze())
}
