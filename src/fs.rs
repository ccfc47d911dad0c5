//! The Fs port: every read the orchestrator does of OUT goes through this trait, so that the
//! same code runs on the real filesystem (`OsFs`) and on simulated ones in the property suite.
//! This issue needs the read side only; the durable write primitives join it with execution.

use std::io;
use std::path::Path;

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

pub trait Fs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Entries of `dir`, sorted by name. Names that are not UTF-8 are skipped (they can never be
    /// ours).
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    fn metadata(&self, path: &Path) -> io::Result<Meta>;

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

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

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
            let is_dir = entry.file_type()?.is_dir();
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
}
