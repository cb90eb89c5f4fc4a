//! The host's compiled-module cache: native code of accepted modules, on disk, so that
//! a restart, or a swap back to a version already seen, does not compile again.
//!
//! It replaces wasmtime's own cache, which stores every module it compiles, accepted
//! or not, and trusts whatever directory it is given. Guarantees:
//! - Only what [`CompiledCache::store`] wrote is loaded. [`CompiledCache::open`]
//!   refuses a directory that is a symbolic link, is not owned by the host's user, or
//!   that other users can write, so only the host's user (or root) can put a file
//!   there, and closes one that others can only read to mode 0700; `store` writes each entry to a temporary file, syncs it and renames it into
//!   place, so an entry is never seen half-written.
//! - The host decides what is stored: it calls `store` only for modules that passed
//!   every load check. A cached module still goes through the checks that run guest
//!   code (ABI version, manifest, smoke reconcile) every time it is loaded.
//! - Entries are keyed by the module's sha256 and the engine's compatibility hash
//!   ([`wasmtime::Engine::precompile_compatibility_hash`]: wasmtime version, target and
//!   configuration), so an engine finds only entries it can run; wasmtime checks this
//!   again when it loads one. A key that is not a sha256 in hex never becomes a path.
//! - Bounded: after each `store` the oldest entries (by modification time, which a
//!   hit refreshes) are removed until the entries total at most the bound.
//! - An optimisation only: `load` answers `None` and `store` does nothing when
//!   anything goes wrong (logged). An entry that cannot be used is removed.
//!
//! The checks are on the directory itself: its parents must be trusted too (any
//! parent writable by another user could replace it). The default location,
//! `${XDG_CACHE_HOME:-$HOME/.cache}/wasm-operator`, is under the user's home.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Engine, Module};

/// The default bound of a [`CompiledCache`]: 256 MiB.
///
/// The DittoFS module compiles to 1.9 MB, so this keeps about 130 entries: every
/// version a cluster is likely to swap between, for a few engine configurations and
/// wasmtime versions (entries of an older host age out like any other). Small next to
/// a node's disk; when the cache is on an `emptyDir`, give it a `sizeLimit` above this.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// The file of the last accepted module's bytes ([`CompiledCache::store_last_good`]).
const LAST_GOOD: &str = "last-good.wasm";
/// The file of its signature, when it had one.
const LAST_GOOD_SIGNATURE: &str = "last-good.wasm.sig";
/// The largest signatures file read back (a P-256 signature in base64 is under 100
/// bytes; a registry may hold a few).
const LAST_GOOD_SIGNATURE_MAX_BYTES: u64 = 16 << 10;
/// The largest last good payload read back: the largest module a source delivers.
const LAST_GOOD_MAX_BYTES: u64 = 64 << 20;

/// Length of a sha256 in hex.
const DIGEST_LEN: usize = 64;
/// Length of an entry's name: the digest, `-`, the compatibility hash in hex.
const ENTRY_NAME_LEN: usize = DIGEST_LEN + 1 + 16;

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory (or a parent) could not be created.
    #[error("cannot create the compiled-module cache directory {dir}", dir = dir.display())]
    Create {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory could not be closed to other users.
    #[error("cannot restrict the compiled-module cache directory {dir} to mode 0700", dir = dir.display())]
    Restrict {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory's metadata could not be read.
    #[error("cannot inspect the compiled-module cache directory {dir}", dir = dir.display())]
    Inspect {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is a symbolic link, which is not followed.
    #[error(
        "compiled-module cache directory {dir} is a symbolic link; give the directory itself",
        dir = dir.display()
    )]
    Symlink {
        /// The directory.
        dir: PathBuf,
    },
    /// The path is not a directory.
    #[error("compiled-module cache directory {dir} is not a directory", dir = dir.display())]
    NotADirectory {
        /// The path.
        dir: PathBuf,
    },
    /// Another user owns the directory.
    #[error(
        "compiled-module cache directory {dir} is owned by uid {owner}, not by this process's uid {uid}; \
         give the host a directory of its own",
        dir = dir.display()
    )]
    Owner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The host's effective uid.
        uid: u32,
    },
    /// Other users may write in the directory, so its entries may be theirs: code the
    /// host would run.
    #[error(
        "compiled-module cache directory {dir} has mode {mode:04o}, which lets other users write there, \
         so its entries cannot be trusted; remove it (`rm -r {dir}`) or give the host a directory of its own",
        dir = dir.display()
    )]
    Permissions {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A directory of compiled modules, bounded in size: see the
/// [module documentation](self) for what is guaranteed.
#[derive(Debug)]
pub struct CompiledCache {
    dir: PathBuf,
    max_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompiledCache {
    /// Opens the cache in `dir`, which holds at most `max_bytes` of entries.
    ///
    /// Creates the directory and its missing parents with mode 0700. An existing
    /// directory must be a directory (not a symbolic link to one), owned by the
    /// process's effective uid, and writable by no one else; one that others can only
    /// read is restricted to 0700.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        // Absolute, so that a later change of working directory changes nothing; and
        // without a trailing `/`, which would make the checks below follow a symlink.
        let dir: PathBuf = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()).components().collect();
        match fs::symlink_metadata(&dir) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| CacheError::Create { dir: dir.clone(), source })?,
            Err(source) => return Err(CacheError::Inspect { dir, source }),
        }
        // Checked after creating too: the directory may have existed all along (created
        // by someone else in between), and the umask may have changed the mode.
        let metadata =
            fs::symlink_metadata(&dir).map_err(|source| CacheError::Inspect { dir: dir.clone(), source })?;
        if metadata.file_type().is_symlink() {
            return Err(CacheError::Symlink { dir });
        }
        if !metadata.is_dir() {
            return Err(CacheError::NotADirectory { dir });
        }
        let uid = effective_uid();
        if metadata.uid() != uid {
            return Err(CacheError::Owner { dir, owner: metadata.uid(), uid });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(CacheError::Permissions { dir, mode });
        }
        // Readable by others but writable only by the host (0755, as wasmtime's own
        // cache left it): nobody else can have put an entry there, so closing it is safe.
        if mode & 0o077 != 0 {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|source| CacheError::Restrict { dir: dir.clone(), source })?;
            tracing::info!(dir = %dir.display(), mode = format!("{mode:04o}"), "compiled-module cache directory restricted to 0700");
        }
        Ok(Self { dir, max_bytes, hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
    }

    /// The directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the entry of the module whose sha256 is `digest_hex` (64 lowercase hex
    /// digits) for `engine`, if there is a usable one.
    ///
    /// `None` when the digest is not one, or there is no entry. An entry that is not
    /// a regular file, not owned by the host's user, larger than the cache's bound, or
    /// that wasmtime refuses, is removed (and logged), and `None` returned.
    pub fn load(&self, engine: &Engine, digest_hex: &str) -> Option<Module> {
        let path = self.dir.join(entry_name(engine, digest_hex)?);
        let loaded = read_entry(&path, self.max_bytes).and_then(|bytes| match bytes {
            Some(bytes) => deserialize(engine, &bytes).map(Some),
            None => Ok(None),
        });
        match loaded {
            Ok(Some(module)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(entry = %path.display(), "compiled module loaded from the cache");
                Some(module)
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(err) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    entry = %path.display(),
                    error = %crate::error_chain(&err),
                    "removing an unusable compiled-module cache entry"
                );
                remove_entry(&path);
                None
            }
        }
    }

    /// Stores `module`, whose sha256 is `digest_hex`, then removes the oldest entries
    /// until the cache is within its bound.
    ///
    /// Call it only for modules that passed every load check. Does nothing when the
    /// digest is not one, or the serialized module alone exceeds the bound; failures
    /// are logged, never returned.
    pub fn store(&self, digest_hex: &str, module: &Module) {
        let Some(name) = entry_name(module.engine(), digest_hex) else {
            tracing::warn!(digest = ?digest_hex, "not caching a module under a key that is not a sha256");
            return;
        };
        let bytes = match module.serialize() {
            Ok(bytes) => bytes,
            Err(err) => {
                let err: Box<dyn std::error::Error + Send + Sync> = err.into();
                tracing::warn!(error = %crate::error_chain(&*err), "cannot serialize a compiled module to cache it");
                return;
            }
        };
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > self.max_bytes {
            tracing::warn!(
                size = bytes.len(),
                max_bytes = self.max_bytes,
                "compiled module larger than the whole cache; not cached"
            );
            return;
        }
        if let Err(err) = write_entry(&self.dir, &name, &bytes) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %crate::error_chain(&err),
                "cannot write a compiled-module cache entry"
            );
            return;
        }
        self.evict(&name);
    }

    /// Keeps `bytes`, the payload of a module that passed every check and became
    /// active (as its source held it, gzip or not), as the last good module: what the
    /// host starts from when its source holds nothing valid. It
    /// is written like an entry (atomically, mode 0600) and neither counted nor
    /// evicted, and so are its `signatures` (one per line: base64 has no newline; or
    /// an old file removed); failures are logged.
    ///
    /// The signatures are written first: a crash between the two writes leaves a
    /// module with another's signatures, which a host that requires signatures
    /// refuses, never an unchecked pair.
    pub fn store_last_good(&self, bytes: &[u8], signatures: &[Vec<u8>]) {
        let kept = if signatures.is_empty() {
            match fs::remove_file(self.dir.join(LAST_GOOD_SIGNATURE)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            }
        } else {
            let lines: Vec<&[u8]> = signatures.iter().map(|s| s.trim_ascii()).collect();
            write_entry(&self.dir, LAST_GOOD_SIGNATURE, &lines.join(&b'\n'))
        }
        .and_then(|()| write_entry(&self.dir, LAST_GOOD, bytes));
        if let Err(err) = kept {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot keep the last good module");
        }
    }

    /// The last good module's bytes and signature, if there are usable ones (the same
    /// checks as an entry's; the bytes are validated again like any module, the
    /// signature checked again, before they run).
    pub fn last_good(&self) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
        let read = |name: &str, limit: u64| {
            let path = self.dir.join(name);
            read_entry(&path, limit).map_err(|err| {
                tracing::warn!(file = %path.display(), error = %crate::error_chain(&err), "ignoring the last good module");
            })
        };
        let module = read(LAST_GOOD, LAST_GOOD_MAX_BYTES).ok()??;
        let signatures = read(LAST_GOOD_SIGNATURE, LAST_GOOD_SIGNATURE_MAX_BYTES).ok()?.unwrap_or_default();
        let signatures =
            signatures.split(|b| *b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect();
        Some((module, signatures))
    }

    /// Hits and misses of [`CompiledCache::load`] so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Removes the oldest entries (and leftover temporary files) until the rest total
    /// at most the bound; never `keep`, the entry just written. Files whose names are
    /// not the cache's are left alone and not counted.
    fn evict(&self, keep: &str) {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot list the compiled-module cache");
                return;
            }
        };
        let mut total: u64 = 0;
        let mut candidates = Vec::new();
        for entry in listing.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !is_entry_name(&name) && !is_temp_name(&name) {
                continue;
            }
            // `DirEntry::metadata` does not follow symlinks: only regular files count.
            let Ok(metadata) = entry.metadata() else { continue };
            if !metadata.is_file() {
                continue;
            }
            total = total.saturating_add(metadata.len());
            if name != keep {
                candidates.push((metadata.modified().unwrap_or(UNIX_EPOCH), name, metadata.len()));
            }
        }
        // Oldest first; the name breaks ties, for a deterministic order.
        candidates.sort();
        for (_, name, len) in candidates {
            if total <= self.max_bytes {
                break;
            }
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => tracing::debug!(entry = %path.display(), "evicted from the compiled-module cache"),
                // Removed by another host sharing the directory: gone all the same.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::warn!(entry = %path.display(), error = %err, "cannot evict a compiled-module cache entry");
                    continue;
                }
            }
            total = total.saturating_sub(len);
        }
    }
}

/// Why an entry was not usable (for the log).
#[derive(Debug, thiserror::Error)]
enum BadEntry {
    #[error("it is a symbolic link")]
    Symlink,
    #[error("cannot open it")]
    Open(#[source] io::Error),
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it is owned by uid {0}")]
    Owner(u32),
    #[error("it is {size} bytes, more than the cache's bound of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("cannot read it")]
    Read(#[source] io::Error),
    #[error("it changed while it was read")]
    Changed,
    #[error("wasmtime refuses it")]
    Deserialize(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The bytes of the entry at `path`; `None` when there is none.
///
/// The checks are made on the open file, so they hold for the bytes read: it is opened
/// without following a symbolic link (and without blocking, should it be a FIFO), then
/// inspected, then read whole. Reading the bytes, rather than letting wasmtime map the
/// file, keeps the module independent of the file once loaded, and works where the
/// cache's filesystem forbids executable mappings (`noexec`).
fn read_entry(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, BadEntry> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(BadEntry::Symlink),
        Err(errno) => return Err(BadEntry::Open(errno.into())),
    };
    let metadata = file.metadata().map_err(BadEntry::Read)?;
    if !metadata.is_file() {
        return Err(BadEntry::NotAFile);
    }
    if metadata.uid() != effective_uid() {
        return Err(BadEntry::Owner(metadata.uid()));
    }
    if metadata.len() > max_bytes {
        return Err(BadEntry::TooLarge { size: metadata.len(), max: max_bytes });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // One byte more than the file had: a file that grew is detected, not truncated.
    (&file).take(metadata.len().saturating_add(1)).read_to_end(&mut bytes).map_err(BadEntry::Read)?;
    if u64::try_from(bytes.len()).ok() != Some(metadata.len()) {
        return Err(BadEntry::Changed);
    }
    // A hit makes the entry the newest: eviction removes the least recently used.
    if let Err(err) = file.set_modified(SystemTime::now()) {
        tracing::debug!(entry = %path.display(), error = %err, "cannot refresh a cache entry's time");
    }
    Ok(Some(bytes))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Module, BadEntry> {
    // SAFETY: `Module::deserialize` trusts the bytes to be a compiled module wasmtime
    // produced; anything else could make it run arbitrary native code. These bytes
    // come from the cache directory, which `CompiledCache::open` checked is owned by
    // this process's uid, not a symlink and closed to group and others: only this uid
    // (or root, who can do anything anyway) can write there. The host writes entries
    // only in `CompiledCache::store`, from `Module::serialize`, through a synced
    // temporary file renamed into place, so an entry is never partial. `read_entry`
    // read them from a regular file, owned by this uid, opened without following a
    // symlink. wasmtime itself checks the artifact's header, version and engine
    // configuration before using it.
    unsafe { Module::deserialize(engine, bytes) }.map_err(|err| BadEntry::Deserialize(err.into()))
}

/// Writes `bytes` as the entry `name` in `dir`, atomically: readers see the whole
/// entry or none.
fn write_entry(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
    let temp =
        dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), NEXT_TEMP.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        // `create_new` fails on any existing file, a symlink included.
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        file.write_all(bytes)?;
        // The content is on disk before the name is: after a crash, an entry is whole.
        file.sync_all()?;
        fs::rename(&temp, dir.join(name))
    })();
    if written.is_err()
        && let Err(err) = fs::remove_file(&temp)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %temp.display(), error = %err, "cannot remove a temporary cache file");
    }
    written
}

/// Removes an unusable entry, whatever it is (a directory only if empty).
fn remove_entry(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(err) => Err(err),
    };
    if let Err(err) = removed
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(entry = %path.display(), error = %err, "cannot remove a compiled-module cache entry");
    }
}

/// `<digest>-<compatibility hash>`, or `None` when `digest_hex` is not a sha256 in
/// lowercase hex: nothing else may become part of a path.
fn entry_name(engine: &Engine, digest_hex: &str) -> Option<String> {
    if !is_digest(digest_hex) {
        return None;
    }
    // `DefaultHasher::new` is deterministic within a build of the host; a new Rust
    // release may change it, which only turns old entries into misses that age out.
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    Some(format!("{digest_hex}-{:016x}", hasher.finish()))
}

fn is_digest(text: &str) -> bool {
    text.len() == DIGEST_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_entry_name(name: &str) -> bool {
    name.len() == ENTRY_NAME_LEN
        && name.split_once('-').is_some_and(|(digest, hash)| {
            is_digest(digest)
                && hash.len() == 16
                && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// A temporary file of [`write_entry`]: `.<entry name>.<pid>.<n>.tmp`.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|rest| rest.get(..ENTRY_NAME_LEN).is_some_and(is_entry_name))
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_good_module_is_kept_apart_from_the_entries() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), 1).expect("opens");
        assert_eq!(cache.last_good(), None);
        cache.store_last_good(b"\0asm v1", &[b"sig1".to_vec(), b"sig2\n".to_vec()]);
        assert_eq!(cache.last_good(), Some((b"\0asm v1".to_vec(), vec![b"sig1".to_vec(), b"sig2".to_vec()])));
        // An unsigned one removes the old signatures: they must not pass for its own.
        cache.store_last_good(b"\0asm v2", &[]);
        assert_eq!(cache.last_good(), Some((b"\0asm v2".to_vec(), vec![])));
        // Not an entry: a bound of one byte evicts nothing of it.
        cache.evict("none");
        assert_eq!(cache.last_good().map(|(module, _)| module), Some(b"\0asm v2".to_vec()));
        assert_eq!(mode(&cache.dir().join(LAST_GOOD)), 0o600);
    }
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    use wasmtime::{Config, Instance, Store};

    const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const DIGEST_C: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn module(engine: &Engine, answer: i32) -> Module {
        let source = format!(r#"(module (func (export "answer") (result i32) (i32.const {answer})))"#);
        Module::new(engine, wat::parse_str(source).expect("test module parses"))
            .expect("test module compiles")
    }

    fn answer(engine: &Engine, module: &Module) -> i32 {
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, module, &[]).expect("instantiates");
        let answer = instance.get_typed_func::<(), i32>(&mut store, "answer").expect("exported");
        answer.call(&mut store, ()).expect("runs")
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("exists").mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name().into_string().expect("UTF-8"))
            .collect();
        names.sort();
        names
    }

    fn entry_path(cache: &CompiledCache, engine: &Engine, digest: &str) -> PathBuf {
        cache.dir().join(entry_name(engine, digest).expect("a digest"))
    }

    fn set_age(path: &Path, seconds_ago: u64) {
        let time = SystemTime::now() - Duration::from_secs(seconds_ago);
        File::options().write(true).open(path).expect("opens").set_modified(time).expect("sets the time");
    }

    #[test]
    fn open_creates_the_directory_and_its_parents_0700() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("a/b/cache");
        let cache = CompiledCache::open(&dir, DEFAULT_MAX_BYTES).expect("opens");
        assert_eq!(cache.dir(), dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        // And opens it again.
        CompiledCache::open(&dir, DEFAULT_MAX_BYTES).expect("opens again");
    }

    #[test]
    fn a_directory_only_others_can_read_is_closed() {
        let root = tempfile::tempdir().expect("temp dir");
        for open in [0o755, 0o750, 0o701, 0o705] {
            let dir = root.path().join(format!("cache-{open:o}"));
            fs::create_dir(&dir).expect("creates");
            fs::set_permissions(&dir, fs::Permissions::from_mode(open)).expect("chmod");
            CompiledCache::open(&dir, DEFAULT_MAX_BYTES).expect("opens");
            assert_eq!(mode(&dir), 0o700, "{open:o}");
        }
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_the_fix() {
        let root = tempfile::tempdir().expect("temp dir");
        for bad in [0o775, 0o757, 0o722, 0o777] {
            let dir = root.path().join(format!("cache-{bad:o}"));
            fs::create_dir(&dir).expect("creates");
            fs::set_permissions(&dir, fs::Permissions::from_mode(bad)).expect("chmod");
            let err = CompiledCache::open(&dir, DEFAULT_MAX_BYTES).expect_err("refused");
            assert!(matches!(err, CacheError::Permissions { mode, .. } if mode == bad), "{err}");
            let message = err.to_string();
            assert!(message.contains(&format!("{}", dir.display())), "{message}");
            assert!(message.contains(&format!("{bad:04o}")), "{message}");
            assert!(message.contains(&format!("`rm -r {}`", dir.display())), "{message}");
            // Left as it was: not the host's to repair.
            assert_eq!(mode(&dir), bad);
        }
        let dir = root.path().join("cache-777");
        assert_eq!(
            CompiledCache::open(&dir, 1).expect_err("refused").to_string(),
            format!(
                "compiled-module cache directory {0} has mode 0777, which lets other users write there, \
                 so its entries cannot be trusted; remove it (`rm -r {0}`) or give the host a directory of its own",
                dir.display()
            )
        );
        // Removed as the message says, it is created again.
        fs::remove_dir(&dir).expect("removes");
        CompiledCache::open(&dir, 1).expect("opens once removed");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let real = root.path().join("real");
        fs::create_dir(&real).expect("creates");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let err = CompiledCache::open(&link, DEFAULT_MAX_BYTES).expect_err("refused");
        assert!(matches!(err, CacheError::Symlink { .. }), "{err}");
        // A trailing slash would make the system follow the link: still refused.
        let with_slash = PathBuf::from(format!("{}/", link.display()));
        let err = CompiledCache::open(&with_slash, DEFAULT_MAX_BYTES).expect_err("refused");
        assert!(matches!(err, CacheError::Symlink { .. }), "{err}");
        // A dangling link is not replaced by a directory either.
        let dangling = root.path().join("dangling");
        std::os::unix::fs::symlink(root.path().join("nowhere"), &dangling).expect("symlink");
        let err = CompiledCache::open(&dangling, DEFAULT_MAX_BYTES).expect_err("refused");
        assert!(matches!(err, CacheError::Symlink { .. }), "{err}");
        assert!(!root.path().join("nowhere").exists());
    }

    #[test]
    fn a_file_is_not_a_cache_directory() {
        let root = tempfile::tempdir().expect("temp dir");
        let file = root.path().join("file");
        fs::write(&file, b"").expect("writes");
        let err = CompiledCache::open(&file, DEFAULT_MAX_BYTES).expect_err("refused");
        assert!(matches!(err, CacheError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = if effective_uid() == 0 {
            // Root can make a directory another user owns.
            let dir = root.path().join("theirs");
            fs::create_dir(&dir).expect("creates");
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
            dir
        } else {
            // Anyone else finds one: `/` belongs to root.
            PathBuf::from("/")
        };
        let err = CompiledCache::open(&dir, DEFAULT_MAX_BYTES).expect_err("refused");
        assert!(matches!(err, CacheError::Owner { uid, .. } if uid == effective_uid()), "{err}");
        assert!(err.to_string().contains("is owned by uid"), "{err}");
    }

    #[test]
    fn a_stored_module_loads_and_runs() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), DEFAULT_MAX_BYTES).expect("opens");
        let engine = Engine::default();
        assert!(cache.load(&engine, DIGEST_A).is_none());
        cache.store(DIGEST_A, &module(&engine, 42));

        let entry = entry_path(&cache, &engine, DIGEST_A);
        assert_eq!(mode(&entry), 0o600);
        assert_eq!(
            names(cache.dir()),
            [entry_name(&engine, DIGEST_A).expect("a digest")],
            "no temp file left"
        );
        let loaded = cache.load(&engine, DIGEST_A).expect("a hit");
        assert_eq!(answer(&engine, &loaded), 42);
        assert_eq!(cache.stats(), (1, 1));

        // Another cache on the same directory (a restart) finds it too.
        let reopened = CompiledCache::open(cache.dir(), DEFAULT_MAX_BYTES).expect("opens");
        let loaded = reopened.load(&engine, DIGEST_A).expect("a hit after a restart");
        assert_eq!(answer(&engine, &loaded), 42);
        // Storing again replaces the entry.
        cache.store(DIGEST_A, &module(&engine, 7));
        assert_eq!(answer(&engine, &cache.load(&engine, DIGEST_A).expect("a hit")), 7);
    }

    #[test]
    fn a_corrupt_entry_is_removed() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), DEFAULT_MAX_BYTES).expect("opens");
        let engine = Engine::default();
        cache.store(DIGEST_A, &module(&engine, 42));
        let entry = entry_path(&cache, &engine, DIGEST_A);

        // Garbage, and a real entry cut short.
        let whole = fs::read(&entry).expect("reads");
        for corrupt in [b"not a compiled module".to_vec(), whole[..whole.len() / 2].to_vec()] {
            fs::write(&entry, corrupt).expect("writes");
            assert!(cache.load(&engine, DIGEST_A).is_none());
            assert!(!entry.exists(), "the corrupt entry is removed");
        }
        assert_eq!(cache.stats(), (0, 2));
    }

    #[test]
    fn entries_that_are_not_regular_files_or_too_large_are_removed() {
        let root = tempfile::tempdir().expect("temp dir");
        let engine = Engine::default();
        let size = module(&engine, 42).serialize().expect("serializes").len() as u64;
        let cache = CompiledCache::open(&root.path().join("cache"), size * 2).expect("opens");
        let entry = entry_path(&cache, &engine, DIGEST_A);

        // A symlink to a valid entry elsewhere: not followed, removed, target kept.
        let elsewhere = root.path().join("elsewhere");
        fs::write(&elsewhere, module(&engine, 42).serialize().expect("serializes")).expect("writes");
        std::os::unix::fs::symlink(&elsewhere, &entry).expect("symlink");
        assert!(cache.load(&engine, DIGEST_A).is_none());
        assert!(fs::symlink_metadata(&entry).is_err(), "the symlink is removed");
        assert!(elsewhere.exists(), "its target is not");

        // A directory.
        fs::create_dir(&entry).expect("creates");
        assert!(cache.load(&engine, DIGEST_A).is_none());
        assert!(!entry.exists(), "the directory is removed");

        // Larger than the whole cache.
        fs::write(&entry, vec![0; usize::try_from(size * 2 + 1).expect("fits")]).expect("writes");
        assert!(cache.load(&engine, DIGEST_A).is_none());
        assert!(!entry.exists(), "the oversized entry is removed");
    }

    #[test]
    fn an_entry_for_another_engine_configuration_is_not_found() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), DEFAULT_MAX_BYTES).expect("opens");
        let mut config = Config::new();
        config.epoch_interruption(true);
        let with_epochs = Engine::new(&config).expect("engine");
        let without = Engine::default();
        cache.store(DIGEST_A, &module(&with_epochs, 42));

        assert!(cache.load(&without, DIGEST_A).is_none());
        // Not found, rather than found and refused: the other engine's entry stays.
        assert!(entry_path(&cache, &with_epochs, DIGEST_A).exists());
        assert_ne!(entry_name(&with_epochs, DIGEST_A), entry_name(&without, DIGEST_A));
        assert!(cache.load(&with_epochs, DIGEST_A).is_some());
    }

    #[test]
    fn eviction_keeps_the_total_within_the_bound_oldest_first() {
        let root = tempfile::tempdir().expect("temp dir");
        let engine = Engine::default();
        let size = module(&engine, 1).serialize().expect("serializes").len() as u64;
        // Room for two entries, not three.
        let cache = CompiledCache::open(&root.path().join("cache"), size * 2 + size / 2).expect("opens");
        let unrelated = cache.dir().join("README");
        fs::write(&unrelated, b"not an entry").expect("writes");

        cache.store(DIGEST_A, &module(&engine, 1));
        cache.store(DIGEST_B, &module(&engine, 2));
        set_age(&entry_path(&cache, &engine, DIGEST_A), 200);
        set_age(&entry_path(&cache, &engine, DIGEST_B), 100);
        // A hit makes A the most recently used.
        assert!(cache.load(&engine, DIGEST_A).is_some());

        cache.store(DIGEST_C, &module(&engine, 3));
        assert!(entry_path(&cache, &engine, DIGEST_A).exists(), "recently used: kept");
        assert!(!entry_path(&cache, &engine, DIGEST_B).exists(), "least recently used: evicted");
        assert!(entry_path(&cache, &engine, DIGEST_C).exists(), "just stored: kept");
        assert!(unrelated.exists(), "files that are not entries are left alone");
        let total: u64 = [DIGEST_A, DIGEST_C]
            .iter()
            .map(|digest| fs::metadata(entry_path(&cache, &engine, digest)).expect("exists").len())
            .sum();
        assert!(total <= size * 2 + size / 2, "{total}");
    }

    #[test]
    fn leftover_temporary_files_are_evicted_too() {
        let root = tempfile::tempdir().expect("temp dir");
        let engine = Engine::default();
        let size = module(&engine, 1).serialize().expect("serializes").len() as u64;
        let cache = CompiledCache::open(&root.path().join("cache"), size * 2).expect("opens");
        let name = entry_name(&engine, DIGEST_B).expect("a digest");
        let leftover = cache.dir().join(format!(".{name}.1234.0.tmp"));
        fs::write(&leftover, vec![0; usize::try_from(size * 2).expect("fits")]).expect("writes");
        set_age(&leftover, 3600);
        cache.store(DIGEST_A, &module(&engine, 1));
        assert!(!leftover.exists());
        assert!(entry_path(&cache, &engine, DIGEST_A).exists());
    }

    #[test]
    fn a_module_larger_than_the_cache_is_not_stored() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), 100).expect("opens");
        let engine = Engine::default();
        cache.store(DIGEST_A, &module(&engine, 1));
        assert!(names(cache.dir()).is_empty());
    }

    #[test]
    fn a_key_that_is_not_a_sha256_never_becomes_a_path() {
        let root = tempfile::tempdir().expect("temp dir");
        let cache = CompiledCache::open(&root.path().join("cache"), DEFAULT_MAX_BYTES).expect("opens");
        let engine = Engine::default();
        let module = module(&engine, 1);
        let upper = DIGEST_C.to_uppercase();
        let prefixed = format!("sha256:{DIGEST_C}");
        let traversal = format!("../../{}", &DIGEST_C[6..]);
        let bad: [&str; 8] = [
            "",
            &DIGEST_C[..63],
            &format!("{DIGEST_C}0"),
            &upper,
            &prefixed,
            &traversal,
            "../../../../../../../../../../../../../../../../../../../../etc/x",
            "gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg",
        ];
        for digest in bad {
            cache.store(digest, &module);
            assert!(cache.load(&engine, digest).is_none(), "{digest}");
        }
        assert!(names(cache.dir()).is_empty());
        assert!(names(root.path()) == ["cache"], "nothing written outside either");
        assert_eq!(cache.stats(), (0, 0));
    }
}
