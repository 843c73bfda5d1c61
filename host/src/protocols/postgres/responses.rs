//! The order of the server's answers: which response belongs to which client
//! message, so that each result's rows meet the description that says what
//! they are. Kept only while a policy watches rows.
//!
//! The client→server side pushes one [`Expect`] per message the server will
//! answer, in the order it forwards them; the server→client side pops them as
//! the answers arrive. After an error the server skips everything up to the
//! next `Sync`, so the entries of that stretch are dropped with it.
//!
//! With the extended protocol a client may `Execute` a portal it never
//! described (its statement was described at prepare time, before `Bind`
//! chose the result formats). For such a portal the relay sends its own
//! `Describe` just before the `Execute` and keeps the answer from the client:
//! rows are then always read with their real formats.

use std::collections::VecDeque;

use super::result_lineage::{Closed, Judged};

/// One answer (or run of answers) the server owes the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `Parse` → `ParseComplete`.
    ParseComplete {
        /// Statement name.
        statement: String,
        /// What the statement was judged as.
        summary: Judged,
    },
    /// `Bind` → `BindComplete`; the portal's earlier description is void.
    BindComplete {
        /// Portal name.
        portal: String,
        /// The prepared statement it is bound from.
        statement: String,
    },
    /// `Close` → `CloseComplete`.
    CloseComplete {
        /// What it closes.
        closed: Closed,
    },
    /// `Describe` of a statement → `ParameterDescription`, then
    /// `RowDescription` or `NoData` (a shape, not a result).
    StatementDescription,
    /// `Describe` of a portal → `RowDescription` or `NoData`.
    PortalDescription {
        /// Portal name.
        portal: String,
        /// `false` when the gateway asked, so the client must not see it.
        forward: bool,
    },
    /// `Execute` → rows of the portal, then `CommandComplete`,
    /// `PortalSuspended`, `EmptyQueryResponse` or an error.
    Execute {
        /// Portal name.
        portal: String,
    },
    /// `Query`, `Sync` or `FunctionCall` → everything up to `ReadyForQuery`.
    Ready {
        /// Whether it is a simple `Query`, whose results carry their own
        /// `RowDescription`.
        query: bool,
        /// For a `Query`: what its statements were judged as.
        summary: Judged,
    },
}

impl Expect {
    /// The end of a `Sync` or `FunctionCall` (or of a refused `Query`).
    pub fn sync() -> Self {
        Expect::Ready {
            query: false,
            summary: Judged(None),
        }
    }
}

/// The queue of owed answers.
#[derive(Debug, Default)]
pub struct Expected {
    queue: VecDeque<Expect>,
}

impl Expected {
    /// The client sent a message the server will answer.
    pub fn push(&mut self, e: Expect) {
        self.queue.push_back(e);
    }

    /// The answer the server owes next.
    pub fn front(&self) -> Option<&Expect> {
        self.queue.front()
    }

    /// The front answer has fully arrived.
    pub fn pop(&mut self) -> Option<Expect> {
        self.queue.pop_front()
    }

    /// An error arrived: the server skips to the next `Sync` (or ends the
    /// `Query`), so every extended-protocol entry before it is void.
    pub fn skip_to_ready(&mut self) {
        while self
            .queue
            .front()
            .is_some_and(|e| !matches!(e, Expect::Ready { .. }))
        {
            self.queue.pop_front();
        }
    }

    /// `ReadyForQuery` arrived: it ends the first `Ready` entry (and any
    /// entry before it that the server never answered).
    pub fn ready(&mut self) {
        while let Some(e) = self.queue.pop_front() {
            if matches!(e, Expect::Ready { .. }) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_voids_the_rest_of_the_batch_but_not_the_next() {
        let mut q = Expected::default();
        let parse = Expect::ParseComplete {
            statement: String::new(),
            summary: Judged(None),
        };
        q.push(parse.clone());
        q.push(Expect::Execute { portal: "".into() });
        q.push(Expect::sync());
        q.push(parse.clone());
        q.pop();
        q.skip_to_ready();
        assert_eq!(q.front(), Some(&Expect::sync()));
        q.ready();
        assert_eq!(q.front(), Some(&parse));
    }
}
