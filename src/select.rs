//! Best-model selection (SPEC §7) and its cache (SPEC §5).
//!
//! [`rank`] is pure: candidates and settings in, the ranking and the winner out. It honours
//! the objective's direction, excludes candidates whose objective (or a required metric, or
//! a latency the scoring needs) is missing or not finite, applies the thresholds, computes the
//! composite on min-max normalised values, and breaks ties by a total order, so the result
//! does not depend on input order. [`select`] adds the trials file and the
//! `best_model_selection` cache: the key covers the selection config (not `run.mode`) and the
//! candidate set; `reuse_if_exists` returns a valid cached result with the same key.
//!
//! Trials file schema (`--trials FILE`, JSON), documented in docs/contract.md:
//! `{"schema_version": 1, "candidates": [{"run_id", "metrics": {name: number}, "checkpoint"?,
//! "start_time"? (ms), "study_key_hash"?, "trial_key_hash"?, "trial_run_id"?, "backbone"?,
//! "params"?}]}` (a bare array of candidates is accepted too).

use crate::cache::{Cache, CacheKind, CacheSettings, Record};
use crate::config::schema::{Direction, RunMode};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Place, Result};
use crate::fs::Fs;
use crate::identity::fingerprint;
use crate::paths::Layout;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

/// One HPO trial or refit run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub run_id: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Start time in ms since the epoch (tie-break: earlier wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_key_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_key_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// A final training on the full data (`checkpoint` is then `<variant dir>/checkpoint`):
    /// `pipeline` skips training when it is selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_on_full_data: Option<bool>,
}

/// The effective selection settings (`best_model_selection.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub metric: String,
    pub direction: Direction,
    pub objective_weight: f64,
    pub latency_weight: f64,
    pub normalize_weights: bool,
    pub min_objective: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub accuracy_threshold: Option<f64>,
    pub relative_threshold: bool,
    pub required_metrics: Vec<String>,
    pub latency_metric: String,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings> {
        let s = &config.selection;
        let doc = &config.docs["best_model_selection"];
        let weight = |key: &str, v: Option<f64>, default: f64| -> Result<f64> {
            let v = v.unwrap_or(default);
            if !v.is_finite() || v < 0.0 {
                return Err(doc.locate(key, &format!("must be a finite number >= 0, got {v}")));
            }
            Ok(v)
        };
        let objective_weight = weight("scoring.f1_weight", s.scoring.f1_weight, 0.7)?;
        let latency_weight = weight("scoring.latency_weight", s.scoring.latency_weight, 0.3)?;
        let threshold = match s.thresholds.accuracy_threshold {
            Some(t) => Some(weight("thresholds.accuracy_threshold", Some(t), 0.0)?),
            None => None,
        };
        for (key, v) in [
            ("thresholds.min_objective", s.thresholds.min_objective),
            ("thresholds.max_latency_ms", s.thresholds.max_latency_ms),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(doc.locate(key, "must be a finite number or null"));
            }
        }
        Ok(Settings {
            metric: config.objective_metric(),
            direction: s.objective.direction.unwrap_or_default(),
            objective_weight,
            latency_weight,
            normalize_weights: s.scoring.normalize_weights.unwrap_or(true),
            min_objective: s.thresholds.min_objective,
            max_latency_ms: s.thresholds.max_latency_ms,
            accuracy_threshold: threshold,
            relative_threshold: s.thresholds.use_relative_threshold.unwrap_or(true),
            required_metrics: s.benchmark.required_metrics.clone(),
            latency_metric: s
                .benchmark
                .latency_metric
                .clone()
                .unwrap_or_else(|| "latency_batch_1_ms".into()),
        })
    }

    /// Whether a candidate without a latency must be excluded.
    fn latency_required(&self) -> bool {
        self.latency_weight > 0.0
            || self.max_latency_ms.is_some()
            || self.required_metrics.contains(&self.latency_metric)
    }

    /// The (objective, latency) weights actually used.
    pub fn weights(&self) -> (f64, f64) {
        let sum = self.objective_weight + self.latency_weight;
        if self.normalize_weights && sum > 0.0 {
            (self.objective_weight / sum, self.latency_weight / sum)
        } else {
            (self.objective_weight, self.latency_weight)
        }
    }
}

/// A candidate as scored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub run_id: String,
    pub objective: f64,
    pub latency_ms: Option<f64>,
    pub composite: f64,
    /// Within the accuracy threshold of the best objective.
    pub within_threshold: bool,
    #[serde(skip)]
    pub index: usize,
}

/// The outcome of [`rank`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ranking {
    /// Eligible candidates, best first.
    pub ranked: Vec<Scored>,
    /// `(run_id, reason)` of every excluded candidate.
    pub excluded: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// How the winner was chosen: `composite` or `accuracy_threshold`.
    pub rule: &'static str,
}

impl Ranking {
    pub fn winner(&self) -> &Scored {
        &self.ranked[0]
    }
}

fn finite(v: Option<&Option<f64>>) -> Option<f64> {
    v.copied().flatten().filter(|x| x.is_finite())
}

/// Objective in "higher is better" orientation.
fn oriented(direction: Direction, v: f64) -> f64 {
    match direction {
        Direction::Maximize => v,
        Direction::Minimize => -v,
    }
}

/// Min-max normalisation; equal values (and a single value) normalise to 1.0 (SPEC §7).
fn normalise(v: f64, min: f64, max: f64) -> f64 {
    if max > min {
        (v - min) / (max - min)
    } else {
        1.0
    }
}

/// The total order of SPEC §7: composite, objective, lower latency, earlier start, run id.
fn total_order(a: &Scored, b: &Scored, candidates: &[Candidate], d: Direction) -> Ordering {
    let lat = |s: &Scored| s.latency_ms.unwrap_or(f64::INFINITY);
    let start = |s: &Scored| candidates[s.index].start_time.unwrap_or(u64::MAX);
    b.composite
        .total_cmp(&a.composite)
        .then_with(|| oriented(d, b.objective).total_cmp(&oriented(d, a.objective)))
        .then_with(|| lat(a).total_cmp(&lat(b)))
        .then_with(|| start(a).cmp(&start(b)))
        .then_with(|| a.run_id.cmp(&b.run_id))
}

/// Ranks `candidates` under `settings` (pure). `no_eligible_candidates` when none is left.
pub fn rank(settings: &Settings, candidates: &[Candidate]) -> Result<Ranking> {
    let mut excluded = Vec::new();
    let mut warnings = Vec::new();
    let mut eligible = Vec::new();
    let need_latency = settings.latency_required();
    for (index, c) in candidates.iter().enumerate() {
        let Some(objective) = finite(c.metrics.get(&settings.metric)) else {
            let why = match c.metrics.get(&settings.metric) {
                None | Some(None) => format!("objective {} missing", settings.metric),
                Some(Some(v)) => format!("objective {} is {v}", settings.metric),
            };
            excluded.push((c.run_id.clone(), why));
            continue;
        };
        if let Some(m) = settings
            .required_metrics
            .iter()
            .find(|m| finite(c.metrics.get(*m)).is_none())
        {
            excluded.push((
                c.run_id.clone(),
                format!("required metric {m} missing or not finite"),
            ));
            continue;
        }
        let latency = finite(c.metrics.get(&settings.latency_metric));
        if latency.is_none() && need_latency {
            excluded.push((
                c.run_id.clone(),
                format!("latency {} missing or not finite", settings.latency_metric),
            ));
            continue;
        }
        if let Some(min) = settings.min_objective {
            if oriented(settings.direction, objective) < oriented(settings.direction, min) {
                excluded.push((
                    c.run_id.clone(),
                    format!("objective {objective} is worse than thresholds.min_objective {min}"),
                ));
                continue;
            }
        }
        if let (Some(max), Some(l)) = (settings.max_latency_ms, latency) {
            if l > max {
                excluded.push((
                    c.run_id.clone(),
                    format!("latency {l} ms is over thresholds.max_latency_ms {max}"),
                ));
                continue;
            }
        }
        eligible.push(Scored {
            run_id: c.run_id.clone(),
            objective,
            latency_ms: latency,
            composite: 0.0,
            within_threshold: false,
            index,
        });
    }
    for (run_id, why) in &excluded {
        warnings.push(format!("excluded candidate {run_id}: {why}"));
    }
    if eligible.is_empty() {
        return Err(Error::new(
            ErrorKind::NoEligibleCandidates,
            format!(
                "no eligible candidates among {} ({})",
                candidates.len(),
                if excluded.is_empty() {
                    "the candidate list is empty".to_string()
                } else {
                    excluded
                        .iter()
                        .map(|(r, w)| format!("{r}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ),
        ));
    }
    let d = settings.direction;
    let qs: Vec<f64> = eligible.iter().map(|s| oriented(d, s.objective)).collect();
    let (qmin, qmax) = min_max(qs.iter().copied());
    let (lmin, lmax) = min_max(eligible.iter().filter_map(|s| s.latency_ms));
    let (wo, wl) = settings.weights();
    for (s, q) in eligible.iter_mut().zip(&qs) {
        let lat_term = match s.latency_ms {
            Some(l) => 1.0 - normalise(l, lmin, lmax),
            None => 0.0,
        };
        s.composite = wo * normalise(*q, qmin, qmax) + wl * lat_term;
        s.within_threshold = match settings.accuracy_threshold {
            Some(t) => {
                let gap = qmax - q;
                if settings.relative_threshold {
                    gap <= t * qmax.abs()
                } else {
                    gap <= t
                }
            }
            None => false,
        };
    }
    eligible.sort_by(|a, b| total_order(a, b, candidates, d));
    let mut rule = "composite";
    if settings.accuracy_threshold.is_some() {
        // Within the threshold of the best objective, the faster candidate wins; candidates
        // without a latency count as slowest, ties fall back to the total order.
        let lat = |s: &Scored| s.latency_ms.unwrap_or(f64::INFINITY);
        let best = eligible
            .iter()
            .enumerate()
            .filter(|(_, s)| s.within_threshold)
            .min_by(|(ia, a), (ib, b)| lat(a).total_cmp(&lat(b)).then(ia.cmp(ib)))
            .map(|(i, _)| i);
        if let Some(i) = best.filter(|&i| i > 0) {
            let w = eligible.remove(i);
            eligible.insert(0, w);
            rule = "accuracy_threshold";
        }
    }
    Ok(Ranking {
        ranked: eligible,
        excluded,
        warnings,
        rule,
    })
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The selection cache key: the selection config without `run.mode`, and the candidate set
/// (sorted, so input order does not matter).
pub fn cache_key(config_tree: &Value, candidates: &[Candidate]) -> String {
    let mut tree = config_tree.clone();
    if let Some(run) = tree.get_mut("run").and_then(Value::as_object_mut) {
        run.remove("mode");
    }
    let mut set: Vec<Value> = candidates
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    set.sort_by_key(crate::identity::canonical_json);
    fingerprint(&json!({"selection": tree, "candidates": set}))
}

/// Reads a trials file: errors name the file and the candidate index.
pub fn read_trials(fs: &dyn Fs, path: &Path) -> Result<Vec<Candidate>> {
    let shown = path.display().to_string();
    let bytes = fs.read(path).map_err(|e| {
        Error::new(
            ErrorKind::ConfigMissing,
            format!("trials file {shown}: {e}"),
        )
        .at(Place::file(shown.clone()))
    })?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let mut place = Place::file(shown.clone());
        place.line = Some(e.line() as u64);
        place.column = Some(e.column() as u64);
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("trials file is not JSON: {e}"),
        )
        .at(place)
    })?;
    let list = match &doc {
        Value::Array(items) => items.clone(),
        Value::Object(map) => {
            if let Some(v) = map.get("schema_version") {
                if v != &json!(1) {
                    return Err(Error::new(
                        ErrorKind::ConfigInvalid,
                        format!("unsupported trials schema_version {v} (expected 1)"),
                    )
                    .at(Place::file(shown).with_key("schema_version")));
                }
            }
            match map.get("candidates") {
                Some(Value::Array(items)) => items.clone(),
                _ => {
                    return Err(Error::new(
                        ErrorKind::ConfigInvalid,
                        "a trials file is a list of candidates or {\"schema_version\": 1, \"candidates\": [...]}",
                    )
                    .at(Place::file(shown).with_key("candidates")))
                }
            }
        }
        _ => {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                "a trials file is a list of candidates or {\"schema_version\": 1, \"candidates\": [...]}",
            )
            .at(Place::file(shown)))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    let mut seen = std::collections::BTreeSet::new();
    for (i, item) in list.into_iter().enumerate() {
        let c: Candidate = serde_path_to_error::deserialize(item).map_err(|e| {
            let inner = e.path().to_string();
            let key = if inner == "." {
                format!("candidates[{i}]")
            } else {
                format!("candidates[{i}].{inner}")
            };
            Error::new(ErrorKind::ConfigInvalid, format!("{}", e.inner()))
                .at(Place::file(shown.clone()).with_key(key))
        })?;
        if !seen.insert(c.run_id.clone()) {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("run_id {} appears twice", c.run_id),
            )
            .at(Place::file(shown.clone()).with_key(format!("candidates[{i}].run_id"))));
        }
        out.push(c);
    }
    Ok(out)
}

/// What `trainctl select` did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `new` (computed and recorded) or `reuse` (a valid cached result with the same key).
    pub decision: &'static str,
    pub key: String,
    pub record: String,
    pub payload: Value,
    pub warnings: Vec<String>,
}

/// `trainctl select`: rank the candidates, reuse or write the selection record.
pub fn select(
    config: &Config,
    fs: &dyn Fs,
    candidates: &[Candidate],
    source: &str,
    now_us: u64,
) -> Result<Outcome> {
    let settings = Settings::from_config(config)?;
    let layout = Layout::from_config(config)?;
    let key = cache_key(&config.docs["best_model_selection"].tree, candidates);
    let cache = Cache::new(
        fs,
        CacheSettings::from_paths(&config.paths, &layout, CacheKind::BestModelSelection)?,
    );
    let mode = config.selection.run.mode.unwrap_or(RunMode::ReuseIfExists);
    let mut warnings = Vec::new();
    if mode == RunMode::ReuseIfExists {
        // Newest first; torn or corrupt records are skipped (and so recomputed).
        let (found, invalid) = cache.newest_valid(usize::MAX)?;
        for name in invalid {
            warnings.push(format!("skipped unreadable selection record {name}"));
        }
        if let Some(hit) = found
            .into_iter()
            .find(|f| f.record.payload.get("key").and_then(Value::as_str) == Some(key.as_str()))
        {
            return Ok(Outcome {
                decision: "reuse",
                key,
                record: hit.name,
                payload: hit.record.payload,
                warnings,
            });
        }
    } else if mode != RunMode::ForceNew {
        warnings.push(format!(
            "best_model_selection run.mode {} is treated as reuse_if_exists",
            mode.as_str()
        ));
    }
    let ranking = rank(&settings, candidates)?;
    warnings.extend(ranking.warnings.iter().cloned());
    let w = ranking.winner();
    let c = &candidates[w.index];
    let mut selected = json!({
        "run_id": c.run_id,
        "objective_metric": settings.metric,
        "objective": w.objective,
        "latency_ms": w.latency_ms,
        "composite": w.composite,
        "rule": ranking.rule,
    });
    for (k, v) in [
        ("checkpoint", c.checkpoint.clone()),
        ("study_key_hash", c.study_key_hash.clone()),
        ("trial_key_hash", c.trial_key_hash.clone()),
        ("trial_run_id", c.trial_run_id.clone()),
        ("backbone", c.backbone.clone()),
    ] {
        if let Some(v) = v {
            selected[k] = json!(v);
        }
    }
    if !c.params.is_empty() {
        selected["params"] = json!(c.params);
    }
    if let Some(full) = c.trained_on_full_data {
        selected["trained_on_full_data"] = json!(full);
    }
    let payload = json!({
        "key": key,
        "source": source,
        "settings": settings,
        "selected": selected,
        "ranking": ranking.ranked,
        "excluded": ranking.excluded.iter().map(|(r, w)| json!({"run_id": r, "reason": w})).collect::<Vec<_>>(),
        "candidates": candidates.len(),
    });
    let record = Record {
        schema_version: 1,
        kind: CacheKind::BestModelSelection.as_str().into(),
        created_at: crate::cache::rfc3339(now_us),
        subject: format!("{}/{}", config.model_name(), &key[..8]),
        payload: payload.clone(),
        metadata: json!({"key": key, "run_id": c.run_id, "objective": w.objective}),
    };
    let (name, cache_warnings) = cache.write(&record, now_us)?;
    warnings.extend(cache_warnings);
    Ok(Outcome {
        decision: "new",
        key,
        record: name,
        payload,
        warnings,
    })
}
