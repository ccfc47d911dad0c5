//! A trainer's local staging directory when OUT is in a bucket (docs/contract.md, "OUT in an
//! object store", Artifacts and Reads). A trainer is a process with local paths: it trains
//! in a staging dir on the local disk; trainctl downloads what it needs first (the step
//! checkpoint a resume continues from, the parent or initial checkpoint), uploads each
//! finished step checkpoint while it trains (so a resume on another machine finds it), and
//! uploads the rest when it exits. The completion check then reads the objects, never this
//! copy.

use crate::fs::{self, Fs};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// The file a step checkpoint is judged by (`latest_step_checkpoint`): uploaded last, so a
/// step checkpoint whose upload was interrupted is never taken for whole.
pub const STEP_STATE_FILE: &str = "trainer_state.json";

/// Whether `dir` lives in an object store (OUT in a bucket).
pub fn is_remote(fs: &dyn Fs, dir: &Path) -> bool {
    fs.caps(dir).whole_objects
}

/// The local staging dir of the variant `dir` (OUT-relative path `rel`), under the project
/// root, emptied.
pub fn fresh(fs: &dyn Fs, root: &Path, rel: &str) -> io::Result<PathBuf> {
    let name: String = rel
        .chars()
        .map(|c| if c == '/' { '~' } else { c })
        .collect();
    let dir = root.join(".trainctl-staging").join(name);
    match fs.remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs.create_dir_all(&dir)?;
    Ok(dir)
}

/// Copies every file below `from` to the same relative path below `to` (either side may be
/// the bucket), files named `last` after every other.
pub fn copy_tree(fs: &dyn Fs, from: &Path, to: &Path, last: &str) -> io::Result<u64> {
    let mut files = fs::files_below(fs, from)?;
    files.sort_by_key(|f| (f.file_name().is_some_and(|n| n == last), f.clone()));
    let mut bytes = 0;
    for rel in files {
        let data = fs.read(&from.join(&rel))?;
        let target = to.join(&rel);
        if let Some(parent) = target.parent() {
            fs.create_dir_all(parent)?;
        }
        fs.write(&target, &data)?;
        bytes += data.len() as u64;
    }
    Ok(bytes)
}

/// Uploads the step checkpoints of `local` (`checkpoints/step-*`) that are whole (their state
/// file is there) and not in `done` yet, into `remote`; records them in `done`.
pub fn upload_steps(
    fs: &dyn Fs,
    local: &Path,
    remote: &Path,
    done: &mut BTreeSet<String>,
) -> io::Result<()> {
    let steps = local.join("checkpoints");
    let entries = match fs.list(&steps) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        if !e.is_dir || fs::is_temp_name(&e.name) || done.contains(&e.name) {
            continue;
        }
        let dir = steps.join(&e.name);
        if !fs.is_file(&dir.join(STEP_STATE_FILE)) {
            continue;
        }
        copy_tree(
            fs,
            &dir,
            &remote.join("checkpoints").join(&e.name),
            STEP_STATE_FILE,
        )?;
        done.insert(e.name);
    }
    Ok(())
}

/// After the trainer exits: the step checkpoints not uploaded yet, then the log, the metrics
/// and the final checkpoint (the completion check reads them from `remote`).
pub fn upload_outputs(
    fs: &dyn Fs,
    local: &Path,
    remote: &Path,
    done: &mut BTreeSet<String>,
    outputs: &[&str],
) -> io::Result<()> {
    upload_steps(fs, local, remote, done)?;
    for name in outputs {
        let from = local.join(name);
        match fs.metadata(&from) {
            Ok(m) if m.is_dir => {
                copy_tree(fs, &from, &remote.join(name), "")?;
            }
            Ok(_) => {
                let data = fs.read(&from)?;
                let target = remote.join(name);
                if let Some(parent) = target.parent() {
                    fs.create_dir_all(parent)?;
                }
                fs.write(&target, &data)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the staging root when its last staging dir is gone (a racing command's stays).
pub fn remove_if_empty(fs: &dyn Fs, dir: Option<&Path>) {
    if let Some(dir) = dir {
        if fs.list(dir).is_ok_and(|e| e.is_empty()) {
            let _ = fs.remove_dir_all(dir);
        }
    }
}
