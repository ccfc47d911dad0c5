//! `trainctl select [--trials FILE]` (docs/contract.md, "Best-model selection"): rank the HPO
//! candidates, record the winner in the best_model_selection cache, or reuse the record.

use super::{warning_lines, Env};
use crate::error::{ErrorKind, Result};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::Path;

/// What `select` decided.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `new` (computed and recorded) or `reuse` (a valid record with the same key).
    pub decision: &'static str,
    pub key: String,
    pub record: String,
    /// The winner as recorded: run id, objective, latency, composite score, rule.
    pub selected: Value,
    pub ranking: Value,
    pub excluded: Value,
    pub warnings: Vec<String>,
}

/// The candidates: `--trials`, else the tracking store's HPO runs, else (with a warning) the
/// offline fixture, as `pipeline` does.
fn candidates(
    env: &Env<'_>,
    config: &crate::config::Config,
    trials: Option<&Path>,
) -> Result<crate::select::Loaded> {
    let path = trials.map(|t| crate::convert::normalize(env.cwd, t));
    let fixture = config.root.join(crate::pipeline::DEFAULT_TRIALS);
    match crate::select::load_candidates(config, env.fs, path.as_deref(), env.host.var, env.cwd) {
        Err(e)
            if path.is_none()
                && e.kind == ErrorKind::NoEligibleCandidates
                && env.fs.is_file(&fixture) =>
        {
            Ok(crate::select::Loaded {
                candidates: crate::select::read_trials(env.fs, &fixture)?,
                source: fixture.display().to_string(),
                warnings: vec![format!(
                    "{}; using {} instead (pass --trials FILE to choose)",
                    e.message,
                    crate::pipeline::DEFAULT_TRIALS
                )],
            })
        }
        other => other,
    }
}

/// Selects (or reuses the selection of) the best candidate.
pub fn run(env: &Env<'_>, trials: Option<&Path>, now_us: u64) -> Result<Report> {
    let config = env.config()?;
    let loaded = candidates(env, &config, trials)?;
    let mut out =
        crate::select::select(&config, env.fs, &loaded.candidates, &loaded.source, now_us)?;
    out.warnings.splice(0..0, loaded.warnings);
    let field = |k: &str| out.payload[k].clone();
    Ok(Report {
        decision: out.decision,
        selected: field("selected"),
        ranking: field("ranking"),
        excluded: field("excluded"),
        key: out.key,
        record: out.record,
        warnings: out.warnings,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.selected;
        let latency = match s["latency_ms"].as_f64() {
            Some(l) => format!(", latency {l} ms"),
            None => String::new(),
        };
        writeln!(
            f,
            "{} selection: {}: {} {}{latency}, composite {:.4} (by {})\nrecord: {}",
            self.decision,
            s["run_id"].as_str().unwrap_or("?"),
            s["objective_metric"].as_str().unwrap_or("objective"),
            s["objective"],
            s["composite"].as_f64().unwrap_or(f64::NAN),
            s["rule"].as_str().unwrap_or("?"),
            self.record
        )?;
        let mut w = String::new();
        warning_lines(&mut w, &self.warnings);
        f.write_str(&w)
    }
}
