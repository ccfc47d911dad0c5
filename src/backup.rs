//! Drive backup (SPEC §3): on colab only, outputs not already under the Drive mount are
//! mirrored to `<drive.mount_point>/MyDrive/<drive.backup_base_dir>/<path relative to OUT's
//! parent>`.
//!
//! Each unit (a complete variant dir, a conversion output, a cache dir) is copied to a
//! temporary sibling of its destination, every file fsynced and then re-read and verified
//! (size and sha256 against the source as read), and only then swapped in: by an atomic
//! exchange when a previous backup exists (the old one is removed afterwards), by a
//! no-replace rename otherwise. An interrupted backup therefore leaves the previous backup
//! intact, never a partial one; the temporary sibling is debris that the next backup of the
//! same unit removes. A destination whose files already match is skipped.
//!
//! This module works on the real filesystem (`OsFs` through the Fs port; Drive is a real
//! mount) plus the renameat2 exchange of `builtin::ckpt`. Tests inject failures through
//! [`Fault`].

use crate::completion::Completion;
use crate::config::schema::StorageEnv;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::fs::{Fs, OsFs};
use crate::identity::sha256_hex;
use crate::paths::Layout;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// Not colab: no backup (SPEC §3).
    NotColab(StorageEnv),
    /// OUT is already under the Drive mount.
    AlreadyOnDrive(PathBuf),
    Mirror {
        /// `<mount>/MyDrive/<backup_base_dir>`.
        drive_root: PathBuf,
        /// OUT's parent: targets keep the path relative to it.
        out_parent: PathBuf,
    },
}

/// The backup plan of `config`.
pub fn plan(config: &Config, layout: &Layout) -> Plan {
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

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::BackupFailed,
        format!("backup: {}: {e}", path.display()),
    )
}

/// Regular files below `dir` as relative paths, sorted (the one tree walker, on the real fs).
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::fs::files_below(&FS, dir).map_err(|e| io(dir, e))
}

/// `{relative path: (size, sha256)}` of a directory tree; `None` when it does not exist.
fn digest_tree(dir: &Path) -> Result<Option<BTreeMap<PathBuf, (u64, String)>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for rel in files_below(dir)? {
        let bytes = FS
            .read(&dir.join(&rel))
            .map_err(|e| io(&dir.join(&rel), e))?;
        map.insert(rel, (bytes.len() as u64, sha256_hex(&bytes)));
    }
    Ok(Some(map))
}

/// The real filesystem through the Fs port (Drive is a real mount).
const FS: OsFs = OsFs;

fn sync_dir(dir: &Path) -> Result<()> {
    FS.fsync_dir(dir).map_err(|e| io(dir, e))
}

/// Backs up one directory `source` to `target` (copy to a temp sibling, verify, swap).
pub fn backup_dir(source: &Path, target: &Path, fault: Fault<'_>) -> Result<Unit> {
    let parent = target
        .parent()
        .ok_or_else(|| Error::internal("backup target without a parent"))?;
    let name = target
        .file_name()
        .ok_or_else(|| Error::internal("backup target without a name"))?
        .to_string_lossy()
        .into_owned();
    let files = files_below(source)?;
    let mut want = BTreeMap::new();
    let mut bytes_total = 0;
    let staged = parent.join(format!(".{name}.tmp-backup"));
    // What the source holds, as read now (the copy is verified against this).
    let mut contents = Vec::with_capacity(files.len());
    for rel in &files {
        let bytes = FS
            .read(&source.join(rel))
            .map_err(|e| io(&source.join(rel), e))?;
        bytes_total += bytes.len() as u64;
        want.insert(rel.clone(), (bytes.len() as u64, sha256_hex(&bytes)));
        contents.push(bytes);
    }
    if digest_tree(target)?.as_ref() == Some(&want) {
        return Ok(Unit {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            outcome: "up_to_date",
            files: files.len(),
            bytes: bytes_total,
        });
    }
    FS.create_dir_all(parent).map_err(|e| io(parent, e))?;
    if FS.exists(&staged) {
        // Debris of an interrupted backup of this unit.
        FS.remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    }
    FS.create_dir(&staged).map_err(|e| io(&staged, e))?;
    for (rel, bytes) in files.iter().zip(&contents) {
        fault(&rel.to_string_lossy()).map_err(|e| io(&source.join(rel), e))?;
        let to = staged.join(rel);
        if let Some(dir) = to.parent() {
            FS.create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        FS.create_new(&to, bytes).map_err(|e| io(&to, e))?;
        FS.fsync_file(&to).map_err(|e| io(&to, e))?;
    }
    // Directories bottom-up, then verify what actually landed.
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|r| r.parent().map(|p| staged.join(p)))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(&staged)?;
    let got = digest_tree(&staged)?.unwrap_or_default();
    if got != want {
        let bad: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, _)| k.display().to_string())
            .collect();
        return Err(Error::new(
            ErrorKind::BackupFailed,
            format!(
                "backup of {} did not verify ({}); the previous backup is untouched",
                source.display(),
                bad.join(", ")
            ),
        ));
    }
    if FS.exists(target) {
        crate::builtin::ckpt::exchange(&staged, target).map_err(|e| io(target, e))?;
        sync_dir(parent)?;
        // `staged` now holds the previous backup.
        FS.remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    } else {
        FS.rename_noreplace(&staged, target)
            .map_err(|e| io(target, e))?;
    }
    sync_dir(parent)?;
    Ok(Unit {
        source: source.to_path_buf(),
        target: target.to_path_buf(),
        outcome: "copied",
        files: files.len(),
        bytes: bytes_total,
    })
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
    let fs = crate::fs::OsFs;
    let mut out: Vec<PathBuf> =
        crate::observe::scan_all(&fs, layout, facts, crate::completion::Depth::Sizes, None)
            .into_iter()
            .filter(|v| matches!(v.completion, Completion::Complete(_)))
            .map(|v| v.dir)
            .collect();
    let mut conversions = Vec::new();
    collect_manifest_dirs(&layout.conversion_dir, 0, &mut conversions);
    out.extend(conversions);
    for kind in crate::cache::CacheKind::ALL {
        if let Ok(s) = crate::cache::CacheSettings::from_paths(&config.paths, layout, kind) {
            if s.dir.is_dir() {
                out.push(s.dir);
            }
        }
    }
    out
}

fn collect_manifest_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > crate::fs::MAX_TREE_DEPTH {
        return;
    }
    if FS.is_file(&dir.join(crate::convert::MANIFEST_FILE)) {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = FS.list(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .into_iter()
        .filter(|e| e.is_dir && !crate::fs::is_temp_name(&e.name))
        .map(|e| dir.join(e.name))
        .collect();
    subdirs.sort();
    for d in subdirs {
        collect_manifest_dirs(&d, depth + 1, out);
    }
}

/// The backup after a completed run (SPEC §3): the variant dir and the final_training cache.
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
        } => {
            let mut report = Report::default();
            for source in sources {
                let target = target_of(&drive_root, &out_parent, source)?;
                report.units.push(backup_dir(source, &target, fault)?);
            }
            Ok(report)
        }
    }
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
    let rebase =
        |p: &Path| -> Option<PathBuf> { Some(drive_root.join(p.strip_prefix(&out_parent).ok()?)) };
    let (Some(out), Some(ft), Some(conv), Some(cache)) = (
        rebase(&layout.out),
        rebase(&layout.final_training_dir),
        rebase(&layout.conversion_dir),
        rebase(&layout.cache_dir),
    ) else {
        return Ok(Vec::new());
    };
    if !ft.is_dir() {
        return Ok(Vec::new());
    }
    let mut mirror = layout.clone();
    mirror.out = out.clone();
    mirror.final_training_dir = ft;
    mirror.conversion_dir = conv;
    mirror.cache_dir = cache;
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
