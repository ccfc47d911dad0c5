//! The Fs port: every read and write the orchestrator does under OUT goes through this trait,
//! so that the same code runs on the real filesystem (`OsFs`) and on simulated ones (`SimFs`
//! in `fs/sim.rs`, the loom fs in the suite), where crashes and interleavings are explored.
//! The durable compound operations (`write_atomic`, `create_durable`, `publish_dir`) are built
//! here once from the primitives; nothing else composes fsyncs and renames.

pub mod sim;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// What `metadata` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub len: u64,
}

/// The primitives. Durability model (what `SimFs` simulates and `OsFs` gets from POSIX):
/// file contents are durable after `fsync_file`; a directory's entries (creations, renames,
/// removals inside it) are durable after `fsync_dir` of that directory.
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
    /// Atomic rename that replaces a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Atomic rename that fails with `AlreadyExists` when anything is at `to` (files and
    /// directories alike).
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// A token unique within this filesystem's users (pid and counter on the OS; a counter in
    /// simulation), for temporary names.
    fn unique(&self) -> String;

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

/// Bound on the depth [`files_below`] descends.
pub const MAX_TREE_DEPTH: usize = 16;

/// Every regular file below `dir`, as paths relative to `dir`, sorted. Our temporaries (files
/// and staged dirs, [`is_temp_name`]) are never data and are skipped; depth is bounded by
/// [`MAX_TREE_DEPTH`]. The one tree walker: manifests, digests, bundles and backups use it.
pub fn files_below(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = stack.pop() {
        if depth > MAX_TREE_DEPTH {
            continue;
        }
        for e in fs.list(&dir.join(&rel))? {
            if is_temp_name(&e.name) {
                continue;
            }
            let path = rel.join(&e.name);
            if e.is_dir {
                stack.push((path, depth + 1));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Replaces `path` atomically and durably: temp file, fsync, rename, fsync of the directory.
/// Readers see the old or the new content, never a mix; after return the new content
/// survives a crash.
pub fn write_atomic(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_staged(fs, parent_of(path)?, path, bytes)
}

/// `write_atomic` with the temporary file in `staging_dir` (on the same filesystem as
/// `path`) instead of next to `path`: for directories where every entry is data to some
/// reader (MLflow's `params/`, `tags/`, `artifacts/`), so a temporary left by a crash is
/// never read as a key.
pub fn write_atomic_staged(
    fs: &dyn Fs,
    staging_dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let tmp = staging_dir.join(format!(".{}.tmp-{}", file_name_of(path)?, fs.unique()));
    fs.create_new(&tmp, bytes)?;
    let published = fs
        .fsync_file(&tmp)
        .and_then(|()| fs.rename(&tmp, path))
        .and_then(|()| fs.fsync_dir(parent_of(path)?));
    if published.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    published
}

/// Replaces `path` atomically for concurrent readers (temp file, rename) WITHOUT making it
/// durable: for data whose loss in a crash is harmless (heartbeats, the job file, which is
/// rewritten by every attempt).
pub fn write_replace(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(fs, path)?;
    fs.create_new(&tmp, bytes)?;
    let published = fs.rename(&tmp, path);
    if published.is_err() {
        let _ = fs.remove_file(&tmp);
    }
    published
}

/// Creates `path` exclusively with `bytes`, atomically and durably: the file appears whole or
/// not at all (temp file, fsync, no-replace rename, fsync of the directory). `AlreadyExists`
/// when something is at `path`.
pub fn create_durable(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(fs, path)?;
    fs.create_new(&tmp, bytes)?;
    let published = fs
        .fsync_file(&tmp)
        .and_then(|()| fs.rename_noreplace(&tmp, path));
    if let Err(e) = published {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    fs.fsync_dir(parent_of(path)?)
}

/// Publishes a fully prepared directory `staged` at `path` (no-replace rename, then fsync of
/// the parent). `AlreadyExists` when something is at `path`.
pub fn publish_dir(fs: &dyn Fs, staged: &Path, path: &Path) -> io::Result<()> {
    fs.fsync_dir(staged)?;
    fs.rename_noreplace(staged, path)?;
    fs.fsync_dir(parent_of(path)?)
}

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

/// Per-process counter for `OsFs::unique`.
static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn sync_path(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

impl Fs for OsFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // file_type does not follow symlinks; a symlinked variant dir is not ours.
            let is_dir = match entry.file_type() {
                Ok(t) => t.is_dir(),
                // Removed between readdir and stat: skip it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(Entry { name, is_dir });
        }
        out.sort();
        Ok(out)
    }

    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let m = std::fs::metadata(path)?;
        Ok(Meta {
            is_dir: m.is_dir(),
            len: m.len(),
        })
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        f.write_all(bytes)
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(path, bytes)
    }

    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?
            .write_all(bytes)
    }

    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        sync_path(path)
    }

    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_path(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        rename_noreplace_os(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn unique(&self) -> String {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}-{n:010}-{nanos:09}", std::process::id())
    }
}

#[cfg(target_os = "linux")]
fn rename_noreplace_os(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace_os(from: &Path, to: &Path) -> io::Result<()> {
    // Portable fallback for files: a hard link fails if `to` exists. Directories are only
    // published on Linux hosts (the platforms trainctl targets are Linux).
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_below_is_relative_sorted_and_skips_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for rel in [
            "b.txt",
            "a/z.bin",
            "a/c/d.json",
            ".x.tmp-1",
            ".stage.tmp-2/inner.bin",
        ] {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, rel).unwrap();
        }
        let got = files_below(&OsFs, d).unwrap();
        let want: Vec<PathBuf> = ["a/c/d.json", "a/z.bin", "b.txt"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
        assert!(files_below(&OsFs, &d.join("missing")).is_err());
    }
}
