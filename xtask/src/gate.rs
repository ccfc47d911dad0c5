//! `cargo xtask gate [--quick] [--group NAME]... [--jobs N] [--shard K/N]`: the release gate.
//! Stages: fmt, clippy, the MLflow venv, the gate-profile build, the gate tier under nextest
//! (JUnit), the real-MLflow tests, and (unless `--quick`) mutation testing per module group.
//! Writes `<target>/gate/report.md` and `report.json`; exits non-zero when any stage fails.
//! Never stops at the first failure: every stage runs, so one report shows everything.

use crate::mutants::{self, GroupResult};
use crate::util;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// MLflow version of the real-MLflow tests (same pin as .ci/run and props/tracking.rs).
const MLFLOW_VERSION: &str = "3.17.2";

struct Options {
    quick: bool,
    mutants_only: bool,
    groups: Vec<String>,
    jobs: usize,
    /// `--shard K/N`: only every N-th mutant of each group, starting at K (cargo-mutants
    /// round-robin sharding), so one big group can be spread over N nightly machines.
    shard: Option<(u32, u32)>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        mutants_only: false,
        groups: Vec::new(),
        jobs: 1,
        shard: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--mutants-only" => opts.mutants_only = true,
            "--group" => opts
                .groups
                .push(it.next().ok_or("--group needs a name")?.clone()),
            "--jobs" => {
                opts.jobs = it
                    .next()
                    .and_then(|j| j.parse().ok())
                    .filter(|j| *j > 0)
                    .ok_or("--jobs needs a positive number")?
            }
            "--shard" => {
                let text = it.next().ok_or("--shard needs K/N")?;
                opts.shard = Some(
                    parse_shard(text)
                        .ok_or_else(|| format!("--shard {text:?}: expected K/N with K < N"))?,
                )
            }
            other => return Err(format!("gate: unknown argument {other:?}\n{}", USAGE)),
        }
    }
    if opts.quick && opts.mutants_only {
        return Err("gate: --quick and --mutants-only exclude each other".into());
    }
    Ok(opts)
}

/// `K/N` with `K < N` (cargo-mutants numbers shards from 0).
fn parse_shard(text: &str) -> Option<(u32, u32)> {
    let (k, n) = text.split_once('/')?;
    let (k, n) = (k.trim().parse().ok()?, n.trim().parse().ok()?);
    (k < n).then_some((k, n))
}

pub const USAGE: &str = "cargo xtask gate [--quick | --mutants-only] [--group NAME]... [--jobs N] [--shard K/N]
  --quick         skip mutation testing (local use)
  --mutants-only  only the mutation stage (nightly shards: one group per job)
  --group NAME  mutation-test only this group (repeatable): decision, lease, cache, completion, config
  --jobs N      cargo-mutants parallel jobs (default 1)
  --shard K/N   mutation-test only shard K (0-based) of N of each group, round-robin: a
                sample of every N-th mutant; N machines with K = 0..N-1 cover the group";

#[derive(Clone, Copy, PartialEq)]
enum Status {
    Pass,
    Fail,
    Skipped,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skipped",
        }
    }
}

struct Stage {
    name: &'static str,
    status: Status,
    duration: Duration,
    detail: String,
    log: Option<PathBuf>,
}

/// Runs the gate; Ok(true) when every stage passed.
pub fn run(args: &[String]) -> Result<bool, String> {
    let opts = parse(args)?;
    let groups = mutants::select(&opts.groups)?;
    let gate_dir = util::target_dir().join("gate");
    // One gate per target dir at a time: a second run rewrites the report. --mutants-only
    // keeps the other stages' logs (its logs are under mutants/<group>/).
    let logs = gate_dir.join("logs");
    if !opts.mutants_only {
        let _ = std::fs::remove_dir_all(&logs);
    }
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let started_at = util::now_utc();
    let machine = util::machine();
    let began = Instant::now();
    let mut stages: Vec<Stage> = Vec::new();
    let mut suites: Vec<Value> = Vec::new();
    let mut seeds: Vec<Value> = Vec::new();

    let stage = |name: &'static str, cmd: &mut Command| run_stage(&logs, name, cmd);

    if !opts.mutants_only {
        stages.push(stage(
            "fmt",
            util::cargo().args(["fmt", "--all", "--", "--check"]),
        ));
        stages.push(stage(
            "clippy",
            util::cargo().args([
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ));

        // The real-MLflow tests need a python with the pinned MLflow; create it once, up front, so
        // no test process races to build it.
        let venv_began = Instant::now();
        let venv_log = logs.join("mlflow-venv.log");
        let python = mlflow_python(&venv_log);
        let venv_duration = venv_began.elapsed();
        report_stage("mlflow-venv", python.is_ok(), venv_duration, &venv_log);
        stages.push(Stage {
            name: "mlflow-venv",
            status: if python.is_ok() {
                Status::Pass
            } else {
                Status::Fail
            },
            duration: venv_duration,
            detail: match &python {
                Ok(p) => p.display().to_string(),
                Err(e) => e.clone(),
            },
            log: Some(venv_log),
        });

        // Build every test binary once with the gate profile (release + debug assertions and
        // overflow checks): the two nextest runs below reuse it.
        let build = stage(
            "build (gate profile)",
            util::cargo().args(["test", "--profile", "gate", "--workspace", "--no-run"]),
        );
        let built = build.status == Status::Pass;
        stages.push(build);

        // nextest's store dir is `target/nextest` under the workspace root (its `store.dir`
        // default), whatever CARGO_TARGET_DIR says.
        let junit = util::repo_root().join("target/nextest/gate/junit.xml");
        let nextest_available = util::cargo()
            .args(["nextest", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let mut nextest = |name: &'static str, filter: &str, copy_to: &str| -> Stage {
            if !built {
                return skipped(name, "the gate build failed");
            }
            if !nextest_available {
                return Stage {
                    status: Status::Fail,
                    ..skipped(
                        name,
                        "cargo-nextest is not installed: cargo install --locked cargo-nextest@0.9.143",
                    )
                };
            }
            let _ = std::fs::remove_file(&junit);
            let mut cmd = util::cargo();
            cmd.args([
                "nextest",
                "run",
                "--profile",
                "gate",
                "--cargo-profile",
                "gate",
                "--workspace",
                "--no-fail-fast",
                "-E",
                filter,
            ])
            .env("TRAINCTL_TEST_TIER", "gate");
            if let Ok(p) = &python {
                cmd.env("TRAINCTL_MLFLOW_PYTHON", p);
            }
            let mut st = stage(name, &mut cmd);
            let copy = gate_dir.join(copy_to);
            if std::fs::copy(&junit, &copy).is_ok() {
                let xml = std::fs::read_to_string(&copy).unwrap_or_default();
                let totals = junit_totals(&xml);
                st.detail = format!(
                    "{} tests, {} failures, {} errors; JUnit {}",
                    totals.tests,
                    totals.failures,
                    totals.errors,
                    copy.display()
                );
                suites.extend(junit_suites(&xml));
                seeds.extend(junit_seeds(&xml));
            } else {
                st.detail = "no JUnit report was written".into();
                st.status = Status::Fail;
            }
            st
        };
        stages.push(nextest(
            "tests (gate tier, nextest)",
            "not binary(mlflow)",
            "junit-tests.xml",
        ));
        stages.push(nextest(
            "tracking (real MLflow)",
            "binary(mlflow)",
            "junit-tracking.xml",
        ));
    }

    let mut groups_out: Vec<GroupResult> = Vec::new();
    if opts.quick {
        stages.push(skipped("mutants", "--quick"));
    } else {
        let log = logs.join("cargo-mutants-install.log");
        let install_began = Instant::now();
        let installed = mutants::ensure_installed(&log);
        stages.push(Stage {
            name: "cargo-mutants install",
            status: if installed {
                Status::Pass
            } else {
                Status::Fail
            },
            duration: install_began.elapsed(),
            detail: format!("cargo-mutants {}", mutants::MUTANTS_VERSION),
            log: Some(log),
        });
        let accepted = std::fs::read_to_string(util::repo_root().join("docs/mutants-accepted.md"))
            .unwrap_or_default();
        for group in &groups {
            if !installed {
                break;
            }
            eprintln!("gate: mutants {} …", group.name);
            let dir = mutants::group_dir(&gate_dir, group);
            let r = mutants::run_group(group, &dir, opts.jobs, opts.shard, &accepted);
            eprintln!(
                "gate: mutants {}: {} in {} ({})",
                group.name,
                score_text(&r),
                util::secs(r.duration),
                if r.ok { "pass" } else { "FAIL" }
            );
            stages.push(Stage {
                name: group.name,
                status: if r.ok { Status::Pass } else { Status::Fail },
                duration: r.duration,
                detail: format!("mutants: {}; {}", score_text(&r), r.note),
                log: Some(dir.join("cargo-mutants.log")),
            });
            groups_out.push(r);
        }
    }

    let ok = stages.iter().all(|s| s.status != Status::Fail);
    let total = began.elapsed();
    let env_seeds = campaign_env();
    let doc = json!({
        "ok": ok,
        "quick": opts.quick,
        "started_at": started_at,
        "machine": machine,
        "total_secs": total.as_secs_f64(),
        "stages": stages.iter().map(|s| json!({
            "name": s.name,
            "status": s.status.word(),
            "secs": s.duration.as_secs_f64(),
            "detail": s.detail,
            "log": s.log.as_ref().map(|l| l.display().to_string()),
        })).collect::<Vec<_>>(),
        "suites": suites,
        "mutation": groups_out.iter().map(GroupResult::to_json).collect::<Vec<_>>(),
        "seeds": seeds,
        "campaign_env": env_seeds,
    });
    let json_path = gate_dir.join("report.json");
    let md_path = gate_dir.join("report.md");
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    std::fs::write(&md_path, markdown(&doc, &stages, &groups_out))
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    eprintln!(
        "gate: {} in {}; report {}",
        if ok { "PASSED" } else { "FAILED" },
        util::secs(total),
        md_path.display()
    );
    Ok(ok)
}

/// Runs one command as a stage, its output in `logs/<name>.log`.
fn run_stage(logs: &Path, name: &'static str, cmd: &mut Command) -> Stage {
    let log = logs.join(format!("{}.log", name.replace([' ', '(', ')', ','], "_")));
    eprintln!("gate: {name} …");
    let (ok, duration) = util::run_logged(cmd, &log);
    report_stage(name, ok, duration, &log);
    Stage {
        name,
        status: if ok { Status::Pass } else { Status::Fail },
        duration,
        detail: String::new(),
        log: Some(log),
    }
}

fn skipped(name: &'static str, why: &str) -> Stage {
    Stage {
        name,
        status: Status::Skipped,
        duration: Duration::ZERO,
        detail: why.into(),
        log: None,
    }
}

fn report_stage(name: &str, ok: bool, duration: Duration, log: &Path) {
    eprintln!(
        "gate: {name}: {} in {}",
        if ok { "pass" } else { "FAIL" },
        util::secs(duration)
    );
    if !ok {
        eprintln!(
            "--- last lines of {} ---\n{}",
            log.display(),
            util::tail(log, 30)
        );
    }
}

fn score_text(r: &GroupResult) -> String {
    match r.counts.score() {
        Some(s) => format!(
            "{:.1}% ({} caught, {} missed, {} timeout, {} unviable)",
            s * 100.0,
            r.counts.caught,
            r.counts.missed,
            r.counts.timeout,
            r.counts.unviable
        ),
        None => "no viable mutants / no result".into(),
    }
}

/// A python with the pinned MLflow: `TRAINCTL_MLFLOW_PYTHON`, else the venv at
/// `TRAINCTL_MLFLOW_VENV` or `<repo>/.venv`, created when it lacks the pinned version.
pub(crate) fn mlflow_python(log: &Path) -> Result<PathBuf, String> {
    let has_pin = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                &format!("import sys, mlflow; sys.exit(mlflow.__version__ != '{MLFLOW_VERSION}')"),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if let Some(p) = std::env::var_os("TRAINCTL_MLFLOW_PYTHON") {
        let p = PathBuf::from(p);
        return if has_pin(&p) {
            Ok(p)
        } else {
            Err(format!(
                "TRAINCTL_MLFLOW_PYTHON={} has no mlflow {MLFLOW_VERSION}",
                p.display()
            ))
        };
    }
    let venv = std::env::var_os("TRAINCTL_MLFLOW_VENV")
        .map(|v| util::repo_root().join(v))
        .unwrap_or_else(|| util::repo_root().join(".venv"));
    let python = venv.join("bin/python");
    if has_pin(&python) {
        return Ok(python);
    }
    let made = util::run_logged(Command::new("python3").args(["-m", "venv"]).arg(&venv), log).0
        && util::run_logged(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "-q",
                "--disable-pip-version-check",
                &format!("mlflow=={MLFLOW_VERSION}"),
            ]),
            log,
        )
        .0;
    if made && has_pin(&python) {
        Ok(python)
    } else {
        Err(format!(
            "could not create {} with mlflow {MLFLOW_VERSION}; see {}",
            venv.display(),
            log.display()
        ))
    }
}

/// The campaign-shaping variables of this run (seed ranges, budgets), for the report.
fn campaign_env() -> Value {
    let mut out = serde_json::Map::new();
    for key in [
        "TRAINCTL_SEED_RANGE",
        "TRAINCTL_TIME_BUDGET",
        "TRAINCTL_SEED",
        "PROPTEST_CASES",
    ] {
        if let Ok(v) = std::env::var(key) {
            out.insert(key.into(), v.into());
        }
    }
    Value::Object(out)
}

#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
}

/// The value of attribute `name` in one XML start tag (no entity decoding: names and numbers).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Each start tag `<name …>` in `xml`.
fn tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    xml.match_indices(&open)
        .filter_map(|(i, _)| {
            let end = xml[i..].find('>')? + i;
            Some(&xml[i..=end])
        })
        .collect()
}

fn num(tag: &str, name: &str) -> u64 {
    attr(tag, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Totals of a nextest JUnit report (the `<testsuites>` element).
pub fn junit_totals(xml: &str) -> Totals {
    tags(xml, "testsuites")
        .first()
        .map(|t| Totals {
            tests: num(t, "tests"),
            failures: num(t, "failures"),
            errors: num(t, "errors"),
        })
        .unwrap_or_default()
}

/// Per test binary: tests, failures, summed test time (nextest runs tests in parallel, so
/// the sum is CPU-ish time, not wall).
fn junit_suites(xml: &str) -> Vec<Value> {
    tags(xml, "testsuite")
        .into_iter()
        .map(|t| {
            // nextest gives no suite time: sum the suite's test cases.
            let start = xml.find(t).unwrap_or(0);
            let end = xml[start..]
                .find("</testsuite>")
                .map_or(xml.len(), |e| start + e);
            let secs: f64 = tags(&xml[start..end], "testcase")
                .iter()
                .filter_map(|c| attr(c, "time")?.parse::<f64>().ok())
                .sum();
            json!({
                "suite": attr(t, "name").unwrap_or("?"),
                "tests": num(t, "tests"),
                "failures": num(t, "failures") + num(t, "errors"),
                "secs": secs,
            })
        })
        .collect()
}

/// Seeds the properties printed (`seed N; replay: TRAINCTL_SEED=N cargo test --release
/// --test T -- NAME`), from the stored test output in the JUnit report.
pub fn junit_seeds(xml: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for line in xml.lines() {
        // seed N; replay: [TRAINCTL_TEST_TIER=T ]TRAINCTL_SEED=N cargo test --release --test T -- NAME
        let Some(i) = line.find("; replay: ") else {
            continue;
        };
        let words: Vec<&str> = line[i..].split_whitespace().collect();
        let Some(seed) = words.iter().find_map(|w| w.strip_prefix("TRAINCTL_SEED=")) else {
            continue;
        };
        let tier = words
            .iter()
            .find_map(|w| w.strip_prefix("TRAINCTL_TEST_TIER="))
            .unwrap_or("quick");
        let target = words
            .iter()
            .position(|w| *w == "--test")
            .and_then(|p| words.get(p + 1))
            .unwrap_or(&"?");
        let test = words
            .iter()
            .position(|w| *w == "--")
            .and_then(|p| words.get(p + 1))
            .unwrap_or(&"?");
        let entry = json!({"target": target, "test": test, "seed": seed, "tier": tier});
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

fn markdown(doc: &Value, stages: &[Stage], groups: &[GroupResult]) -> String {
    let mut md = String::new();
    let ok = doc["ok"].as_bool().unwrap_or(false);
    md.push_str(&format!(
        "# Release gate: {}\n\n",
        if ok { "PASSED" } else { "FAILED" }
    ));
    md.push_str(&format!(
        "Started {} on {}; total {:.1} s{}.\n\n",
        doc["started_at"].as_str().unwrap_or("?"),
        doc["machine"].as_str().unwrap_or("?"),
        doc["total_secs"].as_f64().unwrap_or(0.0),
        if doc["quick"].as_bool() == Some(true) {
            " (`--quick`: no mutation testing)"
        } else {
            ""
        }
    ));
    md.push_str("| stage | result | duration | detail |\n|---|---|---:|---|\n");
    for s in stages {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.name,
            s.status.word(),
            util::secs(s.duration),
            s.detail.replace('|', "\\|")
        ));
    }
    if !groups.is_empty() {
        md.push_str("\n## Mutation score per group\n\n");
        md.push_str("| group | score | floor | caught | missed | timeout | unviable | duration |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for g in groups {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                g.title,
                g.counts
                    .score()
                    .map(|s| format!("{:.1}%", s * 100.0))
                    .unwrap_or_else(|| "–".into()),
                g.floor
                    .map(|f| format!("{:.1}%", f * 100.0))
                    .unwrap_or_else(|| "not yet measured".into()),
                g.counts.caught,
                g.counts.missed,
                g.counts.timeout,
                g.counts.unviable,
                util::secs(g.duration)
            ));
        }
        md.push_str("\n### Surviving mutants\n\n");
        for g in groups {
            for s in &g.survivors {
                let accepted = if g.unaccepted.contains(s) {
                    "NOT in docs/mutants-accepted.md"
                } else {
                    "accepted"
                };
                md.push_str(&format!("- `{s}` ({accepted})\n"));
            }
        }
    }
    if doc["suites"].as_array().is_none_or(|s| s.is_empty()) {
        return md;
    }
    md.push_str("\n## Test binaries (summed test time; tests run in parallel)\n\n| binary | tests | failed | time |\n|---|---:|---:|---:|\n");
    for s in doc["suites"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} s |\n",
            s["suite"].as_str().unwrap_or("?"),
            s["tests"],
            s["failures"],
            s["secs"].as_f64().unwrap_or(0.0)
        ));
    }
    md.push_str("\n## Seeds used\n\n");
    md.push_str("proptest properties (replay one alone with `cargo xtask repro <seed> --tier <tier> --test <target> <test>`):\n\n");
    // One line per property (a property may print several seeds: one per test process or
    // per proptest config evaluation); every seed is in report.json.
    let mut by_test: Vec<(String, Vec<String>)> = Vec::new();
    for s in doc["seeds"].as_array().into_iter().flatten() {
        let key = format!(
            "`{}` `{}` (tier {})",
            s["target"].as_str().unwrap_or("?"),
            s["test"].as_str().unwrap_or("?"),
            s["tier"].as_str().unwrap_or("?")
        );
        let seed = s["seed"].as_str().unwrap_or("?").to_string();
        match by_test.iter_mut().find(|(k, _)| *k == key) {
            Some((_, seeds)) => seeds.push(seed),
            None => by_test.push((key, vec![seed])),
        }
    }
    for (key, seeds) in by_test {
        let shown: Vec<&str> = seeds.iter().take(3).map(String::as_str).collect();
        md.push_str(&format!(
            "- {key}: {} seed(s): {}{}\n",
            seeds.len(),
            shown.join(", "),
            if seeds.len() > 3 { ", …" } else { "" }
        ));
    }
    md.push_str(&format!(
        "\nScheduler campaigns (props/sched.rs) use their fixed base seeds unless set here: {}\n",
        doc["campaign_env"]
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="1" errors="0" uuid="x" timestamp="t" time="2.5">
    <testsuite name="trainctl::crash" tests="2" disabled="0" errors="0" failures="1">
        <testcase name="crash::replay" classname="trainctl::sim" time="1.0"><system-err>seed 42; replay: TRAINCTL_TEST_TIER=gate TRAINCTL_SEED=42 cargo test --release --test sim -- crash::train_survives
</system-err></testcase>
    </testsuite>
    <testsuite name="trainctl::sched" tests="1" disabled="0" errors="0" failures="0" time="0.5">
    </testsuite>
</testsuites>"#;

    #[test]
    fn junit_totals_suites_and_seeds_are_read() {
        assert_eq!(
            junit_totals(JUNIT),
            Totals {
                tests: 3,
                failures: 1,
                errors: 0
            }
        );
        let suites = junit_suites(JUNIT);
        assert_eq!(suites.len(), 2);
        assert_eq!(suites[0]["suite"], "trainctl::crash");
        assert_eq!(suites[0]["failures"], 1);
        assert_eq!(suites[0]["secs"], 1.0);
        let seeds = junit_seeds(JUNIT);
        assert_eq!(
            seeds,
            vec![
                json!({"target": "sim", "test": "crash::train_survives", "seed": "42", "tier": "gate"})
            ]
        );
    }

    #[test]
    fn flags_parse_and_unknown_ones_are_refused() {
        let o = parse(&["--quick".into(), "--jobs".into(), "2".into()]).unwrap();
        assert!(o.quick && o.jobs == 2);
        assert!(parse(&["--jobs".into(), "0".into()]).is_err());
        assert!(parse(&["--nope".into()]).is_err());
        let o = parse(&["--shard".into(), "1/3".into()]).unwrap();
        assert_eq!(o.shard, Some((1, 3)));
        for bad in ["3/3", "1", "a/3", "1/0"] {
            assert!(parse(&["--shard".into(), bad.into()]).is_err(), "{bad}");
        }
    }
}
