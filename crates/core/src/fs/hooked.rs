//! One generic way to wrap an Fs: a `Hook` sees every call as a `Call` value and decides what
//! happens around it; every `Hook` is an `Fs` through the blanket impl below. The suite's
//! wrappers (the kill switch, the lease audit, the scheduler's yield points, scripted
//! interference) and the benches' operation counter are hooks, so none of them forwards the
//! sixteen primitives by hand, and a primitive added to `Fs` reaches all of them at once.

use std::io;
use std::path::Path;

use super::{Caps, Entry, Fs, Meta};

/// One call on the Fs port, with its arguments.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    Read(&'a Path),
    List(&'a Path),
    Metadata(&'a Path),
    CreateDir(&'a Path),
    CreateDirAll(&'a Path),
    CreateNew(&'a Path, &'a [u8]),
    Write(&'a Path, &'a [u8]),
    Append(&'a Path, &'a [u8]),
    FsyncFile(&'a Path),
    FsyncDir(&'a Path),
    Rename(&'a Path, &'a Path),
    RenameNoreplace(&'a Path, &'a Path),
    RenameExchange(&'a Path, &'a Path),
    HardLink(&'a Path, &'a Path),
    RemoveFile(&'a Path),
    RemoveDirAll(&'a Path),
}

impl<'a> Call<'a> {
    /// The paths the call names: the first, and the second of a two-path call (rename,
    /// exchange, link: source then destination).
    pub fn paths(&self) -> (&'a Path, Option<&'a Path>) {
        match *self {
            Call::Read(p)
            | Call::List(p)
            | Call::Metadata(p)
            | Call::CreateDir(p)
            | Call::CreateDirAll(p)
            | Call::CreateNew(p, _)
            | Call::Write(p, _)
            | Call::Append(p, _)
            | Call::FsyncFile(p)
            | Call::FsyncDir(p)
            | Call::RemoveFile(p)
            | Call::RemoveDirAll(p) => (p, None),
            Call::Rename(a, b)
            | Call::RenameNoreplace(a, b)
            | Call::RenameExchange(a, b)
            | Call::HardLink(a, b) => (a, Some(b)),
        }
    }

    /// Whether the call may change the filesystem (everything but read, list, metadata;
    /// an fsync changes what survives a crash).
    pub fn mutates(&self) -> bool {
        !matches!(self, Call::Read(_) | Call::List(_) | Call::Metadata(_))
    }

    /// Whether the call needs new space on the device (a full disk refuses it with ENOSPC);
    /// renames, removals and fsyncs do not.
    pub fn grows(&self) -> bool {
        matches!(
            self,
            Call::CreateDir(_)
                | Call::CreateDirAll(_)
                | Call::CreateNew(..)
                | Call::Write(..)
                | Call::Append(..)
                | Call::HardLink(..)
        )
    }

    /// Whether the call is an fsync.
    pub fn is_fsync(&self) -> bool {
        matches!(self, Call::FsyncFile(_) | Call::FsyncDir(_))
    }
}

/// A wrapper around an inner Fs. Only `inner` is required; the defaults forward.
pub trait Hook: Send + Sync {
    /// The Fs the calls go to.
    fn inner(&self) -> &dyn Fs;

    /// Runs `call` (whose effect on the inner Fs is `run`). A hook may refuse the call
    /// without running it, observe its result, or change it.
    fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let _ = call;
        run()
    }

    /// The entries a successful `list(dir)` returns (a hook may hide some).
    fn listed(&self, dir: &Path, entries: Vec<Entry>) -> Vec<Entry> {
        let _ = dir;
        entries
    }

    /// What `caps(path)` reports.
    fn reported_caps(&self, path: &Path) -> Caps {
        self.inner().caps(path)
    }

    /// What `available_bytes(path)` reports.
    fn reported_space(&self, path: &Path) -> Option<u64> {
        self.inner().available_bytes(path)
    }

    /// What `unique()` returns.
    fn reported_unique(&self) -> String {
        self.inner().unique()
    }
}

impl<H: Hook> Fs for H {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.around(Call::Read(path), || self.inner().read(path))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let entries = self.around(Call::List(dir), || self.inner().list(dir))?;
        Ok(self.listed(dir, entries))
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        self.around(Call::Metadata(path), || self.inner().metadata(path))
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.around(Call::CreateDir(path), || self.inner().create_dir(path))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.around(Call::CreateDirAll(path), || {
            self.inner().create_dir_all(path)
        })
    }
    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.around(Call::CreateNew(path, bytes), || {
            self.inner().create_new(path, bytes)
        })
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.around(Call::Write(path, bytes), || self.inner().write(path, bytes))
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.around(Call::Append(path, bytes), || {
            self.inner().append(path, bytes)
        })
    }
    fn fsync_file(&self, path: &Path) -> io::Result<()> {
        self.around(Call::FsyncFile(path), || self.inner().fsync_file(path))
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        self.around(Call::FsyncDir(dir), || self.inner().fsync_dir(dir))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.around(Call::Rename(from, to), || self.inner().rename(from, to))
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.around(Call::RenameNoreplace(from, to), || {
            self.inner().rename_noreplace(from, to)
        })
    }
    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.around(Call::RenameExchange(a, b), || {
            self.inner().rename_exchange(a, b)
        })
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.around(Call::HardLink(from, to), || {
            self.inner().hard_link(from, to)
        })
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.around(Call::RemoveFile(path), || self.inner().remove_file(path))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.around(Call::RemoveDirAll(path), || {
            self.inner().remove_dir_all(path)
        })
    }
    fn unique(&self) -> String {
        self.reported_unique()
    }
    fn caps(&self, path: &Path) -> Caps {
        self.reported_caps(path)
    }
    fn available_bytes(&self, path: &Path) -> Option<u64> {
        self.reported_space(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use std::sync::Mutex;

    /// Refuses every write to one path and records every call it sees.
    struct Refuse {
        inner: SimFs,
        seen: Mutex<Vec<String>>,
    }

    impl Hook for Refuse {
        fn inner(&self) -> &dyn Fs {
            &self.inner
        }
        fn around<T>(&self, call: Call<'_>, run: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
            self.seen.lock().unwrap().push(format!("{call:?}"));
            if matches!(call, Call::Write(p, _) if p.ends_with("no")) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            run()
        }
        fn listed(&self, _: &Path, mut entries: Vec<Entry>) -> Vec<Entry> {
            entries.retain(|e| e.name != "hidden");
            entries
        }
    }

    #[test]
    fn a_hook_sees_refuses_and_filters_calls_and_forwards_the_rest() {
        let hook = Refuse {
            inner: SimFs::new(),
            seen: Mutex::new(Vec::new()),
        };
        let root = Path::new("/r");
        hook.create_dir_all(root).unwrap();
        hook.write(&root.join("yes"), b"1").unwrap();
        hook.write(&root.join("hidden"), b"2").unwrap();
        let refused = hook.write(&root.join("no"), b"3").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        let names: Vec<String> = hook
            .list(root)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["yes".to_string()]);
        assert!(!hook.inner.exists(&root.join("no")));
        assert_eq!(hook.read(&root.join("yes")).unwrap(), b"1");
        assert_eq!(hook.seen.lock().unwrap().len(), 6);
        let two = Call::Rename(root, Path::new("/s"));
        assert_eq!(two.paths(), (root, Some(Path::new("/s"))));
        assert!(two.mutates() && !two.grows());
        assert!(Call::HardLink(root, root).grows());
        assert!(!Call::List(root).mutates());
    }
}
