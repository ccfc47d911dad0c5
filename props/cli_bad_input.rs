//! The bad-input table (`fixtures/bad_inputs.yaml`) through the real binary: each row's error
//! kind, exit code, location and message, in both output modes, and an unchanged disk.

use crate::support;

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
    exit: i32,
    #[serde(default)]
    at: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    message: Vec<String>,
}

fn rows() -> Vec<Row> {
    let path = support::repo_root().join("fixtures/bad_inputs.yaml");
    let text = std::fs::read_to_string(&path).expect("read fixtures/bad_inputs.yaml");
    serde_saphyr::from_str(&text).expect("parse fixtures/bad_inputs.yaml")
}

/// Runs one row; returns the problems found (empty = pass).
fn check(row: &Row) -> Vec<String> {
    let project = support::Project::new();
    if let Some(file) = &row.file {
        project.write_config(file, row.text.as_deref().unwrap_or(""));
    }
    let before = support::snapshot(project.root());
    let mut args: Vec<&str> = row.args.iter().map(String::as_str).collect();
    args.push("plan");
    let mut problems = Vec::new();
    let (code, doc) = project.run_json(&args);
    let (human_code, _, stderr) = project.run(&args);
    let changed = support::changed(&before, &support::snapshot(project.root()));
    if !changed.is_empty() {
        problems.push(format!("files under the project root changed: {changed:?}"));
    }
    if code != row.exit || human_code != row.exit {
        problems.push(format!(
            "exit {code} (json) / {human_code} (human), want {}: {doc}",
            row.exit
        ));
    }
    if row.exit == 0 {
        return problems;
    }
    let err = &doc["error"];
    if let Some(kind) = &row.kind {
        if err["kind"] != kind.as_str() {
            problems.push(format!("kind {}, want {kind}", err["kind"]));
        }
    }
    for (field, want) in &row.at {
        if &err[field.as_str()] != want {
            problems.push(format!("{field} = {}, want {want}", err[field.as_str()]));
        }
    }
    let message = err["message"].as_str().unwrap_or_default();
    for needle in &row.message {
        if !message.contains(needle.as_str()) {
            problems.push(format!("message lacks {needle:?}: {message}"));
        }
        if !stderr.contains(needle.as_str()) {
            problems.push(format!("stderr lacks {needle:?}: {stderr}"));
        }
    }
    problems
}

#[test]
fn bad_inputs_fail_with_their_kind_exit_code_and_location() {
    let rows = rows();
    assert!(rows.len() >= 20, "the table lost rows");
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            let problems = check(row);
            (!problems.is_empty())
                .then(|| format!("- {}:\n    {}", row.name, problems.join("\n    ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "bad-input rows failed:\n{}",
        failures.join("\n")
    );
}

/// Every command that writes OUT (or the Drive mirror, or the tracking store), given each bad
/// input of the table: `train` and `pipeline` refuse every row with its exit code, and
/// whatever any command refuses, it refuses before the first write (the project root, OUT
/// included, is byte-identical afterwards).
#[test]
fn every_writing_command_refuses_bad_input_before_the_first_write() {
    const COMMANDS: [&[&str]; 7] = [
        &["train"],
        &["pipeline"],
        &["convert", "--latest"],
        &["backup"],
        &["cache", "repair", "final_training"],
        &["track", "sync"],
        &["select", "--trials", "fixtures/hpo/trials.json"],
    ];
    let mut failures = Vec::new();
    for row in rows().iter().filter(|r| r.exit != 0) {
        let project = support::Project::new();
        if let Some(file) = &row.file {
            project.write_config(file, row.text.as_deref().unwrap_or(""));
        }
        for command in COMMANDS {
            let before = support::snapshot(project.root());
            let mut args: Vec<&str> = row.args.iter().map(String::as_str).collect();
            args.extend_from_slice(command);
            let (code, doc) = project.run_json(&args);
            let changed = support::changed(&before, &support::snapshot(project.root()));
            if code != 0 && !changed.is_empty() {
                failures.push(format!(
                    "- {} / {command:?}: exit {code} but files changed: {changed:?}",
                    row.name
                ));
            }
            // train and pipeline read every setting: they refuse every row as `plan` does.
            // The others refuse what they read; a setting they never use (the dataset path
            // for `cache repair`) is not theirs to refuse.
            let reads_everything = matches!(command[0], "train" | "pipeline");
            if reads_everything && code != row.exit {
                failures.push(format!(
                    "- {} / {command:?}: exit {code}, want {}: {doc}",
                    row.name, row.exit
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad input reached a writing command:\n{}",
        failures.join("\n")
    );
}

/// The acceptance check of the foundation issue: the shipped config plans `new` v1 with
/// 16-hex fingerprints, an output_dir under OUT and a valid run name, and writes nothing.
#[test]
fn shipped_config_plans_new_v1_and_writes_nothing() {
    let project = support::Project::new();
    let before = support::snapshot(project.root());
    let (code, doc) = project.run_json(&["plan"]);
    assert_eq!(code, 0, "{doc}");
    let changed = support::changed(&before, &support::snapshot(project.root()));
    assert!(changed.is_empty(), "plan wrote files: {changed:?}");
    assert_eq!(doc["decision"], "new");
    assert_eq!(doc["variant"], 1);
    for fp in ["spec_fp", "exec_fp"] {
        let v = doc[fp].as_str().unwrap_or_default();
        assert!(trainctl::identity::is_fingerprint(v), "{fp} = {v:?}");
    }
    let out = project.root().join("outputs");
    let dir = std::path::PathBuf::from(doc["output_dir"].as_str().unwrap_or_default());
    assert!(
        dir.starts_with(&out),
        "{} not under {}",
        dir.display(),
        out.display()
    );
    let naming: trainctl::config::schema::NamingFile = trainctl::config::Doc::parse(
        &std::fs::read_to_string(project.config("naming.yaml")).expect("naming.yaml"),
        "naming.yaml",
    )
    .and_then(|d| d.typed())
    .expect("naming.yaml types");
    let policy = trainctl::naming::RunNamePolicy::from_naming(&naming, false).expect("policy");
    let parts = policy
        .parse(doc["run_name"].as_str().unwrap_or_default())
        .expect("run name parses");
    assert_eq!(parts.variant, 1);
    assert_eq!(
        parts.spec_hash,
        doc["spec_fp"].as_str().unwrap_or_default()[..8]
    );
}
