//! The one tree walker and the one manifest builder: every regular file below a directory,
//! with its size and sha256. Training manifests, conversion manifests and the Drive mirror's
//! verification all come from here. Never writes (except the optional fsync of each file,
//! which changes no content).

use super::{is_temp_name, Fs};
use crate::digest::sha256_hex;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Bound on the depth [`files_below`] descends.
pub const MAX_TREE_DEPTH: usize = 16;

/// Every regular file below `dir`, as paths relative to `dir`, sorted. Our temporaries (files
/// and staged dirs, [`is_temp_name`]) are never data and are skipped; depth is bounded by
/// [`MAX_TREE_DEPTH`].
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

/// One file of a manifest: its path relative to the manifest's directory (with `/`), size and
/// sha256 (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Whether `build` makes each file durable as it reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fsync every file (before a manifest is recorded as the proof of a complete output).
    Files,
    /// Read only.
    No,
}

/// The bytes of every file below `dir` (temporaries skipped), from metadata: nothing is read.
pub fn size_below(fs: &dyn Fs, dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for rel in files_below(fs, dir)? {
        total += fs.metadata(&dir.join(rel))?.len;
    }
    Ok(total)
}

/// The manifest of `dir`: every file below it (sorted, temporaries skipped) with size and
/// sha256, read once each. The error names the file that failed.
pub fn build(fs: &dyn Fs, dir: &Path, sync: Sync) -> Result<Vec<FileDigest>, (PathBuf, io::Error)> {
    let names = files_below(fs, dir).map_err(|e| (dir.to_path_buf(), e))?;
    let mut out = Vec::with_capacity(names.len());
    for rel in names {
        let path = dir.join(&rel);
        let bytes = fs.read(&path).map_err(|e| (path.clone(), e))?;
        if sync == Sync::Files {
            fs.fsync_file(&path).map_err(|e| (path.clone(), e))?;
        }
        out.push(FileDigest {
            path: rel.to_string_lossy().replace('\\', "/"),
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;

    #[test]
    fn size_below_sums_the_files_a_manifest_would_list() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::write(d.join("a/x.bin"), vec![0u8; 300]).unwrap();
        std::fs::write(d.join("y.json"), b"{}").unwrap();
        std::fs::write(d.join(".tmp-z"), vec![0u8; 1000]).unwrap();
        let manifest = build(&OsFs, d, Sync::No).unwrap();
        let listed: u64 = manifest.iter().map(|f| f.size).sum();
        assert_eq!(size_below(&OsFs, d).unwrap(), listed);
        assert_eq!(listed, 302);
    }

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
        let manifest = build(&OsFs, d, Sync::No).unwrap();
        assert_eq!(
            manifest.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["a/c/d.json", "a/z.bin", "b.txt"]
        );
        assert_eq!(manifest[2].size, 5);
        assert_eq!(manifest[2].sha256, sha256_hex(b"b.txt"));
        let (at, _) = build(&OsFs, &d.join("missing"), Sync::Files).unwrap_err();
        assert_eq!(at, d.join("missing"));
    }
}
