//! `COPY ... FROM STDIN` and the messages PostgreSQL ignores during it.
//!
//! While the server copies in, it reads only `CopyData`, `CopyDone` and
//! `CopyFail`, and ignores `Sync` and `Flush`. A driver that runs COPY over
//! the extended protocol sends `Bind`, `Execute`, `Sync` before it learns
//! that the copy started (tokio-postgres does), so that `Sync` gets no
//! `ReadyForQuery` — unless the COPY failed to start, when it does. The
//! relay counts `ReadyForQuery`s to know which batch an answer, an error it
//! injects, or a result's statement belongs to, so it must know which
//! `Sync`s the server ignored.
//!
//! - The client side marks every `Sync` sent right after an `Execute` that
//!   may start a copy (only `Flush` or `CopyData` between) as *ignorable*,
//!   in a window that `CopyDone`, `CopyFail` or any other message closes.
//! - The server side, on `CopyInResponse`, drops the ignorable `Sync`s of
//!   the window that starts with the batch being answered: they are
//!   counted as if their `ReadyForQuery` had come.
//! - A simple `Query` may run several COPYs, between which a `Sync` could
//!   be read or not: a client that sends anything but copy data after such
//!   a `Query`, before its `ReadyForQuery`, breaks the protocol and its
//!   session ends.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Statements remembered as possible COPYs before every `Execute` counts
/// as one.
const MAX_COPY_STATEMENTS: usize = 1024;

/// Whether SQL text the gateway did not parse may run `COPY`
/// (case-insensitively contains "copy"; too wide is harmless, too narrow
/// is not).
pub fn may_copy(sql: &str) -> bool {
    sql.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"copy"))
}

/// A client message sent while a `COPY` query may still be copying in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message '{0}' sent before the COPY query's ReadyForQuery")]
pub struct SentDuringCopy(pub char);

/// What the client is told when it sends [`SentDuringCopy`].
pub const SENT_DURING_COPY: &str = "a message other than CopyData, CopyDone or CopyFail was sent after a COPY query, before its ReadyForQuery; during COPY FROM STDIN PostgreSQL ignores or refuses such messages";

/// The client side: which statements and portals may COPY, and the open
/// window of ignorable `Sync`s.
#[derive(Debug, Default)]
pub struct CopyWatch {
    statements: HashSet<String>,
    portals: HashSet<String>,
    /// Too many statements to remember: every `Execute` may COPY.
    every: bool,
    /// The open window, if any.
    window: Option<u64>,
    next_window: u64,
    /// The `ReadyForQuery` number of the last simple `Query` that may COPY.
    query_until: u64,
}

impl CopyWatch {
    /// Checks a client message against a COPY query still running
    /// (`ready_seen`: `ReadyForQuery`s the client has been sent), and
    /// closes the window for anything but `Sync`, `Flush` and `CopyData`.
    pub fn message(&mut self, tag: u8, ready_seen: u64) -> Result<(), SentDuringCopy> {
        let copy_data = matches!(tag, b'd' | b'c' | b'f');
        if !copy_data && tag != b'H' && ready_seen < self.query_until {
            return Err(SentDuringCopy(char::from(tag)));
        }
        if !matches!(tag, b'S' | b'H' | b'd') {
            self.window = None;
        }
        Ok(())
    }

    /// A `Parse` of `name`, of SQL that may be a COPY, was forwarded.
    pub fn parsed(&mut self, name: &str) {
        if self.statements.len() >= MAX_COPY_STATEMENTS {
            self.every = true;
        } else {
            self.statements.insert(name.to_string());
        }
    }

    /// A `Bind` of `portal` from `statement` was forwarded. A portal that
    /// may have been bound from a COPY stays one: the server may have
    /// skipped a later `Bind` of its name (after an error) and kept it.
    pub fn bound(&mut self, portal: &str, statement: &str) {
        if self.every || self.statements.contains(statement) {
            if self.portals.len() >= MAX_COPY_STATEMENTS {
                self.every = true;
            } else {
                self.portals.insert(portal.to_string());
            }
        }
    }

    /// An `Execute` of `portal` was forwarded: a window opens when it may
    /// COPY (a portal the client did not bind may be a cursor, never a
    /// COPY).
    pub fn executed(&mut self, portal: &str) {
        if self.every || self.portals.contains(portal) {
            self.window = Some(self.next_window);
            self.next_window += 1;
        }
    }

    /// A simple `Query` that may COPY was forwarded; its `ReadyForQuery`
    /// is number `ready`.
    pub fn queried(&mut self, ready: u64) {
        self.query_until = ready;
    }

    /// A `Sync` is forwarded: the window it is ignorable in, if any.
    pub fn sync(&self) -> Option<u64> {
        self.window
    }
}

/// Shared by both sides: the ignorable `Sync`s and the count of
/// `ReadyForQuery`s passed on to the client.
#[derive(Debug, Default)]
pub struct IgnorableSyncs {
    /// (number of the `Sync`, window), in order.
    pending: Mutex<VecDeque<(u64, u64)>>,
    ready_seen: AtomicU64,
}

impl IgnorableSyncs {
    /// `Sync` number `sync` is ignorable in `window`.
    pub fn mark(&self, sync: u64, window: u64) {
        self.pending().push_back((sync, window));
    }

    /// `ReadyForQuery`s passed to the client so far.
    pub fn ready_seen(&self) -> u64 {
        self.ready_seen.load(Ordering::Acquire)
    }

    /// `ReadyForQuery` number `ready` arrived (or was counted).
    pub fn ready(&self, ready: u64) {
        self.ready_seen.store(ready, Ordering::Release);
        let mut p = self.pending();
        while p.front().is_some_and(|&(s, _)| s <= ready) {
            p.pop_front();
        }
    }

    /// The server started copying in, answering the batch after
    /// `ReadyForQuery` number `ready`: how many ignorable `Sync`s it will
    /// not answer (they follow at once in the numbering).
    pub fn copy_started(&self, ready: u64) -> u64 {
        let mut p = self.pending();
        while p.front().is_some_and(|&(s, _)| s <= ready) {
            p.pop_front();
        }
        let Some(&(first, window)) = p.front() else {
            return 0;
        };
        if first != ready + 1 {
            return 0;
        }
        let mut n = 0;
        while p.front().is_some_and(|&(_, w)| w == window) {
            p.pop_front();
            n += 1;
        }
        n
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_after_an_extended_copy_is_ignorable_and_dropped_when_it_starts() {
        let mut w = CopyWatch::default();
        let shared = IgnorableSyncs::default();
        // tokio-postgres: Parse, Sync; Bind, Execute, Sync; data; CopyDone, Sync.
        w.message(b'P', 0).unwrap();
        w.parsed("s0");
        w.message(b'S', 0).unwrap();
        assert_eq!(w.sync(), None);
        w.message(b'B', 1).unwrap();
        w.bound("", "s0");
        w.message(b'E', 1).unwrap();
        w.executed("");
        w.message(b'S', 1).unwrap();
        let window = w.sync().expect("ignorable");
        shared.mark(2, window);
        w.message(b'd', 1).unwrap();
        w.message(b'c', 1).unwrap();
        w.message(b'S', 1).unwrap();
        assert_eq!(w.sync(), None, "after CopyDone the Sync counts");
        // The server answers Sync 1, then starts copying in.
        shared.ready(1);
        assert_eq!(shared.copy_started(1), 1);
        assert_eq!(shared.copy_started(2), 0);
    }

    #[test]
    fn a_copy_that_fails_to_start_leaves_its_sync_counted() {
        let mut w = CopyWatch::default();
        let shared = IgnorableSyncs::default();
        w.parsed("s0");
        w.bound("p", "s0");
        w.executed("p");
        w.message(b'S', 0).unwrap();
        shared.mark(1, w.sync().expect("ignorable"));
        // An error and ReadyForQuery 1: the Sync was answered.
        shared.ready(1);
        assert_eq!(shared.copy_started(1), 0);
        // A portal bound from another statement opens no window ...
        w.message(b'B', 1).unwrap();
        w.bound("q", "s1");
        w.message(b'E', 1).unwrap();
        w.executed("q");
        w.message(b'S', 1).unwrap();
        assert_eq!(w.sync(), None);
        // ... but a name once bound from a COPY stays suspect.
        w.message(b'B', 1).unwrap();
        w.bound("p", "s1");
        w.message(b'E', 1).unwrap();
        w.executed("p");
        w.message(b'S', 1).unwrap();
        assert!(w.sync().is_some());
    }

    #[test]
    fn windows_are_told_apart() {
        let shared = IgnorableSyncs::default();
        shared.mark(3, 0);
        shared.mark(4, 0);
        shared.mark(5, 1);
        assert_eq!(shared.copy_started(2), 2);
        assert_eq!(shared.copy_started(4), 1);
    }

    #[test]
    fn nothing_but_copy_data_may_follow_a_copy_query_before_its_answer() {
        let mut w = CopyWatch::default();
        w.queried(3);
        for tag in [b'd', b'c', b'f', b'H'] {
            w.message(tag, 2).unwrap();
        }
        for tag in [b'S', b'P', b'B', b'E', b'Q'] {
            assert_eq!(w.message(tag, 2), Err(SentDuringCopy(char::from(tag))));
        }
        w.message(b'S', 3).unwrap();
    }
}
