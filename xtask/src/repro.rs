//! `cargo xtask repro <trace.json | seed> [--test BINARY [SUITE::TEST]]`: replays one failure from a
//! CI artifact with one command. A trace file names its target by its content (crash,
//! model_vs_real and sched traces each have their own shape); a bare seed needs the target
//! (and optionally the test) the failure printed. Only builds the command line: the test
//! targets do the replaying (`TRAINCTL_REPLAY`, `TRAINCTL_SEED`).

use crate::util;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const USAGE: &str = "cargo xtask repro <trace.json> | <seed> [--tier quick|gate|nightly] --test <binary> [suite::test]
  trace.json   a file from target/trainctl-failures/ (or a CI artifact): crash-*.json,
               model_vs_real-*.json, sched-<seed>.json; replayed exactly
  seed         a printed seed (`seed N; replay: …`), rerun with TRAINCTL_SEED=N; a proptest seed
               replays only in the tier that printed it (the case stream depends on the case
               count): pass --tier as printed. Scheduler seeds are tier-independent";

/// What to run: the test target, the test name, and the environment variable that selects
/// the case.
#[derive(Debug, PartialEq)]
pub struct Replay {
    pub target: String,
    pub test: Option<String>,
    pub env: (&'static str, String),
    /// `TRAINCTL_TEST_TIER` for the replay (seeds only).
    pub tier: Option<String>,
}

/// The replay a trace document stands for, or why it is not replayable.
pub fn replay_of_trace(path: &Path, doc: &Value) -> Result<Replay, String> {
    let file = path.display().to_string();
    if doc.get("property").is_some() && doc.get("crash_point").is_some() {
        return Ok(Replay {
            target: "sim".into(),
            test: Some("crash::replay".into()),
            env: ("TRAINCTL_REPLAY", file),
            tier: None,
        });
    }
    if doc.get("target").and_then(Value::as_str) == Some("model_vs_real") {
        return Ok(Replay {
            target: "sim".into(),
            test: Some("model_vs_real::replay".into()),
            env: ("TRAINCTL_REPLAY", file),
            tier: None,
        });
    }
    if doc.get("programs").is_some() && doc.get("schedule").is_some() {
        // Both sched campaigns replay a trace the same way (the case carries its programs and
        // schedule); the test name only labels the message.
        return Ok(Replay {
            target: "sim".into(),
            test: Some("sched::scheduled_starts_are_linearizable".into()),
            env: ("TRAINCTL_REPLAY", file),
            tier: None,
        });
    }
    if doc.get("minimal_history").is_some() {
        let seed = doc.get("seed").and_then(Value::as_u64).unwrap_or(0);
        return Err(format!(
            "{file} is the minimal history of a linearizability failure (for reading); replay its \
             trace sched-{seed}.json next to it, or the seed: cargo xtask repro {seed} --test sim sched::scheduled_starts_are_linearizable"
        ));
    }
    Err(format!(
        "{file}: not a crash, model_vs_real or sched trace (no property/crash_point, target, or programs/schedule)"
    ))
}

fn parse(args: &[String]) -> Result<Replay, String> {
    let (first, rest) = args.split_first().ok_or(USAGE)?;
    let mut target = None;
    let mut test = None;
    let mut tier = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--test" => {
                target = Some(it.next().ok_or("--test needs a target")?.clone());
                test = it.next().cloned();
            }
            "--tier" => {
                tier = Some(
                    it.next()
                        .ok_or("--tier needs quick, gate or nightly")?
                        .clone(),
                )
            }
            other => return Err(format!("repro: unexpected argument {other:?}\n{USAGE}")),
        }
    }
    if let Ok(seed) = first.parse::<u64>() {
        let target = target.ok_or_else(|| {
            format!("repro: a seed needs the binary and test it came from: --test <binary> [suite::test]\n{USAGE}")
        })?;
        return Ok(Replay {
            target,
            test,
            env: ("TRAINCTL_SEED", seed.to_string()),
            tier,
        });
    }
    let path = std::fs::canonicalize(first).map_err(|e| format!("{first}: {e}"))?;
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let mut replay = replay_of_trace(&path, &doc)?;
    if let Some(t) = target {
        replay.target = t;
        replay.test = test.or(replay.test);
    }
    Ok(replay)
}

/// The command for a replay: the README's release build, one test binary, one test (its full
/// `suite::test` path, matched exactly), output shown.
pub fn command(replay: &Replay) -> Command {
    let mut cmd = util::cargo();
    if let Some(tier) = &replay.tier {
        cmd.env("TRAINCTL_TEST_TIER", tier);
    }
    cmd.env(replay.env.0, &replay.env.1).args([
        "test",
        "--release",
        "--test",
        &replay.target,
        "--",
    ]);
    if let Some(test) = &replay.test {
        cmd.args([test.as_str(), "--exact"]);
    }
    cmd.arg("--nocapture");
    cmd
}

pub fn run(args: &[String]) -> Result<bool, String> {
    let replay = parse(args)?;
    Ok(util::run_inherited(&mut command(&replay)))
}

/// Failure traces written by the last runs (newest first), for the usage message.
pub fn recent_traces() -> Vec<PathBuf> {
    let dir = util::repo_root().join("target/trainctl-failures");
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traces_name_their_target() {
        let p = Path::new("/t/x.json");
        let crash = json!({"property": "Train", "crash_point": 3, "seed": 1});
        assert_eq!(
            replay_of_trace(p, &crash).unwrap().test.as_deref(),
            Some("crash::replay")
        );
        let mvr = json!({"target": "model_vs_real", "backend": "Sim", "commands": []});
        assert_eq!(
            replay_of_trace(p, &mvr).unwrap().test.as_deref(),
            Some("model_vs_real::replay")
        );
        let sched = json!({"seed": 5, "programs": [], "start_at": [], "schedule": [1]});
        let r = replay_of_trace(p, &sched).unwrap();
        assert_eq!((r.target.as_str(), r.env.0), ("sim", "TRAINCTL_REPLAY"));
        let history = json!({"seed": 5, "minimal_history": []});
        assert!(replay_of_trace(p, &history)
            .unwrap_err()
            .contains("sched-5.json"));
        assert!(replay_of_trace(p, &json!({})).is_err());
    }

    #[test]
    fn a_seed_needs_its_target() {
        assert!(parse(&["7".into()]).is_err());
        let r = parse(&[
            "7".into(),
            "--tier".into(),
            "nightly".into(),
            "--test".into(),
            "sim".into(),
            "sched::racing_resumers_of_a_stale_variant_have_a_single_owner".into(),
        ])
        .unwrap();
        assert_eq!(r.env, ("TRAINCTL_SEED", "7".to_string()));
        let line = util::describe(&command(&r));
        assert!(line.contains("TRAINCTL_SEED=7"), "{line}");
        assert!(line.contains("TRAINCTL_TEST_TIER=nightly"), "{line}");
        assert!(
            line.contains("--test sim -- sched::racing_resumers"),
            "{line}"
        );
    }
}
