//! What the server→client side knows about the result being relayed to a
//! policy that watches rows: its plan (pass, watch, withhold), the
//! described portals' columns, and the descriptions already passed.

use bytes::{Bytes, BytesMut};

use super::super::catalog::TargetCatalog;
use super::super::result_lineage::Names;
use super::super::RelayError;
use super::Shared;
use crate::policy::{ResultColumn, ResultPlan};
use crate::protocols::postgres::codec::error_response::ErrorFields;
use crate::protocols::postgres::codec::{row_description, sqlstate};
use crate::protocols::postgres::sql::lineage::Lineage;

/// State of the result being relayed, for policies that watch rows.
#[derive(Default)]
pub(super) struct ResultState {
    /// Whether the current result's plan has been made.
    pub planned: bool,
    /// Whether the policy sees the current result's rows.
    pub watching: bool,
    /// The error to send instead of the current (withheld) result.
    pub withheld: Option<Bytes>,
    /// After a withheld result: drop answers up to `ReadyForQuery`.
    pub dropping: bool,
    /// Columns of described portals.
    pub portals: std::collections::HashMap<String, PortalColumns>,
    /// Result descriptions the policy passed, when it says such answers
    /// are stable (see [`SessionPolicy::stable_pass_plans`]).
    pub passed: Option<PassMemo>,
    /// Prepared statements and portals, for the lineage of their results.
    pub names: Names,
    /// Statements of the current simple `Query` the server has completed:
    /// the number of the statement a result belongs to.
    pub completed: usize,
}

/// What is known about a described portal's result.
pub(super) enum PortalColumns {
    /// Its description was passed before: no need to ask again.
    Passed,
    /// Resolved columns, and the raw description to remember a pass by.
    Known(Vec<ResultColumn>, Vec<u8>),
}

/// `RowDescription`s the policy answered `Pass` for, with the lineage they
/// came with, trusted for as long as the catalog's column names are.
#[derive(Default)]
pub(super) struct PassMemo {
    /// Per description: the hashes of the lineages it was passed with.
    seen: std::collections::HashMap<Vec<u8>, Vec<(u64, std::time::Instant)>>,
    /// Keys of the lineage hash, random per session.
    keys: std::collections::hash_map::RandomState,
}

/// Descriptions remembered per session before the memo starts over.
const PASS_MEMO_CAPACITY: usize = 256;
/// Lineages remembered per description (the oldest is forgotten).
const PASS_MEMO_LINEAGES: usize = 8;

impl PassMemo {
    pub fn hit(&self, frame: &[u8], lineage: Option<&[Lineage]>) -> bool {
        let Some(passed) = self.seen.get(frame) else {
            return false;
        };
        let key = std::hash::BuildHasher::hash_one(&self.keys, lineage);
        passed
            .iter()
            .any(|(k, t)| *k == key && t.elapsed() < super::super::catalog::TTL)
    }

    pub fn remember(&mut self, frame: &[u8], lineage: Option<&[Lineage]>) {
        if self.seen.len() >= PASS_MEMO_CAPACITY {
            self.seen.clear();
        }
        let key = std::hash::BuildHasher::hash_one(&self.keys, lineage);
        let passed = self.seen.entry(frame.to_vec()).or_default();
        passed.retain(|(k, t)| *k != key && t.elapsed() < super::super::catalog::TTL);
        if passed.len() >= PASS_MEMO_LINEAGES {
            passed.remove(0);
        }
        passed.push((key, std::time::Instant::now()));
    }
}

impl ResultState {
    pub fn apply(&mut self, plan: ResultPlan) {
        self.planned = true;
        self.watching = false;
        match plan {
            ResultPlan::Pass => {}
            ResultPlan::Watch => self.watching = true,
            ResultPlan::Deny { reason } => {
                let mut b = BytesMut::new();
                ErrorFields::error(sqlstate::INSUFFICIENT_PRIVILEGE, reason)
                    .with_hint("the result was withheld by the gateway's policy; change the query, or ask the gateway operator about the rule")
                    .encode(&mut b);
                self.withheld = Some(b.freeze());
            }
        }
    }

    pub fn end_result(&mut self) {
        self.planned = false;
        self.watching = false;
    }
}

/// Decodes a `RowDescription` and resolves its columns' sources.
pub(super) async fn describe_result(
    frame: &[u8],
    catalog: &TargetCatalog,
) -> Result<Result<Vec<ResultColumn>, String>, RelayError> {
    let mut cols: Vec<ResultColumn> = row_description::decode(frame)?
        .into_iter()
        .map(|c| ResultColumn {
            name: c.name.to_string(),
            table_oid: c.table_oid,
            attribute_number: c.attribute_number,
            type_oid: c.type_oid,
            format: c.format,
            source: None,
        })
        .collect();
    Ok(match catalog.resolve(&mut cols).await {
        Ok(()) => Ok(cols),
        Err(e) => {
            tracing::warn!(error = %e, "result columns could not be resolved; result withheld");
            Err(format!("the gateway could not tell which table columns this result holds ({e}), so it was withheld; try again"))
        }
    })
}

/// The policy's plan for a result with columns `cols` (or the reason
/// they are unknown: withheld).
pub(super) fn plan_for(
    shared: &Shared,
    cols: Result<&[ResultColumn], String>,
    lineage: Option<&[Lineage]>,
) -> ResultPlan {
    match cols {
        Ok(cols) => shared.policy().on_row_description(cols, lineage),
        Err(reason) => ResultPlan::Deny { reason },
    }
}

/// The number of columns a complete `RowDescription` frame announces.
pub(super) fn described_columns(frame: &[u8]) -> usize {
    frame
        .get(5..7)
        .map_or(0, |n| u16::from_be_bytes([n[0], n[1]]) as usize)
}
