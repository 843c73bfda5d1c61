//! The on-disk cache of compiled plugins, and why its entries can be trusted.
//!
//! Loading a compiled component runs its native code, so a cache entry is as
//! powerful as the gateway itself, while the configuration's sha256 pin covers
//! only the `.wasm`. The cache therefore uses nothing it has not authenticated:
//!
//! - the directory is created owner-only (0700) and refused — a warning, and
//!   the plugin is compiled without the cache — when it is a symbolic link, is
//!   not a directory, is owned by another user, or grants group or other users
//!   any access;
//! - a random 32-byte key, [`KEY_FILE`] in that directory (0600), is created
//!   on first use and read only when the opened file itself (checked on the
//!   handle, not the path) is a regular file owned by the gateway's user with
//!   no group or other access: no one else can create a file the gateway's
//!   user owns, so a directory swapped underneath cannot supply a key;
//! - each entry is one file: an HMAC-SHA256 tag under that key, then the bytes
//!   it authenticates — a format marker, the component's sha256 (the pinned
//!   one), a digest of the engine's compatibility hash, the artifact's length
//!   and the artifact. The entry is read into memory once, the tag is checked
//!   over those bytes, the bound fields are compared with the component being
//!   loaded, and only then are the same in-memory bytes handed to wasmtime.
//!   Any mismatch recompiles from the pinned `.wasm` and overwrites the entry;
//! - files are written 0600 under a temporary name in the same directory and
//!   renamed into place, so a reader sees a whole entry or none.
//!
//! The cache never makes a plugin load fail: every problem with it is logged
//! and the plugin is compiled from its `.wasm`.

use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::SecureRandom;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Name of the key file inside the cache directory.
pub const KEY_FILE: &str = "cache.key";

/// Length of the key, in bytes.
const KEY_LEN: usize = 32;
/// Length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// Format marker of an entry (authenticated, right after the tag).
const MAGIC: &[u8; 8] = b"PCWASM\x00\x01";
/// Length of a component's sha256 in hex, as bound into an entry.
const SHA_HEX_LEN: usize = 64;
/// Length of the engine digest bound into an entry.
const ENGINE_LEN: usize = 32;
/// Bytes before the artifact: tag, marker, sha256, engine digest, length.
const HEADER_LEN: usize = TAG_LEN + MAGIC.len() + SHA_HEX_LEN + ENGINE_LEN + 8;

/// Where a loaded plugin's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A verified cache entry was deserialized.
    Cache,
    /// The `.wasm` was compiled.
    Compiled,
}

/// Why the cache, or one of its entries, was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file or directory that could have been written by someone else.
    #[error("{path} {reason}; not trusting it")]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry that is not an authentic artifact of this component for
    /// this engine.
    #[error("{path}: {reason}")]
    Rejected {
        /// The entry.
        path: PathBuf,
        /// What did not match.
        reason: &'static str,
    },
    /// The system's random number generator failed.
    #[error("cannot generate a cache key")]
    Random,
    /// wasmtime could not serialize or deserialize an artifact.
    #[error("{path}: {message}")]
    Wasmtime {
        /// The entry.
        path: PathBuf,
        /// Cause.
        message: String,
    },
}

/// An I/O error on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Compiles `bytes` (whose sha256 is `sha256`), using and filling the cache
/// in `dir` when there is one and it can be trusted; says which it did.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    sha256: &str,
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, Origin)> {
    let cache = dir.and_then(|d| match ArtifactCache::open(d) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(error = %e, "not using the compiled plugin cache; compiling");
            None
        }
    });
    if let Some(component) = cache.as_ref().and_then(|c| c.lookup(engine, sha256)) {
        return Ok((component, Origin::Cache));
    }
    let component = Component::new(engine, bytes)?;
    if let Some(cache) = &cache {
        if let Err(e) = cache.store(engine, sha256, &component) {
            tracing::warn!(error = %e, "cannot cache compiled plugin");
        }
    }
    Ok((component, Origin::Compiled))
}

/// A cache directory that passed the checks, with its key.
pub struct ArtifactCache {
    dir: PathBuf,
    key: hmac::Key,
}

impl ArtifactCache {
    /// Opens the cache in `dir`, creating the directory (0700) and its key
    /// (0600) on first use; refuses a directory or key someone else could
    /// have written.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        Self::open_as(dir, effective_uid())
    }

    /// [`Self::open`] for a gateway running as `uid`.
    fn open_as(dir: &Path, uid: u32) -> Result<Self, CacheError> {
        create_private_dir(dir)?;
        let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
        check_private(dir, &meta, uid, Kind::Dir)?;
        let key = load_or_create_key(&dir.join(KEY_FILE), uid)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// The entry for `sha256` compiled by `engine`, if there is an authentic
    /// one; a rejected entry is logged.
    pub fn lookup(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        match self.get(engine, sha256) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring compiled plugin cache entry; recompiling");
                None
            }
        }
    }

    /// The entry for `sha256` compiled by `engine`: `None` when there is
    /// none, an error when there is one that cannot be used.
    fn get(&self, engine: &Engine, sha256: &str) -> Result<Option<Component>, CacheError> {
        let fingerprint = engine_fingerprint(engine);
        let path = self.entry_path(sha256, &fingerprint);
        let Some(sealed) = read_regular_file(&path)? else {
            return Ok(None);
        };
        let artifact = unseal(&self.key, &sealed, sha256, &fingerprint).map_err(|reason| {
            CacheError::Rejected {
                path: path.clone(),
                reason,
            }
        })?;
        // SAFETY: wasmtime cannot check that `artifact` is native code it
        // produced itself, hence `unsafe`. These bytes were just read into
        // memory and carry a valid HMAC under the gateway's own key, bound to
        // this component's sha256 and this engine's compatibility hash: only
        // `store` below, given a `Component::serialize` of this very component
        // by a compatible engine, produces such a tag. They are the verified
        // bytes themselves, not the file, so nothing can change in between.
        let component = unsafe { Component::deserialize(engine, artifact) };
        component.map(Some).map_err(|e| CacheError::Wasmtime {
            path,
            message: format!("{e:#}"),
        })
    }

    /// Writes (or overwrites) the entry for `sha256` compiled by `engine`.
    pub fn store(
        &self,
        engine: &Engine,
        sha256: &str,
        component: &Component,
    ) -> Result<(), CacheError> {
        let fingerprint = engine_fingerprint(engine);
        let path = self.entry_path(sha256, &fingerprint);
        let artifact = component.serialize().map_err(|e| CacheError::Wasmtime {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        let sealed = seal(&self.key, sha256, &fingerprint, &artifact);
        publish(&path, &sealed, Publish::Replace)
    }

    /// File of the entry for `sha256` under the engine `fingerprint`.
    fn entry_path(&self, sha256: &str, fingerprint: &[u8; ENGINE_LEN]) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", hex(&fingerprint[..8])))
    }
}

/// The effective uid of this process: who cache files must belong to.
/// Read off `/proc/self`, which belongs to the process's effective user,
/// so no `unsafe` call is needed; `u32::MAX` (nobody) if it cannot be read,
/// which makes every cache directory untrusted.
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Creates `dir` and missing parents with mode 0700 (an existing directory is
/// left as it is, and checked by the caller).
fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// What a trusted path must be.
#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File,
}

/// Refuses `path` (described by `meta`, not followed through a link) unless
/// it is a `kind` owned by `uid` with no access for group or other users.
fn check_private(path: &Path, meta: &Metadata, uid: u32, kind: Kind) -> Result<(), CacheError> {
    let untrusted = |reason: String| CacheError::Untrusted {
        path: path.to_path_buf(),
        reason,
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return Err(untrusted("is a symbolic link".into()));
    }
    match kind {
        Kind::Dir if !file_type.is_dir() => return Err(untrusted("is not a directory".into())),
        Kind::File if !file_type.is_file() => {
            return Err(untrusted("is not a regular file".into()))
        }
        _ => {}
    }
    if meta.uid() != uid {
        return Err(untrusted(format!(
            "is owned by uid {}, not by the gateway's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        let wanted = match kind {
            Kind::Dir => "0700",
            Kind::File => "0600",
        };
        return Err(untrusted(format!(
            "has mode {mode:04o}; group and other users must have no access (it should be {wanted})"
        )));
    }
    Ok(())
}

/// Opens `path` for reading without following a symbolic link; `None` when
/// it does not exist.
fn open_no_follow(path: &Path) -> Result<Option<File>, CacheError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(CacheError::Untrusted {
            path: path.to_path_buf(),
            reason: "is a symbolic link".into(),
        }),
        Err(e) => Err(io(path)(e)),
    }
}

/// The whole content of the regular file at `path` (not a link), or `None`
/// when there is no such file.
fn read_regular_file(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    let Some(mut file) = open_no_follow(path)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(io(path))?;
    if !meta.file_type().is_file() {
        return Err(CacheError::Untrusted {
            path: path.to_path_buf(),
            reason: "is not a regular file".into(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io(path))?;
    Ok(Some(bytes))
}

/// The key at `path`, created first if there is none.
fn load_or_create_key(path: &Path, uid: u32) -> Result<[u8; KEY_LEN], CacheError> {
    if let Some(key) = read_key(path, uid)? {
        return Ok(key);
    }
    create_key(path)?;
    read_key(path, uid)?.ok_or_else(|| CacheError::Untrusted {
        path: path.to_path_buf(),
        reason: "disappeared right after it was created".into(),
    })
}

/// The key at `path` if there is one, checked on the opened file: a regular
/// file owned by `uid`, no group or other access, exactly [`KEY_LEN`] bytes.
fn read_key(path: &Path, uid: u32) -> Result<Option<[u8; KEY_LEN]>, CacheError> {
    let Some(file) = open_no_follow(path)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(io(path))?;
    check_private(path, &meta, uid, Kind::File)?;
    let mut bytes = Vec::with_capacity(KEY_LEN);
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| CacheError::Untrusted {
        path: path.to_path_buf(),
        reason: format!("holds {} bytes, not a {KEY_LEN}-byte key", bytes.len()),
    })?;
    Ok(Some(key))
}

/// Creates a fresh random key at `path`; another process creating one at
/// the same moment wins, and both then use its key.
fn create_key(path: &Path) -> Result<(), CacheError> {
    let mut key = [0u8; KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CacheError::Random)?;
    publish(path, &key, Publish::KeepExisting)
}

/// What to do when the destination of [`publish`] exists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Replace it (atomically).
    Replace,
    /// Keep it and discard the new content.
    KeepExisting,
}

/// Writes `bytes` to `path` atomically: to a new 0600 file in the same
/// directory, then renamed (or hard-linked, to keep an existing file) into
/// place.
fn publish(path: &Path, bytes: &[u8], mode: Publish) -> Result<(), CacheError> {
    let tmp = temporary_name(path);
    let result = write_new_private(&tmp, bytes).and_then(|()| match mode {
        Publish::Replace => std::fs::rename(&tmp, path).map_err(io(path)),
        Publish::KeepExisting => match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(io(path)(e)),
            _ => Ok(()),
        },
    });
    if result.is_err() || mode == Publish::KeepExisting {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh name next to `path` for a file about to replace it.
fn temporary_name(path: &Path) -> PathBuf {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{base}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Creates `path` (which must not exist, and is never a followed link) with
/// mode 0600 and writes `bytes` to it.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// Feeds what `Hash` writes into a SHA-256.
struct DigestHasher(ring::digest::Context);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Unused: the digest is taken from the context, not from here.
    fn finish(&self) -> u64 {
        0
    }
}

/// SHA-256 of the engine's compatibility hash: artifacts of engines with the
/// same fingerprint can be loaded by each other.
fn engine_fingerprint(engine: &Engine) -> [u8; ENGINE_LEN] {
    let mut hasher = DigestHasher(ring::digest::Context::new(&ring::digest::SHA256));
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut out = [0u8; ENGINE_LEN];
    out.copy_from_slice(hasher.0.finish().as_ref());
    out
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry: the tag, then the authenticated marker, sha256, engine
/// fingerprint, artifact length (little-endian) and artifact.
fn seal(key: &hmac::Key, sha256: &str, fingerprint: &[u8; ENGINE_LEN], artifact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + artifact.len());
    out.extend_from_slice(&[0u8; TAG_LEN]);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&sha_field(sha256));
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    out.extend_from_slice(artifact);
    let tag = hmac::sign(key, &out[TAG_LEN..]);
    out[..TAG_LEN].copy_from_slice(tag.as_ref());
    out
}

/// `sha256` as the fixed-size field bound into an entry.
fn sha_field(sha256: &str) -> [u8; SHA_HEX_LEN] {
    let mut field = [0u8; SHA_HEX_LEN];
    let text = sha256.to_ascii_lowercase();
    let n = text.len().min(SHA_HEX_LEN);
    field[..n].copy_from_slice(&text.as_bytes()[..n]);
    field
}

/// The artifact inside `sealed`, once its tag is verified under `key` and
/// it is bound to `sha256` and the engine `fingerprint`; else why not.
fn unseal<'a>(
    key: &hmac::Key,
    sealed: &'a [u8],
    sha256: &str,
    fingerprint: &[u8; ENGINE_LEN],
) -> Result<&'a [u8], &'static str> {
    if sealed.len() < HEADER_LEN {
        return Err("truncated entry");
    }
    let (tag, signed) = sealed.split_at(TAG_LEN);
    hmac::verify(key, signed, tag).map_err(|_| "authentication tag does not match")?;
    let (marker, rest) = signed.split_at(MAGIC.len());
    let (sha, rest) = rest.split_at(SHA_HEX_LEN);
    let (engine, rest) = rest.split_at(ENGINE_LEN);
    let (length, artifact) = rest.split_at(8);
    if marker != MAGIC {
        return Err("unknown entry format");
    }
    if sha != sha_field(sha256) {
        return Err("entry is for another component");
    }
    if engine != fingerprint {
        return Err("entry is for another engine");
    }
    if length != (artifact.len() as u64).to_le_bytes() {
        return Err("entry length does not match");
    }
    Ok(artifact)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, OnceLock};

    use super::*;
    use crate::config::PluginConfig;
    use crate::plugins::{LoadedPlugin, PluginError, PluginRuntime, PoolSize};

    /// Path of a first-party plugin component; built (`--profile plugin`)
    /// when the target directory does not have it yet.
    fn plugin_wasm(name: &str) -> PathBuf {
        static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let dir = target.join("wasm32-wasip2").join("plugin");
        let want = |n: &str| dir.join(format!("{n}.wasm"));
        if want("block").is_file() && want("mask").is_file() {
            return want(name);
        }
        let built = BUILT.get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = std::process::Command::new(cargo)
                .current_dir(&workspace)
                .args(["build", "--quiet", "--target", "wasm32-wasip2"])
                .args(["--profile", "plugin", "-p", "block", "-p", "mask"])
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .map_err(|e| e.to_string())?;
            match out.status.success() {
                true => Ok(dir.clone()),
                false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            }
        });
        match built {
            Ok(dir) => dir.join(format!("{name}.wasm")),
            Err(e) => panic!("building the plugins failed: {e}"),
        }
    }

    /// A fresh cache path that does not exist yet; its parent does, and is
    /// removed when the returned guard drops.
    fn fresh_cache_dir() -> (crate::test_dir::TestDir, PathBuf) {
        let parent = crate::test_dir::TestDir::new("portcullis-cache");
        let dir = parent.join("plugins");
        (parent, dir)
    }

    fn runtime(cache: &Path) -> PluginRuntime {
        let pool = PoolSize {
            instances: 8,
            max_memory_bytes: 64 << 20,
        };
        PluginRuntime::new(pool, Some(cache.to_path_buf())).unwrap()
    }

    fn load(rt: &PluginRuntime, plugin: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        rt.load(&PluginConfig {
            name: plugin.into(),
            path: plugin_wasm(plugin).display().to_string(),
            sha256: None,
            failure: Default::default(),
            call_timeout_ms: 1000,
            memory_limit_mib: 32,
            config: toml::Value::Table(Default::default()),
        })
    }

    /// The one entry of `plugin` in `dir`.
    fn entry_of(dir: &Path, plugin: &str) -> PathBuf {
        let sha = crate::plugins::sha256_hex(&std::fs::read(plugin_wasm(plugin)).unwrap());
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    }

    /// Every file in `dir` with its content and mode, sorted.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let mode = std::fs::symlink_metadata(&p).unwrap().mode();
                (p.clone(), std::fs::read(&p).unwrap(), mode)
            })
            .collect();
        files.sort();
        files
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_second_load_deserializes_the_cached_artifact() {
        let (_parent, dir) = fresh_cache_dir();
        let rt = runtime(&dir);
        let first = load(&rt, "block").unwrap();
        assert_eq!(first.origin, Origin::Compiled);
        let second = load(&rt, "block").unwrap();
        assert_eq!(second.origin, Origin::Cache);
        assert_eq!(second.declared_name, "block");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&entry_of(&dir, "block")), 0o600);
        assert_eq!(snapshot(&dir).len(), 2, "key and one entry, no leftovers");
    }

    #[test]
    fn a_tampered_entry_is_recompiled_and_rewritten() {
        let (_parent, dir) = fresh_cache_dir();
        let rt = runtime(&dir);
        load(&rt, "block").unwrap();
        let entry = entry_of(&dir, "block");
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&entry, &bytes).unwrap();

        let reloaded = load(&rt, "block").unwrap();
        assert_eq!(reloaded.origin, Origin::Compiled);
        assert_eq!(reloaded.declared_name, "block");
        assert_ne!(std::fs::read(&entry).unwrap(), bytes, "entry not rewritten");
        assert_eq!(load(&rt, "block").unwrap().origin, Origin::Cache);
    }

    #[test]
    fn another_components_artifact_under_this_name_is_not_used() {
        let (_parent, dir) = fresh_cache_dir();
        let rt = runtime(&dir);
        load(&rt, "mask").unwrap();
        load(&rt, "block").unwrap();
        let (mask, block) = (entry_of(&dir, "mask"), entry_of(&dir, "block"));
        let mask_bytes = std::fs::read(&mask).unwrap();
        std::fs::copy(&mask, &block).unwrap();

        let reloaded = load(&rt, "block").unwrap();
        assert_eq!(reloaded.declared_name, "block");
        assert_eq!(reloaded.origin, Origin::Compiled);
        assert_ne!(
            std::fs::read(&block).unwrap(),
            mask_bytes,
            "entry not rewritten"
        );
        assert_eq!(load(&rt, "block").unwrap().origin, Origin::Cache);
    }

    #[test]
    fn a_loose_cache_directory_is_neither_read_nor_written() {
        // A valid cache (key and entry) that others could have written.
        let (_parent, dir) = fresh_cache_dir();
        load(&runtime(&dir), "block").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let before = snapshot(&dir);
        let loaded = load(&runtime(&dir), "block").unwrap();
        assert_eq!(loaded.origin, Origin::Compiled);
        assert_eq!(snapshot(&dir), before);

        // An empty one gets no key and no entry.
        let (_empty_parent, empty) = fresh_cache_dir();
        std::fs::create_dir(&empty).unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).unwrap();
        let loaded = load(&runtime(&empty), "block").unwrap();
        assert_eq!(loaded.origin, Origin::Compiled);
        assert!(snapshot(&empty).is_empty());
    }

    #[test]
    fn a_cache_directory_owned_by_someone_else_is_refused() {
        let (_parent, dir) = fresh_cache_dir();
        load(&runtime(&dir), "block").unwrap();
        let before = snapshot(&dir);
        let other = effective_uid().wrapping_add(1);
        let refused = ArtifactCache::open_as(&dir, other);
        assert!(
            matches!(&refused, Err(CacheError::Untrusted { path, .. }) if *path == dir),
            "{:?}",
            refused.err()
        );
        // When the tests may give the directory away, through a real load.
        if std::os::unix::fs::chown(&dir, Some(other), None).is_ok() {
            let loaded = load(&runtime(&dir), "block").unwrap();
            assert_eq!(loaded.origin, Origin::Compiled);
        }
        assert_eq!(snapshot(&dir), before);
    }

    #[test]
    fn a_symlinked_cache_directory_or_loose_key_is_refused() {
        let (_parent, dir) = fresh_cache_dir();
        load(&runtime(&dir), "block").unwrap();
        let before = snapshot(&dir);
        let link = dir.with_file_name("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(
            load(&runtime(&link), "block").unwrap().origin,
            Origin::Compiled
        );

        let key = dir.join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before_key = snapshot(&dir);
        assert_eq!(
            load(&runtime(&dir), "block").unwrap().origin,
            Origin::Compiled
        );
        assert_eq!(snapshot(&dir), before_key);
        assert_eq!(before.len(), before_key.len());
    }

    #[test]
    fn a_sealed_artifact_opens_only_with_its_key_component_and_engine() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; KEY_LEN]);
        let other_key = hmac::Key::new(hmac::HMAC_SHA256, &[8u8; KEY_LEN]);
        let (sha, other_sha) = ("a".repeat(64), "b".repeat(64));
        let (engine, other_engine) = ([1u8; ENGINE_LEN], [2u8; ENGINE_LEN]);
        let sealed = seal(&key, &sha, &engine, b"artifact");
        assert_eq!(unseal(&key, &sealed, &sha, &engine), Ok(&b"artifact"[..]));
        assert!(unseal(&other_key, &sealed, &sha, &engine).is_err());
        assert!(unseal(&key, &sealed, &other_sha, &engine).is_err());
        assert!(unseal(&key, &sealed, &sha, &other_engine).is_err());
        assert!(unseal(&key, &sealed[..sealed.len() - 1], &sha, &engine).is_err());
        assert!(unseal(&key, &sealed[..HEADER_LEN - 1], &sha, &engine).is_err());
        let mut flipped = sealed.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(unseal(&key, &flipped, &sha, &engine).is_err());
    }
}
