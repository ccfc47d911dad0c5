//! The real filesystem with scripted interference, for the interleavings and failures that
//! real files cannot be made to produce on demand (props/cache.rs, props/lease.rs).

use std::io;
use std::path::Path;
use std::sync::Mutex;
use trainctl::fs::{Caps, Entry, Fs, Meta, OsFs};

/// The real filesystem with scripted interference: another process creating a directory at
/// the worst moment, `unique()` names that repeat, and I/O failures of chosen operations.
#[derive(Default)]
pub struct Scripted {
    /// Before `create_dir(p)`, "another process" creates `p`.
    pub racing_mkdir: bool,
    /// Names handed out by `unique()` first (then fresh ones).
    pub uniques: Mutex<Vec<String>>,
    /// `remove_file` fails with this kind (not NotFound).
    pub remove_fails: Option<io::ErrorKind>,
    /// Once a `remove_file` ran, `fsync_dir` fails with this kind.
    pub fsync_after_remove_fails: Option<io::ErrorKind>,
    pub removed: Mutex<bool>,
    /// `rename_noreplace` fails with this kind.
    pub rename_noreplace_fails: Option<io::ErrorKind>,
    /// The first listing of this dir leaves out this entry (it was created just after the
    /// listing was taken, as another start would).
    pub first_listing_misses: Mutex<Option<(std::path::PathBuf, String)>>,
    /// A storage profile below the real one: what it lacks answers EINVAL (rename flags) or
    /// EPERM (links), as NFS and FUSE do, and `caps` says so.
    pub caps: Option<Caps>,
}

impl Scripted {
    /// The real filesystem seen through a storage profile.
    pub fn with_profile(profile: super::SimProfile) -> Scripted {
        Scripted {
            caps: Some(profile.caps()),
            ..Scripted::default()
        }
    }

    fn lacks(&self, has: impl Fn(&Caps) -> bool, errno: i32) -> io::Result<()> {
        match &self.caps {
            Some(c) if !has(c) => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }
}

impl Fs for Scripted {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        OsFs.read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let mut entries = OsFs.list(dir)?;
        let mut miss = self.first_listing_misses.lock().expect("lock");
        if let Some((missing_in, name)) = miss.as_ref() {
            if missing_in == dir {
                entries.retain(|e| &e.name != name);
                *miss = None;
            }
        }
        Ok(entries)
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        OsFs.metadata(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if self.racing_mkdir {
            std::fs::create_dir(path)?;
        }
        OsFs.create_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsFs.create_dir_all(path)
    }
    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        OsFs.create_new(path, bytes)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        OsFs.write(path, bytes)
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        OsFs.append(path, bytes)
    }
    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        OsFs.fsync_file(path)
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.fsync_after_remove_fails {
            Some(kind) if *self.removed.lock().expect("lock") => Err(io::Error::from(kind)),
            _ => OsFs.fsync_dir(dir),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFs.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        if let Some(kind) = self.rename_noreplace_fails {
            return Err(io::Error::from(kind));
        }
        self.lacks(|c| c.rename_noreplace, libc::EINVAL)?;
        OsFs.rename_noreplace(from, to)
    }
    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.lacks(|c| c.rename_exchange, libc::EINVAL)?;
        OsFs.rename_exchange(a, b)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.lacks(|c| c.hard_link, libc::EPERM)?;
        OsFs.hard_link(from, to)
    }
    fn caps(&self, path: &Path) -> Caps {
        self.caps.unwrap_or_else(|| OsFs.caps(path))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if let Some(kind) = self.remove_fails {
            return Err(io::Error::from(kind));
        }
        OsFs.remove_file(path)?;
        *self.removed.lock().expect("lock") = true;
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_dir_all(path)
    }
    fn unique(&self) -> String {
        let mut scripted = self.uniques.lock().expect("lock");
        if scripted.is_empty() {
            OsFs.unique()
        } else {
            scripted.remove(0)
        }
    }
}
