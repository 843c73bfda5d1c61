//! Which statement each result comes from, so that the policy is told where
//! the result's columns come from (their lineage) when it plans the result.
//!
//! - A simple `Query`: its statements answer in order, each ending with
//!   `CommandComplete`, so a result belongs to the statement numbered by
//!   the `CommandComplete`s before it.
//! - The extended protocol: an `Execute` runs a portal, bound from a
//!   prepared statement. Names are tracked as the server confirms them — a
//!   `Parse` counts at its `ParseComplete`, a `Bind` at its `BindComplete`,
//!   a `Close` at its `CloseComplete` — so a message the server skipped
//!   after an error (a second `Parse` of a taken name, say) changes nothing
//!   here either.
//!
//! Statements and portals made in SQL (`PREPARE`, `DECLARE`) are not
//! tracked: their results have no lineage, and a policy judges them when
//! they are prepared or declared.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::sql::lineage::Lineage;
use crate::sql::QuerySummary;

/// Prepared statements (or portals) tracked per session. Beyond this the
/// session ends rather than forget one: a forgotten statement's results
/// would reach the policy without their lineage.
pub const MAX_NAMES: usize = 10_000;

/// The summary of a `Query` or a `Parse`, compared by identity (the same
/// judged summary), carried with the answers the server owes.
#[derive(Debug, Clone, Default)]
pub struct Judged(pub Option<Arc<QuerySummary>>);

impl PartialEq for Judged {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for Judged {}

/// What a `Close` closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A prepared statement.
    Statement(String),
    /// A portal.
    Portal(String),
}

/// More statements or portals than [`MAX_NAMES`] at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this session keeps more than {MAX_NAMES} prepared statements or portals open, more than the gateway tracks; close those it no longer uses")]
pub struct TooManyNames;

/// Prepared statements and portals as the server knows them, each with the
/// summary it was prepared from.
#[derive(Debug, Default)]
pub struct Names {
    statements: HashMap<String, Judged>,
    portals: HashMap<String, Judged>,
}

impl Names {
    /// The server confirmed a `Parse` of `name`.
    pub fn parsed(&mut self, name: String, summary: Judged) -> Result<(), TooManyNames> {
        insert(&mut self.statements, name, summary)
    }

    /// The server confirmed a `Bind` of `portal` from `statement`.
    pub fn bound(&mut self, portal: String, statement: &str) -> Result<(), TooManyNames> {
        let summary = self.statements.get(statement).cloned().unwrap_or_default();
        insert(&mut self.portals, portal, summary)
    }

    /// The server confirmed a `Close`.
    pub fn closed(&mut self, closed: &Closed) {
        match closed {
            Closed::Statement(name) => self.statements.remove(name),
            Closed::Portal(name) => self.portals.remove(name),
        };
    }

    /// The summary behind `portal`, when the gateway saw it prepared.
    pub fn portal(&self, portal: &str) -> Option<&Judged> {
        self.portals.get(portal)
    }
}

fn insert(
    map: &mut HashMap<String, Judged>,
    name: String,
    summary: Judged,
) -> Result<(), TooManyNames> {
    if map.len() >= MAX_NAMES && !map.contains_key(&name) {
        return Err(TooManyNames);
    }
    map.insert(name, summary);
    Ok(())
}

/// The lineage of the result of statement `index` of `summary`, a result
/// with `columns` columns. `None` when there is none to give (no summary,
/// no lineage, a statement whose columns the analysis could not count).
/// When the analysis counted a different number of columns than the
/// server describes, every column is unknown and may come from any of the
/// statement's sources.
pub fn of_result(summary: &Judged, index: usize, columns: usize) -> Option<Cow<'_, [Lineage]>> {
    let statement = summary.0.as_ref()?.lineage.as_ref()?.get(index)?;
    let output = statement.output.as_ref()?;
    if output.len() == columns {
        return Some(Cow::Borrowed(output.as_slice()));
    }
    let sources: std::collections::BTreeSet<_> = output
        .iter()
        .flat_map(|l| l.sources.iter().cloned())
        .collect();
    let every = Lineage {
        sources,
        unknown: true,
        origin: None,
    };
    Some(Cow::Owned(vec![every; columns]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lineage::{SourceColumn, StatementLineage};

    fn judged(outputs: Vec<Option<Vec<Lineage>>>) -> Judged {
        let lineage = outputs
            .into_iter()
            .map(|output| StatementLineage {
                output,
                writes: Vec::new(),
            })
            .collect();
        Judged(Some(Arc::new(QuerySummary {
            lineage: Some(lineage),
            ..Default::default()
        })))
    }

    fn from(column: &str) -> Lineage {
        Lineage {
            sources: [SourceColumn::new("public", "customers", column)].into(),
            unknown: false,
            origin: None,
        }
    }

    #[test]
    fn each_statement_of_a_query_gives_its_own_result_lineage() {
        let j = judged(vec![None, Some(vec![from("card")]), Some(vec![])]);
        assert_eq!(of_result(&j, 0, 1), None);
        assert_eq!(of_result(&j, 1, 1).as_deref(), Some(&[from("card")][..]));
        assert_eq!(of_result(&j, 3, 1), None);
        assert_eq!(of_result(&Judged(None), 0, 1), None);
    }

    #[test]
    fn a_column_count_the_server_disagrees_with_makes_every_column_suspect() {
        let j = judged(vec![Some(vec![from("card"), from("name")])]);
        let l = of_result(&j, 0, 3).expect("lineage");
        assert_eq!(l.len(), 3);
        for c in l.iter() {
            assert!(c.unknown);
            assert_eq!(c.sources.len(), 2);
        }
    }

    #[test]
    fn names_follow_what_the_server_confirmed() {
        let mut n = Names::default();
        let j = judged(vec![Some(vec![from("card")])]);
        n.parsed("s".into(), j.clone()).expect("room");
        n.bound("p".into(), "s").expect("room");
        assert_eq!(n.portal("p"), Some(&j));
        // A portal bound from a statement prepared in SQL has no summary.
        n.bound("q".into(), "from_sql").expect("room");
        assert_eq!(n.portal("q"), Some(&Judged(None)));
        n.closed(&Closed::Portal("p".into()));
        assert_eq!(n.portal("p"), None);
    }

    #[test]
    fn the_names_are_bounded_and_never_forgotten_silently() {
        let mut n = Names::default();
        for i in 0..MAX_NAMES {
            n.parsed(format!("s{i}"), Judged(None)).expect("room");
        }
        assert_eq!(n.parsed("one more".into(), Judged(None)), Err(TooManyNames));
        // Replacing a name takes no room.
        n.parsed("s1".into(), Judged(None)).expect("replaced");
        n.closed(&Closed::Statement("s2".into()));
        n.parsed("one more".into(), Judged(None))
            .expect("room again");
    }
}
