//! Prepared statements marked for something (they may COPY, they run code
//! the gateway cannot read), and the portals bound from them, as the client
//! sent them. A mark is never taken back: the server may have skipped a
//! later `Parse` or `Bind` of the same name (after an error) and kept the
//! marked one. Beyond [`MAX_MARKED`] names every portal counts as marked.

use std::collections::HashSet;

/// Names remembered before every portal counts as marked.
pub const MAX_MARKED: usize = 1024;

/// Marked statements and the portals bound from them.
#[derive(Debug, Default)]
pub struct MarkedNames {
    statements: HashSet<String>,
    portals: HashSet<String>,
    /// Too many names to remember: every portal is marked.
    every: bool,
}

impl MarkedNames {
    /// A `Parse` of `name`, of a statement to mark, was forwarded.
    pub fn mark_statement(&mut self, name: &str) {
        if self.statements.len() >= MAX_MARKED {
            self.every = true;
        } else {
            self.statements.insert(name.to_string());
        }
    }

    /// A `Bind` of `portal` from `statement` was forwarded.
    pub fn bound(&mut self, portal: &str, statement: &str) {
        if self.every || self.statements.contains(statement) {
            if self.portals.len() >= MAX_MARKED {
                self.every = true;
            } else {
                self.portals.insert(portal.to_string());
            }
        }
    }

    /// Whether `portal` may run a marked statement.
    pub fn portal(&self, portal: &str) -> bool {
        self.every || self.portals.contains(portal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portals_of_marked_statements_stay_marked() {
        let mut m = MarkedNames::default();
        m.mark_statement("s");
        m.bound("p", "s");
        m.bound("q", "other");
        assert!(m.portal("p"));
        assert!(!m.portal("q"));
        // Rebound from another statement: still marked.
        m.bound("p", "other");
        assert!(m.portal("p"));
    }

    #[test]
    fn beyond_the_bound_every_portal_is_marked() {
        let mut m = MarkedNames::default();
        for i in 0..=MAX_MARKED {
            m.mark_statement(&format!("s{i}"));
        }
        assert!(m.portal("never bound"));
    }
}
