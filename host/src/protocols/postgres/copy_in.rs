//! `COPY ... FROM STDIN` and the `Sync`s PostgreSQL ignores during it.
//!
//! While the server copies in, it reads only `CopyData`, `CopyDone` and
//! `CopyFail`, and ignores `Sync` and `Flush`. A driver that runs COPY over
//! the extended protocol sends `Bind`, `Execute`, `Sync` before it learns
//! that the copy started (tokio-postgres does): that `Sync` gets no
//! `ReadyForQuery` if the copy started, and one if it did not (the COPY
//! failed, or the portal was no COPY). The relay counts `ReadyForQuery`s to
//! know which batch an answer, an injected error or a result belongs to, so
//! it must know — not guess — which `Sync`s the server answers.
//!
//! - A `Sync` sent right after an `Execute` that may start a copy (only
//!   `Flush` between) is held: the relay sends `Flush` instead, waits for
//!   the server's answer to that `Execute`, and then forwards the `Sync`
//!   (no copy) or drops it (copy started: the server would have ignored
//!   it). A dropped `Sync` is not counted, so the count stays exact.
//! - A `Sync` after `CopyData` but before `CopyDone`/`CopyFail` is
//!   answered or not depending on whether a row failed: the session ends.
//! - After a simple `Query` that may COPY, anything but copy data before
//!   its `ReadyForQuery` ends the session (PostgreSQL refuses it too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::marked_names::MarkedNames;

/// COPY starts remembered per batch.
const MAX_COPIES: usize = 1024;

/// Whether SQL text the gateway did not parse may run `COPY`
/// (case-insensitively contains "copy"; too wide is harmless, too narrow
/// is not).
pub fn may_copy(sql: &str) -> bool {
    sql.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"copy"))
}

/// What the client is told when it breaks the copy protocol.
pub const SENT_DURING_COPY: &str = "a message the server would ignore or answer depending on the data was sent during COPY FROM STDIN (after a COPY query, anything but copy data before its ReadyForQuery; or a Sync between CopyData and CopyDone)";

/// A client message that breaks the copy protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message '{0}' sent during COPY FROM STDIN")]
pub struct SentDuringCopy(pub char);

/// What to do with a `Sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncAction {
    /// Forward and count it.
    Forward,
    /// Hold it until the server answers the `Execute` of batch `batch`,
    /// the `earlier`+1-th `Execute` of that batch.
    Decide {
        /// Number of the batch (its `ReadyForQuery`).
        batch: u64,
        /// `Execute`s of the batch before the one that may COPY.
        earlier: u64,
    },
    /// The copy started: the server ignores it; drop it uncounted.
    Drop,
}

/// An `Execute` that may have started a copy.
#[derive(Debug, Clone, Copy)]
struct Window {
    earlier: u64,
    /// `Some(true)` once the copy is known to have started.
    started: Option<bool>,
    data_seen: bool,
}

/// The client side: which statements and portals may COPY, and the open
/// window after an `Execute` that may.
#[derive(Debug, Default)]
pub struct CopyWatch {
    /// Statements that may COPY, and portals bound from them.
    copies: MarkedNames,
    window: Option<Window>,
    /// `Execute`s forwarded since the last `Sync`.
    executes: u64,
    /// The `ReadyForQuery` number of the last simple `Query` that may COPY.
    query_until: u64,
}

impl CopyWatch {
    /// Checks a client message (`ready_seen`: `ReadyForQuery`s passed to
    /// the client) and keeps the window up to date.
    pub fn message(&mut self, tag: u8, ready_seen: u64) -> Result<(), SentDuringCopy> {
        let copy_data = matches!(tag, b'd' | b'c' | b'f');
        if !copy_data && tag != b'H' && ready_seen < self.query_until {
            return Err(SentDuringCopy(char::from(tag)));
        }
        match (tag, &mut self.window) {
            (b'd', Some(w)) => w.data_seen = true,
            (b'S', Some(w)) if w.data_seen => return Err(SentDuringCopy('S')),
            (b'S' | b'H', _) => {}
            _ => self.window = None,
        }
        Ok(())
    }

    /// A `Parse` of `name`, of SQL that may be a COPY, was forwarded.
    pub fn parsed(&mut self, name: &str) {
        self.copies.mark_statement(name);
    }

    /// A `Bind` of `portal` from `statement` was forwarded.
    pub fn bound(&mut self, portal: &str, statement: &str) {
        self.copies.bound(portal, statement);
    }

    /// An `Execute` of `portal` was forwarded.
    pub fn executed(&mut self, portal: &str) {
        if self.copies.portal(portal) {
            self.window = Some(Window {
                earlier: self.executes,
                started: None,
                data_seen: false,
            });
        }
        self.executes += 1;
    }

    /// A simple `Query` that may COPY was forwarded; its `ReadyForQuery`
    /// is number `ready`.
    pub fn queried(&mut self, ready: u64) {
        self.query_until = ready;
    }

    /// A `Sync` arrived, which would end batch `batch`: what to do with it.
    pub fn sync(&mut self, batch: u64) -> SyncAction {
        match self.window {
            Some(Window {
                started: Some(true),
                ..
            }) => SyncAction::Drop,
            Some(w) => SyncAction::Decide {
                batch,
                earlier: w.earlier,
            },
            None => {
                self.executes = 0;
                SyncAction::Forward
            }
        }
    }

    /// The server answered the `Execute` a held `Sync` waited for.
    pub fn decided(&mut self, started: bool) {
        if started {
            if let Some(w) = &mut self.window {
                w.started = Some(true);
            }
        } else {
            // No copy: the Sync goes on and ends the batch.
            self.window = None;
            self.executes = 0;
        }
    }
}

/// Shared by both sides: the server's answer to an `Execute` a held `Sync`
/// waits for, and the count of `ReadyForQuery`s passed to the client.
#[derive(Debug, Default)]
pub struct CopyStart {
    state: Mutex<Waiting>,
    decided: tokio::sync::Notify,
    ready_seen: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiting {
    /// `ReadyForQuery`s seen: the batch being answered is the next.
    ready: u64,
    /// Execute completions of that batch so far.
    completions: u64,
    /// For each `CopyInResponse` of that batch, the number of completions
    /// before it (which `Execute` of the batch started copying).
    copies: Vec<u64>,
    /// Whether it failed (an error: the server skips to its Sync).
    failed: bool,
}

impl CopyStart {
    /// `ReadyForQuery`s passed to the client so far.
    pub fn ready_seen(&self) -> u64 {
        self.ready_seen.load(Ordering::Acquire)
    }

    /// The client side waits until `ReadyForQuery` number `ready` has been
    /// passed to the client.
    pub async fn wait_ready(&self, ready: u64) {
        loop {
            let notified = self.decided.notified();
            if self.ready_seen() >= ready {
                return;
            }
            notified.await;
        }
    }

    /// The client side waits until the server has answered the
    /// `earlier`+1-th `Execute` of batch `batch`: whether a copy started.
    pub async fn wait(&self, batch: u64, earlier: u64) -> bool {
        loop {
            let notified = self.decided.notified();
            {
                let w = self.state();
                if w.ready + 1 == batch {
                    if w.copies.contains(&earlier) {
                        return true;
                    }
                    if w.failed || w.completions > earlier {
                        return false;
                    }
                }
            }
            notified.await;
        }
    }

    /// The server side saw message `tag`, `ready` `ReadyForQuery`s so far
    /// (this one included, for a `ReadyForQuery`).
    pub fn server_message(&self, tag: u8, ready: u64) {
        // Rows and the rest: no lock in the per-message path.
        if !matches!(tag, b'Z' | b'C' | b's' | b'I' | b'G' | b'E') {
            return;
        }
        {
            let mut w = self.state();
            match tag {
                b'Z' => {
                    self.ready_seen.store(ready, Ordering::Release);
                    *w = Waiting {
                        ready,
                        ..Waiting::default()
                    };
                }
                b'C' | b's' | b'I' => w.completions += 1,
                b'G' => {
                    let at = w.completions;
                    if w.copies.len() < MAX_COPIES {
                        w.copies.push(at);
                    }
                }
                _ => w.failed = true,
            }
        }
        self.decided.notify_one();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_after_an_extended_copy_is_held_then_dropped_or_forwarded() {
        let mut w = CopyWatch::default();
        // tokio-postgres: Parse, Sync; Bind, Execute, Sync; data; CopyDone, Sync.
        w.message(b'P', 0).unwrap();
        w.parsed("s0");
        w.message(b'S', 0).unwrap();
        assert_eq!(w.sync(1), SyncAction::Forward);
        w.message(b'B', 1).unwrap();
        w.bound("", "s0");
        w.message(b'E', 1).unwrap();
        w.executed("");
        w.message(b'S', 1).unwrap();
        assert_eq!(
            w.sync(2),
            SyncAction::Decide {
                batch: 2,
                earlier: 0
            }
        );
        w.decided(true);
        // A second Sync before any data: ignored as well.
        w.message(b'S', 1).unwrap();
        assert_eq!(w.sync(2), SyncAction::Drop);
        w.message(b'd', 1).unwrap();
        w.message(b'c', 1).unwrap();
        w.message(b'S', 1).unwrap();
        assert_eq!(
            w.sync(2),
            SyncAction::Forward,
            "after CopyDone the Sync counts"
        );
        // A portal bound from another statement is no window.
        w.message(b'B', 2).unwrap();
        w.bound("q", "s1");
        w.message(b'E', 2).unwrap();
        w.executed("q");
        w.message(b'S', 2).unwrap();
        assert_eq!(w.sync(3), SyncAction::Forward);
    }

    #[test]
    fn a_sync_between_copy_data_and_copy_done_breaks_the_protocol() {
        let mut w = CopyWatch::default();
        w.parsed("s0");
        w.bound("", "s0");
        w.executed("");
        assert!(matches!(w.sync(1), SyncAction::Decide { .. }));
        w.decided(true);
        w.message(b'd', 0).unwrap();
        assert_eq!(w.message(b'S', 0), Err(SentDuringCopy('S')));
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

    #[tokio::test]
    async fn the_outcome_is_the_awaited_execute_s_own_answer() {
        let s = std::sync::Arc::new(CopyStart::default());
        // Batch 2's second Execute may COPY; batch 1 is still answering.
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait(2, 1).await })
        };
        tokio::task::yield_now().await;
        s.server_message(b'C', 0); // batch 1
        s.server_message(b'Z', 1);
        s.server_message(b'C', 1); // batch 2, first Execute
        s.server_message(b'G', 1); // the awaited one starts copying
        assert!(waiter.await.unwrap());
        // No copy: the awaited Execute completes.
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait(3, 0).await })
        };
        tokio::task::yield_now().await;
        s.server_message(b'Z', 2);
        s.server_message(b'C', 2);
        assert!(!waiter.await.unwrap());
        // Two COPYs in one batch: the second one's own start counts.
        s.server_message(b'Z', 3);
        s.server_message(b'G', 3);
        s.server_message(b'C', 3);
        s.server_message(b'G', 3);
        let second = s.wait(4, 1);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), second)
                .await
                .expect("no hang")
        );
    }
}
