//! Retention of step checkpoints (docs/contract.md, "Retention and gc"): once a variant is
//! complete its `checkpoints/step-<k>` dirs only serve a resume it no longer needs, and
//! `checkpoint.keep_last` says how many of the newest stay. Used by `train` right after a
//! variant completes (under its lease) and by `gc`.

use crate::fs::Fs;
use std::io;
use std::path::{Path, PathBuf};

/// The step checkpoints of a variant dir, oldest first (the resume rule's own listing).
pub use trainctl_trainer::protocol::step_checkpoints;

/// The step checkpoints beyond the newest `keep`.
pub fn beyond(fs: &dyn Fs, dir: &Path, keep: u64) -> Vec<PathBuf> {
    let steps = step_checkpoints(fs, dir);
    let cut = steps.len().saturating_sub(keep as usize);
    steps.into_iter().take(cut).map(|(_, p)| p).collect()
}

/// Bytes at `path`: a file's length, or the files below a directory (the one tree walker,
/// `fs::files_below`, which follows no symlink and skips temporaries inside).
pub fn tree_bytes(fs: &dyn Fs, path: &Path) -> u64 {
    match fs.metadata(path) {
        Ok(m) if !m.is_dir => m.len,
        Ok(_) => crate::fs::files_below(fs, path)
            .unwrap_or_default()
            .iter()
            .filter_map(|rel| fs.metadata(&path.join(rel)).ok())
            .map(|m| m.len)
            .sum(),
        Err(_) => 0,
    }
}

/// Removes one step checkpoint so that it is never half-resumable: its `trainer_state.json`
/// goes first (a step dir without it is skipped by every resume), then the rest.
pub fn remove_step(fs: &dyn Fs, step: &Path) -> io::Result<()> {
    match fs.remove_file(&step.join("trainer_state.json")) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs.fsync_dir(step)?;
    match fs.remove_dir_all(step) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = step.parent() {
        fs.fsync_dir(parent)?;
    }
    Ok(())
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
}

/// Removes the step checkpoints of a complete variant beyond the newest `keep`. The caller
/// holds the variant's lease or has checked that nobody does.
pub fn prune(fs: &dyn Fs, dir: &Path, keep: u64) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    for step in beyond(fs, dir, keep) {
        let bytes = tree_bytes(fs, &step);
        remove_step(fs, &step)?;
        pruned.bytes += bytes;
        pruned.removed.push(step);
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFs;

    #[test]
    fn prune_keeps_the_newest_steps_and_counts_the_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for k in [10u64, 2, 30] {
            let step = dir.join(format!("checkpoints/step-{k}"));
            std::fs::create_dir_all(&step).unwrap();
            std::fs::write(step.join("trainer_state.json"), b"{}").unwrap();
            std::fs::write(step.join("w.bin"), vec![0u8; 100]).unwrap();
        }
        std::fs::create_dir_all(dir.join("checkpoints/.step-40.tmp-x")).unwrap();
        let pruned = prune(&OsFs, dir, 1).unwrap();
        assert_eq!(
            pruned.removed,
            vec![
                dir.join("checkpoints/step-2"),
                dir.join("checkpoints/step-10")
            ]
        );
        assert_eq!(pruned.bytes, 2 * 102);
        let left: Vec<u64> = step_checkpoints(&OsFs, dir).iter().map(|s| s.0).collect();
        assert_eq!(left, vec![30]);
        assert_eq!(prune(&OsFs, dir, 0).unwrap().removed.len(), 1);
        assert!(step_checkpoints(&OsFs, dir).is_empty());
    }
}
