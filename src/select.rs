//! Best-model selection (docs/contract.md, "Best-model selection") and its cache (docs/contract.md,
//! "Caches").
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
//! "params"?, "trained_on_full_data"?}]}` (a bare array of candidates is accepted too).
//!
//! Without a trials file the candidates are the HPO runs of the tracking store
//! ([`tracking_candidates`]): FINISHED runs tagged `code.stage` `hpo` (trials) and `hpo_refit`
//! (refits) of the experiment `<experiment>-hpo-<model>`, joined on their study/trial key
//! hashes by the pure [`candidates_from_runs`]. Reading never writes to the store.

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

/// Min-max normalisation; equal values (and a single value) normalise to 1.0 (docs/contract.md,
/// "Best-model selection").
fn normalise(v: f64, min: f64, max: f64) -> f64 {
    if max > min {
        (v - min) / (max - min)
    } else {
        1.0
    }
}

/// The total order of docs/contract.md, "Best-model selection": composite, objective, lower
/// latency, earlier start, run id.
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
        match eligibility(settings, c, need_latency) {
            Ok((objective, latency)) => eligible.push(Scored {
                run_id: c.run_id.clone(),
                objective,
                latency_ms: latency,
                composite: 0.0,
                within_threshold: false,
                index,
            }),
            Err(why) => excluded.push((c.run_id.clone(), why)),
        }
    }
    for (run_id, why) in &excluded {
        warnings.push(format!("excluded candidate {run_id}: {why}"));
    }
    if eligible.is_empty() {
        return Err(no_eligible(candidates.len(), &excluded));
    }
    score(settings, &mut eligible);
    eligible.sort_by(|a, b| total_order(a, b, candidates, settings.direction));
    let rule = apply_accuracy_threshold(settings, &mut eligible);
    Ok(Ranking {
        ranked: eligible,
        excluded,
        warnings,
        rule,
    })
}

/// A candidate's objective and latency when it is eligible, else why it is excluded: its
/// objective, a required metric or a needed latency is missing or not finite, or it fails a
/// threshold.
fn eligibility(
    settings: &Settings,
    c: &Candidate,
    need_latency: bool,
) -> std::result::Result<(f64, Option<f64>), String> {
    let Some(objective) = finite(c.metrics.get(&settings.metric)) else {
        return Err(match c.metrics.get(&settings.metric) {
            None | Some(None) => format!("objective {} missing", settings.metric),
            Some(Some(v)) => format!("objective {} is {v}", settings.metric),
        });
    };
    if let Some(m) = settings
        .required_metrics
        .iter()
        .find(|m| finite(c.metrics.get(*m)).is_none())
    {
        return Err(format!("required metric {m} missing or not finite"));
    }
    let latency = finite(c.metrics.get(&settings.latency_metric));
    if latency.is_none() && need_latency {
        return Err(format!(
            "latency {} missing or not finite",
            settings.latency_metric
        ));
    }
    if let Some(min) = settings.min_objective {
        if oriented(settings.direction, objective) < oriented(settings.direction, min) {
            return Err(format!(
                "objective {objective} is worse than thresholds.min_objective {min}"
            ));
        }
    }
    if let (Some(max), Some(l)) = (settings.max_latency_ms, latency) {
        if l > max {
            return Err(format!(
                "latency {l} ms is over thresholds.max_latency_ms {max}"
            ));
        }
    }
    Ok((objective, latency))
}

/// The error when every candidate (of `total`) was excluded, or there were none.
fn no_eligible(total: usize, excluded: &[(String, String)]) -> Error {
    Error::new(
        ErrorKind::NoEligibleCandidates,
        format!(
            "no eligible candidates among {} ({})",
            total,
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
    )
}

/// Sets each eligible candidate's composite (min-max normalised objective and latency,
/// weighted) and whether it is within the accuracy threshold of the best objective.
fn score(settings: &Settings, eligible: &mut [Scored]) {
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
}

/// With an accuracy threshold, moves the fastest candidate within it to the front of the
/// sorted `eligible`; returns the rule that chose the winner.
fn apply_accuracy_threshold(settings: &Settings, eligible: &mut Vec<Scored>) -> &'static str {
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
    rule
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

/// The largest trials file read (64 MiB: thousands of trials are a few MB).
pub const TRIALS_MAX_BYTES: u64 = 64 << 20;

/// Reads a trials file: errors name the file and the candidate index.
pub fn read_trials(fs: &dyn Fs, path: &Path) -> Result<Vec<Candidate>> {
    let shown = path.display().to_string();
    if let Some(len) = fs
        .metadata(path)
        .ok()
        .filter(|m| m.special || m.len > TRIALS_MAX_BYTES)
        .map(|m| m.len)
    {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("trials file {shown} is not a regular file of at most {TRIALS_MAX_BYTES} bytes (got {len} bytes)"),
        )
        .at(Place::file(shown)));
    }
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
    let list = trials_list(&doc, &shown)?;
    parse_candidates(list, &shown)
}

/// The candidate entries of a trials document: a bare array, or the `candidates` of a
/// `{"schema_version": 1, ...}` object.
fn trials_list(doc: &Value, shown: &str) -> Result<Vec<Value>> {
    let list = match doc {
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
    Ok(list)
}

/// The candidates of a trials file, each checked against the schema; a run id may appear
/// once.
fn parse_candidates(list: Vec<Value>, shown: &str) -> Result<Vec<Candidate>> {
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
                .at(Place::file(shown).with_key(key))
        })?;
        if !seen.insert(c.run_id.clone()) {
            return Err(Error::new(
                ErrorKind::ConfigInvalid,
                format!("run_id {} appears twice", c.run_id),
            )
            .at(Place::file(shown).with_key(format!("candidates[{i}].run_id"))));
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
        if let Some(hit) = cached(&cache, &key, &mut warnings)? {
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
    let payload = json!({
        "key": key,
        "source": source,
        "settings": settings,
        "selected": selected_json(&settings, &ranking, c),
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

/// The newest valid selection record with `key`, if any; unreadable records are reported
/// in `warnings`.
fn cached(
    cache: &Cache<'_>,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::cache::Found>> {
    // Newest first; torn or corrupt records are skipped (and so recomputed).
    let (found, invalid) = cache.newest_valid(usize::MAX)?;
    for name in invalid {
        warnings.push(format!("skipped unreadable selection record {name}"));
    }
    Ok(found
        .into_iter()
        .find(|f| f.record.payload.get("key").and_then(Value::as_str) == Some(key)))
}

/// The winner `c` as the selection record states it: its scores and, when known, where its
/// checkpoint is and which trial it came from.
fn selected_json(settings: &Settings, ranking: &Ranking, c: &Candidate) -> Value {
    let w = ranking.winner();
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
    selected
}

// ---------------------------------------------------------------------------------------
// Candidates from the tracking store (docs/contract.md, "Best-model selection"): HPO trial and
// refit runs found by their tags.

/// `code.stage` (registry `process.stage`) of an HPO trial run.
pub const STAGE_TRIAL: &str = "hpo";
/// `code.stage` of an HPO refit run (the trial's configuration retrained; its artifacts win).
pub const STAGE_REFIT: &str = "hpo_refit";
/// At most this many HPO runs are read per stage (a bound, and an error beyond it, never a
/// silent cut as upstream's 5,000-result search had).
pub const TRACKED_RUNS_MAX: usize = 10_000;

/// The experiment HPO runs are searched in: upstream's `<experiment_name>-hpo-<backbone>`,
/// with the model token as the backbone.
pub fn hpo_experiment_name(config: &Config) -> String {
    format!("{}-hpo-{}", config.experiment_name, config.model_name())
}

/// Candidates and where they came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub candidates: Vec<Candidate>,
    /// For the record and messages: the trials file, or `<store> experiment <name>`.
    pub source: String,
    pub warnings: Vec<String>,
}

/// A param value as the trials file would hold it: MLflow stores params as strings, so
/// numbers and booleans are parsed back ("0.05" → 0.05, "4" → 4, "true" → true).
fn param_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// A local directory for an artifact URI (`file:` URIs and plain absolute paths), else `None`.
fn local_artifact_root(uri: &str) -> Option<std::path::PathBuf> {
    let rest = match uri.strip_prefix("file://") {
        Some(after) => after.strip_prefix("localhost").unwrap_or(after),
        None => uri.strip_prefix("file:").unwrap_or(uri),
    };
    let decoded = crate::track::select::percent_decode(rest)?;
    let path = std::path::PathBuf::from(decoded);
    path.is_absolute().then_some(path)
}

/// Builds candidates from HPO runs (pure): trials and refits are joined on
/// (`study_key_hash`, `trial_key_hash`) tags; the objective and the other metrics come from
/// the trial run (metrics only its refit has, e.g. a latency measured on the refit
/// checkpoint, are added), the run id, params, checkpoint and `trained_on_full_data` from the
/// refit when there is one (the Python original's "artifact run"). Only FINISHED runs count; a
/// trial without hashes stands alone; a refit without a matching trial is skipped with a warning;
/// two runs with one key keep the later start (then the greater run id), with a warning.
/// `checkpoints` maps a run id to its checkpoint dir when one is known.
pub fn candidates_from_runs(
    trials: &[crate::track::Run],
    refits: &[crate::track::Run],
    registry: &crate::naming::TagRegistry,
    checkpoints: &BTreeMap<String, String>,
) -> (Vec<Candidate>, Vec<String>) {
    let tags = RunTags::new(registry);
    let mut warnings = Vec::new();
    let mut skipped = Vec::new();
    let (trials, refits) = (
        finished_runs(trials, &mut skipped),
        finished_runs(refits, &mut skipped),
    );
    let by_key = newest_trials(&tags, trials, &mut warnings);
    let refit_by_key = newest_refits(&tags, refits, &by_key, &mut warnings);
    if !skipped.is_empty() {
        warnings.push(format!(
            "HPO runs that did not finish are not candidates: {}",
            skipped.join(", ")
        ));
    }
    let mut out = Vec::with_capacity(by_key.len());
    for (key, trial) in &by_key {
        let refit = refit_by_key.get(key).copied();
        out.push(joined_candidate(&tags, trial, refit, checkpoints));
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    (out, warnings)
}

/// Tracked runs by their (study, trial) key hashes; a hash-less trial's key is
/// `("", run id)`.
type ByKey<'r> = BTreeMap<(String, String), &'r crate::track::Run>;

/// The registry's names of the tags candidates are built from.
struct RunTags {
    study: String,
    trial: String,
    full: String,
    backbone: String,
    model: String,
}

impl RunTags {
    fn new(registry: &crate::naming::TagRegistry) -> RunTags {
        RunTags {
            study: registry.name("grouping", "study_key_hash"),
            trial: registry.name("grouping", "trial_key_hash"),
            full: registry.name("training", "trained_on_full_data"),
            backbone: registry.name("process", "backbone"),
            model: registry.name("process", "model"),
        }
    }

    /// A run's (study, trial) key hashes, when it has both tags.
    fn key_of(&self, run: &crate::track::Run) -> Option<(String, String)> {
        Some((
            run.tags.get(&self.study)?.clone(),
            run.tags.get(&self.trial)?.clone(),
        ))
    }
}

/// Whether `a` counts as later than `b`: the later start, then the greater run id.
fn started_later(a: &crate::track::Run, b: &crate::track::Run) -> bool {
    (a.info.start_time_ms, &a.info.run_id) > (b.info.start_time_ms, &b.info.run_id)
}

/// Only FINISHED runs count; the others are reported by id and status.
fn finished_runs<'r>(
    runs: &'r [crate::track::Run],
    skipped: &mut Vec<String>,
) -> Vec<&'r crate::track::Run> {
    runs.iter()
        .filter(|run| {
            let done = run.info.status == crate::track::RunStatus::Finished;
            if !done {
                skipped.push(format!(
                    "{} ({})",
                    run.info.run_id,
                    run.info.status.as_str()
                ));
            }
            done
        })
        .collect()
}

/// The newest trial per key, with a warning for each duplicate.
fn newest_trials<'r>(
    tags: &RunTags,
    trials: Vec<&'r crate::track::Run>,
    warnings: &mut Vec<String>,
) -> ByKey<'r> {
    // Newest per key; the map key of a hash-less trial is its run id.
    let mut by_key: ByKey<'r> = BTreeMap::new();
    for run in trials {
        let key = tags
            .key_of(run)
            .unwrap_or_else(|| (String::new(), run.info.run_id.clone()));
        match by_key.get(&key) {
            Some(have) if !started_later(run, have) => {
                warnings.push(format!(
                    "HPO trial {} has the same study/trial key as {}; the later run counts",
                    run.info.run_id, have.info.run_id
                ));
            }
            Some(have) => {
                warnings.push(format!(
                    "HPO trial {} has the same study/trial key as {}; the later run counts",
                    have.info.run_id, run.info.run_id
                ));
                by_key.insert(key, run);
            }
            None => {
                by_key.insert(key, run);
            }
        }
    }
    by_key
}

/// The newest refit per trial key; a refit matching no trial is skipped with a warning.
fn newest_refits<'r>(
    tags: &RunTags,
    refits: Vec<&'r crate::track::Run>,
    trials: &ByKey<'_>,
    warnings: &mut Vec<String>,
) -> ByKey<'r> {
    let mut refit_by_key: ByKey<'r> = BTreeMap::new();
    for run in refits {
        let Some(key) = tags.key_of(run).filter(|k| trials.contains_key(k)) else {
            warnings.push(format!(
                "HPO refit {} matches no finished trial by {}/{}; skipped",
                run.info.run_id, tags.study, tags.trial
            ));
            continue;
        };
        match refit_by_key.get(&key) {
            Some(have) if !started_later(run, have) => {}
            _ => {
                refit_by_key.insert(key, run);
            }
        }
    }
    refit_by_key
}

/// The candidate of a trial and its refit, if any: metrics from the trial (plus those only
/// the refit has); run id, params, checkpoint and `trained_on_full_data` from the refit
/// when there is one.
fn joined_candidate(
    tags: &RunTags,
    trial: &crate::track::Run,
    refit: Option<&crate::track::Run>,
    checkpoints: &BTreeMap<String, String>,
) -> Candidate {
    let artifact = refit.unwrap_or(trial);
    let mut metrics: BTreeMap<String, Option<f64>> = trial
        .metrics
        .iter()
        .map(|(k, m)| (k.clone(), Some(m.value)))
        .collect();
    if let Some(r) = refit {
        for (k, m) in &r.metrics {
            metrics.entry(k.clone()).or_insert(Some(m.value));
        }
    }
    let backbone = trial
        .params
        .get("backbone")
        .or_else(|| trial.tags.get(&tags.backbone))
        .or_else(|| trial.tags.get(&tags.model))
        .cloned();
    let hashes = tags.key_of(trial);
    Candidate {
        run_id: artifact.info.run_id.clone(),
        metrics,
        checkpoint: checkpoints.get(&artifact.info.run_id).cloned(),
        start_time: u64::try_from(trial.info.start_time_ms).ok(),
        study_key_hash: hashes.as_ref().map(|h| h.0.clone()),
        trial_key_hash: hashes.as_ref().map(|h| h.1.clone()),
        trial_run_id: Some(trial.info.run_id.clone()),
        backbone,
        params: artifact
            .params
            .iter()
            .map(|(k, v)| (k.clone(), param_value(v)))
            .collect(),
        trained_on_full_data: (artifact.tags.get(&tags.full).map(String::as_str) == Some("true"))
            .then_some(true),
    }
}

/// Candidates read from a tracking store, with the warnings about runs left out.
pub type Tracked = (Vec<Candidate>, Vec<String>);

/// Reads the HPO runs of `experiment` from `tracker` and builds the candidates. A run's
/// checkpoint is `<output_dir tag>/checkpoint` when it names one, else its `checkpoint/`
/// artifact directory when the artifacts are local (file store).
pub fn read_tracked(
    tracker: &dyn crate::track::Tracker,
    experiment: &str,
    registry: &crate::naming::TagRegistry,
) -> std::result::Result<Option<Tracked>, crate::track::TrackError> {
    use crate::track::{LifecycleStage, RunFilter};
    let Some(found) = tracker.experiment_by_name(experiment)? else {
        return Ok(None);
    };
    if found.lifecycle_stage == LifecycleStage::Deleted {
        return Ok(None);
    }
    let stage_tag = registry.name("process", "stage");
    let output_tag = registry.name("paths", "output_dir");
    let search = |stage: &str| {
        let filter = RunFilter {
            tags: [(stage_tag.clone(), stage.to_string())]
                .into_iter()
                .collect(),
            run_name: None,
        };
        tracker.search_runs(&found.experiment_id, &filter)
    };
    let trials = search(STAGE_TRIAL)?;
    let refits = search(STAGE_REFIT)?;
    for (stage, runs) in [(STAGE_TRIAL, &trials), (STAGE_REFIT, &refits)] {
        if runs.len() > TRACKED_RUNS_MAX {
            return Err(crate::track::TrackError::Unsupported {
                what: format!("selection over {} `{stage}` runs", runs.len()),
                detail: format!("at most {TRACKED_RUNS_MAX} per stage; pass --trials FILE"),
            });
        }
    }
    let mut checkpoints = BTreeMap::new();
    for run in trials.iter().chain(&refits) {
        if let Some(dir) = run.tags.get(&output_tag).filter(|d| !d.is_empty()) {
            checkpoints.insert(run.info.run_id.clone(), format!("{dir}/checkpoint"));
            continue;
        }
        let Some(root) = local_artifact_root(&run.info.artifact_uri) else {
            continue;
        };
        let listed = tracker.list_artifacts(&run.info.run_id, "")?;
        if listed.iter().any(|a| a.is_dir && a.path == "checkpoint") {
            checkpoints.insert(
                run.info.run_id.clone(),
                root.join("checkpoint").display().to_string(),
            );
        }
    }
    Ok(Some(candidates_from_runs(
        &trials,
        &refits,
        registry,
        &checkpoints,
    )))
}

/// Candidates from the tracking store of the selection stage (`tracking.selection.enabled`,
/// the backend precedence of docs/contract.md, "Tracking of final training" with
/// `MLFLOW_TRACKING_URI`/`MLFLOW_TRACKING_TOKEN` from `var`). No candidates when the store (or its
/// experiment `<experiment>-hpo-<model>`) does not exist: reading never creates either. Errors: the
/// stage disabled (`usage`), the store unusable (`tracking_unavailable`).
pub fn tracking_candidates(
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Loaded> {
    let (settings, env) = crate::track::lifecycle::backend_inputs(
        config,
        crate::track::lifecycle::Stage::Selection,
        var,
        cwd,
    );
    if !settings.enabled {
        return Err(Error::new(
            ErrorKind::Usage,
            "no candidates: mlflow.yaml tracking.selection.enabled is false and no --trials FILE was given",
        ));
    }
    let unavailable = |e: &crate::track::TrackError| {
        Error::new(
            ErrorKind::TrackingUnavailable,
            format!(
                "cannot read HPO candidates from the tracking store: {e} (or pass --trials FILE)"
            ),
        )
    };
    let chosen = crate::track::select_backend(&settings, &env).map_err(|e| unavailable(&e))?;
    let experiment = hpo_experiment_name(config);
    let source = format!("{} experiment {experiment}", chosen.choice.describe());
    let none = |warnings: Vec<String>| Loaded {
        candidates: Vec::new(),
        source: source.clone(),
        warnings,
    };
    if let crate::track::BackendChoice::File { root } = &chosen.choice {
        // Reading must not create a store.
        if !root.is_dir() {
            return Ok(none(chosen.warnings));
        }
    }
    let retry = crate::track::RetryPolicy {
        attempts_max: 2,
        backoff_first_ms: 200,
        backoff_max_ms: 1_000,
        timeout_ms: 10_000,
        connect_timeout_ms: 3_000,
    };
    let tracker = crate::track::open(
        &chosen.choice,
        std::sync::Arc::new(crate::store::cloud::CloudFs::new()),
        retry,
    )
    .map_err(|e| unavailable(&e))?;
    let registry = config.tags.clone();
    let Some((candidates, mut warnings)) =
        read_tracked(tracker.as_ref(), &experiment, &registry).map_err(|e| unavailable(&e))?
    else {
        return Ok(none(chosen.warnings));
    };
    let mut all = chosen.warnings;
    all.append(&mut warnings);
    Ok(Loaded {
        candidates,
        source,
        warnings: all,
    })
}

/// The candidates of `trainctl select`: `--trials FILE`, else the tracking store. An empty
/// candidate set from the store is `no_eligible_candidates` naming where it looked.
pub fn load_candidates(
    config: &Config,
    fs: &dyn Fs,
    trials: Option<&Path>,
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Loaded> {
    if let Some(path) = trials {
        return Ok(Loaded {
            candidates: read_trials(fs, path)?,
            source: path.display().to_string(),
            warnings: Vec::new(),
        });
    }
    let loaded = tracking_candidates(config, var, cwd)?;
    if loaded.candidates.is_empty() {
        let registry = config.tags.clone();
        return Err(Error::new(
            ErrorKind::NoEligibleCandidates,
            format!(
                "no HPO candidates in {}: no finished run tagged {}={STAGE_TRIAL} ({STAGE_REFIT} for refits); run HPO first or pass --trials FILE",
                loaded.source,
                registry.name("process", "stage")
            ),
        ));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{LifecycleStage, Metric, Run, RunInfo, RunStatus};

    fn run(id: &str, stage: &str, keys: Option<(&str, &str)>, start: i64, f1: Option<f64>) -> Run {
        let mut tags: BTreeMap<String, String> =
            [("code.stage".to_string(), stage.to_string())].into();
        if let Some((s, t)) = keys {
            tags.insert("code.study_key_hash".into(), s.into());
            tags.insert("code.trial_key_hash".into(), t.into());
        }
        let metrics = f1
            .map(|v| {
                let m = Metric {
                    key: "macro-f1".into(),
                    value: v,
                    timestamp_ms: start,
                    step: 1,
                };
                [("macro-f1".to_string(), m)].into()
            })
            .unwrap_or_default();
        Run {
            info: RunInfo {
                run_id: id.into(),
                experiment_id: "1".into(),
                run_name: id.into(),
                status: RunStatus::Finished,
                start_time_ms: start,
                end_time_ms: Some(start + 1),
                artifact_uri: String::new(),
                lifecycle_stage: LifecycleStage::Active,
            },
            params: [("learning_rate".to_string(), "0.05".to_string())].into(),
            tags,
            metrics,
        }
    }

    #[test]
    fn trials_and_refits_join_on_their_key_and_the_later_duplicate_counts() {
        let registry = crate::naming::TagRegistry::defaults();
        let trials = vec![
            run("old", "hpo", Some(("s", "t1")), 10, Some(0.5)),
            run("new", "hpo", Some(("s", "t1")), 20, Some(0.7)),
            run("alone", "hpo", None, 5, Some(0.6)),
        ];
        let mut refit = run("refit", "hpo_refit", Some(("s", "t1")), 30, None);
        refit.params.insert("epochs".into(), "4".into());
        refit
            .tags
            .insert("code.trained_on_full_data".into(), "true".into());
        let orphan = run("orphan", "hpo_refit", Some(("s", "t9")), 40, None);
        let checkpoints = [("refit".to_string(), "/ck".to_string())].into();
        // The result does not depend on the order the store listed the runs in.
        let mut reversed = trials.clone();
        reversed.reverse();
        for listed in [&trials, &reversed] {
            let (cands, warnings) = candidates_from_runs(
                listed,
                &[orphan.clone(), refit.clone()],
                &registry,
                &checkpoints,
            );
            let ids: Vec<&str> = cands.iter().map(|c| c.run_id.as_str()).collect();
            assert_eq!(ids, ["alone", "refit"]);
            let joined = &cands[1];
            assert_eq!(joined.trial_run_id.as_deref(), Some("new"));
            assert_eq!(joined.metrics["macro-f1"], Some(0.7));
            assert_eq!(joined.params["epochs"], json!(4));
            assert_eq!(joined.params["learning_rate"], json!(0.05));
            assert_eq!(joined.checkpoint.as_deref(), Some("/ck"));
            assert_eq!(joined.trained_on_full_data, Some(true));
            assert_eq!(cands[0].study_key_hash, None);
            let text = warnings.join("\n");
            assert!(
                text.contains("HPO trial old has the same study/trial key as new"),
                "{text}"
            );
            assert!(
                text.contains("HPO refit orphan matches no finished trial"),
                "{text}"
            );
        }
    }

    #[test]
    fn mlflow_param_strings_come_back_typed() {
        assert_eq!(param_value("0.05"), json!(0.05));
        assert_eq!(param_value("4"), json!(4));
        assert_eq!(param_value("true"), json!(true));
        assert_eq!(param_value("linear"), json!("linear"));
        assert_eq!(param_value("[1, 2]"), json!("[1, 2]"));
        assert_eq!(param_value("null"), json!("null"));
    }

    #[test]
    fn local_artifact_roots_are_decoded_and_remote_ones_are_none() {
        let p = |s: &str| local_artifact_root(s).map(|p| p.display().to_string());
        assert_eq!(
            p("file:///tmp/a%20b/artifacts").as_deref(),
            Some("/tmp/a b/artifacts")
        );
        assert_eq!(p("file://localhost/x").as_deref(), Some("/x"));
        assert_eq!(p("/plain/path").as_deref(), Some("/plain/path"));
        assert_eq!(p("mlflow-artifacts:/1/abc/artifacts"), None);
        assert_eq!(p("relative/dir"), None);
    }
}
