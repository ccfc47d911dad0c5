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
//!
//! The `object` profile (OUT in a bucket, `Caps::whole_objects`) replaces a file with one put
//! (whole-object atomic, no temporary), creates exclusively with one create-if-absent put
//! (the no-links branch), publishes a directory by the store's copy with a create-if-absent
//! claim (`BucketFs::rename`), and swaps a directory by deleting the old one first (only
//! re-creatable data is ever swapped: a re-saved step checkpoint).

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
    if fs.caps(parent_of(path)?).whole_objects {
        return fs.write(path, bytes);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tmp = staging_dir.join(format!(".{}.tmp-{}", file_name_of(path)?, fs.unique()));
        fs.create_new(&tmp, bytes)?;
        match fs.fsync_file(&tmp).and_then(|()| fs.rename(&tmp, path)) {
            Ok(()) => return fs.fsync_dir(parent_of(path)?),
            Err(e) if vanished(fs, &tmp, &e) && attempt < VANISHED_RETRIES => continue,
            Err(e) => {
                let _ = fs.remove_file(&tmp);
                return Err(e);
            }
        }
    }
}

/// How many times a publication starts over because its temporary (a file, or a backup's
/// staging directory) vanished before it was published: `cache repair` beside a writer, or
/// another backup of the same unit, removes temporaries as interrupted-write debris and
/// cannot tell a live writer's from a dead one's (docs/contract.md, "Caches", "Drive backup").
pub const VANISHED_RETRIES: u32 = 16;

/// Whether a publication step failed because its temporary `tmp` is gone (nothing was
/// published, so it may start over with a fresh temporary).
fn vanished(fs: &dyn Fs, tmp: &Path, e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        && !fs.exists(tmp)
        && tmp.parent().is_some_and(|d| fs.is_dir(d))
}

/// Replaces `path` atomically for concurrent readers (temp file, rename) WITHOUT making it
/// durable: for data whose loss in a crash is harmless (heartbeats, the job file, which is
/// rewritten by every attempt).
pub fn write_replace(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs.caps(parent_of(path)?).whole_objects {
        return fs.write(path, bytes);
    }
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
    let mut attempt = 0;
    let tmp = loop {
        attempt += 1;
        let tmp = temp_sibling(fs, path)?;
        fs.create_new(&tmp, bytes)?;
        let published = fs.fsync_file(&tmp).and_then(|()| {
            if caps.rename_noreplace {
                fs.rename_noreplace(&tmp, path)
            } else {
                fs.hard_link(&tmp, path)
            }
        });
        match published {
            Ok(()) => break tmp,
            Err(e) if vanished(fs, &tmp, &e) && attempt < VANISHED_RETRIES => continue,
            Err(e) => {
                let _ = fs.remove_file(&tmp);
                return Err(e);
            }
        }
    };
    if !caps.rename_noreplace {
        // The link published it; the temporary name goes (a crash here leaves a temporary,
        // which no reader takes for data; a repair may have removed it already).
        match fs.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
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
    if fs.caps(parent).whole_objects {
        match fs.remove_dir_all(target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        return publish_dir(fs, staged, target);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use crate::fs::{is_temp_name, profile, Caps};
    use std::collections::BTreeMap;

    /// A `cache repair` beside the writer: removes the writer's temporary just before its
    /// first `removals` publication steps (rename or link).
    struct RepairBeside {
        inner: SimFs,
        removals: std::sync::atomic::AtomicU32,
    }

    impl crate::fs::Hook for RepairBeside {
        fn inner(&self) -> &dyn Fs {
            &self.inner
        }
        fn around<T>(
            &self,
            call: crate::fs::Call<'_>,
            run: impl FnOnce() -> io::Result<T>,
        ) -> io::Result<T> {
            use crate::fs::Call;
            use std::sync::atomic::Ordering;
            if let Call::Rename(tmp, _) | Call::RenameNoreplace(tmp, _) | Call::HardLink(tmp, _) =
                call
            {
                let left = self.removals.load(Ordering::SeqCst);
                if left > 0 && is_temp_name(&tmp.file_name().unwrap().to_string_lossy()) {
                    self.removals.store(left - 1, Ordering::SeqCst);
                    self.inner.remove_file(tmp).unwrap();
                }
            }
            run()
        }
    }

    #[test]
    fn a_publication_whose_temporary_a_repair_removed_starts_over() {
        for caps in PROFILES {
            // A few removals are survived; a repair that removes every temporary of 16
            // attempts in a row wins, with the error named (the bound).
            for (removals, survives) in [(1, true), (3, true), (16, false)] {
                let fs = RepairBeside {
                    inner: SimFs::with_caps(caps),
                    removals: std::sync::atomic::AtomicU32::new(removals),
                };
                fs.create_dir_all(p("/d")).unwrap();
                let created = create_durable(&fs, p("/d/record"), b"r");
                let written = write_atomic(&fs, p("/d/latest"), b"l");
                if survives {
                    created.unwrap();
                    written.unwrap();
                    assert_eq!(fs.read(p("/d/record")).unwrap(), b"r");
                    assert_eq!(fs.read(p("/d/latest")).unwrap(), b"l");
                } else if caps.rename_noreplace || caps.hard_link {
                    assert_eq!(created.unwrap_err().kind(), io::ErrorKind::NotFound);
                }
                let names: Vec<String> = fs
                    .list(p("/d"))
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                assert!(
                    names.iter().all(|n| !is_temp_name(n)),
                    "{caps:?}: {names:?}"
                );
            }
        }
    }

    const PROFILES: [Caps; 3] = [Caps::POSIX, Caps::NOFLAGS, Caps::NOFLAGS_NOLINKS];
    /// Crash seeds per crash point.
    const SEEDS: u64 = 40;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn sim(caps: Caps) -> SimFs {
        let fs = SimFs::with_caps(caps);
        fs.write_file_durably(p("/d/.keep"), b"").unwrap();
        fs.remove_file(p("/d/.keep")).unwrap();
        fs.sync_all();
        fs
    }

    fn temporaries(fs: &SimFs) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = fs.files().into_keys().collect();
        all.extend(fs.dirs());
        all.into_iter()
            .filter(|p| p.iter().any(|c| c.to_str().is_some_and(is_temp_name)))
            .collect()
    }

    /// Everything below `dir`, relative, with contents.
    fn tree(fs: &SimFs, dir: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        fs.files()
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(dir).ok()?.to_path_buf(), v)))
            .collect()
    }

    #[test]
    fn the_probe_finds_each_simulated_profile_and_leaves_nothing() {
        for caps in PROFILES {
            let fs = sim(caps);
            let found = profile::probe(&fs, p("/d")).unwrap();
            assert_eq!(found.caps, caps);
            assert!(found.excl_create && found.dir_fsync);
            assert!(fs.list(p("/d")).unwrap().is_empty(), "{caps:?}");
        }
        let ro = sim(Caps::POSIX);
        ro.set_read_only(true);
        let e = profile::probe(&ro, p("/d")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }

    #[test]
    fn create_durable_is_exclusive_whole_and_leaves_no_temporary_on_every_profile() {
        for caps in PROFILES {
            let fs = sim(caps);
            create_durable(&fs, p("/d/f"), b"first").unwrap();
            let again = create_durable(&fs, p("/d/f"), b"second").unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "{caps:?}");
            assert_eq!(fs.read(p("/d/f")).unwrap(), b"first");
            assert!(
                temporaries(&fs).is_empty(),
                "{caps:?}: {:?}",
                temporaries(&fs)
            );
            fs.crash_all_lost();
            assert_eq!(
                fs.read(p("/d/f")).unwrap(),
                b"first",
                "{caps:?}: not durable"
            );
        }
    }

    #[test]
    fn a_crash_at_every_step_of_create_durable_leaves_nothing_or_the_whole_file() {
        let bytes = vec![7u8; 9000];
        for caps in PROFILES {
            let ops = {
                let fs = sim(caps);
                let before = fs.op_count();
                create_durable(&fs, p("/d/f"), &bytes).unwrap();
                fs.op_count() - before
            };
            for k in 0..=ops {
                for seed in 0..SEEDS {
                    let fs = sim(caps);
                    fs.die_after(k);
                    let done = create_durable(&fs, p("/d/f"), &bytes).is_ok();
                    fs.crash(seed);
                    let got = fs.files().get(p("/d/f")).cloned();
                    match got {
                        None => assert!(!done, "{caps:?} k={k}: a returned create was lost"),
                        Some(g) if g == bytes => {}
                        // Without rename flags or links the file is created at its final
                        // name: a crash may tear it (readers treat it as unreadable).
                        Some(g) if caps == Caps::NOFLAGS_NOLINKS && !done => {
                            assert!(bytes.starts_with(&g), "{caps:?} k={k}: foreign bytes")
                        }
                        Some(g) => panic!(
                            "{caps:?} k={k} seed={seed}: torn file of {} bytes (returned: {done})",
                            g.len()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn publish_dir_refuses_a_taken_name_on_every_profile() {
        for caps in PROFILES {
            let fs = sim(caps);
            for (name, bytes) in [("/d/s1/lease-1.json", "a"), ("/d/s2/lease-1.json", "b")] {
                fs.create_dir_all(Path::new(name).parent().unwrap())
                    .unwrap();
                fs.create_new(p(name), bytes.as_bytes()).unwrap();
            }
            publish_dir(&fs, p("/d/s1"), p("/d/v1")).unwrap();
            let taken = publish_dir(&fs, p("/d/s2"), p("/d/v1")).unwrap_err();
            assert_eq!(taken.kind(), io::ErrorKind::AlreadyExists, "{caps:?}");
            assert_eq!(fs.read(p("/d/v1/lease-1.json")).unwrap(), b"a");
            fs.create_new(p("/d/file"), b"x").unwrap();
            let file = publish_dir(&fs, p("/d/s2"), p("/d/file")).unwrap_err();
            assert_eq!(file.kind(), io::ErrorKind::AlreadyExists, "{caps:?}");
            assert!(
                fs.is_dir(p("/d/s2")),
                "a refused publish leaves the staged dir"
            );
        }
    }

    /// Old copy at `/m/unit` (durable), the new one staged at `/m/.unit.tmp-backup`.
    fn swap_world(caps: Caps) -> SimFs {
        let fs = sim(caps);
        for (path, bytes) in [
            ("/m/unit/a", "old a"),
            ("/m/unit/sub/b", "old b"),
            ("/m/.unit.tmp-backup/a", "new a"),
            ("/m/.unit.tmp-backup/c", "new c"),
        ] {
            fs.write_file_durably(p(path), bytes.as_bytes()).unwrap();
        }
        fs
    }

    #[test]
    fn an_interrupted_swap_is_finished_or_rolled_back_and_never_leaves_no_copy() {
        let old: BTreeMap<PathBuf, Vec<u8>> = [("a", "old a"), ("sub/b", "old b")]
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.as_bytes().to_vec()))
            .collect();
        let new: BTreeMap<PathBuf, Vec<u8>> = [("a", "new a"), ("c", "new c")]
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.as_bytes().to_vec()))
            .collect();
        for caps in PROFILES {
            let ops = {
                let fs = swap_world(caps);
                let before = fs.op_count();
                swap_dir(&fs, p("/m/.unit.tmp-backup"), p("/m/unit")).unwrap();
                assert_eq!(tree(&fs, "/m/unit"), new);
                fs.op_count() - before
            };
            for k in 0..=ops {
                // A killed process (the OS keeps every write), then power losses.
                for seed in (0..SEEDS).map(Some).chain([None]) {
                    let fs = swap_world(caps);
                    fs.die_after(k);
                    let done = swap_dir(&fs, p("/m/.unit.tmp-backup"), p("/m/unit")).is_ok();
                    match seed {
                        Some(seed) => drop(fs.crash(seed)),
                        None => {
                            fs.sync_all();
                            fs.crash_all_lost();
                        }
                    }
                    // Between the crash and recovery, one copy is whole at a name.
                    let at_target = tree(&fs, "/m/unit");
                    let aside = tree(&fs, "/m/.unit.tmp-aside");
                    assert!(
                        [&old, &new].contains(&&at_target) || aside == old,
                        "{caps:?} k={k} seed={seed:?}: no whole copy ({at_target:?}, aside {aside:?})"
                    );
                    recover_swap(&fs, p("/m/unit")).unwrap();
                    let got = tree(&fs, "/m/unit");
                    assert!(
                        got == old || got == new,
                        "{caps:?} k={k} seed={seed:?}: {got:?}"
                    );
                    if done {
                        assert_eq!(got, new, "{caps:?} k={k}: a returned swap was undone");
                    }
                    assert!(!fs.exists(p("/m/.unit.tmp-aside")), "{caps:?} k={k}");
                }
            }
        }
    }

    #[test]
    fn write_dir_atomic_publishes_then_replaces_whole_on_every_profile() {
        for caps in PROFILES {
            let fs = sim(caps);
            let target = p("/d/ck/step-1");
            write_dir_atomic(&fs, target, &[("a", b"1".to_vec()), ("b", b"2".to_vec())]).unwrap();
            write_dir_atomic(&fs, target, &[("a", b"3".to_vec())]).unwrap();
            assert_eq!(
                tree(&fs, "/d/ck/step-1"),
                BTreeMap::from([(PathBuf::from("a"), b"3".to_vec())])
            );
            assert!(
                temporaries(&fs).is_empty(),
                "{caps:?}: {:?}",
                temporaries(&fs)
            );
            let bad = write_dir_atomic(&fs, target, &[("x/y", b"1".to_vec())]).unwrap_err();
            assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_byte_budget_refuses_growth_without_effect_and_read_only_refuses_every_mutation() {
        let fs = sim(Caps::POSIX);
        fs.write(p("/d/a"), &[1; 100]).unwrap();
        fs.set_byte_budget(Some(150));
        let full = fs.append(p("/d/a"), &[2; 60]).unwrap_err();
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs.read(p("/d/a")).unwrap().len(), 100, "no effect");
        let e = create_durable(&fs, p("/d/b"), &[3; 60]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(temporaries(&fs).is_empty());
        fs.write(p("/d/a"), &[4; 10]).unwrap();
        create_durable(&fs, p("/d/b"), &[3; 60]).unwrap();
        assert_eq!(fs.used_bytes(), 70);
        fs.set_byte_budget(None);
        fs.set_read_only(true);
        for e in [
            fs.create_dir(p("/d/x")),
            fs.write(p("/d/a"), b"x"),
            fs.remove_file(p("/d/a")),
            fs.rename(p("/d/a"), p("/d/c")),
            fs.hard_link(p("/d/a"), p("/d/c")),
        ] {
            assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EROFS));
        }
        fs.fsync_dir(p("/d")).unwrap();
        fs.set_read_only(false);
        fs.write(p("/d/a"), b"x").unwrap();
    }
}
