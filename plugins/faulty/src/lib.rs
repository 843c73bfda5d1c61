//! Test fixture: misbehaves when a statement contains `boom`, in the way its
//! configuration says (`mode`: `trap`, `loop`, `memory`, `huge`), and allows
//! everything else. Used by the fault matrix in the end-to-end tests.
//!
//! With `mask_column` set it also masks every value of the result columns
//! of that name (each becomes `masked`), and with `fail_on_batch = N` the
//! N-th `result_rows` call of an instance fails in `mode`'s way: the host
//! must keep those columns hidden for the rest of the result.

use portcullis_plugin_sdk::{
    export_plugin, parse_config, Batch, Column, Edits, PgQuery, Plugin, ResultPlan, Verdict,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: String,
    /// Name of the result columns to mask (empty: rows are not watched).
    #[serde(default)]
    mask_column: String,
    /// Which `result_rows` call of an instance fails (1 = the first; 0 = none).
    #[serde(default)]
    fail_on_batch: u32,
}

/// The misbehaving plugin.
#[derive(Default)]
pub struct Faulty {
    config: Config,
    hoard: Vec<Vec<u8>>,
    batches: u32,
}

impl Faulty {
    /// Fails the current call in the configured way.
    fn misbehave(&mut self) -> Verdict {
        match self.config.mode.as_str() {
            "trap" => panic!("faulty plugin: deliberate trap"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "huge" => Verdict::Deny("x".repeat(256 << 20)),
            _ => Verdict::Allow,
        }
    }
}

impl Plugin for Faulty {
    const NAME: &'static str = "faulty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn wants_rows() -> bool {
        true
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        if !query.text.contains("boom") {
            return Verdict::Allow;
        }
        self.misbehave()
    }

    fn result_columns(&mut self, columns: &[Column]) -> ResultPlan {
        if self.config.mask_column.is_empty() {
            return ResultPlan::Pass;
        }
        let watch: Vec<u32> = (0..columns.len() as u32)
            .filter(|&i| columns[i as usize].name == self.config.mask_column)
            .collect();
        match watch.is_empty() {
            true => ResultPlan::Pass,
            false => ResultPlan::Watch(watch),
        }
    }

    fn result_rows(&mut self, batch: &Batch, edits: &mut Edits) {
        self.batches += 1;
        if self.batches == self.config.fail_on_batch {
            // A mode that returns instead of failing still must not pass.
            let _ = self.misbehave();
            panic!("faulty plugin: deliberate failure in result_rows");
        }
        for column in batch.columns() {
            for row in 0..batch.rows() {
                edits.replace(row, column.index(), b"masked");
            }
        }
    }
}

export_plugin!(Faulty);
