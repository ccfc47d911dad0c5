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
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("train: step")).collect();
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
        .filter(|l| l.starts_with("train: step"))
        .last()
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
    let text = String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript")).into_owned();
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
    assert!(text.contains("new v1:"), "the result follows the bar: {text}");
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
    let taken = trainctl::lease::take(&trainctl::fs::OsFs, &dir, 0, &owner, now_ms(), "new")
        .expect("take");
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
