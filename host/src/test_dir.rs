//! A temporary directory for unit tests, removed when dropped — also when
//! the test fails and unwinds — so no run leaves keys or databases behind.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory.
pub struct TestDir(PathBuf);

impl TestDir {
    /// Creates `<tmp>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create test directory {}: {e}", path.display());
        }
        Self(path)
    }
}

impl Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
