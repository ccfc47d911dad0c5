//! Shared support for the property and CLI suites: throwaway project roots holding a copy of
//! the shipped config and dataset, the real binary, and a deterministic in-process host.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary project: `config/` copied from the repository, the tiny dataset under
/// `fixtures/datasets/resume_tiny`, OUT at `outputs/`. Deleted on drop.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// Copies a directory tree (test fixtures, variant dirs).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::Builder::new()
            .prefix("trainctl-test-")
            .tempdir()
            .expect("tempdir");
        copy_tree(&repo_root().join("config"), &dir.path().join("config"));
        copy_tree(
            &repo_root().join("fixtures/datasets/resume_tiny"),
            &dir.path().join("fixtures/datasets/resume_tiny"),
        );
        for fixture in ["fixtures/trainer", "fixtures/converter", "fixtures/hpo"] {
            copy_tree(&repo_root().join(fixture), &dir.path().join(fixture));
        }
        Project { dir }
    }

    /// Keeps only the first `n` records of every split of the fixture dataset: for the
    /// simulated campaigns, which never look at the data but prepare jobs and check configs
    /// (parsing and hashing 300 records) many times per second.
    pub fn shrink_dataset(&self, n: usize) {
        let dir = self.root().join("fixtures/datasets/resume_tiny");
        for split in ["train.json", "validation.json", "test.json"] {
            let path = dir.join(split);
            let records: Vec<serde_json::Value> =
                serde_json::from_slice(&std::fs::read(&path).expect("read split"))
                    .expect("a split is a JSON array");
            let kept: Vec<&serde_json::Value> = records.iter().take(n).collect();
            std::fs::write(&path, serde_json::to_vec(&kept).expect("json")).expect("write split");
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self, rel: &str) -> PathBuf {
        self.root().join("config").join(rel)
    }

    /// Switches `final_training.yaml` to the fixture trainer (`fixtures/trainer/
    /// fake_trainer.py`: fast, with failure knobs) instead of the built-in one.
    pub fn use_fixture_trainer(&self) {
        let path = self.config("final_training.yaml");
        let text = std::fs::read_to_string(&path).expect("final_training.yaml");
        let text = text.replacen(
            "command: null",
            "command: [python3, fixtures/trainer/fake_trainer.py]",
            1,
        );
        assert!(
            text.contains("fake_trainer.py"),
            "final_training.yaml lost its trainer.command key"
        );
        std::fs::write(path, text).expect("write final_training.yaml");
    }

    /// Replaces a config file's text.
    pub fn write_config(&self, rel: &str, text: &str) {
        let path = self.config(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write config");
    }

    /// Runs the real `trainctl` binary with `--root <project>`; returns (exit code, stdout,
    /// stderr). Platform variables are cleared so detection is `local` unless a test sets them.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let out = self.command(args, env).output().expect("run trainctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// The `trainctl` command for this project, not yet started.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainctl"));
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .current_dir(self.root());
        for var in [
            "COLAB_RELEASE_TAG",
            "COLAB_GPU",
            "COLAB_TPU",
            "KAGGLE_KERNEL_RUN_TYPE",
            "KAGGLE_URL_BASE",
            "AZUREML_RUN_ID",
            "AZUREML_EXPERIMENT_ID",
            "MLFLOW_TRACKING_URI",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs with `--json` and parses stdout.
    pub fn run_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = self.run(&all);
        let doc = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\nstderr: {stderr}"));
        (code, doc)
    }
}

/// Global arguments for storage env `env` with OUT at `out` and the Drive mount at `drive`
/// (the absolute platform paths redirected into temp dirs).
pub fn env_args(env: &str, out: &Path, drive: &Path) -> Vec<String> {
    vec![
        "--env".into(),
        env.into(),
        "-o".into(),
        format!("paths:env_overrides.{env}.base.outputs={}", out.display()),
        "-o".into(),
        format!("paths:drive.mount_point={}", drive.display()),
    ]
}

/// Where the environment matrix and the scenario table put each storage env's OUT inside a
/// project `root` (the platforms' absolute paths, redirected): colab's is the VM disk, not
/// the Drive, so that a backup has something to do.
pub fn platform_out(root: &Path, env: &str) -> PathBuf {
    root.join(match env {
        "colab" => "content/outputs",
        "kaggle" => "kaggle/working/outputs",
        "azureml" => "mnt/outputs",
        _ => "outputs",
    })
}

/// `-o` arguments moving every platform env's OUT to [`platform_out`] and the Drive mount to
/// `drive`.
pub fn platform_redirects(root: &Path, drive: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for env in ["colab", "kaggle", "azureml"] {
        args.push("-o".into());
        args.push(format!(
            "paths:env_overrides.{env}.base.outputs={}",
            platform_out(root, env).display()
        ));
    }
    args.push("-o".into());
    args.push(format!("paths:drive.mount_point={}", drive.display()));
    args
}

/// No environment variables.
pub fn no_vars(_: &str) -> Option<String> {
    None
}

/// No processes alive.
pub fn no_process(_: u32) -> Option<u64> {
    None
}

/// Not a git checkout.
pub fn no_git(_: &Path, _: &[PathBuf]) -> (Option<String>, bool) {
    (None, false)
}

/// A deterministic host: no env vars, no git, no live processes, a fixed clock.
pub fn host() -> trainctl::job::Host<'static> {
    trainctl::job::Host {
        var: &no_vars,
        now_ms: 1_800_000_000_000,
        hostname: "test-host".into(),
        process_start_time: &no_process,
        git: &no_git,
        clock: None,
    }
}

/// Load options for a project root with extra `-o` overrides.
pub fn opts(root: &Path, overrides: &[&str]) -> trainctl::config::LoadOptions {
    trainctl::config::LoadOptions {
        root: Some(root.to_path_buf()),
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The shipped config of `project`, loaded without overrides and prepared into a job on the
/// real filesystem with the deterministic host.
pub fn prepared_job(project: &Project) -> trainctl::job::Job {
    let root = project.root();
    let config = trainctl::config::load(&opts(root, &[]), root, &no_vars).expect("load config");
    trainctl::job::prepare(config, &trainctl::fs::OsFs, &host()).expect("prepare job")
}

/// The paths whose presence or bytes differ between two snapshots (empty = unchanged).
pub fn changed(
    before: &[(PathBuf, Option<Vec<u8>>)],
    after: &[(PathBuf, Option<Vec<u8>>)],
) -> Vec<PathBuf> {
    let a: std::collections::BTreeMap<_, _> = before.iter().cloned().collect();
    let b: std::collections::BTreeMap<_, _> = after.iter().cloned().collect();
    let mut out: Vec<PathBuf> = a
        .iter()
        .filter(|(p, v)| b.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out.sort();
    out
}

/// Every file under `dir` with its bytes (sorted), for "nothing changed" checks.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push((p.clone(), None));
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).ok()));
            }
        }
    }
    out.sort();
    out
}

/// Writes a variant dir that satisfies the completion contract for `id`/`variant`, with a
/// manifest of its checkpoint files; returns the dir.
pub fn write_complete_variant(
    layout: &trainctl::paths::Layout,
    id: &trainctl::paths::Identity,
    variant: u64,
) -> PathBuf {
    let dir = layout.variant_dir(id, variant).expect("variant dir");
    let ckpt = dir.join("checkpoint");
    std::fs::create_dir_all(&ckpt).expect("mkdir checkpoint");
    let config = serde_json::json!({
        "id2label": {"0": "O", "1": "NAME"},
        "label2id": {"O": 0, "NAME": 1},
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "checkpoint/config.json",
            serde_json::to_vec(&config).expect("json"),
        ),
        (
            "checkpoint/model.safetensors",
            format!("weights of v{variant}").into_bytes(),
        ),
    ];
    let mut manifest = Vec::new();
    for (rel, bytes) in &files {
        std::fs::write(dir.join(rel), bytes).expect("write checkpoint file");
        manifest.push(serde_json::json!({
            "path": rel,
            "size": bytes.len(),
            "sha256": trainctl::identity::sha256_hex(bytes),
        }));
    }
    std::fs::write(
        dir.join("metrics.json"),
        br#"{"macro-f1": 0.5, "loss": 1.0}"#,
    )
    .expect("metrics");
    let meta = serde_json::json!({
        "status": "completed",
        "storage_env": id.storage_env.as_str(),
        "model": id.model,
        "spec_fp": id.spec_fp,
        "exec_fp": id.exec_fp,
        "variant": variant,
        "objective_metric": "macro-f1",
        "manifest": manifest,
        "trained_epochs": 1,
        "completed_at": format!("2026-01-01T00:00:{:02}Z", variant % 60),
    });
    std::fs::write(
        dir.join("metadata.json"),
        serde_json::to_vec_pretty(&meta).expect("json"),
    )
    .expect("metadata");
    dir
}

/// Writes an incomplete variant dir: metadata with `status` (`running`/`failed`) or nothing.
pub fn write_incomplete_variant(
    layout: &trainctl::paths::Layout,
    id: &trainctl::paths::Identity,
    variant: u64,
    status: Option<&str>,
) -> PathBuf {
    let dir = layout.variant_dir(id, variant).expect("variant dir");
    std::fs::create_dir_all(&dir).expect("mkdir variant");
    if let Some(status) = status {
        let meta = serde_json::json!({
            "status": status,
            "storage_env": id.storage_env.as_str(),
            "model": id.model,
            "spec_fp": id.spec_fp,
            "exec_fp": id.exec_fp,
            "variant": variant,
        });
        std::fs::write(
            dir.join("metadata.json"),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("metadata");
    }
    dir
}

/// Writes a lease owned by a live process (this test process) on this host.
pub fn write_live_lease(dir: &Path) {
    let owner = trainctl::lease::Owner::current();
    let taken =
        trainctl::lease::take(&trainctl::fs::OsFs, dir, 0, &owner, 0, "test").expect("take lease");
    assert!(
        matches!(taken, trainctl::lease::Take::Won(_)),
        "lease generation 1 was taken"
    );
}

pub mod harness;

/// Case count for a property: `PROPTEST_CASES` wins; else the tier's scale of `quick`
/// (`TRAINCTL_TEST_TIER=nightly` ×10, `gate` ×4).
pub fn cases(quick: u32) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    match std::env::var("TRAINCTL_TEST_TIER").as_deref() {
        Ok("nightly") => quick * 10,
        Ok("gate") => quick * 4,
        _ => quick,
    }
}

pub mod sched;

/// Seeds for a campaign: `TRAINCTL_SEED_RANGE=a..b` (shards never overlap), else `count`
/// seeds from `base`; with `TRAINCTL_TIME_BUDGET=<secs>` it keeps going (fresh seeds) until the
/// budget is spent, printing progress to stderr.
pub fn seeds(base: u64, count: u64) -> Box<dyn Iterator<Item = u64>> {
    let range = std::env::var("TRAINCTL_SEED_RANGE").ok().and_then(|r| {
        let (a, b) = r.split_once("..")?;
        Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
    });
    let budget = std::env::var("TRAINCTL_TIME_BUDGET")
        .ok()
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let (start, end) = match range {
        Some((a, b)) => (a, b),
        None if budget.is_some() => (base, u64::MAX),
        None => (base, base + count),
    };
    let began = std::time::Instant::now();
    Box::new((start..end).take_while(move |seed| {
        let Some(limit) = budget else { return true };
        let more = began.elapsed() < limit;
        if more && (seed - start) % 100 == 0 {
            eprintln!(
                "campaign: seed {seed}, {:?} of {:?}",
                began.elapsed(),
                limit
            );
        }
        more
    }))
}
pub mod lin;

/// The one-line command that runs `test` of the suite module `module` (its `module_path!()`,
/// `<binary>::<suite>`): `cargo test --release --test <binary> -- <suite>::<test>`.
pub fn replay_command(module: &str, test: &str) -> String {
    let (binary, suite) = module.split_once("::").unwrap_or((module, ""));
    let filter = match (suite, test) {
        ("", t) => t.to_string(),
        (s, "") => format!("{s}::"),
        (s, t) => format!("{s}::{t}"),
    };
    format!("cargo test --release --test {binary} -- {filter}")
}

/// A proptest config whose RNG seed is known: `TRAINCTL_SEED` if set, else a fresh one. The
/// seed and the one-line replay command are printed at the start; libtest shows a test's
/// output only when it fails, so every failure carries them. `module` is the caller's
/// `module_path!()`, `test` the test (or a filter matching the tests of one `proptest!` block).
/// Every proptest configuration of the suite goes through here.
pub fn seeded_config(cases: u32, module: &str, test: &str) -> proptest::test_runner::Config {
    let seed = trainctl_core::testing::seed();
    // proptest's case stream depends on the case count, so a gate/nightly seed replays only
    // in its own tier: the line carries the tier when one is set.
    let tier = std::env::var("TRAINCTL_TEST_TIER")
        .map(|t| format!("TRAINCTL_TEST_TIER={t} "))
        .unwrap_or_default();
    // libtest names each test's thread after the test (`suite::name`): the most precise
    // filter when the caller passed a block-wide one (or none).
    let from_thread = std::thread::current()
        .name()
        .filter(|n| *n != "main" && n.contains("::"))
        .map(|n| n.rsplit("::").next().unwrap_or(n).to_string());
    let test = from_thread.as_deref().unwrap_or(test);
    eprintln!(
        "seed {seed}; replay: {tier}TRAINCTL_SEED={seed} {}",
        replay_command(module, test)
    );
    proptest::test_runner::Config {
        cases,
        max_shrink_iters: 4096,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        // Committed `props/<suite>.proptest-regressions` files replay first, and a new failure
        // is added there. A fixed path: proptest's default (next to the source) looks for a
        // lib.rs or main.rs above the file, which `props/` has not, and silently persists
        // nothing.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(regressions_file(module)),
        )),
        ..proptest::test_runner::Config::default()
    }
}

/// `props/<suite>.proptest-regressions` of the suite module `module` (its `module_path!()`),
/// as the `'static` path proptest's `Direct` persistence wants (one small leak per config).
fn regressions_file(module: &str) -> &'static str {
    let suite = module.split("::").nth(1).unwrap_or(module);
    let path = repo_root().join(format!("props/{suite}.proptest-regressions"));
    Box::leak(path.display().to_string().into_boxed_str())
}

/// Where failing properties write their minimised traces.
pub fn failure_dir() -> PathBuf {
    repo_root().join("target/trainctl-failures")
}

/// Committed regression traces `fixtures/regressions/<prefix>*.json`, in name order.
pub fn regression_traces(prefix: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("fixtures/regressions");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.retain(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".json")
        })
    });
    paths.sort();
    paths
}
pub mod mlflow;
pub mod moto;

pub mod scripted;

pub mod stats;

/// The storage profiles the simulated worlds run on (docs/contract.md, "Storage profiles"):
/// a local filesystem with rename flags, one without them but with hard links (NFS, bindfs),
/// and one with neither (Drive, gcsfuse). Traces record it; older traces are `posix`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimProfile {
    #[default]
    Posix,
    PosixNoflags,
    PosixNoflagsNolinks,
    /// OUT in a simulated object store (`BucketFs` over `SimObjects`); everything else (the
    /// project, the trainer's staging dir) on a posix SimFs.
    Object,
}

impl SimProfile {
    /// Every world a seed-driven campaign may draw: the three filesystem profiles and OUT in
    /// a bucket.
    pub const WORLDS: [SimProfile; 4] = [
        SimProfile::Posix,
        SimProfile::PosixNoflags,
        SimProfile::PosixNoflagsNolinks,
        SimProfile::Object,
    ];

    /// The Fs a case runs on: `sim` itself, or, for `Object`, a bucket holding `out` with
    /// `sim` for every other path.
    /// The store's create-if-absent puts time out now and then (from `seed`: applied or
    /// not), which the protocol must absorb.
    pub fn world(
        self,
        sim: std::sync::Arc<trainctl::fs::sim::SimFs>,
        out: &Path,
        seed: u64,
    ) -> std::sync::Arc<dyn trainctl::fs::Fs> {
        match self {
            SimProfile::Object => std::sync::Arc::new(trainctl::store::bucket::BucketFs::new(
                sim,
                out.to_path_buf(),
                "out",
                std::sync::Arc::new(trainctl::store::sim::SimObjects::with_create_timeouts(seed)),
                "sim-".into(),
            )),
            _ => sim,
        }
    }

    pub const ALL: [SimProfile; 3] = [
        SimProfile::Posix,
        SimProfile::PosixNoflags,
        SimProfile::PosixNoflagsNolinks,
    ];

    pub fn caps(self) -> trainctl::fs::Caps {
        match self {
            SimProfile::Posix => trainctl::fs::Caps::POSIX,
            SimProfile::PosixNoflags => trainctl::fs::Caps::NOFLAGS,
            SimProfile::PosixNoflagsNolinks => trainctl::fs::Caps::NOFLAGS_NOLINKS,
            // The local side of a bucket world.
            SimProfile::Object => trainctl::fs::Caps::POSIX,
        }
    }

    /// A fresh simulated filesystem of this profile.
    pub fn sim(self) -> trainctl::fs::sim::SimFs {
        trainctl::fs::sim::SimFs::with_caps(self.caps())
    }

    /// The profile a seed stands for in seed-driven campaigns (a hash of the seed, so that
    /// the rest of the case does not change with it).
    pub fn of_seed(seed: u64) -> SimProfile {
        let h = trainctl::rng::SplitMix64::new(seed ^ 0x5107_f11e).next_u64();
        SimProfile::WORLDS[(h % 4) as usize]
    }
}

/// Starts `n` `trainctl` processes with `args` at once on `project`; every one must exit 0
/// with a JSON document. Returns the variants they report, sorted.
pub fn concurrent_variants(project: &Project, args: &[&str], n: usize) -> Vec<u64> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            project
                .command(args, &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut variants = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let doc: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
        assert_eq!(out.status.code(), Some(0), "{doc}");
        variants.push(doc["variant"].as_u64().expect("variant"));
    }
    variants.sort();
    variants
}
