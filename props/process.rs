//! Real processes on a real temp directory (issue: execution core, acceptance): reuse and
//! force_new, kill -9 mid-training then resume, the trainer dying with its orchestrator,
//! concurrent force_new starts, cache check/repair, and the failure paths' disk effects.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A project whose trainer is the fixture trainer (fast, with failure knobs), not the built-in.
fn fixture_project() -> support::Project {
    let project = support::Project::new();
    project.use_fixture_trainer();
    project
}

fn json_of(stdout: &str, stderr: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

fn train(project: &support::Project, overrides: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut args = vec!["--json"];
    for o in overrides {
        args.push("-o");
        args.push(o);
    }
    args.push("train");
    let (code, stdout, stderr) = project.run_env(&args, env);
    (code, json_of(&stdout, &stderr))
}

/// sha256 of every file below `dir`, by relative path.
fn digests(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = support::snapshot(dir)
        .into_iter()
        .filter_map(|(p, bytes)| {
            Some((
                p.strip_prefix(dir).ok()?.to_path_buf(),
                trainctl::identity::sha256_hex(&bytes?),
            ))
        })
        .collect();
    out.sort();
    out
}

fn records(project: &support::Project) -> Vec<String> {
    let dir = project.root().join("outputs/cache/final_training");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("final_training_") && n != "final_training_index.json")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_step_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("step-"))
        })
        .unwrap_or(false)
}

/// The variant dir the plan names (before training starts).
fn planned_dir(project: &support::Project, overrides: &[&str]) -> PathBuf {
    let mut args = vec![];
    for o in overrides {
        args.push("-o");
        args.push(*o);
    }
    args.push("plan");
    let (code, doc) = project.run_json(&args);
    assert_eq!(code, 0, "{doc}");
    PathBuf::from(doc["output_dir"].as_str().expect("output_dir"))
}

#[test]
fn train_twice_reuses_then_force_new_leaves_v1_untouched() {
    let project = fixture_project();
    let (code, first) = train(&project, &[], &[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(
        (first["decision"].as_str(), first["variant"].as_u64()),
        (Some("new"), Some(1))
    );
    let v1 = PathBuf::from(first["output_dir"].as_str().expect("dir"));
    let v1_before = digests(&v1);
    let records_before = records(&project);
    assert_eq!(records_before.len(), 1, "one record for one completed run");

    let (code, second) = train(&project, &[], &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(
        (second["decision"].as_str(), second["variant"].as_u64()),
        (Some("reuse"), Some(1))
    );
    assert_eq!(
        records(&project),
        records_before,
        "reuse must not touch the cache"
    );

    let (code, third) = train(&project, &["run.mode=force_new"], &[]);
    assert_eq!(code, 0, "{third}");
    assert_eq!(
        (third["decision"].as_str(), third["variant"].as_u64()),
        (Some("new"), Some(2))
    );
    // v1 unchanged, byte for byte, except the lease generation files a run adds and releases.
    let v1_after: Vec<_> = digests(&v1);
    assert_eq!(v1_after, v1_before, "force_new modified v1");
    assert_eq!(records(&project).len(), 2);
}

#[test]
fn kill_9_mid_training_then_resume_completes_with_identical_weights() {
    let project = fixture_project();
    let slow = [("FAKE_TRAINER_SLEEP_MS", "40")];
    let dir = planned_dir(&project, &["run.mode=force_new"]);
    let mut child = project
        .command(&["--json", "-o", "run.mode=force_new", "train"], &slow)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn train");
    wait_for("a step checkpoint", Duration::from_secs(60), || {
        has_step_checkpoint(&dir)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();

    // The trainer dies with its orchestrator, but not in the same instant: until it has
    // exited, its lease is rightly live and `status` says `running` (a loaded machine showed
    // it). Once it is gone, the variant is incomplete with a reason.
    let mut status = Value::Null;
    wait_for(
        "status to show v1 incomplete",
        Duration::from_secs(20),
        || {
            let (code, doc) = project.run_json(&["status"]);
            assert_eq!(code, 0, "{doc}");
            let state = doc["variants"][0]["state"].clone();
            assert!(state == "incomplete" || state == "running", "{doc}");
            status = doc;
            state == "incomplete"
        },
    );
    let row = &status["variants"][0];
    assert!(row["reason"].as_str().is_some(), "{status}");

    // A resume may still find the trainer exiting (busy).
    let mut resumed = Value::Null;
    wait_for("resume to start", Duration::from_secs(20), || {
        let (code, doc) = train(&project, &["run.mode=resume_if_incomplete"], &[]);
        resumed = doc;
        assert!(code == 0 || code == 4, "resume failed: {resumed}");
        code == 0
    });
    assert_eq!(resumed["decision"], "resume", "{resumed}");
    assert_eq!(resumed["variant"], 1);

    // An uninterrupted run of the same config gives the same weights.
    let (code, fresh) = train(&project, &["run.mode=force_new"], &[]);
    assert_eq!(code, 0, "{fresh}");
    let weights = |d: &str| {
        std::fs::read(Path::new(d).join("checkpoint/model.safetensors")).expect("weights")
    };
    assert_eq!(
        weights(resumed["output_dir"].as_str().expect("dir")),
        weights(fresh["output_dir"].as_str().expect("dir")),
        "resumed weights differ from an uninterrupted run"
    );
}

#[test]
fn trainer_dies_with_its_orchestrator() {
    let project = fixture_project();
    let pidfile = project.root().join("trainer.pid");
    let dir = planned_dir(&project, &["run.mode=force_new"]);
    let pidfile_s = pidfile.display().to_string();
    let env = [
        ("FAKE_TRAINER_SLEEP_MS", "50"),
        ("FAKE_TRAINER_PIDFILE", pidfile_s.as_str()),
    ];
    let mut child = project
        .command(&["-o", "run.mode=force_new", "train"], &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn train");
    wait_for("the trainer pid file", Duration::from_secs(30), || {
        pidfile.exists()
    });
    let trainer_pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    assert!(
        trainctl::lease::process_start_time(trainer_pid).is_some(),
        "trainer should be running"
    );
    child.kill().expect("kill -9 the orchestrator alone");
    let _ = child.wait();
    wait_for("the trainer to die", Duration::from_secs(5), || {
        trainctl::lease::process_start_time(trainer_pid).is_none()
    });
    // Nothing keeps writing into the variant once the trainer is gone.
    let before = support::snapshot(&dir);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        support::changed(&before, &support::snapshot(&dir)).is_empty(),
        "an orphan is still writing"
    );
}

#[test]
fn eight_concurrent_force_new_starts_get_eight_distinct_variants() {
    let project = fixture_project();
    let variants = support::concurrent_variants(
        &project,
        &["--json", "-o", "run.mode=force_new", "train"],
        8,
    );
    assert_eq!(
        variants,
        (1..=8).collect::<Vec<u64>>(),
        "variants must be distinct (and dense)"
    );
    let index: Value = serde_json::from_slice(
        &std::fs::read(
            project
                .root()
                .join("outputs/cache/final_training/final_training_index.json"),
        )
        .expect("index"),
    )
    .expect("index json");
    let mut listed: Vec<u64> = index["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["metadata"]["variant"].as_u64().expect("variant in index"))
        .collect();
    listed.sort();
    assert_eq!(listed, variants, "the index must list all eight runs");
}

#[test]
fn cache_check_reports_torn_latest_and_missing_index_and_repair_fixes_them() {
    let project = fixture_project();
    let (code, doc) = train(&project, &[], &[]);
    assert_eq!(code, 0, "{doc}");
    let cache = project.root().join("outputs/cache/final_training");
    let latest = cache.join("latest_final_training_cache.json");
    let bytes = std::fs::read(&latest).expect("latest");
    std::fs::write(&latest, &bytes[..bytes.len() / 2]).expect("truncate latest");
    std::fs::remove_file(cache.join("final_training_index.json")).expect("delete index");

    let (code, check) = project.run_json(&["cache", "check", "final_training"]);
    assert_eq!(
        code,
        trainctl::cli::CHECK_FOUND_PROBLEMS,
        "a check that finds problems must fail for cron and CI: {check}"
    );
    let kinds: Vec<&str> = check["caches"]["final_training"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"latest_corrupt"), "{check}");
    assert!(kinds.contains(&"index_missing"), "{check}");

    let (code, repair) = project.run_json(&["cache", "repair"]);
    assert_eq!(code, 0, "{repair}");
    let (code, clean) = project.run_json(&["cache", "check"]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["problems"], 0, "{clean}");
}

#[test]
fn missing_dataset_exits_3_and_writes_nothing() {
    let project = fixture_project();
    let before = support::snapshot(project.root());
    let (code, doc) = train(&project, &["dataset.local_path_override=nowhere"], &[]);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(doc["error"]["kind"], "dataset_missing");
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
}

#[test]
fn failing_trainer_exits_5_marks_failed_releases_lease_and_leaves_cache_alone() {
    let project = fixture_project();
    let dir = planned_dir(&project, &[]);
    let (code, doc) = train(&project, &[], &[("FAKE_TRAINER_FAIL_AT", "3")]);
    assert_eq!(code, 5, "{doc}");
    assert_eq!(doc["error"]["kind"], "training_failed");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).expect("metadata"))
            .expect("json");
    assert_eq!(meta["status"], "failed", "{meta}");
    let (_, status) = project.run_json(&["status"]);
    assert_eq!(status["variants"][0]["reason"], "failed", "{status}");
    assert_eq!(
        status["variants"][0]["lease"], "none",
        "the lease must be released: {status}"
    );
    assert!(
        records(&project).is_empty(),
        "a failed run must not add a cache record"
    );
    // A trainer that exits 0 without metrics is not complete either.
    let (code, doc) = train(
        &project,
        &["run.mode=force_new"],
        &[("FAKE_TRAINER_NO_METRICS", "1")],
    );
    assert_eq!(code, 5, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("metrics"),
        "{doc}"
    );
}

fn process_count() -> usize {
    if let Some(n) = std::env::var("TRAINCTL_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    match std::env::var("TRAINCTL_TEST_TIER").as_deref() {
        Ok("nightly") | Ok("gate") => 64,
        _ => 16,
    }
}

/// Shortens training in this project (1 epoch, a step checkpoint every 5 steps) so that many
/// processes fit in the quick tier.
fn fast(project: &support::Project) {
    let path = project.config("train.yaml");
    let text = std::fs::read_to_string(&path).expect("train.yaml");
    let text = text
        .replace("epochs: 4", "epochs: 1")
        .replace("save_interval: 50", "save_interval: 5");
    std::fs::write(path, text).expect("write train.yaml");
}

/// Leaves v1 of the default identity stale: its orchestrator killed -9 mid-training.
fn make_stale_v1(project: &support::Project) {
    let dir = planned_dir(project, &["run.mode=force_new"]);
    let mut child = project
        .command(
            &["-o", "run.mode=force_new", "train"],
            &[("FAKE_TRAINER_SLEEP_MS", "40")],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for("a step checkpoint", Duration::from_secs(60), || {
        has_step_checkpoint(&dir)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
}

#[test]
fn many_real_processes_start_at_once_distinct_single_owner_linearizable() {
    use support::lin::{linearizable, Observed, Program};
    let project = fixture_project();
    fast(&project);
    make_stale_v1(&project);
    let n = process_count();
    let programs: Vec<Program> = (0..n)
        .map(|i| match i % 6 {
            0 => Program::Reuse,
            1 => Program::ResumeStale,
            _ => Program::ForceNew,
        })
        .collect();
    let epoch = Instant::now();
    let children: Vec<_> = programs
        .iter()
        .map(|p| {
            let overrides: &[&str] = match p {
                Program::ForceNew => &["-o", "run.mode=force_new"],
                Program::Reuse => &["-o", "run.mode=reuse_if_exists"],
                _ => &[
                    "-o",
                    "run.mode=resume_if_incomplete",
                    "-o",
                    "variant.number=1",
                ],
            };
            let mut args = vec!["--json"];
            args.extend_from_slice(overrides);
            args.push("train");
            let invoked = epoch.elapsed().as_micros() as u64;
            let child = project
                .command(&args, &[])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            (invoked, child)
        })
        .collect();
    let mut observed = Vec::new();
    let mut handles = Vec::new();
    for (invoked, child) in children {
        handles.push(std::thread::spawn(move || {
            let out = child.wait_with_output().expect("wait");
            (invoked, out)
        }));
    }
    for (h, program) in handles.into_iter().zip(&programs) {
        let (invoked, out) = h.join().expect("join");
        let responded = epoch.elapsed().as_micros() as u64;
        let doc = json_of(
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        );
        use trainctl_models::decision::{ErrorKind as MErr, Expected};
        let decision = match (out.status.code(), doc["decision"].as_str()) {
            (Some(0), Some(d)) => {
                let variant = doc["variant"].as_u64().expect("variant");
                match d {
                    "new" => Expected::New { variant },
                    "reuse" => Expected::Reuse { variant },
                    "resume" => Expected::Resume { variant },
                    other => panic!("unexpected decision {other}"),
                }
            }
            (Some(4), _) => Expected::Error(MErr::Busy),
            (code, _) => panic!("process failed ({code:?}): {doc}"),
        };
        // Responses are collected in order, so a response time is an upper bound: sound for
        // the check (it can only widen intervals, i.e. allow more orders).
        observed.push(Observed {
            program: *program,
            decision: Some(decision),
            invoked,
            responded,
        });
    }
    let trained: Vec<u64> = observed
        .iter()
        .filter_map(|o| match o.decision {
            Some(trainctl_models::decision::Expected::New { variant })
            | Some(trainctl_models::decision::Expected::Resume { variant }) => Some(variant),
            _ => None,
        })
        .collect();
    let mut distinct = trained.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        trained.len(),
        "two processes trained the same variant: {observed:?}"
    );
    let mut start = trainctl_models::concurrent::Variants::default();
    start.0.insert(1, trainctl_models::concurrent::Slot::Idle);
    // The WGL search is exponential when every command overlaps every other (all start at
    // once): it runs here for up to 8 commands (quick tier: the first 8 to respond are not a
    // valid sub-history, so the check is all or nothing). Larger histories rely on the
    // invariants below and on the scheduler suite, which checks linearizability every case.
    if observed.len() <= 8 {
        assert!(
            linearizable(&start, &observed),
            "history is not linearizable: {observed:?}"
        );
    }
    // Single ownership: each trained variant's lease generations alternate held/released by
    // one owner per take, and no generation is held twice.
    let (_, status) = project.run_json(&["status", "--deep"]);
    for row in status["variants"].as_array().expect("variants") {
        assert_eq!(row["state"], "complete", "{status}");
        assert_eq!(row["lease"], "none", "every lease released: {status}");
    }
    // The variants on disk are the stale v1 plus every variant a start trained.
    let mut expected: Vec<u64> = distinct.clone();
    expected.push(1);
    expected.sort();
    expected.dedup();
    let mut on_disk: Vec<u64> = status["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter_map(|r| r["variant"].as_u64())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, expected, "{status}");
    let (_, check) = project.run_json(&["cache", "check"]);
    assert_eq!(check["problems"], 0, "{check}");
}

#[test]
fn killing_random_processes_then_resuming_loses_nothing_and_fakes_nothing() {
    let project = fixture_project();
    fast(&project);
    // A complete run whose bytes must never change.
    let (code, first) = train(&project, &[], &[]);
    assert_eq!(code, 0, "{first}");
    let v1 = PathBuf::from(first["output_dir"].as_str().expect("dir"));
    let v1_digests = digests(&v1.join("checkpoint"));
    let n = process_count() / 2;
    let mut rng = 0x5eed_u64 ^ std::process::id() as u64;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            project
                .command(
                    &["-o", "run.mode=force_new", "train"],
                    &[("FAKE_TRAINER_SLEEP_MS", "15")],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children.iter_mut() {
        if next() % 2 == 0 {
            std::thread::sleep(Duration::from_millis(next() % 400));
            let _ = child.kill();
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    // Resume each incomplete variant by number (resume_if_incomplete without a number only
    // looks at the highest variant, docs/contract.md, "Decision and completion"). Bounded retries
    // while a killed orchestrator's trainer is still exiting (busy).
    let (_, status) = project.run_json(&["status"]);
    let incomplete: Vec<u64> = status["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter(|r| r["state"] != "complete")
        .filter_map(|r| r["variant"].as_u64())
        .collect();
    for v in incomplete {
        let number = format!("variant.number={v}");
        let mut done = false;
        for _ in 0..50 {
            let (code, doc) = train(&project, &["run.mode=resume_if_incomplete", &number], &[]);
            assert!(code == 0 || code == 4, "resume of v{v} failed: {doc}");
            if code == 0 {
                assert_eq!(doc["decision"], "resume", "{doc}");
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(done, "v{v} stayed busy");
    }
    let (_, status) = project.run_json(&["status", "--deep"]);
    for row in status["variants"].as_array().expect("variants") {
        assert_eq!(
            row["state"], "complete",
            "no false complete, nothing left behind: {status}"
        );
    }
    assert_eq!(
        digests(&v1.join("checkpoint")),
        v1_digests,
        "a complete run changed"
    );
    let (_, check) = project.run_json(&["cache", "check"]);
    assert_eq!(check["problems"], 0, "{check}");
}

/// Issue acceptance for the built-in trainer: kill -9 mid-training, resume, and the final
/// weights equal an uninterrupted run's, byte for byte.
#[test]
fn builtin_trainer_kill_9_then_resume_matches_an_uninterrupted_run() {
    let project = support::Project::new();
    let long = [
        "run.mode=force_new",
        "training.epochs=24",
        "training.early_stopping.enabled=false",
        "logging.save_interval=10",
    ];
    let dir = planned_dir(&project, &long);
    let mut args = vec!["--json"];
    for o in &long {
        args.push("-o");
        args.push(o);
    }
    args.push("train");
    let mut child = project
        .command(&args, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn train");
    wait_for("a step checkpoint", Duration::from_secs(120), || {
        has_step_checkpoint(&dir)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    let killed_early = !dir.join("checkpoint/model.safetensors").exists();
    let resume: Vec<&str> = [
        "run.mode=resume_if_incomplete",
        "training.epochs=24",
        "training.early_stopping.enabled=false",
        "logging.save_interval=10",
    ]
    .to_vec();
    let mut resumed = Value::Null;
    wait_for("resume", Duration::from_secs(30), || {
        let (code, doc) = train(&project, &resume, &[]);
        resumed = doc;
        assert!(code == 0 || code == 4, "resume failed: {resumed}");
        code == 0
    });
    if killed_early {
        assert_eq!(resumed["decision"], "resume", "{resumed}");
    }
    let (code, fresh) = train(&project, &long, &[]);
    assert_eq!(code, 0, "{fresh}");
    let bytes = |d: &Value, f: &str| {
        std::fs::read(Path::new(d["output_dir"].as_str().expect("dir")).join(f)).expect("file")
    };
    assert_eq!(
        bytes(&resumed, "checkpoint/model.safetensors"),
        bytes(&fresh, "checkpoint/model.safetensors")
    );
    assert_eq!(
        bytes(&resumed, "metrics.json"),
        bytes(&fresh, "metrics.json")
    );
}
