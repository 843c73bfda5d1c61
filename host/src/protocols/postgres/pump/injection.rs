//! Refusals that must reach the client in order: the statement sent
//! upstream in a refused one's place (it fails with a marker only this
//! session knows), and the queue of errors written just before the
//! `ReadyForQuery` that ends their batch.

use bytes::{Bytes, BytesMut};

use super::Shared;
use crate::protocols::postgres::codec::error_response::ErrorFields;
use crate::protocols::postgres::codec::tags::frontend as fe;
use crate::protocols::postgres::codec::{query, sqlstate};

/// An error to write to the client just before `ReadyForQuery` number `seq`.
pub(super) struct Injection {
    seq: u64,
    bytes: Bytes,
}

/// The error a client gets when its statement could not be recorded.
pub(super) fn audit_failure_bytes(e: &crate::audit::AuditError) -> Bytes {
    let mut b = BytesMut::new();
    ErrorFields::error(
        sqlstate::SYSTEM_ERROR,
        format!("the statement was not run because the gateway could not record it first ({e})"),
    )
    .with_hint("this target requires every statement to be recorded before it runs; try again, and tell the gateway operator if it persists")
    .encode(&mut b);
    b.freeze()
}

/// Text only this session's relay puts in a statement (a fresh random
/// reference per session): the upstream error it provokes for a refusal
/// carries it, and no other error can.
pub(super) fn new_refusal_marker() -> String {
    format!(
        "portcullis refused a statement (ref {:016x}{:016x})",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// A statement that fails in PostgreSQL's parse analysis (22P02), with the
/// marker in its error: sent upstream in place of a refused one, so the
/// server fails there as it would have, and a transaction block is left
/// aborted exactly as the refused statement's own error would have left it.
fn refusal_sql(marker: &str) -> String {
    format!("SELECT '{marker}'::int")
}

/// The failing statement as a simple `Query` (for a refused `Query` or
/// `FunctionCall`: it ends in its own `ReadyForQuery`).
pub(super) fn failing_query(marker: &str) -> Bytes {
    let mut b = BytesMut::new();
    query::encode(&mut b, &refusal_sql(marker));
    b.freeze()
}

/// The failing statement as a `Parse` under a name nothing else uses (for a
/// refusal inside an extended batch: the server fails there and skips the
/// rest of the batch up to its `Sync`, which the client sends).
pub(super) fn failing_parse(marker: &str) -> Bytes {
    let mut b = BytesMut::new();
    crate::protocols::postgres::codec::MessageWriter::start(&mut b, Some(fe::PARSE))
        .cstr("_portcullis_refused")
        .cstr(&refusal_sql(marker))
        .i16(0);
    b.freeze()
}

/// Refuses the rest of an extended batch with `err`: the refusal is queued
/// at once for the `ReadyForQuery` of the batch's `Sync` (number `syncs +
/// 1`: no Query or FunctionCall can come before it), because the server
/// answers the failing statement sent in its place right away — a client
/// that sends Flush and waits before its Sync must still get the refusal,
/// not the marked error. Returns what `pending_error` holds while the rest
/// of the batch is discarded.
pub(super) fn refuse_batch(shared: &Shared, syncs: u64, err: Bytes) -> Bytes {
    shared.push_injection(syncs + 1, err.clone());
    err
}

impl Shared {
    /// Whether an error injection waits for `ReadyForQuery` number `seq`.
    pub(super) fn injection_pending(&self, seq: u64) -> bool {
        let q = self.injections.lock().unwrap_or_else(|p| p.into_inner());
        q.front().is_some_and(|i| i.seq == seq)
    }

    /// Queues `bytes` for just before `ReadyForQuery` number `seq`.
    pub(super) fn push_injection(&self, seq: u64, bytes: Bytes) {
        let mut q = self.injections.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(Injection { seq, bytes });
    }

    /// The error queued for `ReadyForQuery` number `seq`, if one is.
    pub(super) fn take_injection(&self, seq: u64) -> Option<Bytes> {
        let mut q = self.injections.lock().unwrap_or_else(|p| p.into_inner());
        if q.front().is_some_and(|i| i.seq == seq) {
            q.pop_front().map(|i| i.bytes)
        } else {
            None
        }
    }
}
