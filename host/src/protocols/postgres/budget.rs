//! The gateway-wide budget of memory for client messages that arrive in
//! pieces.
//!
//! A `Query` or `Parse` is held whole before the policy sees it, so a client
//! can make the gateway buffer up to `max_message_bytes` per session. Each
//! session's buffer only grows as bytes arrive (see `pump`), but enough
//! sessions each sending a large message would still add up; this budget
//! caps the total. A session holds a [`BudgetShare`] for its incomplete
//! message (only when it is larger than one read chunk, so small messages
//! never touch the shared counter) and gives it back when the message is
//! complete or the session ends, whichever way it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a session may not buffer its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The message alone is larger than the whole budget: it can never fit.
    #[error("the {announced}-byte message is larger than the gateway's whole budget for buffered messages ({limit} bytes)")]
    TooLarge {
        /// The message's announced length.
        announced: usize,
        /// The budget.
        limit: usize,
    },
    /// The budget is taken by other sessions' messages at the moment.
    #[error("the gateway is out of memory for buffered messages: buffering this {announced}-byte message would take the total over {limit} bytes ({in_use} bytes are in use)")]
    Exhausted {
        /// The message's announced length.
        announced: usize,
        /// The budget.
        limit: usize,
        /// Bytes held by all sessions when the request was refused.
        in_use: usize,
    },
}

/// The memory all sessions together may hold for incomplete messages.
#[derive(Debug)]
pub struct MessageBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MessageBudget {
    /// A budget of `limit` bytes, none of it in use.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// The configured total.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by all sessions now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit; returns the bytes in use when they don't.
    fn try_take(&self, n: usize) -> Result<(), usize> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let next = match used.checked_add(n) {
                Some(next) if next <= self.limit => next,
                _ => return Err(used),
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Gives back `n` bytes taken before.
    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One session's part of the budget; everything it holds is given back
/// when it is released or dropped.
#[derive(Debug)]
pub struct BudgetShare {
    budget: Arc<MessageBudget>,
    held: usize,
}

impl BudgetShare {
    /// A share holding nothing yet.
    pub fn new(budget: Arc<MessageBudget>) -> Self {
        Self { budget, held: 0 }
    }

    /// Bytes this share holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Makes the share hold at least `bytes` for a message of `announced`
    /// bytes (never less than it holds already). A message larger than the
    /// whole budget is refused before anything is taken.
    pub fn hold(&mut self, announced: usize, bytes: usize) -> Result<(), BudgetError> {
        let limit = self.budget.limit();
        if announced > limit {
            return Err(BudgetError::TooLarge { announced, limit });
        }
        if bytes <= self.held {
            return Ok(());
        }
        let more = bytes - self.held;
        self.budget
            .try_take(more)
            .map_err(|in_use| BudgetError::Exhausted {
                announced,
                limit,
                in_use,
            })?;
        self.held = bytes;
        Ok(())
    }

    /// Gives back everything the share holds.
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.held = 0;
        }
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_within_the_budget_and_give_everything_back() {
        let budget = Arc::new(MessageBudget::new(1000));
        let mut a = BudgetShare::new(budget.clone());
        a.hold(900, 300).unwrap();
        a.hold(900, 600).unwrap();
        a.hold(900, 500).unwrap(); // never shrinks while the message lasts
        assert_eq!((a.held(), budget.in_use()), (600, 600));
        let mut b = BudgetShare::new(budget.clone());
        assert_eq!(
            b.hold(800, 500),
            Err(BudgetError::Exhausted {
                announced: 800,
                limit: 1000,
                in_use: 600
            })
        );
        assert_eq!(b.held(), 0, "a refused share takes nothing");
        a.release();
        assert_eq!(budget.in_use(), 0);
        b.hold(800, 500).unwrap();
        drop(b);
        assert_eq!(budget.in_use(), 0, "dropping a share gives it back");
    }

    #[test]
    fn a_message_larger_than_the_budget_is_refused_before_anything_is_taken() {
        let budget = Arc::new(MessageBudget::new(1000));
        let mut a = BudgetShare::new(budget.clone());
        assert_eq!(
            a.hold(1001, 10),
            Err(BudgetError::TooLarge {
                announced: 1001,
                limit: 1000
            })
        );
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_shares_never_exceed_the_budget() {
        let budget = Arc::new(MessageBudget::new(10_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000usize {
                        let mut s = BudgetShare::new(budget.clone());
                        let _ = s.hold(5_000, 1 + i % 5_000);
                        assert!(budget.in_use() <= 10_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(budget.in_use(), 0);
    }
}
