//! The real filesystem with scripted interference, for the interleavings and failures that
//! real files cannot be made to produce on demand (props/cache.rs, props/lease.rs).

use std::io;
use std::path::Path;
use std::sync::Mutex;
use trainctl::fs::{Call, Caps, Entry, Fs, Hook, OsFs};

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

impl Hook for Scripted {
    fn inner(&self) -> &dyn Fs {
        &OsFs
    }
    fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        match call {
            Call::CreateDir(path) if self.racing_mkdir => std::fs::create_dir(path)?,
            Call::FsyncDir(_) => {
                if let Some(kind) = self.fsync_after_remove_fails {
                    if *self.removed.lock().expect("lock") {
                        return Err(io::Error::from(kind));
                    }
                }
            }
            Call::RenameNoreplace(..) => {
                if let Some(kind) = self.rename_noreplace_fails {
                    return Err(io::Error::from(kind));
                }
                self.lacks(|c| c.rename_noreplace, libc::EINVAL)?;
            }
            Call::RenameExchange(..) => self.lacks(|c| c.rename_exchange, libc::EINVAL)?,
            Call::HardLink(..) => self.lacks(|c| c.hard_link, libc::EPERM)?,
            Call::RemoveFile(_) => {
                if let Some(kind) = self.remove_fails {
                    return Err(io::Error::from(kind));
                }
                let result = run()?;
                *self.removed.lock().expect("lock") = true;
                return Ok(result);
            }
            _ => {}
        }
        run()
    }
    fn listed(&self, dir: &Path, mut entries: Vec<Entry>) -> Vec<Entry> {
        let mut miss = self.first_listing_misses.lock().expect("lock");
        if let Some((missing_in, name)) = miss.as_ref() {
            if missing_in == dir {
                entries.retain(|e| &e.name != name);
                *miss = None;
            }
        }
        entries
    }
    fn reported_caps(&self, path: &Path) -> Caps {
        self.caps.unwrap_or_else(|| OsFs.caps(path))
    }
    fn reported_unique(&self) -> String {
        let mut scripted = self.uniques.lock().expect("lock");
        if scripted.is_empty() {
            OsFs.unique()
        } else {
            scripted.remove(0)
        }
    }
}
