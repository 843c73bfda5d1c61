//! Hot reload on file change: watches the configuration file and every
//! plugin file (modification time and size, polled) and says when to reload.
//! `SIGHUP` reloads at once; this covers deployments that only replace files
//! (a configuration-management run, a Kubernetes ConfigMap).
//!
//! A change is acted on once the files have stopped changing for one poll,
//! so a file caught half-written is not loaded. A reload that fails is not
//! retried until the files change again; the old plugins keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::Config;

/// What is known about one file: modification time and size (or absence).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches a configuration file and the plugin files it names.
#[derive(Debug)]
pub struct Watcher {
    config: PathBuf,
    /// Stamps as of the last (attempted) reload.
    loaded: BTreeMap<PathBuf, Stamp>,
    /// Stamps of the previous poll, when they differed from `loaded`.
    settling: Option<BTreeMap<PathBuf, Stamp>>,
}

impl Watcher {
    /// Watches `config_path` and the plugin files of `config` (as loaded now).
    pub fn new(config_path: &Path, config: &Config) -> Self {
        let mut w = Self {
            config: config_path.to_path_buf(),
            loaded: BTreeMap::new(),
            settling: None,
        };
        w.reloaded(config);
        w
    }

    fn files(&self, config: Option<&Config>) -> Vec<PathBuf> {
        let mut files = vec![self.config.clone()];
        match config {
            Some(c) => files.extend(c.plugins.iter().map(|p| PathBuf::from(&p.path))),
            None => files.extend(self.loaded.keys().filter(|p| **p != self.config).cloned()),
        }
        files
    }

    fn current(&self, files: &[PathBuf]) -> BTreeMap<PathBuf, Stamp> {
        files.iter().map(|f| (f.clone(), stamp(f))).collect()
    }

    /// A reload was attempted with `config` (successful or not): watch its
    /// files from their current state.
    pub fn reloaded(&mut self, config: &Config) {
        let files = self.files(Some(config));
        self.loaded = self.current(&files);
        self.settling = None;
    }

    /// A reload was attempted but the configuration did not even parse:
    /// keep watching the same files from their current state.
    pub fn attempted(&mut self) {
        let files = self.files(None);
        self.loaded = self.current(&files);
        self.settling = None;
    }

    /// Polls the files; `true` when they changed and have since settled.
    pub fn poll(&mut self) -> bool {
        let files = self.files(None);
        let now = self.current(&files);
        if now == self.loaded {
            self.settling = None;
            return false;
        }
        let settled = self.settling.as_ref() == Some(&now);
        self.settling = Some(now);
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(plugin: &Path) -> Config {
        Config::parse(&format!(
            r#"
[[listeners]]
address = "127.0.0.1:6432"
plaintext_loopback_dev = true
[[identity_providers]]
name = "idp"
issuer = "http://127.0.0.1:9999"
insecure_loopback_issuer = true
audience = "a"
[[plugins]]
name = "p"
path = {:?}
[[targets]]
name = "t"
host = "127.0.0.1"
database = "d"
user = "u"
allow_groups = ["g"]
plugins = ["p"]
"#,
            plugin.display().to_string()
        ))
        .expect("test configuration")
    }

    #[test]
    fn a_changed_plugin_file_reloads_once_it_has_settled() {
        let dir = crate::test_dir::TestDir::new("portcullis-watch");
        let cfg_path = dir.join("portcullis.toml");
        let plugin = dir.join("p.wasm");
        std::fs::write(&cfg_path, "# config").unwrap();
        std::fs::write(&plugin, b"v1").unwrap();
        let cfg = config(&plugin);
        let mut w = Watcher::new(&cfg_path, &cfg);
        assert!(!w.poll(), "nothing changed");
        std::fs::write(&plugin, b"version 2").unwrap();
        assert!(!w.poll(), "changed, not yet settled");
        assert!(w.poll(), "settled: reload");
        w.reloaded(&cfg);
        assert!(!w.poll(), "reloaded: quiet again");
        std::fs::write(&cfg_path, "# config, edited").unwrap();
        assert!(!w.poll());
        assert!(w.poll(), "the configuration file is watched too");
        w.attempted();
        assert!(
            !w.poll(),
            "a failed reload is not retried until the next change"
        );
    }
}
