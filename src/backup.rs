//! Drive backup (docs/contract.md, "Environments and storage"): on colab only, outputs not already
//! under the Drive mount are mirrored to `<drive.mount_point>/MyDrive/<drive.backup_base_dir>/<path
//! relative to OUT's parent>`.
//!
//! Each unit (a complete variant dir, a conversion output, a cache dir) is copied to a
//! temporary sibling of its destination, every file fsynced and then re-read and verified
//! (size and sha256 against the source's manifest), and only then swapped in when a previous
//! backup exists (the old one is removed afterwards), or published otherwise. An interrupted backup
//! therefore leaves the previous backup intact, never a partial one; the temporary sibling is
//! debris that the next backup of the same unit removes. A destination whose files already match is
//! skipped.
//!
//! Every write goes through the Fs port (`OsFs` in production: Drive is a real mount) and its
//! durable operations, so the swap follows the Drive filesystem's storage profile: an
//! exchange where rename flags exist, else rename-aside + rename-in with a recovery rule
//! (`fs::recover_swap`: an interrupted swap is finished or rolled back by the next backup).
//! Tests inject failures through [`Fault`] and through the Fs they pass to `backup_dir_on`.

use crate::completion::Completion;
use crate::config::schema::StorageEnv;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{manifest, FileDigest, Fs, OsFs};
use crate::paths::Layout;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Called with the relative name of each file just before it is copied; an error aborts the
/// backup there (the interrupted-backup tests).
pub type Fault<'a> = &'a dyn Fn(&str) -> std::io::Result<()>;

/// No injected failure.
pub fn no_fault(_: &str) -> std::io::Result<()> {
    Ok(())
}

/// What happened to one unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub source: PathBuf,
    pub target: PathBuf,
    /// `copied`, `up_to_date`
    pub outcome: &'static str,
    pub files: usize,
    pub bytes: u64,
}

/// Where backups go, or why there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Not colab: no backup (docs/contract.md, "Environments and storage").
    NotColab(StorageEnv),
    /// OUT is already under the Drive mount.
    AlreadyOnDrive(PathBuf),
    /// OUT is a bucket: the bucket is the durable copy, a Drive mirror adds nothing.
    InABucket(PathBuf),
    Mirror {
        /// `<mount>/MyDrive/<backup_base_dir>`.
        drive_root: PathBuf,
        /// OUT's parent: targets keep the path relative to it.
        out_parent: PathBuf,
    },
}

/// The backup plan of `config`.
pub fn plan(config: &Config, layout: &Layout) -> Plan {
    if crate::paths::is_bucket_path(&layout.out) {
        return Plan::InABucket(layout.out.clone());
    }
    if config.env.env != StorageEnv::Colab {
        return Plan::NotColab(config.env.env);
    }
    let drive = &config.paths.drive;
    let mount = PathBuf::from(drive.mount_point.as_deref().unwrap_or("/content/drive"));
    if layout.out.starts_with(&mount) {
        return Plan::AlreadyOnDrive(mount);
    }
    let base = drive
        .backup_base_dir
        .clone()
        .or_else(|| config.paths.project.name.clone())
        .unwrap_or_else(|| "trainctl".into());
    Plan::Mirror {
        drive_root: mount.join("MyDrive").join(base),
        out_parent: layout
            .out
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| layout.out.clone()),
    }
}

/// A backup's I/O failure: a storage error of its kind (full, read-only, permission, I/O:
/// exit 6), else `backup_failed`.
fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::of_io(&e).unwrap_or(ErrorKind::BackupFailed),
        format!("backup: {}: {e}", path.display()),
    )
}

/// The manifest of a directory tree (the one manifest builder); `None` when it does not exist.
fn manifest_of(fs: &dyn Fs, dir: &Path) -> Result<Option<Vec<FileDigest>>> {
    if !fs.is_dir(dir) {
        return Ok(None);
    }
    manifest::build(fs, dir, manifest::Sync::No)
        .map(Some)
        .map_err(|(at, e)| io(&at, e))
}

/// The real filesystem through the Fs port (Drive is a real mount).
const FS: OsFs = OsFs;

/// Backs up one directory `source` to `target` on the real filesystem.
pub fn backup_dir(source: &Path, target: &Path, fault: Fault<'_>) -> Result<Unit> {
    backup_dir_on(&FS, source, target, fault)
}

/// Backs up one directory `source` to `target` through `fs`: first finish or roll back a
/// swap a previous backup left half done (`fs::recover_swap`) and remove earlier backups'
/// staging debris, then copy to a fresh staging sibling, verify the copy against the
/// source's manifest, and swap it in by the storage profile's protocol (exchange, or
/// rename-aside + rename-in). At every point a complete copy exists at the target or at its
/// aside name, and the next backup puts it back.
///
/// Backups of one unit may run at once (two trainings finishing on Colab both back up the
/// final_training cache): each cannot tell another's live staging from debris, so an attempt
/// whose staging vanished, whose swap collided, or whose source changed while it copied
/// starts over, as a file publication whose temporary vanished does (at most
/// `fs::durable::VANISHED_RETRIES` attempts in all; docs/contract.md, "Drive backup").
pub fn backup_dir_on(fs: &dyn Fs, source: &Path, target: &Path, fault: Fault<'_>) -> Result<Unit> {
    let parent = target
        .parent()
        .ok_or_else(|| Error::internal("backup target without a parent"))?;
    let name = target
        .file_name()
        .ok_or_else(|| Error::internal("backup target without a name"))?
        .to_string_lossy()
        .into_owned();
    let mut last = None;
    for _ in 0..crate::fs::durable::VANISHED_RETRIES {
        match attempt(fs, source, target, parent, &name, fault)? {
            Attempt::Done(unit) => return Ok(unit),
            Attempt::Again(why) => last = Some(why),
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("backup: no attempt ran")))
}

/// How one attempt at a unit ended, when it did not fail for good.
enum Attempt {
    Done(Unit),
    /// Met another backup of the unit, or a source that changed: try again (the error, if
    /// it was the last attempt).
    Again(Error),
}

/// Whether an attempt that failed with `e` may start over: another backup of the unit
/// removed our staging or holds the name we publish to, or a source file changed or vanished.
/// Storage errors (full, read-only, permission, I/O) end the backup.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    ErrorKind::of_io(e).is_none()
        && matches!(
            e.kind(),
            K::NotFound | K::AlreadyExists | K::DirectoryNotEmpty
        )
}

/// Whether the failure `e` at `at` starts the attempt over (`transient`) or ends the backup.
fn again(at: &Path, e: std::io::Error) -> Result<Attempt> {
    if transient(&e) {
        Ok(Attempt::Again(io(at, e)))
    } else {
        Err(io(at, e))
    }
}

/// One attempt at a unit: recover a half-done swap, read the source, clear staging debris,
/// skip an up-to-date target, else copy, verify and swap in (the order is the crash-safety
/// argument of the module doc).
fn attempt(
    fs: &dyn Fs,
    source: &Path,
    target: &Path,
    parent: &Path,
    name: &str,
    fault: Fault<'_>,
) -> Result<Attempt> {
    if fs.is_dir(parent) {
        if let Err(e) = crate::fs::recover_swap(fs, target) {
            return again(target, e);
        }
    }
    // What the source holds, as read now (the copy is verified against this).
    let want = match manifest::build(fs, source, manifest::Sync::No) {
        Ok(files) => files,
        Err((at, e)) if !fs.is_dir(source) => return Err(io(&at, e)),
        Err((at, e)) => return again(&at, e),
    };
    // Staging debris of earlier (or concurrent) backups of this unit: a live one starts over.
    let debris_prefix = format!(".{name}.tmp-backup");
    if let Err((at, e)) = remove_debris(fs, parent, &debris_prefix) {
        return again(&at, e);
    }
    if manifest_of(fs, target).ok().flatten().as_ref() == Some(&want) {
        return Ok(Attempt::Done(unit(source, target, "up_to_date", &want)));
    }
    crate::fs::ensure_dir(fs, parent).map_err(|e| io(parent, e))?;
    let staged = parent.join(format!("{debris_prefix}-{}", fs.unique()));
    if let Err(e) = fs.create_dir(&staged) {
        return again(&staged, e);
    }
    if let Err((at, e)) = copy_into(fs, source, &staged, &want, fault) {
        let _ = fs.remove_dir_all(&staged);
        return again(&at, e);
    }
    if let Some(unverified) = verify(fs, source, &staged, &want) {
        return Ok(Attempt::Again(unverified));
    }
    let swapped = if fs.exists(target) {
        crate::fs::swap_dir(fs, &staged, target)
    } else {
        crate::fs::publish_dir(fs, &staged, target)
    };
    if let Err(e) = swapped {
        let _ = fs.remove_dir_all(&staged);
        return again(target, e);
    }
    Ok(Attempt::Done(unit(source, target, "copied", &want)))
}

/// The report of a unit whose target now holds the files of `want`.
fn unit(source: &Path, target: &Path, outcome: &'static str, want: &[FileDigest]) -> Unit {
    Unit {
        source: source.to_path_buf(),
        target: target.to_path_buf(),
        outcome,
        files: want.len(),
        bytes: want.iter().map(|f| f.size).sum(),
    }
}

/// Removes the staging dirs under `parent` named with `debris_prefix`; one that vanished
/// meanwhile is fine, any other failure is returned with its path.
fn remove_debris(
    fs: &dyn Fs,
    parent: &Path,
    debris_prefix: &str,
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    if let Ok(entries) = fs.list(parent) {
        for e in entries.iter().filter(|e| e.name.starts_with(debris_prefix)) {
            let path = parent.join(&e.name);
            if let Err(err) = fs.remove_dir_all(&path) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err((path, err));
                }
            }
        }
    }
    Ok(())
}

/// Copies the files of `want` from `source` into `staged`, fsyncing every file and then
/// every directory bottom-up. An error carries the path it happened at.
fn copy_into(
    fs: &dyn Fs,
    source: &Path,
    staged: &Path,
    want: &[FileDigest],
    fault: Fault<'_>,
) -> std::result::Result<(), (PathBuf, std::io::Error)> {
    let mut dirs = Vec::new();
    for file in want {
        let from = source.join(&file.path);
        fault(&file.path).map_err(|e| (from.clone(), e))?;
        let bytes = fs.read(&from).map_err(|e| (from.clone(), e))?;
        let to = staged.join(&file.path);
        // Subdirectories one level at a time under the staging, never the staging itself:
        // when another backup removed it, this attempt fails (NotFound) and starts over
        // instead of rebuilding it piecemeal.
        let mut dir = staged.to_path_buf();
        for part in Path::new(&file.path)
            .parent()
            .into_iter()
            .flat_map(Path::components)
        {
            dir.push(part);
            match fs.create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err((dir.clone(), e)),
            }
            dirs.push(dir.clone());
        }
        fs.create_new(&to, &bytes).map_err(|e| (to.clone(), e))?;
        fs.fsync_file(&to).map_err(|e| (to.clone(), e))?;
    }
    // Directories bottom-up, then verify what actually landed.
    dirs.sort();
    dirs.dedup();
    for d in dirs.iter().rev() {
        fs.fsync_dir(d).map_err(|e| (d.clone(), e))?;
    }
    fs.fsync_dir(staged).map_err(|e| (staged.to_path_buf(), e))
}

/// Re-reads the staged copy and compares it with `want`. On a mismatch the staging is
/// removed and the error (naming the files that differ) is returned for another attempt.
fn verify(fs: &dyn Fs, source: &Path, staged: &Path, want: &[FileDigest]) -> Option<Error> {
    let got = manifest_of(fs, staged).ok().flatten().unwrap_or_default();
    if got == want {
        return None;
    }
    let _ = fs.remove_dir_all(staged);
    let bad: Vec<String> = want
        .iter()
        .filter(|f| !got.contains(f))
        .map(|f| f.path.clone())
        .collect();
    Some(Error::new(
        ErrorKind::BackupFailed,
        format!(
            "backup of {} did not verify ({}); the previous backup is untouched",
            source.display(),
            bad.join(", ")
        ),
    ))
}

/// The backup target of `source` (under OUT) in a mirror plan.
pub fn target_of(drive_root: &Path, out_parent: &Path, source: &Path) -> Result<PathBuf> {
    let rel = source.strip_prefix(out_parent).map_err(|_| {
        Error::internal(format!(
            "{} is not under {}",
            source.display(),
            out_parent.display()
        ))
    })?;
    Ok(drive_root.join(rel))
}

/// What a backup run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub skipped: Option<String>,
    pub units: Vec<Unit>,
}

/// The units `trainctl backup` mirrors: every complete final-training variant, every
/// conversion output with a manifest, and every cache dir.
pub fn units(
    config: &Config,
    layout: &Layout,
    facts: &crate::lease::LivenessFacts<'_>,
) -> Vec<PathBuf> {
    units_on(&FS, config, layout, facts)
}

/// `units`, read through `fs`.
pub fn units_on(
    fs: &dyn Fs,
    config: &Config,
    layout: &Layout,
    facts: &crate::lease::LivenessFacts<'_>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        crate::observe::scan_all(fs, layout, facts, crate::completion::Depth::Sizes, None)
            .into_iter()
            .filter(|v| matches!(v.completion, Completion::Complete(_)))
            .map(|v| v.dir)
            .collect();
    let mut conversions = Vec::new();
    collect_manifest_dirs(fs, &layout.conversion_dir, 0, &mut conversions);
    out.extend(conversions);
    for kind in crate::cache::CacheKind::ALL {
        if let Ok(s) = crate::cache::CacheSettings::from_paths(&config.paths, layout, kind) {
            if fs.is_dir(&s.dir) {
                out.push(s.dir);
            }
        }
    }
    out
}

fn collect_manifest_dirs(fs: &dyn Fs, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > crate::fs::MAX_TREE_DEPTH {
        return;
    }
    if fs.is_file(&dir.join(crate::convert::MANIFEST_FILE)) {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = fs.list(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .into_iter()
        .filter(|e| e.is_dir && !crate::fs::is_temp_name(&e.name))
        .map(|e| dir.join(e.name))
        .collect();
    subdirs.sort();
    for d in subdirs {
        collect_manifest_dirs(fs, &d, depth + 1, out);
    }
}

/// The backup after a completed run (docs/contract.md, "Environments and storage"): the variant dir
/// and the final_training cache.
pub fn after_run(config: &Config, layout: &Layout, variant_dir: &Path) -> Result<Report> {
    let mut sources = vec![variant_dir.to_path_buf()];
    if let Ok(s) = crate::cache::CacheSettings::from_paths(
        &config.paths,
        layout,
        crate::cache::CacheKind::FinalTraining,
    ) {
        if s.dir.is_dir() {
            sources.push(s.dir);
        }
    }
    run(config, layout, &sources, &no_fault)
}

/// Backs up `sources` according to the plan of `config`.
pub fn run(
    config: &Config,
    layout: &Layout,
    sources: &[PathBuf],
    fault: Fault<'_>,
) -> Result<Report> {
    match plan(config, layout) {
        Plan::NotColab(env) => Ok(Report {
            skipped: Some(format!(
                "storage env {} never backs up (colab only)",
                env.as_str()
            )),
            units: Vec::new(),
        }),
        Plan::InABucket(out) => Ok(Report {
            skipped: Some(format!(
                "OUT {} is a bucket, the durable copy every machine reads: no Drive mirror",
                out.display()
            )),
            units: Vec::new(),
        }),
        Plan::AlreadyOnDrive(mount) => Ok(Report {
            skipped: Some(format!(
                "OUT {} is already under the Drive mount {}",
                layout.out.display(),
                mount.display()
            )),
            units: Vec::new(),
        }),
        Plan::Mirror {
            drive_root,
            out_parent,
        } => mirror_on(&FS, &drive_root, &out_parent, sources, fault),
    }
}

/// The mirror plan's work through `fs`: each source (under `out_parent`) backed up to its
/// place under `drive_root`, in order; the first failure ends the run.
pub fn mirror_on(
    fs: &dyn Fs,
    drive_root: &Path,
    out_parent: &Path,
    sources: &[PathBuf],
    fault: Fault<'_>,
) -> Result<Report> {
    let mut report = Report::default();
    for source in sources {
        let target = target_of(drive_root, out_parent, source)?;
        report
            .units
            .push(backup_dir_on(fs, source, &target, fault)?);
    }
    Ok(report)
}

/// OUT's layout rebased into the mirror (`drive_root` + the path relative to `out_parent`),
/// to read a backup as if it were OUT; `None` when OUT is not under `out_parent`.
pub fn mirror_layout(layout: &Layout, drive_root: &Path, out_parent: &Path) -> Option<Layout> {
    let rebase =
        |p: &Path| -> Option<PathBuf> { Some(drive_root.join(p.strip_prefix(out_parent).ok()?)) };
    let mut mirror = layout.clone();
    mirror.out = rebase(&layout.out)?;
    mirror.final_training_dir = rebase(&layout.final_training_dir)?;
    mirror.conversion_dir = rebase(&layout.conversion_dir)?;
    mirror.cache_dir = rebase(&layout.cache_dir)?;
    Some(mirror)
}

/// Pipeline step 4 (colab): complete final-training variants present in the Drive mirror but
/// missing under OUT are copied back (verified, published by rename). Returns the restored
/// units; nothing to do off colab or when OUT is on Drive.
pub fn restore(
    config: &Config,
    layout: &Layout,
    facts: &crate::lease::LivenessFacts<'_>,
) -> Result<Vec<Unit>> {
    let Plan::Mirror {
        drive_root,
        out_parent,
    } = plan(config, layout)
    else {
        return Ok(Vec::new());
    };
    let Some(mirror) = mirror_layout(layout, &drive_root, &out_parent) else {
        return Ok(Vec::new());
    };
    if !mirror.final_training_dir.is_dir() {
        return Ok(Vec::new());
    }
    let out = mirror.out.clone();
    let mut restored = Vec::new();
    let found = crate::observe::scan_all(
        &crate::fs::OsFs,
        &mirror,
        facts,
        crate::completion::Depth::Digests,
        None,
    );
    for v in found {
        if !matches!(v.completion, Completion::Complete(_)) {
            continue;
        }
        let Ok(rel) = v.dir.strip_prefix(&out) else {
            continue;
        };
        let local = layout.out.join(rel);
        if local.exists() {
            continue;
        }
        restored.push(backup_dir(&v.dir, &local, &no_fault)?);
    }
    Ok(restored)
}
