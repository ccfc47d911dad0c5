//! `OsFs`, the real filesystem, and what it knows about the filesystems it touches: each
//! filesystem (device) is probed once per process, on first use, and a `storage.profile`
//! override restricts what its protocol may use. Owns the system calls of the Fs port
//! (through `rustix` where std has none); never decides what to write.

use super::profile::{self, Caps, Probe, ProfileName};
use super::{Entry, Fs, Meta};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

/// Per-process counter for `OsFs::unique`.
static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// What this process knows per device: the probe's result and an override.
#[derive(Default)]
struct Known {
    probed: BTreeMap<u64, Probe>,
    forced: BTreeMap<u64, ProfileName>,
}

static KNOWN: Mutex<Option<Known>> = Mutex::new(None);

fn with_known<T>(f: impl FnOnce(&mut Known) -> T) -> T {
    let mut guard = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Known::default))
}

/// The nearest existing directory at or above `path`, and its device.
fn existing_dir(path: &Path) -> io::Result<(PathBuf, u64)> {
    let mut cur = Some(path);
    // Bounded by the path's depth.
    while let Some(p) = cur {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok((p.to_path_buf(), m.dev())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        cur = p.parent();
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no existing directory at or above {}", path.display()),
    ))
}

impl OsFs {
    /// Probes the filesystem of `path` (in its nearest existing directory) unless this process
    /// did already, and returns the probe, the directory it ran in and whether it ran now.
    pub fn probe(path: &Path) -> io::Result<(Probe, PathBuf, bool)> {
        let (dir, dev) = existing_dir(path)?;
        if let Some(p) = with_known(|k| k.probed.get(&dev).copied()) {
            return Ok((p, dir, false));
        }
        let found = profile::probe(&OsFs, &dir)?;
        with_known(|k| k.probed.insert(dev, found));
        Ok((found, dir, true))
    }

    /// Restricts the filesystem of `path` to `profile` for the rest of this process.
    pub fn force(path: &Path, profile: ProfileName) -> io::Result<()> {
        let (_, dev) = existing_dir(path)?;
        with_known(|k| k.forced.insert(dev, profile));
        Ok(())
    }
}

fn sync_path(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

fn rename_with(from: &Path, to: &Path, flags: rustix::fs::RenameFlags) -> io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, flags)
        .map_err(io::Error::from)
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
            special: !m.is_dir() && !m.is_file(),
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
        match sync_path(dir) {
            // A filesystem that cannot fsync a directory (the probe reports `dir_fsync:
            // false`) makes names durable by its own rules.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        rename_with(from, to, rustix::fs::RenameFlags::NOREPLACE)
    }

    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        rename_with(a, b, rustix::fs::RenameFlags::EXCHANGE)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
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

    fn available_bytes(&self, path: &Path) -> Option<u64> {
        let (dir, _) = existing_dir(path).ok()?;
        let s = rustix::fs::statvfs(&dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// The probed capabilities of the filesystem of `path` (probed now if this process has
    /// not yet), restricted by an override. When the probe itself fails (read-only, full,
    /// no permission) nothing can be published there anyway: the answer is the most
    /// conservative protocol, and the write that follows reports the storage error.
    fn caps(&self, path: &Path) -> Caps {
        let Ok((_, dev)) = existing_dir(path) else {
            return Caps::NOFLAGS_NOLINKS;
        };
        let probed = match OsFs::probe(path) {
            Ok((p, _, _)) => p.caps,
            Err(_) => return Caps::NOFLAGS_NOLINKS,
        };
        match with_known(|k| k.forced.get(&dev).copied()) {
            Some(forced) => probed.restricted_to(forced),
            None => probed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_disk_probes_as_posix_once_per_process_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (p, at, _) = OsFs::probe(&dir.path().join("not/yet")).unwrap();
        assert_eq!(at, dir.path());
        assert_eq!(
            p.caps,
            Caps::POSIX,
            "tempdirs here are on a local Linux filesystem"
        );
        assert!(p.excl_create && p.dir_fsync);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let (again, _, ran) = OsFs::probe(dir.path()).unwrap();
        assert_eq!(again, p);
        assert!(!ran, "one probe per filesystem and process");
    }

    #[test]
    fn rename_flags_do_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a"), "a").unwrap();
        std::fs::write(p("b"), "b").unwrap();
        let e = OsFs.rename_noreplace(&p("a"), &p("b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        OsFs.rename_exchange(&p("a"), &p("b")).unwrap();
        assert_eq!(std::fs::read(p("a")).unwrap(), b"b");
        OsFs.hard_link(&p("a"), &p("c")).unwrap();
        assert_eq!(
            OsFs.hard_link(&p("b"), &p("c")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(OsFs.available_bytes(dir.path()).is_some_and(|b| b > 0));
    }
}
