//! Correct at the edges (issue 16), through the binary as a user runs it: every `-o` counts
//! wherever it stands, everything the trainer or the tracking store would refuse is refused
//! before the first write, reuse verifies what it hands over, `cache check` fails when it
//! finds problems, and `--json` usage errors are JSON. Each test failed on the code before
//! the fix (docs/contract.md, "Command line", "Reuse verifies what it hands over", "Refused
//! before the first write").

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn json_of(stdout: &str, stderr: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"))
}

fn run(project: &support::Project, args: &[&str]) -> (i32, Value) {
    let (code, stdout, stderr) = project.run(args);
    (code, json_of(&stdout, &stderr))
}

#[test]
fn an_override_before_the_subcommand_counts_when_another_follows_it() {
    let project = support::Project::new();
    let other = project.root().join("OTHER");
    let out = format!("paths:base.outputs={}", other.display());
    let (code, plan) = run(
        &project,
        &["-o", &out, "--json", "plan", "-o", "training.epochs=2"],
    );
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan["output_dir"]
            .as_str()
            .is_some_and(|d| Path::new(d).starts_with(&other)),
        "the -o before the subcommand was dropped: {plan}"
    );
    // …and the one after it counts too: epochs=2 changes the spec fingerprint.
    let (_, default) = run(&project, &["-o", &out, "--json", "plan"]);
    assert_ne!(plan["spec_fp"], default["spec_fp"], "{plan}");
    // The same with everything after the subcommand, and in the other order.
    let (_, after) = run(
        &project,
        &["--json", "plan", "-o", "training.epochs=2", "-o", &out],
    );
    assert_eq!(after["output_dir"], plan["output_dir"]);
    assert_eq!(after["spec_fp"], plan["spec_fp"]);
}

#[test]
fn a_global_option_given_twice_with_different_values_is_a_usage_error() {
    let project = support::Project::new();
    let root = project.root().display().to_string();
    for args in [
        vec!["--json", "--env", "local", "plan", "--env", "kaggle"],
        vec!["--json", "--experiment", "a", "plan", "--experiment", "b"],
        vec!["--json", "plan", "--root", "/nowhere"],
    ] {
        let (code, doc) = run(&project, &args);
        assert_eq!(code, 2, "{args:?}: {doc}");
        assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {doc}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given twice")),
            "{doc}"
        );
    }
    // The same value twice is one value.
    let (code, doc) = run(&project, &["--json", "--root", &root, "plan"]);
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn json_usage_errors_are_the_json_error_document() {
    let project = support::Project::new();
    for args in [
        &["--json", "bogus"][..],
        &["--json", "train", "--bogus"],
        &["--json", "predict"],
        &["train", "--json", "--nope"],
    ] {
        let (code, stdout, stderr) = project.run(args);
        assert_eq!(code, 2, "{args:?}");
        let doc = json_of(&stdout, &stderr);
        assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {doc}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{doc}"
        );
    }
    // Help is not an error.
    let (code, stdout, _) = project.run(&["--json", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Usage"), "{stdout}");
}

/// Every setting the trainer or the tracking store refuses, refused by `config check`,
/// `plan` and `train` alike (exit 2, located at the key), with nothing written.
#[test]
fn what_the_trainer_or_the_store_would_refuse_is_refused_before_anything_is_written() {
    let project = support::Project::new();
    let long_name = format!("mlflow.run_name={}", "x".repeat(5000));
    let long_experiment = format!("mlflow.experiment_name={}", "e".repeat(501));
    let cases = [
        ("mlflow.run_name=a/b", "mlflow.run_name"),
        (long_name.as_str(), "mlflow.run_name"),
        ("training.epochs=1000000000", "training.epochs"),
        (long_experiment.as_str(), "mlflow.experiment_name"),
        ("model:features.hash_dim=0", "features.hash_dim"),
        ("trainer.precision=bf16", "trainer.precision"),
    ];
    let before = support::snapshot(project.root());
    for (setting, key) in cases {
        for command in [&["config", "check"][..], &["plan"], &["train"]] {
            let mut args = vec!["--json", "-o", setting];
            args.extend_from_slice(command);
            let (code, doc) = run(&project, &args);
            assert_eq!(code, 2, "{setting} {command:?}: {doc}");
            assert_eq!(doc["error"]["kind"], "config_invalid", "{doc}");
            assert_eq!(doc["error"]["key"], key, "{setting} {command:?}: {doc}");
        }
    }
    assert!(
        support::changed(&before, &support::snapshot(project.root())).is_empty(),
        "a refused start wrote something"
    );
    // And the next start numbers from 1.
    let (code, plan) = run(&project, &["--json", "plan"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["variant"], 1, "{plan}");
}

fn variant_dir(doc: &Value) -> PathBuf {
    PathBuf::from(doc["output_dir"].as_str().expect("output_dir"))
}

#[test]
fn reuse_refuses_a_checkpoint_whose_bytes_changed_at_the_same_size() {
    let project = support::Project::new();
    let quick = ["-o", "training.epochs=1"];
    let mut train = vec!["--json"];
    train.extend_from_slice(&quick);
    train.push("train");
    let (code, first) = run(&project, &train);
    assert_eq!(code, 0, "{first}");
    let weights = variant_dir(&first).join("checkpoint/model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("weights");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, &bytes).expect("flip one bit");

    let (code, second) = run(&project, &train);
    assert_eq!(code, 0, "{second}");
    assert_eq!(
        second["decision"], "new",
        "a corrupt v1 must not be reused: {second}"
    );
    assert_eq!(second["variant"], 2);
    assert!(
        second["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("v1")))),
        "the skipped variant is named: {second}"
    );
    // `sizes` relaxes it: v2 is the newest complete one either way now, so flip v2 too.
    let weights2 = variant_dir(&second).join("checkpoint/model.safetensors");
    let mut bytes = std::fs::read(&weights2).expect("weights");
    bytes[last] ^= 0x40;
    std::fs::write(&weights2, &bytes).expect("flip");
    let mut sizes = train.clone();
    sizes.splice(1..1, ["-o", "run.verify_reuse=sizes"]);
    let (code, relaxed) = run(&project, &sizes);
    assert_eq!(code, 0, "{relaxed}");
    assert_eq!(relaxed["decision"], "reuse", "{relaxed}");
    assert_eq!(relaxed["variant"], 2);
}

#[test]
fn a_manifest_that_leaves_a_checkpoint_file_out_is_incomplete_even_to_a_deep_status() {
    let project = support::Project::new();
    let (code, first) = run(&project, &["--json", "-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{first}");
    let meta_path = variant_dir(&first).join("metadata.json");
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("metadata")).expect("json");
    let manifest = meta["manifest"].as_array_mut().expect("manifest");
    let before = manifest.len();
    manifest.retain(|e| e["path"] != "checkpoint/model.safetensors");
    assert_eq!(manifest.len() + 1, before);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write");
    for deep in [false, true] {
        let mut args = vec!["--json", "status"];
        if deep {
            args.push("--deep");
        }
        let (code, status) = run(&project, &args);
        assert_eq!(code, 0, "{status}");
        let v = &status["variants"][0];
        assert_eq!(v["state"], "incomplete", "deep={deep}: {status}");
        assert_eq!(
            v["reason"], "not_in_manifest:checkpoint/model.safetensors",
            "{status}"
        );
    }
}

#[test]
fn cache_check_exits_7_when_it_finds_problems_and_0_when_clean() {
    let project = support::Project::new();
    let (code, first) = run(&project, &["--json", "-o", "training.epochs=1", "train"]);
    assert_eq!(code, 0, "{first}");
    let (code, clean) = run(&project, &["--json", "cache", "check"]);
    assert_eq!((code, &clean["problems"]), (0, &Value::from(0)), "{clean}");
    let latest = project
        .root()
        .join("outputs/cache/final_training/latest_final_training_cache.json");
    std::fs::write(&latest, b"{torn").expect("damage");
    let (code, check) = run(&project, &["--json", "cache", "check"]);
    assert_eq!(code, 7, "{check}");
    assert_eq!(check["problems"], 1, "the report is unchanged: {check}");
    let (code, human, _) = project.run(&["cache", "check"]);
    assert_eq!(code, 7);
    assert!(human.contains("latest_corrupt"), "{human}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A pid that belonged to a process that has exited (reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap");
    pid
}

/// v1 of the default identity, incomplete (`running`), leased by `owner`.
fn leased_v1(
    project: &support::Project,
    owner: &trainctl::lease::Owner,
) -> (PathBuf, trainctl::lease::LeaseRecord) {
    let job = support::prepared_job(project);
    let dir = support::write_incomplete_variant(&job.layout, &job.identity, 1, Some("running"));
    let taken =
        trainctl::lease::take(&trainctl::fs::OsFs, &dir, 0, owner, now_ms(), "new").expect("take");
    let trainctl::lease::Take::Won(held) = taken else {
        panic!("generation 1 must be free");
    };
    (dir, held)
}

/// Eight identical starts on an empty OUT: exactly one trains, the seven others wait for it
/// and reuse its result (before: v1…v8, eight trainings of one model).
#[test]
fn eight_identical_starts_share_one_training() {
    let project = support::Project::new();
    let variants =
        support::concurrent_variants(&project, &["--json", "-o", "training.epochs=2", "train"], 8);
    assert_eq!(variants, vec![1; 8], "all eight must end with v1");
    let (code, status) = run(&project, &["--json", "status"]);
    assert_eq!(code, 0);
    assert_eq!(
        status["variants"].as_array().map(Vec::len),
        Some(1),
        "one variant trained: {status}"
    );
}

/// A live owner trains the identity and nothing is complete: reuse_if_exists waits for it up
/// to `run.wait_for_owner`, then is `busy` naming the owner; `run.wait_for_owner: 0` keeps the
/// old answer (a new variant). An explicit number held by a live owner is `busy` at once
/// (before: `variant_incomplete` with advice to resume a running variant).
#[test]
fn a_start_waits_for_a_live_owner_of_its_identity_up_to_the_bound() {
    let project = support::Project::new();
    // This test process is the live owner.
    let (_, _) = leased_v1(&project, &trainctl::lease::Owner::current());
    let pid = std::process::id().to_string();

    let began = std::time::Instant::now();
    let (code, stdout, stderr) = project.run(&["--json", "-o", "run.wait_for_owner=1s", "train"]);
    let doc = json_of(&stdout, &stderr);
    assert_eq!(code, 4, "{doc}");
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(900),
        "it waited"
    );
    let message = doc["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&pid) && message.contains("wait_for_owner"),
        "{message}"
    );
    assert!(
        stderr.contains("waiting for v1"),
        "says what it waits for: {stderr}"
    );

    let (code, explicit) = run(&project, &["--json", "-o", "variant.number=1", "train"]);
    assert_eq!(code, 4, "{explicit}");
    assert_eq!(explicit["error"]["kind"], "busy");
    assert!(
        explicit["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&pid)),
        "names the owner: {explicit}"
    );

    let (code, plan) = run(&project, &["--json", "plan"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["decision"], "wait", "{plan}");

    // (Same identity as the leased v1: no hyperparameter override.)
    let (code, no_wait) = run(&project, &["--json", "-o", "run.wait_for_owner=0", "train"]);
    assert_eq!(code, 0, "{no_wait}");
    assert_eq!(
        (&no_wait["decision"], &no_wait["variant"]),
        (&"new".into(), &2.into())
    );
}

/// The orchestrator died (kill -9) but its trainer is still being reaped: an immediate resume
/// waits for the trainer to exit, then takes the variant over (before: `busy` at once).
#[test]
fn a_resume_right_after_a_crash_waits_for_the_dying_trainer() {
    let project = support::Project::new();
    let dead = trainctl::lease::Owner {
        host: trainctl::lease::this_host(),
        pid: dead_pid(),
        start_time: 1,
    };
    let (dir, held) = leased_v1(&project, &dead);
    let mut trainer = std::process::Command::new("sleep")
        .arg("1.5")
        .spawn()
        .expect("spawn the still-running trainer");
    let trainer_pid = trainer.id();
    let beat = trainctl::lease::Heartbeat {
        heartbeat_ms: now_ms(),
        trainer_pid: Some(trainer_pid),
        trainer_start_time: trainctl::lease::process_start_time(trainer_pid),
    };
    trainctl::lease::beat(&trainctl::fs::OsFs, &dir, &held, &beat).expect("heartbeat");
    let reaper = std::thread::spawn(move || trainer.wait());

    let began = std::time::Instant::now();
    let (code, stdout, stderr) =
        project.run(&["--json", "-o", "run.mode=resume_if_incomplete", "train"]);
    let doc = json_of(&stdout, &stderr);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["decision"], "resume", "{doc}");
    assert!(
        began.elapsed() >= std::time::Duration::from_millis(1000),
        "it waited for the trainer to exit"
    );
    assert!(stderr.contains(&format!("pid {trainer_pid}")), "{stderr}");
    let _ = reaper.join();
}

/// A variant abandoned by a kill -9 and never resumed: once another variant of its identity
/// completes, its RUNNING run ends as KILLED (before: RUNNING forever).
#[test]
fn an_abandoned_attempts_run_ends_killed_once_another_variant_completes() {
    use trainctl::track::Tracker;
    let project = support::Project::new();
    let long = [
        "-o",
        "training.epochs=40",
        "-o",
        "training.early_stopping.enabled=false",
        "-o",
        "logging.save_interval=10",
    ];
    let mut args = vec!["--json"];
    args.extend_from_slice(&long);
    args.push("train");
    let (code, plan) = run(&project, &{
        let mut p = vec!["--json"];
        p.extend_from_slice(&long);
        p.push("plan");
        p
    });
    assert_eq!(code, 0, "{plan}");
    let v1 = variant_dir(&plan);
    let mut child = project
        .command(&args, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let began = std::time::Instant::now();
    let has_run = || {
        std::fs::read(v1.join("metadata.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|m| m["tracking"]["run_id"].is_string())
    };
    while !has_run() {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(60),
            "no run started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let meta: Value =
        serde_json::from_slice(&std::fs::read(v1.join("metadata.json")).expect("meta"))
            .expect("json");
    let run_id = meta["tracking"]["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let store = trainctl::track::file::FileTracker::new(
        std::sync::Arc::new(trainctl::fs::OsFs),
        project.root().join("mlruns"),
    )
    .expect("file store");
    assert_eq!(
        store.get_run(&run_id).expect("run").info.status,
        trainctl::track::RunStatus::Running
    );
    // Another variant of the same identity completes.
    let mut force = vec!["--json", "-o", "run.mode=force_new"];
    force.extend_from_slice(&long);
    force.push("train");
    // The killed orchestrator's trainer may still be dying: force_new does not wait for it.
    let (code, v2) = run(&project, &force);
    assert_eq!(code, 0, "{v2}");
    assert_eq!(v2["variant"], 2, "{v2}");
    let run = store.get_run(&run_id).expect("run");
    assert_eq!(
        run.info.status,
        trainctl::track::RunStatus::Killed,
        "{run:?}"
    );
    assert_eq!(
        run.tags.get("trainctl.superseded_by").map(String::as_str),
        Some("v2")
    );
}

/// An OUT given as a URL trainctl cannot use (an unknown scheme, a malformed bucket URL, one
/// carrying credentials) is a config error naming the key, never a local directory named
/// `s3:` (issue 17's first symptom), and a secret in it is never echoed; `file://` is its local
/// path. A well-formed bucket URL whose store does not answer is a storage error (exit 6),
/// never `internal`.
#[test]
fn an_unusable_out_url_is_a_config_error_not_a_local_directory() {
    let project = support::Project::new();
    for url in [
        "hdfs://namenode/out",
        "s3a://bucket/out",
        "s3://",
        "s3://bucket/a//b",
        "s3://AKIAKEY:topsecret@bucket/out",
        "gs://bucket/out?versionId=3",
    ] {
        let out = format!("paths:base.outputs={url}");
        let (code, doc) = run(&project, &["--json", "-o", &out, "train"]);
        assert_eq!(code, 2, "{url}: {doc}");
        assert_eq!(doc["error"]["kind"], "config_invalid", "{doc}");
        assert_eq!(doc["error"]["key"], "base.outputs", "{doc}");
        assert!(
            !doc.to_string().contains("topsecret"),
            "a secret was echoed: {doc}"
        );
    }
    let (code, colab) = run(
        &project,
        &[
            "--json",
            "--env",
            "colab",
            "-o",
            "paths:env_overrides.colab.base.outputs=ftp://host/out",
            "plan",
        ],
    );
    assert_eq!(code, 2, "{colab}");
    assert_eq!(colab["error"]["key"], "env_overrides.colab.base.outputs");
    let scheme_dirs: Vec<_> = std::fs::read_dir(project.root())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(':'))
        .collect();
    assert!(scheme_dirs.is_empty(), "{scheme_dirs:?}");
    let file_out = project.root().join("via-file-url");
    let out = format!("paths:base.outputs=file://{}", file_out.display());
    let (code, plan) = run(&project, &["--json", "-o", &out, "plan"]);
    assert_eq!(code, 0, "{plan}");
    assert!(variant_dir(&plan).starts_with(&file_out), "{plan}");

    // A bucket nobody serves: port 9 on loopback refuses connections.
    let (code, _, stderr) = project.run_env(
        &["-o", "paths:base.outputs=s3://bucket/out", "plan"],
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("s3://bucket/out"), "{stderr}");
    assert!(!project.root().join("s3:").exists());
}

/// A split that is a FIFO or a device is a located error before anything is read (before:
/// a FIFO hung forever, `/dev/urandom` read gigabytes).
#[test]
fn a_dataset_split_that_is_not_a_regular_file_is_refused_before_it_is_read() {
    let project = support::Project::new();
    let fifo = project.root().join("train.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for path in [fifo.display().to_string(), "/dev/urandom".to_string()] {
        let setting = format!("data:files.train={path}");
        let mut child = project
            .command(&["--json", "-o", &setting, "plan"], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Bounded: the bug this guards against is a read that never ends.
        let began = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if began.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{path}: still reading after 10 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let doc = json_of(&String::from_utf8_lossy(&out.stdout), "");
        assert_eq!(out.status.code(), Some(3), "{doc}");
        assert_eq!(doc["error"]["kind"], "dataset_invalid", "{doc}");
        assert_eq!(doc["error"]["key"], "files.train", "{doc}");
    }
}

/// Help texts give examples and cite no document users do not have (issue 18's small item).
#[test]
fn help_gives_examples_and_cites_no_spec() {
    let project = support::Project::new();
    let (code, top, _) = project.run(&["--help"]);
    assert_eq!(code, 0);
    for example in [
        "-o run.mode=force_new",
        "-o train:training.epochs=8",
        "Exit codes",
    ] {
        assert!(
            top.contains(example),
            "`{example}` missing from --help:\n{top}"
        );
    }
    for command in [
        "plan", "train", "status", "convert", "select", "backup", "track", "pipeline", "predict",
        "cache", "config",
    ] {
        let (code, help, _) = project.run(&[command, "--help"]);
        assert_eq!(code, 0, "{command}");
        assert!(
            !help.contains("SPEC"),
            "{command} --help cites SPEC:\n{help}"
        );
    }
    assert!(!top.contains("SPEC"), "{top}");
}
