//! Exhaustive interleavings with loom (docs/contract.md, "Allocation and leases", "Caches"): the Fs
//! port implemented over loom's Mutex in test code, so every Fs operation is a scheduling point
//! that loom permutes (with a preemption bound of 2). One scenario per test, named after what it
//! proves: 2–3 concurrent NEW allocations, 2–3 resumers of one stale variant, concurrent cache
//! writers, two run-name reservations, a cache repair beside a record writer, two backups of one
//! unit.

use crate::support;

use loom::sync::{Arc, Mutex};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use trainctl::fs::{Caps, Entry, Fs, Meta};

/// An in-memory filesystem whose state sits behind one loom Mutex, with the storage profile
/// `caps`: without rename flags, `rename_noreplace` and `rename_exchange` answer EINVAL as NFS
/// and FUSE do, and a hard link is a copy of the (immutable, published) file.
struct LoomFs {
    nodes: Mutex<BTreeMap<PathBuf, Option<Vec<u8>>>>,
    counter: loom::sync::atomic::AtomicU64,
    caps: Caps,
    /// The planted regression of the negative control: `hard_link` (the no-replace publish of
    /// `posix-noflags`) done as a plain rename, which replaces what is at the target.
    link_is_plain_rename: bool,
}

impl Default for LoomFs {
    fn default() -> LoomFs {
        LoomFs {
            nodes: Mutex::default(),
            counter: loom::sync::atomic::AtomicU64::default(),
            caps: Caps::POSIX,
            link_is_plain_rename: false,
        }
    }
}

fn err(kind: io::ErrorKind) -> io::Error {
    io::Error::from(kind)
}

impl LoomFs {
    fn with_root(dirs: &[&Path]) -> LoomFs {
        LoomFs::with_root_caps(dirs, Caps::POSIX)
    }

    fn with_root_caps(dirs: &[&Path], caps: Caps) -> LoomFs {
        let fs = LoomFs {
            caps,
            ..LoomFs::default()
        };
        {
            let mut n = fs.nodes.lock().expect("fs");
            n.insert(PathBuf::from("/"), None);
            for d in dirs {
                for a in d.ancestors() {
                    n.insert(a.to_path_buf(), None);
                }
            }
        }
        fs
    }
}

impl Fs for LoomFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        match self.nodes.lock().expect("fs").get(path) {
            Some(Some(bytes)) => Ok(bytes.clone()),
            Some(None) => Err(err(io::ErrorKind::IsADirectory)),
            None => Err(err(io::ErrorKind::NotFound)),
        }
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let n = self.nodes.lock().expect("fs");
        if n.get(dir) != Some(&None) {
            return Err(err(io::ErrorKind::NotFound));
        }
        Ok(n.iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, v)| Entry {
                name: p
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default(),
                is_dir: v.is_none(),
            })
            .collect())
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        match self.nodes.lock().expect("fs").get(path) {
            Some(v) => Ok(Meta {
                is_dir: v.is_none(),
                len: v.as_ref().map_or(0, |b| b.len() as u64),
                special: false,
            }),
            None => Err(err(io::ErrorKind::NotFound)),
        }
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        if n.contains_key(path) {
            return Err(err(io::ErrorKind::AlreadyExists));
        }
        if path.parent().is_some_and(|p| n.get(p) != Some(&None)) {
            return Err(err(io::ErrorKind::NotFound));
        }
        n.insert(path.to_path_buf(), None);
        Ok(())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        for a in path.ancestors() {
            n.entry(a.to_path_buf()).or_insert(None);
        }
        Ok(())
    }
    fn create_new(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        if n.contains_key(path) {
            return Err(err(io::ErrorKind::AlreadyExists));
        }
        n.insert(path.to_path_buf(), Some(bytes.to_vec()));
        Ok(())
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.nodes
            .lock()
            .expect("fs")
            .insert(path.to_path_buf(), Some(bytes.to_vec()));
        Ok(())
    }
    fn append(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        let entry = n.entry(path.to_path_buf()).or_insert(Some(Vec::new()));
        entry.get_or_insert_with(Vec::new).extend_from_slice(bytes);
        Ok(())
    }
    fn fsync_file(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn fsync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.move_tree(from, to, false)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.caps.rename_noreplace {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.move_tree(from, to, true)
    }
    fn rename_exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        if !self.caps.rename_exchange {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut n = self.nodes.lock().expect("fs");
        if !n.contains_key(a) || !n.contains_key(b) {
            return Err(err(io::ErrorKind::NotFound));
        }
        let take = |n: &mut BTreeMap<PathBuf, Option<Vec<u8>>>, root: &Path| {
            let moved: Vec<(PathBuf, Option<Vec<u8>>)> = n
                .iter()
                .filter(|(p, _)| p.starts_with(root))
                .map(|(p, v)| (p.strip_prefix(root).unwrap_or(p).to_path_buf(), v.clone()))
                .collect();
            n.retain(|p, _| !p.starts_with(root));
            moved
        };
        let (from_a, from_b) = (take(&mut n, a), take(&mut n, b));
        for (rel, v) in from_a {
            n.insert(b.join(rel), v);
        }
        for (rel, v) in from_b {
            n.insert(a.join(rel), v);
        }
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        if !self.caps.hard_link {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let mut n = self.nodes.lock().expect("fs");
        let Some(Some(bytes)) = n.get(from).cloned() else {
            return Err(err(io::ErrorKind::NotFound));
        };
        // The planted regression replaces what is at `to`, as a plain rename would.
        if n.contains_key(to) && !self.link_is_plain_rename {
            return Err(err(io::ErrorKind::AlreadyExists));
        }
        n.insert(to.to_path_buf(), Some(bytes));
        Ok(())
    }
    fn caps(&self, _: &Path) -> Caps {
        self.caps
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self.nodes.lock().expect("fs").remove(path) {
            Some(_) => Ok(()),
            None => Err(err(io::ErrorKind::NotFound)),
        }
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        n.retain(|p, _| !p.starts_with(path));
        Ok(())
    }
    fn unique(&self) -> String {
        format!(
            "loom-{}",
            self.counter
                .fetch_add(1, loom::sync::atomic::Ordering::SeqCst)
        )
    }
}

impl LoomFs {
    /// One atomic rename of a file or a whole directory tree.
    fn move_tree(&self, from: &Path, to: &Path, noreplace: bool) -> io::Result<()> {
        let mut n = self.nodes.lock().expect("fs");
        if !n.contains_key(from) {
            return Err(err(io::ErrorKind::NotFound));
        }
        if n.contains_key(to)
            && (noreplace || n.get(to) == Some(&None) || n.get(from) == Some(&None))
        {
            return Err(err(io::ErrorKind::AlreadyExists));
        }
        let moved: Vec<(PathBuf, Option<Vec<u8>>)> = n
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect();
        for (p, _) in &moved {
            n.remove(p);
        }
        for (p, v) in moved {
            let rel = p.strip_prefix(from).unwrap_or(Path::new("")).to_path_buf();
            n.insert(
                if rel.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rel)
                },
                v,
            );
        }
        Ok(())
    }
}

/// A prepared job (identity, layout) whose OUT is under `/out` in the loom fs.
fn job() -> trainctl::job::Job {
    let project = support::Project::new();
    let root = project.root().to_path_buf();
    let config = trainctl::config::load(
        &support::opts(&root, &["paths:base.outputs=/out"]),
        &root,
        &support::no_vars,
    )
    .expect("config");
    trainctl::job::prepare(config, &trainctl::fs::OsFs, &support::host()).expect("job")
}

fn owner(pid: u32) -> trainctl::lease::Owner {
    trainctl::lease::Owner {
        host: "test-host".into(),
        pid,
        start_time: 7,
    }
}

/// Explores every interleaving of `f` up to the preemption bound; prints how many it ran
/// (each run of `f` is one interleaving) and the rate to stderr.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f()
        }
    };
    let began = std::time::Instant::now();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(counted);
    let (n, secs) = (
        runs.load(std::sync::atomic::Ordering::Relaxed),
        began.elapsed().as_secs_f64(),
    );
    eprintln!(
        "loom {}: {n} interleavings in {secs:.2} s = {:.0} interleavings/s",
        std::thread::current().name().unwrap_or("scenario"),
        n as f64 / secs.max(1e-9)
    );
    // loom explores each interleaving once: every one is distinct.
    support::stats::line(
        "loom",
        std::thread::current().name().unwrap_or("scenario"),
        "interleavings",
        n,
        secs,
        Some(n),
        &Default::default(),
    );
}

fn concurrent_new_allocations(threads: u32, caps: Caps) {
    let job = std::sync::Arc::new(job());
    model(move || {
        let identity_dir = job.layout.identity_dir(&job.identity).expect("dir");
        let fs = Arc::new(LoomFs::with_root_caps(&[&identity_dir], caps));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (fs, job) = (fs.clone(), job.clone());
                loom::thread::spawn(move || {
                    trainctl::train::allocate(&*fs, &job, 1, false, &owner(100 + t), 0, "new")
                        .map(|(v, _, lease)| (v, lease.pid))
                        .expect("allocation succeeds")
                })
            })
            .collect();
        let mut got: Vec<(u64, u32)> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        got.sort();
        let variants: Vec<u64> = got.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            variants,
            (1..=threads as u64).collect::<Vec<_>>(),
            "distinct, dense variants"
        );
        // Each variant's lease names the thread that allocated it (single owner).
        for (v, pid) in got {
            let dir = job.layout.variant_dir(&job.identity, v).expect("dir");
            let lease: trainctl::lease::LeaseRecord =
                serde_json::from_slice(&fs.read(&dir.join("lease-1.json")).expect("lease"))
                    .expect("json");
            assert_eq!(lease.pid, pid, "v{v} is owned by another start");
            assert_eq!(
                trainctl::lease::current_generation(&*fs, &dir).expect("gen"),
                1
            );
        }
    });
}

#[test]
fn two_concurrent_new_starts_get_distinct_variants() {
    concurrent_new_allocations(2, Caps::POSIX);
}

#[test]
fn two_concurrent_new_starts_get_distinct_variants_without_rename_flags() {
    concurrent_new_allocations(2, Caps::NOFLAGS);
}

#[test]
fn two_concurrent_new_starts_get_distinct_variants_without_rename_flags_or_links() {
    concurrent_new_allocations(2, Caps::NOFLAGS_NOLINKS);
}

/// reuse_if_exists: identical starts that planned the same number: exactly one allocates
/// it, the others give it up to decide again (and wait for the winner) instead of taking the
/// next number (docs/contract.md, "Identical starts share one training").
#[test]
fn identical_reuse_starts_allocate_one_variant_and_the_others_decide_again() {
    for caps in [Caps::POSIX, Caps::NOFLAGS] {
        let job = std::sync::Arc::new(job());
        model(move || {
            let identity_dir = job.layout.identity_dir(&job.identity).expect("dir");
            let fs = Arc::new(LoomFs::with_root_caps(&[&identity_dir], caps));
            let handles: Vec<_> = (0..2u32)
                .map(|t| {
                    let (fs, job) = (fs.clone(), job.clone());
                    loom::thread::spawn(move || {
                        trainctl::train::allocate_with(
                            &*fs,
                            &job,
                            1,
                            trainctl::train::Collision::DecideAgain,
                            &owner(100 + t),
                            0,
                            "new",
                        )
                        .expect("allocation")
                        .map(|(v, _, _)| v)
                    })
                })
                .collect();
            let got: Vec<Option<u64>> = handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect();
            let won: Vec<u64> = got.iter().flatten().copied().collect();
            assert_eq!(won, vec![1], "exactly one start allocates v1: {got:?}");
            let names: Vec<String> = fs
                .list(&identity_dir)
                .expect("list")
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(
                names,
                ["v1"],
                "the loser leaves nothing behind (no staged dir)"
            );
        });
    }
}

#[test]
fn three_concurrent_new_starts_get_distinct_variants() {
    concurrent_new_allocations(3, Caps::POSIX);
}

fn resumers_of_one_stale_variant(threads: u32, caps: Caps, planted: bool) {
    let job = std::sync::Arc::new(job());
    model(move || {
        let dir = job.layout.variant_dir(&job.identity, 1).expect("dir");
        let fs = Arc::new(LoomFs {
            link_is_plain_rename: planted,
            ..LoomFs::with_root_caps(&[&dir], caps)
        });
        // Generation 1 held by a dead owner.
        let taken = trainctl::lease::take(&*fs, &dir, 0, &owner(1), 0, "new").expect("take");
        assert!(matches!(taken, trainctl::lease::Take::Won(_)));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (fs, dir) = (fs.clone(), dir.clone());
                loom::thread::spawn(move || {
                    matches!(
                        trainctl::lease::take(&*fs, &dir, 1, &owner(200 + t), 0, "resume")
                            .expect("take"),
                        trainctl::lease::Take::Won(_)
                    )
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|w| *w)
            .count();
        assert_eq!(winners, 1, "exactly one resumer takes the stale lease");
        assert_eq!(
            trainctl::lease::current_generation(&*fs, &dir).expect("gen"),
            2
        );
    });
}

#[test]
fn two_resumers_of_one_stale_variant_exactly_one_wins() {
    resumers_of_one_stale_variant(2, Caps::POSIX, false);
}

#[test]
fn two_resumers_of_one_stale_variant_exactly_one_wins_without_rename_flags() {
    resumers_of_one_stale_variant(2, Caps::NOFLAGS, false);
}

#[test]
fn two_resumers_of_one_stale_variant_exactly_one_wins_without_rename_flags_or_links() {
    resumers_of_one_stale_variant(2, Caps::NOFLAGS_NOLINKS, false);
}

/// Negative control for `posix-noflags`: a lease generation published by a plain rename
/// (which replaces) instead of a link (which refuses a taken name) lets two resumers win, and
/// this exploration finds it.
#[test]
#[should_panic(expected = "exactly one resumer")]
fn control_plain_rename_publish_without_rename_flags_is_caught() {
    resumers_of_one_stale_variant(2, Caps::NOFLAGS, true);
}

#[test]
fn three_resumers_of_one_stale_variant_exactly_one_wins() {
    resumers_of_one_stale_variant(3, Caps::POSIX, false);
}

#[test]
fn two_concurrent_cache_writers_lose_no_record_and_settle_the_views() {
    concurrent_cache_writers(Caps::POSIX);
}

#[test]
fn two_concurrent_cache_writers_lose_no_record_and_settle_the_views_without_rename_flags() {
    concurrent_cache_writers(Caps::NOFLAGS);
}

/// The final_training cache settings of `job`.
fn final_training_cache(job: &trainctl::job::Job) -> trainctl::cache::CacheSettings {
    trainctl::cache::CacheSettings::from_paths(
        &job.config.paths,
        &job.layout,
        trainctl::cache::CacheKind::FinalTraining,
    )
    .expect("settings")
}

/// The record cache writer `i` publishes.
fn writer_record(i: u64) -> trainctl::cache::Record {
    trainctl::cache::Record {
        schema_version: 1,
        kind: "final_training".into(),
        created_at: format!("w{i}"),
        subject: format!("w{i}"),
        payload: serde_json::json!({"w": i}),
        metadata: serde_json::Value::Null,
    }
}

fn concurrent_cache_writers(caps: Caps) {
    let job = std::sync::Arc::new(job());
    model(move || {
        let settings = final_training_cache(&job);
        let fs = Arc::new(LoomFs::with_root_caps(&[&settings.dir], caps));
        let handles: Vec<_> = (0..2u64)
            .map(|i| {
                let (fs, settings) = (fs.clone(), settings.clone());
                loom::thread::spawn(move || {
                    trainctl::cache::Cache::new(&*fs, settings)
                        .write(&writer_record(i), 1_000 + i)
                        .expect("write")
                        .0
                })
            })
            .collect();
        let names: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        let cache = trainctl::cache::Cache::new(&*fs, settings);
        let on_disk = cache.record_names().expect("names");
        for n in &names {
            assert!(on_disk.contains(n), "record {n} lost");
        }
        assert!(
            cache.check().expect("check").is_empty(),
            "views unsettled after both writers returned"
        );
    });
}

/// A job whose final-training run names auto-increment from one base (`final`, `final_2`, …).
fn auto_increment_job() -> trainctl::job::Job {
    let mut job = job();
    job.config.final_training.mlflow.run_name = Some("final".into());
    let a = &mut job.config.mlflow.naming.run_name.auto_increment;
    a.enabled = Some(true);
    a.processes.final_training = Some(true);
    job
}

/// Two new variants reserve their run names at once (docs/contract.md, "Tracking of final
/// training"): in every interleaving they get distinct names, and each name's reservation names the
/// variant that runs under it.
fn concurrent_run_name_reservations(caps: Caps) {
    let job = std::sync::Arc::new(auto_increment_job());
    model(move || {
        let registry = trainctl::train::run_name_registry(&job);
        let dirs: Vec<PathBuf> = (1..=2u64)
            .map(|v| job.layout.variant_dir(&job.identity, v).expect("dir"))
            .collect();
        let mut roots: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        roots.push(&registry);
        let fs = Arc::new(LoomFs::with_root_caps(&roots, caps));
        let handles: Vec<_> = (1..=2u64)
            .map(|v| {
                let (fs, job, dir) = (fs.clone(), job.clone(), dirs[v as usize - 1].clone());
                loom::thread::spawn(move || {
                    trainctl::train::reserve_run_name(&*fs, &job, v, &dir)
                        .expect("reservation")
                        .0
                })
            })
            .collect();
        let names: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_ne!(names[0], names[1], "two variants share a run name");
        for (name, dir) in names.iter().zip(&dirs) {
            assert_eq!(
                trainctl::train::run_name_holder(&*fs, &job, name),
                Some(job.layout.out_relative(dir)),
                "{name}'s reservation names another variant"
            );
        }
    });
}

#[test]
fn two_concurrent_run_name_reservations_get_distinct_names() {
    concurrent_run_name_reservations(Caps::POSIX);
}

#[test]
fn two_concurrent_run_name_reservations_get_distinct_names_without_rename_flags_or_links() {
    concurrent_run_name_reservations(Caps::NOFLAGS_NOLINKS);
}

/// `cache repair` beside a record writer (docs/contract.md, "Caches"): repair removes
/// temporaries as debris, the writer's included; in every interleaving the writer still
/// succeeds, its record is kept, and once both returned the views are settled.
#[test]
fn a_cache_repair_beside_a_writer_loses_nothing_and_fails_nothing() {
    let job = std::sync::Arc::new(job());
    model(move || {
        let settings = final_training_cache(&job);
        let fs = Arc::new(LoomFs::with_root(&[&settings.dir]));
        let writer = {
            let (fs, settings) = (fs.clone(), settings.clone());
            loom::thread::spawn(move || {
                trainctl::cache::Cache::new(&*fs, settings)
                    .write(&writer_record(0), 1_000)
                    .expect("the writer succeeds beside a repair")
                    .0
            })
        };
        let repair = {
            let (fs, settings) = (fs.clone(), settings.clone());
            loom::thread::spawn(move || {
                trainctl::cache::Cache::new(&*fs, settings)
                    .repair()
                    .expect("the repair succeeds beside a writer");
            })
        };
        let name = writer.join().expect("writer");
        repair.join().expect("repair");
        let cache = trainctl::cache::Cache::new(&*fs, settings);
        assert!(
            cache.record_names().expect("names").contains(&name),
            "record lost"
        );
        assert!(
            cache.check().expect("check").is_empty(),
            "views unsettled after both returned"
        );
    });
}

/// Two backups of one unit at once (two trainings finishing on Colab both back up the
/// final_training cache; docs/contract.md, "Drive backup"), with or without an older copy at
/// the target: in every interleaving both succeed, the target then holds the source's files
/// exactly, and no staging or aside directory is left beside it.
fn concurrent_backups_of_one_unit(caps: Caps, old_copy: bool) {
    model(move || {
        let (source, mirror) = (Path::new("/out/cache"), Path::new("/drive/mirror"));
        let target = mirror.join("cache");
        let fs = Arc::new(LoomFs::with_root_caps(&[source, mirror], caps));
        fs.create_new(&source.join("a.json"), b"record a")
            .expect("seed");
        fs.create_new(&source.join("latest.json"), b"a")
            .expect("seed");
        if old_copy {
            fs.create_dir(&target).expect("seed");
            fs.create_new(&target.join("a.json"), b"older")
                .expect("seed");
        }
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (fs, target) = (fs.clone(), target.clone());
                loom::thread::spawn(move || {
                    let no_fault = trainctl::backup::no_fault;
                    trainctl::backup::backup_dir_on(&*fs, source, &target, &no_fault)
                        .map(|unit| unit.outcome)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            let outcome = h.join().expect("thread");
            assert!(
                outcome.is_ok(),
                "a backup beside another failed: {outcome:?}"
            );
        }
        for (name, bytes) in [("a.json", &b"record a"[..]), ("latest.json", b"a")] {
            assert_eq!(
                fs.read(&target.join(name)).ok().as_deref(),
                Some(bytes),
                "the mirror's {name} is not the source's"
            );
        }
        let left: Vec<String> = fs
            .list(mirror)
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "cache")
            .collect();
        assert!(left.is_empty(), "left beside the copy: {left:?}");
    });
}

#[test]
fn two_backups_of_one_unit_both_succeed_and_leave_one_copy() {
    concurrent_backups_of_one_unit(Caps::POSIX, false);
}

#[test]
fn two_backups_of_one_unit_replace_an_older_copy_without_rename_flags() {
    concurrent_backups_of_one_unit(Caps::NOFLAGS, true);
}

/// Negative control: the allocation bug the contract forbids ("scan for the max, create
/// later", create_dir_all succeeding on an existing dir) IS found by this exploration, so the
/// passing tests above mean something.
#[test]
#[should_panic(expected = "two starts share")]
fn control_scan_then_create_allocation_is_caught() {
    model(|| {
        let identity = PathBuf::from("/out/ft/id");
        let fs = Arc::new(LoomFs::with_root(&[&identity]));
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                let (fs, identity) = (fs.clone(), identity.clone());
                loom::thread::spawn(move || {
                    let max = fs
                        .list(&identity)
                        .expect("list")
                        .iter()
                        .filter_map(|e| e.name.strip_prefix('v')?.parse::<u64>().ok())
                        .max()
                        .unwrap_or(0);
                    let dir = identity.join(format!("v{}", max + 1));
                    fs.create_dir_all(&dir).expect("create");
                    fs.write(&dir.join(format!("owner-{t}")), b"x")
                        .expect("own");
                    max + 1
                })
            })
            .collect();
        let got: Vec<u64> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_ne!(got[0], got[1], "two starts share v{}", got[0]);
    });
}

/// Negative control: stale-lease takeover by delete-then-create lets two resumers win.
#[test]
#[should_panic(expected = "resumers won")]
fn control_delete_then_create_takeover_is_caught() {
    model(|| {
        let dir = PathBuf::from("/out/v1");
        let fs = Arc::new(LoomFs::with_root(&[&dir]));
        fs.create_new(&dir.join("lease.json"), b"dead owner")
            .expect("stale lease");
        let handles: Vec<_> = (0..2u32)
            .map(|t| {
                let (fs, dir) = (fs.clone(), dir.clone());
                loom::thread::spawn(move || {
                    if fs.read(&dir.join("lease.json")).ok().as_deref()
                        != Some(b"dead owner".as_slice())
                    {
                        return false;
                    }
                    let _ = fs.remove_file(&dir.join("lease.json"));
                    fs.create_new(&dir.join("lease.json"), format!("owner {t}").as_bytes())
                        .is_ok()
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|w| *w)
            .count();
        assert!(winners <= 1, "{winners} resumers won");
    });
}
