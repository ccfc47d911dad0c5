//! The Fs port: every read and write trainctl does under OUT (and on the Drive mirror, and in
//! the built-in trainer's checkpoint writer) goes through this trait, so that the same code
//! runs on the real filesystem (`os.rs`) and on simulated ones (`sim.rs`, the loom fs in the
//! suite), where crashes, interleavings and storage profiles are explored. It never decides
//! anything about variants, leases or caches.
//!
//! Layout:
//! - `mod.rs`: the primitives (this trait) and directory entries;
//! - `os.rs`: `OsFs`, the real filesystem, and its per-filesystem profile registry;
//! - `profile.rs`: storage profiles, the probe, `/proc/self/mountinfo`, the guarantees table;
//! - `durable.rs`: the only compound durable operations (create-exclusive, replace, publish a
//!   directory, swap a directory, create a directory chain), one protocol per profile;
//! - `manifest.rs`: the one tree walker and the one manifest builder (size + sha256);
//! - `hooked.rs`: `Hook`, the one generic wrapper (kill switch, audits, counters);
//! - `sim.rs`: `SimFs`, the deterministic simulated filesystem with its crash model and
//!   profiles.
//!
//! The contract these implement is docs/contract.md, "Storage profiles".

pub mod durable;
pub mod hooked;
pub mod manifest;
pub mod os;
pub mod profile;
pub mod sim;

use std::io;
use std::path::{Path, PathBuf};

pub use durable::{
    create_durable, ensure_dir, publish_dir, recover_swap, swap_dir, write_atomic,
    write_atomic_staged, write_dir_atomic, write_replace,
};
pub use hooked::{Call, Hook};
pub use manifest::{files_below, FileDigest, MAX_TREE_DEPTH};
pub use os::OsFs;
pub use profile::{Caps, ProfileName};

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// What `metadata` reports (following symlinks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub len: u64,
    /// Neither a regular file nor a directory: a FIFO, a device, a socket (reading one can
    /// block forever or never end).
    pub special: bool,
}

/// The primitives. Durability model (what `SimFs` simulates and `OsFs` gets from POSIX):
/// file contents are durable after `fsync_file`; a directory's entries (creations, renames,
/// removals, links inside it) are durable after `fsync_dir` of that directory.
///
/// Which of the optional primitives a filesystem has (`rename_noreplace`, `rename_exchange`,
/// `hard_link`) is its storage profile, reported by `caps`; where one is missing it fails
/// with `EINVAL` (rename flags) or `EPERM` (links), as Linux filesystems do. Only
/// `durable.rs` chooses between them.
pub trait Fs: Send + Sync {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Entries of `dir`, sorted by name. Names that are not UTF-8 are skipped.
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    fn metadata(&self, path: &Path) -> io::Result<Meta>;

    /// Creates one directory; `AlreadyExists` if anything is at `path`, `NotFound` if the
    /// parent is missing.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates `path` and missing ancestors; succeeds if it is already a directory.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file exclusively (`AlreadyExists` otherwise) holding `bytes`. Not synced.
    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Creates or truncates `path` and writes `bytes`. Not synced. Only for data that is
    /// published later by rename, or that may be lost (logs).
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Appends to an existing or new file. Not synced.
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    fn fsync_file(&self, path: &Path) -> io::Result<()>;
    fn fsync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomic rename that replaces a file (or an empty directory) at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Atomic rename that fails with `AlreadyExists` when anything is at `to` (files and
    /// directories alike). `EINVAL` where the filesystem has no rename flags.
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Atomically exchanges the two names (both must exist). `EINVAL` where the filesystem
    /// has no rename flags.
    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()>;
    /// A second name `to` for the file `from`; `AlreadyExists` when anything is at `to`.
    /// `EPERM` (or `ENOSYS`, `EOPNOTSUPP`) where the filesystem has no hard links.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// A token unique within this filesystem's users (pid and counter on the OS; a counter in
    /// simulation), for temporary names.
    fn unique(&self) -> String;
    /// What the filesystem holding `path` can do: its storage profile. Cheap after the first
    /// call per filesystem (the OS probes once per filesystem and process).
    fn caps(&self, path: &Path) -> Caps;
    /// Bytes free for this process on the filesystem of `path`, when it can tell (error
    /// messages of a full disk quote it).
    fn available_bytes(&self, _path: &Path) -> Option<u64> {
        None
    }

    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
    fn is_file(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| !m.is_dir)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.metadata(path).is_ok_and(|m| m.is_dir)
    }
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))
}

fn file_name_of(path: &Path) -> io::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
}

/// The temporary sibling used to publish `path`.
pub fn temp_sibling(fs: &dyn Fs, path: &Path) -> io::Result<PathBuf> {
    let name = file_name_of(path)?;
    Ok(parent_of(path)?.join(format!(".{name}.tmp-{}", fs.unique())))
}

/// Whether a directory entry is one of our temporaries (never data).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}
