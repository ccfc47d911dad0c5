//! What a user sees and keeps (issue 18), through the binary: live progress on a terminal and
//! off it, `--quiet`, and a waiting start showing the owner's progress (docs/contract.md,
//! "Live progress").

use crate::support;

use std::path::PathBuf;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Without a terminal the built-in trainer's progress is a plain line on stderr (the first
/// report and the last one at least), `--quiet` prints nothing, and `--json` keeps stdout one
/// document and stderr free of progress.
#[test]
fn progress_is_a_line_without_a_terminal_and_nothing_when_quiet() {
    let project = support::Project::new();
    let (code, stdout, stderr) = project.run(&["train"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("train: step"))
        .collect();
    assert!(!lines.is_empty(), "no progress line: {stderr}");
    let last = lines.last().expect("a line");
    assert!(
        last.contains("(100%)") && last.contains("loss ") && last.contains("macro-f1 "),
        "the last line shows the end of the run with loss and metric: {last}"
    );

    let (code, stdout, stderr) = project.run(&["-q", "-o", "run.mode=force_new", "train"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stderr, "", "--quiet prints nothing on stderr");

    let (code, stdout, stderr) = project.run(&["--json", "-o", "run.mode=force_new", "train"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["decision"], "new");
    assert!(!stderr.contains("train: step"), "{stderr}");
}

/// An external trainer moves the bar through `TRAINCTL_PROGRESS` (the fixture trainer writes
/// `{step, total, loss}` lines there).
#[test]
fn an_external_trainer_reports_progress_through_the_channel() {
    let project = support::Project::new();
    project.use_fixture_trainer();
    let (code, stdout, stderr) = project.run(&["--progress", "lines", "train"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("train: step"))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert!(last.contains("(100%)") && last.contains("loss "), "{last}");
}

/// On a terminal (`script` gives the command one) the progress is an indicatif bar that
/// moves: several redraws with different step counts, and the final result on stdout.
#[test]
fn on_a_terminal_train_draws_a_moving_bar() {
    let project = support::Project::new();
    let bin = env!("CARGO_BIN_EXE_trainctl");
    let typescript = project.root().join("typescript");
    let command = format!(
        "{bin} -o train:training.epochs=12 -o train:training.early_stopping.enabled=false train"
    );
    let status = std::process::Command::new("script")
        .args(["-qec", &command])
        .arg(&typescript)
        .current_dir(project.root())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script(1) from util-linux");
    assert!(status.success());
    let text =
        String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned();
    let frames: Vec<&str> = text
        .split('\r')
        .filter(|f| f.contains("train [") && f.contains("/s eta"))
        .collect();
    let positions: std::collections::BTreeSet<&str> = frames
        .iter()
        .filter_map(|f| f.split("] ").nth(1)?.split(' ').next())
        .collect();
    assert!(
        positions.len() >= 2,
        "the bar did not move: {positions:?} in {} frames",
        frames.len()
    );
    assert!(
        text.contains("new v1:"),
        "the result follows the bar: {text}"
    );
}

/// A `reuse_if_exists` start waiting for a live owner of its identity shows the owner's
/// progress (read from the owner's channel), not only a notice.
#[test]
fn a_waiting_start_shows_the_owners_progress() {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    let dir: PathBuf =
        support::write_incomplete_variant(&job.layout, &job.identity, 1, Some("running"));
    let owner = trainctl::lease::Owner::current();
    let taken =
        trainctl::lease::take(&trainctl::fs::OsFs, &dir, 0, &owner, now_ms(), "new").expect("take");
    assert!(matches!(taken, trainctl::lease::Take::Won(_)));
    std::fs::create_dir_all(dir.join("logs")).expect("logs");
    let report = trainctl::progress::Progress {
        step: 7,
        total: Some(10),
        loss: Some(0.25),
        ..Default::default()
    };
    std::fs::write(dir.join(trainctl::progress::FILE), report.to_line()).expect("progress");

    let (code, _stdout, stderr) = project.run(&[
        "--progress",
        "lines",
        "-o",
        "run.wait_for_owner=1s",
        "train",
    ]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("train: step 7/10 (70%), loss 0.2500"),
        "the owner's progress: {stderr}"
    );
}

fn step_names(variant: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(variant.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| n.trim_start_matches("step-").parse::<u64>().unwrap_or(0));
    names
}

/// Starts a `force_new` training that will be `variant`, and kill -9s its orchestrator once
/// the first step checkpoint is saved (the trainer dies with it: parent-death signal).
fn kill_after_first_step(project: &support::Project, variant: &std::path::Path) {
    let mut killed = project
        .command(
            &[
                "-q",
                "-o",
                "run.mode=force_new",
                "-o",
                "logging.save_interval=1",
                "train",
            ],
            &[("FAKE_TRAINER_SLEEP_MS", "300")],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let began = std::time::Instant::now();
    while step_names(variant).is_empty() {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(30),
            "{} never saved a step",
            variant.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed.kill().expect("kill -9");
    let _ = killed.wait();
}

/// A soaked OUT (a variant trained with every step kept, one with the default retention, one
/// abandoned by kill -9, one held live by this process, write debris, and a symlink to a
/// directory outside OUT): retention applies at completion; `gc` lists without touching
/// anything; `gc --apply` frees the step checkpoints beyond retention, the abandoned variant
/// and the debris, and keeps the live one and everything outside OUT; every complete variant
/// stays intact for `status --deep` and is still reused.
#[test]
fn gc_frees_steps_abandoned_variants_and_debris_and_keeps_every_complete_variant_intact() {
    let project = support::Project::new();
    project.use_fixture_trainer();
    let train = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "--json",
            "-q",
            "-o",
            "run.mode=force_new",
            "-o",
            "logging.save_interval=1",
        ];
        args.extend_from_slice(extra);
        args.push("train");
        let (code, stdout, stderr) = project.run_env(&args, env);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        PathBuf::from(doc["output_dir"].as_str().expect("output_dir"))
    };
    let v1 = train(&["-o", "checkpoint.keep_last=all"], &[]);
    let all_steps = step_names(&v1);
    assert!(all_steps.len() >= 3, "{all_steps:?}");
    let v2 = train(&[], &[]);
    assert_eq!(
        step_names(&v2).len(),
        1,
        "the default keeps the newest step only"
    );

    // v3: killed (kill -9 of the orchestrator) after its first step checkpoint.
    let identity = v1.parent().expect("identity dir").to_path_buf();
    let v3 = identity.join("v3");
    kill_after_first_step(&project, &v3);

    // v4: held by this (live) process.
    let v4 = identity.join("v4");
    std::fs::create_dir_all(&v4).expect("v4");
    support::write_live_lease(&v4);

    // Debris of a dead writer, and a symlink to a directory outside OUT.
    let debris = v1.join(".metadata.json.tmp-999999999-0000000001-1");
    std::fs::write(&debris, b"half").expect("debris");
    let outside = tempfile::tempdir().expect("outside");
    let outside_step = outside.path().join("checkpoints/step-1");
    std::fs::create_dir_all(&outside_step).expect("outside step");
    std::fs::write(
        outside.path().join(".x.tmp-999999999-0000000001-1"),
        b"keep",
    )
    .expect("x");
    std::os::unix::fs::symlink(outside.path(), identity.join("v9")).expect("symlink");
    let out_root = project.root().join("outputs");
    let before = support::snapshot(&out_root);
    let outside_before = support::snapshot(outside.path());

    let (code, stdout, stderr) = project.run(&["--json", "gc"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let dry: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        support::snapshot(&out_root),
        before,
        "a dry run removes nothing"
    );
    assert!(
        dry["gc"]["items"].as_array().is_some_and(|i| !i.is_empty()),
        "{dry}"
    );

    let (code, stdout, stderr) = project.run(&["--json", "gc", "--apply", "--older-than", "0s"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let applied: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let items = applied["gc"]["items"].as_array().expect("items").clone();
    let removed = |kind: &str| -> Vec<PathBuf> {
        items
            .iter()
            .filter(|i| i["kind"] == kind && i["removed"] == true)
            .map(|i| PathBuf::from(i["path"].as_str().expect("path")))
            .collect()
    };
    assert_eq!(
        removed("step_checkpoint").len(),
        all_steps.len() - 1,
        "{applied}"
    );
    assert_eq!(
        step_names(&v1),
        vec![all_steps.last().expect("a step").clone()]
    );
    assert_eq!(removed("abandoned_variant"), vec![v3.clone()], "{applied}");
    assert!(
        v3.is_file(),
        "the removed variant leaves a tombstone that keeps its number"
    );
    assert_eq!(removed("debris"), vec![debris.clone()], "{applied}");
    assert!(v4.exists(), "a live lease is never touched");
    assert_eq!(
        support::snapshot(outside.path()),
        outside_before,
        "nothing outside OUT"
    );
    let freed: u64 = items.iter().map(|i| i["bytes"].as_u64().unwrap_or(0)).sum();
    assert_eq!(applied["gc"]["bytes"].as_u64(), Some(freed));
    assert!(freed > 0);

    let (code, status) = project.run_json(&["status", "--deep"]);
    assert_eq!(code, 0, "{status}");
    let states: Vec<(u64, String)> = status["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| {
            (
                v["variant"].as_u64().unwrap_or(0),
                v["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(states.contains(&(1, "complete".into())), "{states:?}");
    assert!(states.contains(&(2, "complete".into())), "{states:?}");
    assert!(states.contains(&(3, "removed".into())), "{states:?}");
    // A new variant never takes the removed number.
    let v5 = train(&[], &[]);
    assert_eq!(
        v5.file_name().and_then(|n| n.to_str()),
        Some("v5"),
        "{v5:?}"
    );
    let (code, reuse) = project.run_json(&["-o", "run.mode=reuse_if_exists", "train"]);
    assert_eq!(code, 0, "{reuse}");
    assert_eq!(reuse["decision"], "reuse", "{reuse}");

    // Nothing left to do.
    let (code, again) = project.run_json(&["gc", "--apply", "--older-than", "0s"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["gc"]["bytes"], 0, "{again}");
}

/// `status` answers questions: per variant the state and reason, created and finished times,
/// run name and tracking state, the objective metric, the size, and who holds it (a killed
/// owner is `abandoned`, never `running`); a file and a symlink where a variant should be are
/// listed as `invalid` with their reason; `--state` and `--identity` filter.
#[test]
fn status_shows_times_run_metric_size_and_owner_liveness_and_hides_nothing() {
    let project = support::Project::new();
    project.use_fixture_trainer();
    let (code, first) = project.run_json(&["-q", "train"]);
    assert_eq!(code, 0, "{first}");
    let v1 = PathBuf::from(first["output_dir"].as_str().expect("output_dir"));
    let identity = v1.parent().expect("identity").to_path_buf();
    kill_after_first_step(&project, &identity.join("v2"));
    let v3 = identity.join("v3");
    std::fs::create_dir_all(&v3).expect("v3");
    support::write_live_lease(&v3);
    std::fs::write(identity.join("v7"), b"not a dir").expect("v7");
    std::os::unix::fs::symlink(std::env::temp_dir(), identity.join("v8")).expect("v8");

    let (code, status) = project.run_json(&["status"]);
    assert_eq!(code, 0, "{status}");
    let rows = status["variants"].as_array().expect("variants").clone();
    let row = |v: u64| {
        rows.iter()
            .find(|r| r["variant"] == v)
            .unwrap_or_else(|| panic!("v{v} missing: {status}"))
            .clone()
    };
    let r1 = row(1);
    assert_eq!(r1["state"], "complete");
    assert!(
        r1["created_at"].is_string() && r1["finished_at"].is_string(),
        "{r1}"
    );
    assert_eq!(r1["run_name"], first["run_name"]);
    assert!(r1["tracking"].is_string(), "{r1}");
    assert_eq!(r1["objective"]["name"], "macro-f1", "{r1}");
    assert!(r1["objective"]["value"].is_f64(), "{r1}");
    assert!(r1["bytes"].as_u64().is_some_and(|b| b > 0), "{r1}");
    let r2 = row(2);
    assert_eq!(
        (&r2["state"], &r2["reason"]),
        (&"incomplete".into(), &"abandoned".into()),
        "{r2}"
    );
    assert_eq!(
        r2["owner"]["liveness"], "abandoned",
        "a dead owner is never running: {r2}"
    );
    let r3 = row(3);
    assert_eq!(r3["state"], "running", "{r3}");
    assert_eq!(r3["owner"]["liveness"], "running");
    assert_eq!(r3["owner"]["pid"], std::process::id());
    assert_eq!(
        (&row(7)["state"], &row(7)["reason"]),
        (&"invalid".into(), &"not_a_directory".into())
    );
    assert_eq!(
        (&row(8)["state"], &row(8)["reason"]),
        (&"invalid".into(), &"symlink".into())
    );

    let (code, human, _) = project.run(&["status"]);
    assert_eq!(code, 0);
    assert!(
        human.contains("macro-f1 ") && human.contains("abandoned by "),
        "{human}"
    );
    assert!(!human.contains("[running]"), "nothing runs v2: {human}");

    let (_, complete) = project.run_json(&["status", "--state", "complete"]);
    let listed: Vec<&serde_json::Value> = complete["variants"]
        .as_array()
        .expect("rows")
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "{complete}");
    let (_, none) = project.run_json(&["status", "--identity", "no-such-identity"]);
    assert_eq!(none["variants"], serde_json::json!([]));
    let (code, _, stderr) = project.run(&["status", "--state", "bogus"]);
    assert_eq!(code, 2, "{stderr}");
}

/// The smaller confusions of issue 18, each through the binary: parser advice and Rust Debug
/// text never reach the user, unknown YAML tags and a NUL in the model name are located config
/// errors, `select` without `--trials` falls back to the fixture as `pipeline` does, the
/// pipeline's `try it:` line names the binary as it was started, and a second pipeline run
/// does not announce a retrain it then reuses.
#[test]
fn the_small_confusions_are_gone() {
    let project = support::Project::new();
    let train_yaml = std::fs::read_to_string(project.config("train.yaml")).expect("train.yaml");
    let refused = |text: &str, want: &str, never: &str| {
        project.write_config("train.yaml", text);
        let (code, doc) = project.run_json(&["plan"]);
        assert_eq!(code, 2, "{doc}");
        assert_eq!(doc["error"]["kind"], "config_invalid", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(message.contains(want), "{message}");
        assert!(!message.contains(never), "{message}");
    };
    refused(
        &format!("{train_yaml}\ntraining:\n  epochs: 4\n"),
        "duplicate mapping key",
        "DuplicateKeyPolicy",
    );
    refused(
        &format!("{train_yaml}\n---\nlogging: {{}}\n"),
        "one YAML document",
        "from_str_multiple",
    );
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..8 {
        let prev = if i == 1 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        bomb += &format!("b{i}: &b{i} [{}]\n", vec![format!("*{prev}"); 10].join(","));
    }
    refused(&bomb, "too large", "Nodes {");
    refused(
        &train_yaml.replacen(
            "training:",
            "training:\n  epochs: !!python/object:os.system 3",
            1,
        ),
        "unknown YAML tag `!!python/object:os.system`",
        "\u{0}",
    );
    project.write_config("train.yaml", &train_yaml);

    let model = project.config("model/builtin.yaml");
    let model_text = std::fs::read_to_string(&model).expect("model");
    std::fs::write(
        &model,
        model_text.replacen("name: builtin", "name: \"buil\\0tin\"", 1),
    )
    .expect("write model");
    let (code, doc) = project.run_json(&["plan"]);
    assert_refused(code, &doc, (2, "config_invalid"), "`name`");
    std::fs::write(&model, model_text).expect("restore model");

    let (code, select) = project.run_json(&["select"]);
    assert_eq!(code, 0, "{select}");
    assert!(
        select["warnings"]
            .to_string()
            .contains("fixtures/hpo/trials.json"),
        "{select}"
    );

    let (code, stdout, stderr) = project.run(&["pipeline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let bin = env!("CARGO_BIN_EXE_trainctl");
    assert!(
        stdout.contains(&format!("try it: {bin} predict")),
        "{stdout}"
    );
    let (code, _, again) = project.run(&["pipeline"]);
    assert_eq!(code, 0, "{again}");
    assert!(!again.contains("decide: retrain"), "{again}");
}

/// Size caps: a dataset split over `dataset.max_file_bytes` and a trials file that is not a
/// regular file are located errors before anything is read (before: /dev/urandom read 2.1 GB).
#[test]
fn oversized_and_special_input_files_are_located_errors() {
    let project = support::Project::new();
    let (code, doc) = project.run_json(&["-o", "dataset.max_file_bytes=100", "plan"]);
    assert_eq!(
        (code, &doc["error"]["kind"]),
        (3, &"dataset_invalid".into()),
        "{doc}"
    );
    let message = doc["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("max_file_bytes") && message.contains("files.train"),
        "{message}"
    );
    let (code, doc) = project.run_json(&["select", "--trials", "/dev/zero"]);
    assert_refused(code, &doc, (2, "config_invalid"), "/dev/zero");
}

/// A refusal: its exit code, its error kind, and a message naming `needle`.
fn assert_refused(code: i32, doc: &serde_json::Value, (want, kind): (i32, &str), needle: &str) {
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (want, Some(kind)),
        "{doc}"
    );
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(needle)),
        "{needle} not named: {doc}"
    );
}

/// `resume_if_incomplete` takes only the highest incomplete variant; `plan` and `train` name
/// the lower incomplete ones and how to resume one (issue 18).
#[test]
fn resume_names_the_lower_incomplete_variants_and_how_to_resume_one() {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    for n in [1, 2, 3] {
        support::write_incomplete_variant(&job.layout, &job.identity, n, Some("failed"));
    }
    let resume = ["-o", "run.mode=resume_if_incomplete"];
    let (code, plan) = project.run_json(&[resume[0], resume[1], "plan"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(
        (plan["decision"].as_str(), plan["variant"].as_u64()),
        (Some("resume"), Some(3))
    );
    let hint = plan["warnings"]
        .as_array()
        .and_then(|w| {
            w.iter()
                .filter_map(|w| w.as_str())
                .find(|w| w.contains("incomplete too"))
        })
        .unwrap_or_else(|| panic!("no hint about v1 and v2: {plan}"))
        .to_string();
    assert!(hint.starts_with("v1, v2 are incomplete too"), "{hint}");
    assert!(hint.contains("-o variant.number=2"), "{hint}");
    // Training v3 to completion: v1 and v2 are still named.
    let (code, out, err) = project.run(&[resume[0], resume[1], "-q", "train"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resume v3"), "{out}");
    assert!(out.contains("warning: v1, v2 are incomplete too"), "{out}");
    // An explicit number gives no hint: the user chose.
    let (_, plan) = project.run_json(&[resume[0], resume[1], "-o", "variant.number=1", "plan"]);
    let warnings = plan["warnings"].to_string();
    assert!(!warnings.contains("incomplete too"), "{plan}");
}

/// The clock-skew bound through the binary (docs/contract.md, "Allocation and leases"): an
/// owner on another host whose lease says it started an hour ahead of this machine's clock
/// is judged stale, and `plan` says why; 30 s ahead is within the bound: live, `busy`.
#[test]
fn a_lease_from_a_clock_an_hour_ahead_is_stale_and_named() {
    let project = support::Project::new();
    let job = support::prepared_job(&project);
    let other = trainctl::lease::Owner {
        host: "a-host-with-a-wrong-clock".into(),
        pid: 1,
        start_time: 1,
    };
    let held = |variant: u64, ahead_ms: u64| {
        let dir =
            support::write_incomplete_variant(&job.layout, &job.identity, variant, Some("running"));
        let took = trainctl::lease::take(
            &trainctl::fs::OsFs,
            &dir,
            0,
            &other,
            now_ms() + ahead_ms,
            "new",
        );
        assert!(
            matches!(took, Ok(trainctl::lease::Take::Won(_))),
            "lease of v{variant}"
        );
    };
    held(1, 30_000);
    held(2, 3_600_000);
    let resume = ["-o", "run.mode=resume_if_incomplete"];
    let (code, plan) = project.run_json(&[resume[0], resume[1], "plan"]);
    assert_eq!(code, 0, "{plan}");
    assert_eq!(
        (plan["decision"].as_str(), plan["variant"].as_u64()),
        (Some("resume"), Some(2)),
        "{plan}"
    );
    let warnings = plan["warnings"].to_string();
    assert!(
        warnings.contains("v2: the heartbeat of its owner on a-host-with-a-wrong-clock is"),
        "{plan}"
    );
    assert!(
        warnings.contains("ahead of this machine's clock, beyond the 60 s bound"),
        "{plan}"
    );
    let (code, plan) = project.run_json(&[resume[0], resume[1], "-o", "variant.number=1", "plan"]);
    assert_eq!(
        (code, plan["error"]["kind"].as_str()),
        (4, Some("busy")),
        "{plan}"
    );
}
