//! Test fixture: misbehaves when a statement contains `boom`, in the way its
//! configuration says (`mode`: `trap`, `loop`, `memory`, `huge`), and allows
//! everything else. Used by the fault matrix in the end-to-end tests.

use portcullis_plugin_sdk::{export_plugin, parse_config, PgQuery, Plugin, Verdict};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: String,
}

/// The misbehaving plugin.
#[derive(Default)]
pub struct Faulty {
    mode: String,
    hoard: Vec<Vec<u8>>,
}

impl Plugin for Faulty {
    const NAME: &'static str = "faulty";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let c: Config = parse_config(config)?;
        self.mode = c.mode;
        Ok(())
    }

    fn on_query(&mut self, query: &PgQuery) -> Verdict {
        if !query.text.contains("boom") {
            return Verdict::Allow;
        }
        match self.mode.as_str() {
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

export_plugin!(Faulty);
