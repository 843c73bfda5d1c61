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
//! Statements and portals made in SQL (`PREPARE`, `DECLARE`) are tracked
//! too, as their `CommandComplete`s arrive, so `EXECUTE` and `FETCH` give
//! the lineage of what they run. A result the relay has no lineage for
//! (a cursor a function opened, `CALL`) is handed to the policy as such.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::protocols::postgres::sql::lineage::Lineage;
use crate::protocols::postgres::sql::QuerySummary;

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

/// The statement a result, a prepared statement or a portal comes from:
/// statement `statement` of a judged summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The summary of the `Query` or `Parse`.
    pub summary: Judged,
    /// The statement's number in it.
    pub statement: usize,
}

impl Source {
    /// The statement itself, when its summary is known.
    pub fn summarized(&self) -> Option<&crate::protocols::postgres::sql::StatementSummary> {
        self.summary.0.as_ref()?.statements.get(self.statement)
    }
}

/// Prepared statements and portals as the server knows them, each with the
/// statement it was prepared from.
#[derive(Debug, Default)]
pub struct Names {
    statements: HashMap<String, Source>,
    portals: HashMap<String, Source>,
}

impl Names {
    /// The server confirmed a `Parse`, or a SQL `PREPARE`, of `name`.
    pub fn prepared(&mut self, name: String, source: Source) -> Result<(), TooManyNames> {
        insert(&mut self.statements, name, source)
    }

    /// The server confirmed a `Bind` of `portal` from `statement`.
    pub fn bound(&mut self, portal: String, statement: &str) -> Result<(), TooManyNames> {
        let source = self.statements.get(statement).cloned().unwrap_or_default();
        insert(&mut self.portals, portal, source)
    }

    /// The server confirmed a SQL `DECLARE` of cursor `name`.
    pub fn declared(&mut self, name: String, source: Source) -> Result<(), TooManyNames> {
        insert(&mut self.portals, name, source)
    }

    /// The server confirmed a `Close`.
    pub fn closed(&mut self, closed: &Closed) {
        match closed {
            Closed::Statement(name) => self.statements.remove(name),
            Closed::Portal(name) => self.portals.remove(name),
        };
    }

    /// `CLOSE ALL`, `DEALLOCATE ALL` or `DISCARD ALL` completed.
    pub fn forget(&mut self, statements: bool, portals: bool) {
        if statements {
            self.statements.clear();
        }
        if portals {
            self.portals.clear();
        }
    }

    /// What `portal` runs, when the gateway saw it made.
    pub fn portal(&self, portal: &str) -> Option<&Source> {
        self.portals.get(portal)
    }

    /// `portal` ran: what an `EXECUTE` or `FETCH` in it runs was fixed
    /// then (later runs continue the same rows, whatever the names mean
    /// now), so the portal keeps it.
    pub fn ran(&mut self, portal: &str) {
        let fixed = self
            .portals
            .get(portal)
            .filter(|s| follows(s))
            .and_then(|s| resolve(s, self))
            .cloned()
            .unwrap_or_default();
        if let Some(s) = self.portals.get_mut(portal).filter(|s| follows(s)) {
            *s = fixed;
        }
    }

    /// What prepared statement `name` runs, when the gateway saw it made.
    pub fn statement(&self, name: &str) -> Option<&Source> {
        self.statements.get(name)
    }

    /// Notes what a completed statement made or dropped (see
    /// [`changes_names`]): a SQL `PREPARE`,
    /// `DECLARE`, `CLOSE ALL`, `DEALLOCATE ALL`, `DISCARD ALL` (with the
    /// server's command tag).
    pub fn completed(&mut self, source: &Source, tag: &str) -> Result<(), TooManyNames> {
        let Some(st) = source.summarized() else {
            return Ok(());
        };
        match tag {
            "PREPARE" => {
                if let Some(name) = &st.prepared_name {
                    self.prepared(name.clone(), source.clone())?;
                }
            }
            "DECLARE CURSOR" => {
                if let Some(name) = &st.declares {
                    self.declared(name.clone(), source.clone())?;
                }
            }
            "CLOSE CURSOR" => {
                if let Some(name) = &st.closes {
                    self.portals.remove(name);
                }
            }
            "DEALLOCATE" => {
                if let Some(name) = &st.deallocates {
                    self.statements.remove(name);
                }
            }
            // A rollback (to a savepoint too) or commit may drop cursors.
            "CLOSE CURSOR ALL" | "ROLLBACK" | "COMMIT" => self.forget(false, true),
            "DEALLOCATE ALL" => self.forget(true, false),
            "DISCARD ALL" => self.forget(true, true),
            _ => {}
        }
        Ok(())
    }
}

/// Command tags of statements that make or drop names, which
/// [`Names::completed`] notes; any other tag changes none.
pub fn changes_names(tag: &str) -> bool {
    matches!(
        tag,
        "PREPARE"
            | "DECLARE CURSOR"
            | "CLOSE CURSOR"
            | "DEALLOCATE"
            | "CLOSE CURSOR ALL"
            | "ROLLBACK"
            | "COMMIT"
            | "DEALLOCATE ALL"
            | "DISCARD ALL"
    )
}

fn insert(
    map: &mut HashMap<String, Source>,
    name: String,
    source: Source,
) -> Result<(), TooManyNames> {
    if map.len() >= MAX_NAMES && !map.contains_key(&name) {
        return Err(TooManyNames);
    }
    map.insert(name, source);
    Ok(())
}

/// How deep `EXECUTE` and `FETCH` are followed to what they run.
const MAX_FOLLOW: usize = 4;

/// The lineage of a result with `columns` columns that `source` produced.
/// `EXECUTE` and `FETCH` give the lineage of the statement they run;
/// `EXPLAIN` and `SHOW` return text about the statement or a setting, not
/// table data. `None` when there is none to give: no summary or lineage, a
/// prepared statement or cursor the gateway did not see made, a statement
/// whose columns the analysis could not count. When the analysis counted
/// a different number of columns than the server describes, every column
/// is unknown and may come from any of the statement's sources.
pub fn of_result<'a>(
    source: &'a Source,
    columns: usize,
    names: &'a Names,
) -> Option<Cow<'a, [Lineage]>> {
    let source = resolve(source, names)?;
    let summary = source.summary.0.as_ref()?;
    let st = summary.statements.get(source.statement)?;
    match st.kind.as_str() {
        "explain" | "show" => Some(Cow::Owned(vec![Lineage::default(); columns])),
        // Constants only: the gateway skips lineage for such statements.
        _ if summary.lineage.is_none() && !st.reads_anything() => {
            Some(Cow::Owned(vec![Lineage::default(); columns]))
        }
        _ => counted(summary.lineage.as_ref()?.get(source.statement)?, columns),
    }
}

/// Whether `source` runs something else by name (`EXECUTE`, `FETCH`).
pub fn follows(source: &Source) -> bool {
    source
        .summarized()
        .is_some_and(|st| matches!(st.kind.as_str(), "execute" | "fetch"))
}

/// The statement `source` finally runs, through `EXECUTE` and `FETCH`.
fn resolve<'a>(source: &'a Source, names: &'a Names) -> Option<&'a Source> {
    let mut source = source;
    for _ in 0..MAX_FOLLOW {
        let st = source.summarized()?;
        source = match st.kind.as_str() {
            "execute" => names.statement(st.executes.first()?)?,
            "fetch" => names.portal(st.fetches.first()?)?,
            _ => return Some(source),
        };
    }
    None
}

/// A statement's output lineage, checked against the server's count.
fn counted(
    statement: &crate::protocols::postgres::sql::lineage::StatementLineage,
    columns: usize,
) -> Option<Cow<'_, [Lineage]>> {
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
    use crate::protocols::postgres::sql::lineage::{SourceColumn, StatementLineage};
    use crate::protocols::postgres::sql::StatementSummary;

    fn judged(statements: Vec<(&str, Option<Vec<Lineage>>)>) -> Judged {
        let summaries = statements
            .iter()
            .map(|(kind, _)| StatementSummary {
                kind: kind.to_string(),
                ..Default::default()
            })
            .collect();
        let lineage = statements
            .into_iter()
            .map(|(_, output)| StatementLineage {
                output,
                writes: Vec::new(),
            })
            .collect();
        Judged(Some(Arc::new(QuerySummary {
            statements: summaries,
            lineage: Some(lineage),
            ..Default::default()
        })))
    }

    fn at(summary: &Judged, statement: usize) -> Source {
        Source {
            summary: summary.clone(),
            statement,
        }
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
        let names = Names::default();
        let j = judged(vec![
            ("set", None),
            ("select", Some(vec![from("card")])),
            ("explain", None),
        ]);
        assert_eq!(of_result(&at(&j, 0), 1, &names), None);
        assert_eq!(
            of_result(&at(&j, 1), 1, &names).as_deref(),
            Some(&[from("card")][..])
        );
        // EXPLAIN's plan is not table data.
        assert_eq!(
            of_result(&at(&j, 2), 1, &names).as_deref(),
            Some(&[Lineage::default()][..])
        );
        assert_eq!(of_result(&at(&j, 3), 1, &names), None);
        assert_eq!(of_result(&Source::default(), 1, &names), None);
    }

    #[test]
    fn a_column_count_the_server_disagrees_with_makes_every_column_suspect() {
        let j = judged(vec![("select", Some(vec![from("card"), from("name")]))]);
        let names = Names::default();
        let source = at(&j, 0);
        let l = of_result(&source, 3, &names).expect("lineage");
        assert_eq!(l.len(), 3);
        for c in l.iter() {
            assert!(c.unknown);
            assert_eq!(c.sources.len(), 2);
        }
    }

    #[test]
    fn execute_and_fetch_give_the_lineage_of_what_they_run() {
        let mut names = Names::default();
        let prepared = judged(vec![("select", Some(vec![from("card")]))]);
        names.prepared("s1".into(), at(&prepared, 0)).expect("room");
        names.bound("p".into(), "s1").expect("room");
        let mut execute = StatementSummary {
            kind: "execute".into(),
            executes: vec!["s1".into()],
            ..Default::default()
        };
        let mut fetch = StatementSummary {
            kind: "fetch".into(),
            fetches: vec!["p".into()],
            ..Default::default()
        };
        for st in [execute.clone(), fetch.clone()] {
            let q = Judged(Some(Arc::new(QuerySummary {
                statements: vec![st],
                ..Default::default()
            })));
            assert_eq!(
                of_result(&at(&q, 0), 1, &names).as_deref(),
                Some(&[from("card")][..])
            );
        }
        // Names the gateway never saw made: no lineage.
        execute.executes = vec!["other".into()];
        fetch.fetches = vec!["other".into()];
        for st in [execute, fetch] {
            let q = Judged(Some(Arc::new(QuerySummary {
                statements: vec![st],
                ..Default::default()
            })));
            assert_eq!(of_result(&at(&q, 0), 1, &names), None);
        }
    }

    #[test]
    fn sql_prepare_and_declare_are_noted_when_they_complete() {
        let mut names = Names::default();
        let j = Judged(Some(Arc::new(QuerySummary {
            statements: vec![
                StatementSummary {
                    kind: "prepare".into(),
                    prepared_name: Some("sp".into()),
                    ..Default::default()
                },
                StatementSummary {
                    kind: "declare".into(),
                    declares: Some("c".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })));
        names.completed(&at(&j, 0), "PREPARE").expect("room");
        names.completed(&at(&j, 1), "DECLARE CURSOR").expect("room");
        assert_eq!(names.statement("sp"), Some(&at(&j, 0)));
        assert_eq!(names.portal("c"), Some(&at(&j, 1)));
        names.completed(&at(&j, 1), "DISCARD ALL").expect("room");
        assert_eq!(names.statement("sp"), None);
        assert_eq!(names.portal("c"), None);
    }

    #[test]
    fn names_follow_what_the_server_confirmed() {
        let mut n = Names::default();
        let j = judged(vec![("select", Some(vec![from("card")]))]);
        n.prepared("s".into(), at(&j, 0)).expect("room");
        n.bound("p".into(), "s").expect("room");
        assert_eq!(n.portal("p"), Some(&at(&j, 0)));
        // A portal bound from a statement the gateway did not see made.
        n.bound("q".into(), "unseen").expect("room");
        assert_eq!(n.portal("q"), Some(&Source::default()));
        n.closed(&Closed::Portal("p".into()));
        assert_eq!(n.portal("p"), None);
    }

    #[test]
    fn the_names_are_bounded_and_never_forgotten_silently() {
        let mut n = Names::default();
        for i in 0..MAX_NAMES {
            n.prepared(format!("s{i}"), Source::default())
                .expect("room");
        }
        assert_eq!(
            n.prepared("one more".into(), Source::default()),
            Err(TooManyNames)
        );
        // Replacing a name takes no room.
        n.prepared("s1".into(), Source::default())
            .expect("replaced");
        n.closed(&Closed::Statement("s2".into()));
        n.prepared("one more".into(), Source::default())
            .expect("room again");
    }
}
