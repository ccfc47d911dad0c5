//! The compound durable operations, built once from the Fs primitives, one protocol per
//! storage profile (docs/contract.md, "Storage profiles"). Nothing else in trainctl composes
//! fsyncs, links and renames; this module never decides what to write or where.
//!
//! | operation | `posix` | `posix-noflags` |
//! |---|---|---|
//! | create a file exclusively (`create_durable`) | temp, fsync, rename-noreplace | temp, fsync, link + unlink; without hard links an O_EXCL create at the final name |
//! | publish a staged directory (`publish_dir`) | rename-noreplace | plain rename: the target must not exist, a non-empty one refuses (the protocol never leaves an empty variant dir) |
//! | replace a directory (`swap_dir`) | rename-exchange | rename-aside + rename-in; `recover_swap` finishes or rolls back an interrupted one |
//! | replace a file (`write_atomic`) | temp, fsync, rename | the same |

use super::{file_name_of, parent_of, temp_sibling, Fs};
use std::io;
use std::path::{Path, PathBuf};

/// Replaces `path` atomically and durably: temp file, fsync, rename, fsync of the directory.
/// Readers see the old or the new content, never a mix; after return the new content
/// survives a crash. A plain rename is atomic on every profile.
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

/// Creates `path` exclusively with `bytes`, durably: `AlreadyExists` when something is at
/// `path`. With rename flags or hard links the file appears whole or not at all (temp file,
/// fsync, then rename-noreplace, or link + unlink). Without either (Drive, gcsfuse) it is an
/// O_EXCL create at the final name: exclusive, but a crash may leave it torn, which every
/// reader treats as unreadable (docs/contract.md).
pub fn create_durable(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let parent = parent_of(path)?;
    let caps = fs.caps(parent);
    if !caps.rename_noreplace && !caps.hard_link {
        fs.create_new(path, bytes)?;
        fs.fsync_file(path)?;
        return fs.fsync_dir(parent);
    }
    let tmp = temp_sibling(fs, path)?;
    fs.create_new(&tmp, bytes)?;
    let published = fs.fsync_file(&tmp).and_then(|()| {
        if caps.rename_noreplace {
            fs.rename_noreplace(&tmp, path)
        } else {
            fs.hard_link(&tmp, path)
        }
    });
    if let Err(e) = published {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    if !caps.rename_noreplace {
        // The link published it; the temporary name goes (a crash here leaves a temporary,
        // which no reader takes for data).
        fs.remove_file(&tmp)?;
    }
    fs.fsync_dir(parent)
}

/// Whether a plain directory rename failed because the target is taken.
fn target_taken(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTEMPTY) | Some(libc::EEXIST) | Some(libc::ENOTDIR) | Some(libc::EISDIR)
        )
}

/// Publishes a fully prepared, non-empty directory `staged` at `path`, then fsyncs the
/// parent. `AlreadyExists` when something is at `path`: a no-replace rename where the
/// filesystem has one; elsewhere a plain rename, which a non-empty directory or a file at
/// `path` refuses (an empty directory there is replaced: it holds nothing, and trainctl never
/// leaves one where a variant or a bundle belongs).
pub fn publish_dir(fs: &dyn Fs, staged: &Path, path: &Path) -> io::Result<()> {
    let parent = parent_of(path)?;
    fs.fsync_dir(staged)?;
    if fs.caps(parent).rename_noreplace {
        fs.rename_noreplace(staged, path)?;
    } else {
        match fs.rename(staged, path) {
            Ok(()) => {}
            Err(e) if target_taken(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists ({e})", path.display()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    fs.fsync_dir(parent)
}

/// The aside name `swap_dir` moves a replaced directory to on filesystems without an
/// exchange (a temporary name: no reader takes it for data).
pub fn aside_of(target: &Path) -> io::Result<PathBuf> {
    Ok(parent_of(target)?.join(format!(".{}.tmp-aside", file_name_of(target)?)))
}

/// Replaces the existing directory `target` by the prepared directory `staged` (same parent)
/// and removes the old one. With an exchange, readers see the old or the new directory. Without
/// one: rename `target` aside, rename `staged` in, remove the aside; in between the old
/// directory is at the aside name, and [`recover_swap`] (which callers run first) finishes or
/// rolls back a swap interrupted there, so a copy always exists at one of the two names.
pub fn swap_dir(fs: &dyn Fs, staged: &Path, target: &Path) -> io::Result<()> {
    let parent = parent_of(target)?;
    fs.fsync_dir(staged)?;
    if fs.caps(parent).rename_exchange {
        fs.rename_exchange(staged, target)?;
        fs.fsync_dir(parent)?;
        // `staged` now names the previous directory.
        fs.remove_dir_all(staged)?;
    } else {
        let aside = aside_of(target)?;
        recover_swap(fs, target)?;
        fs.rename(target, &aside)?;
        fs.rename(staged, target)?;
        fs.fsync_dir(parent)?;
        fs.remove_dir_all(&aside)?;
    }
    fs.fsync_dir(parent)
}

/// Finishes or rolls back a `swap_dir` interrupted between its renames: an aside directory
/// next to an existing `target` is the old copy of a finished swap (removed); an aside
/// directory where `target` is missing is the only copy (renamed back). Nothing to do
/// otherwise.
pub fn recover_swap(fs: &dyn Fs, target: &Path) -> io::Result<()> {
    let aside = aside_of(target)?;
    if !fs.is_dir(&aside) {
        return Ok(());
    }
    let parent = parent_of(target)?;
    if fs.exists(target) {
        fs.remove_dir_all(&aside)?;
    } else {
        fs.rename(&aside, target)?;
    }
    fs.fsync_dir(parent)
}

/// Publishes the directory `target` holding exactly `files` (plain names), atomically and
/// durably: every file written and fsynced in a staged sibling, then published, or swapped in
/// when `target` exists (a step checkpoint re-saved after resuming from an earlier one).
pub fn write_dir_atomic(fs: &dyn Fs, target: &Path, files: &[(&str, Vec<u8>)]) -> io::Result<()> {
    let parent = parent_of(target)?;
    ensure_dir(fs, parent)?;
    recover_swap(fs, target)?;
    let staged = temp_sibling(fs, target)?;
    fs.create_dir(&staged)?;
    let written = (|| {
        for (name, bytes) in files {
            if name.contains('/') || name.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a plain file name: {name:?}"),
                ));
            }
            let path = staged.join(name);
            fs.create_new(&path, bytes)?;
            fs.fsync_file(&path)?;
        }
        match publish_dir(fs, &staged, target) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && fs.is_dir(target) => {
                swap_dir(fs, &staged, target)
            }
            other => other,
        }
    })();
    if written.is_err() {
        let _ = fs.remove_dir_all(&staged);
    }
    written
}

/// Creates `dir` and missing ancestors durably (each new level's parent fsynced). Racing
/// creators are fine: a level someone else created counts.
pub fn ensure_dir(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    if fs.is_dir(dir) {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    // Bounded by the path's depth.
    while let Some(level) = cur {
        if fs.is_dir(level) {
            break;
        }
        missing.push(level.to_path_buf());
        cur = level.parent();
    }
    for level in missing.iter().rev() {
        match fs.create_dir(level) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = level.parent() {
            fs.fsync_dir(parent)?;
        }
    }
    Ok(())
}
