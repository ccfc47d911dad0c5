//! The built-in reference trainer (docs/contract.md, "Trainer"), run as a subprocess of trainctl
//! (`trainctl __builtin-train`, job file in `TRAINCTL_JOB`). Token classification on the
//! character-span JSON format with hashed sparse features, a softmax or linear-chain CRF head,
//! AdamW, warmup/decay, accumulation, clipping, feature dropout, early stopping, truncation and
//! emulated fp16 with a dynamic loss scaler. It owns `checkpoints/step-<k>/`, `checkpoint/`
//! and `metrics.json` of its variant dir, each published atomically, and nothing else.
//!
//! Determinism is the contract: one thread, a fixed arithmetic order, no hash-map iteration
//! in numeric paths, a seeded splitmix64 whose state is checkpointed. Resuming from any
//! `checkpoints/step-<k>/` restores every bit of state, so the final bytes equal those of an
//! uninterrupted run. It never decides completion and never touches the orchestrator's files; as
//! its own crate it cannot (it depends on `trainctl-core` only, never on the orchestrator).

pub mod ckpt;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod protocol;
pub mod text;

use ckpt::TensorSet;
use metrics::{evaluate, Evaluation};
use model::{backward_weights, emissions, loss_and_demissions, Example, Params, Touched};
use optim::LossScaler;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use text::FeatureConfig;
use trainctl_core::data::{self, Record};
use trainctl_core::rng::SplitMix64;

/// Identifies this trainer's algorithms (features, tokenizer, arithmetic). Bump it whenever a
/// change alters what a given job produces; the orchestrator puts it into exec_fp.
pub const TRAINER_VERSION: &str = "builtin-hashed-linear/1";
/// The only backbone the built-in trainer trains.
pub const BACKBONE: &str = "builtin/hashed-linear";
const STATE_FORMAT: &str = "trainctl-builtin-state/1";
const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "trainer_state.json";
const MODEL_FILE: &str = "model.safetensors";
const CONFIG_FILE: &str = "config.json";
/// Upper bounds that keep memory and loops bounded.
const MAX_HASH_DIM: u64 = 1 << 24;
const MAX_WINDOW: u64 = 16;
const MAX_LABELS: usize = 1024;

// The job's hyperparameters are the orchestrator's effective ones, with the same strict
// schema: a knob this trainer cannot honour must never be ignored silently (docs/contract.md,
// "Configuration").
pub use protocol::{EarlyStopping, Hyperparameters, LrScheduler};

/// The job file (see fixtures/trainer/README.md for the protocol). Extra fields are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct JobFile {
    pub variant_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub checkpoints_dir: PathBuf,
    pub metrics_path: PathBuf,
    #[serde(default)]
    pub resume_from: Option<PathBuf>,
    #[serde(default)]
    pub init_checkpoint: Option<PathBuf>,
    pub labels: Vec<String>,
    pub hyperparameters: Hyperparameters,
    pub seed: Value,
    pub save_interval: u64,
    pub log_interval: u64,
    #[serde(default = "default_objective")]
    pub objective_metric: String,
    pub dataset: BTreeMap<String, Option<PathBuf>>,
    pub model: Value,
    #[serde(default = "default_precision")]
    pub precision: String,
    #[serde(default)]
    pub run_name: Option<String>,
    #[serde(default)]
    pub total_steps: Option<u64>,
    /// The storage profile the orchestrator uses for OUT (`posix`, `posix-noflags`); when
    /// given, checkpoints are published by the same protocol (docs/contract.md).
    #[serde(default)]
    pub storage_profile: Option<String>,
    /// Where to append progress reports (docs/contract.md, "Live progress"); also in the
    /// `TRAINCTL_PROGRESS` environment variable. None: no reports.
    #[serde(default)]
    pub progress_path: Option<PathBuf>,
}

fn default_objective() -> String {
    "macro-f1".into()
}

fn default_precision() -> String {
    "fp32".into()
}

/// Runs the whole training described by the job file at `job_path`.
pub fn run(job_path: &Path) -> Result<(), String> {
    run_until(job_path, None).map(|_| ())
}

/// Whether a run finished or stopped at a test's step limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Finished,
    /// Stopped right after writing `checkpoints/step-<k>/` (an interruption, for tests).
    StoppedAt(u64),
}

/// `run`, optionally stopping right after the step checkpoint at `stop_after_step` is written
/// (what a kill right after that checkpoint leaves behind). Used by tests only.
pub fn run_until(job_path: &Path, stop_after_step: Option<u64>) -> Result<Ending, String> {
    println!(
        "trainer pid={} job={}",
        std::process::id(),
        job_path.display()
    );
    let job = read_job(job_path)?;
    if job.storage_profile.as_deref() == Some("posix-noflags") {
        trainctl_core::fs::OsFs::force(
            &job.variant_dir,
            trainctl_core::fs::ProfileName::PosixNoflags,
        )
        .map_err(|e| format!("{}: {e}", job.variant_dir.display()))?;
    }
    let setup = Setup::prepare(job)?;
    let mut trainer = Trainer::init(setup)?;
    let ending = trainer.train(stop_after_step)?;
    if ending == Ending::Finished {
        trainer.finish()?;
    }
    Ok(ending)
}

/// Reads and parses a job file.
pub fn read_job(job_path: &Path) -> Result<JobFile, String> {
    let bytes = std::fs::read(job_path).map_err(|e| format!("{}: {e}", job_path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: invalid job file: {e}", job_path.display()))
}

/// Reads the feature settings from the model config tree (`model.yaml` as JSON).
pub fn feature_config(model: &Value) -> Result<FeatureConfig, String> {
    feature_config_at(model).map_err(|(_, message)| message)
}

/// A refusal of the built-in trainer, with the dotted key of the setting it refuses.
type Refusal = (String, String);

/// `feature_config`, naming the `model.yaml` key of a refusal.
fn feature_config_at(model: &Value) -> Result<FeatureConfig, Refusal> {
    if let Some(b) = model.get("backbone") {
        if b.as_str() != Some(BACKBONE) {
            return Err(refusal(
                "backbone",
                format!(
                    "the built-in trainer trains only backbone `{BACKBONE}`, the model config has {b}"
                ),
            ));
        }
    }
    let hash_dim = model_uint(model, "features", "hash_dim", 262_144)?;
    let window = model_uint(model, "features", "window", 2)?;
    let max_length = model_uint(model, "preprocessing", "max_length", 128)?;
    check_feature_bounds(hash_dim, window, max_length)?;
    Ok(FeatureConfig {
        hash_dim: hash_dim as u32,
        window: window as u32,
        char_ngrams: model_bool(model, "features", "char_ngrams", true)?,
        lowercase: model_bool(model, "preprocessing", "lowercase", false)?,
        max_length: max_length as u32,
        use_crf: model_bool(model, "decoding", "use_crf", false)?,
    })
}

/// A refusal of the setting `key` with `message`.
fn refusal(key: &str, message: String) -> Refusal {
    (key.to_string(), message)
}

/// The setting `sec.key` of the model config, or None when it or its section is absent or
/// null.
fn model_setting<'a>(model: &'a Value, sec: &str, key: &str) -> Option<&'a Value> {
    model
        .get(sec)
        .filter(|v| !v.is_null())
        .and_then(|s| s.get(key))
        .filter(|v| !v.is_null())
}

/// The non-negative integer setting `sec.key` of the model config, `default` when absent.
fn model_uint(model: &Value, sec: &str, key: &str, default: u64) -> Result<u64, Refusal> {
    match model_setting(model, sec, key) {
        None => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            refusal(
                &format!("{sec}.{key}"),
                format!("model config {sec}.{key} must be a non-negative integer, found {v}"),
            )
        }),
    }
}

/// The boolean setting `sec.key` of the model config, `default` when absent.
fn model_bool(model: &Value, sec: &str, key: &str, default: bool) -> Result<bool, Refusal> {
    match model_setting(model, sec, key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| {
            refusal(
                &format!("{sec}.{key}"),
                format!("model config {sec}.{key} must be a boolean, found {v}"),
            )
        }),
    }
}

/// Refuses feature sizes outside the bounds that keep memory and loops bounded.
fn check_feature_bounds(hash_dim: u64, window: u64, max_length: u64) -> Result<(), Refusal> {
    if !(1..=MAX_HASH_DIM).contains(&hash_dim) {
        return Err(refusal(
            "features.hash_dim",
            format!(
                "model config features.hash_dim must be in 1..={MAX_HASH_DIM}, found {hash_dim}"
            ),
        ));
    }
    if window > MAX_WINDOW {
        return Err(refusal(
            "features.window",
            format!("model config features.window must be at most {MAX_WINDOW}, found {window}"),
        ));
    }
    if max_length == 0 || max_length > u64::from(u32::MAX) {
        return Err(refusal(
            "preprocessing.max_length",
            format!(
                "model config preprocessing.max_length must be in 1..={}, found {max_length}",
                u32::MAX
            ),
        ));
    }
    Ok(())
}

fn feature_json(f: &FeatureConfig) -> Value {
    json!({
        "hash_dim": f.hash_dim,
        "window": f.window,
        "char_ngrams": f.char_ngrams,
        "lowercase": f.lowercase,
        "max_length": f.max_length,
        "use_crf": f.use_crf,
    })
}

/// The epochs the built-in trainer accepts at most.
pub const MAX_EPOCHS: u64 = 1_000_000;

/// The hyperparameters the built-in trainer refuses; the key is the `training.*` one.
fn check_hyperparameters(h: &Hyperparameters) -> Result<(), Refusal> {
    let bad = |k: &str, why: &str| Err((k.to_string(), format!("hyperparameter {k} {why}")));
    if !(h.learning_rate.is_finite() && h.learning_rate > 0.0) {
        return bad("learning_rate", "must be a positive number");
    }
    if h.epochs == 0 || h.epochs > MAX_EPOCHS {
        return bad("epochs", &format!("must be in 1..={MAX_EPOCHS}"));
    }
    if h.batch_size == 0 {
        return bad("batch_size", "must be at least 1");
    }
    if h.gradient_accumulation_steps == 0 {
        return bad("gradient_accumulation_steps", "must be at least 1");
    }
    if !(0.0..1.0).contains(&h.dropout) {
        return bad("dropout", "must be in [0, 1)");
    }
    if !(h.weight_decay.is_finite() && h.weight_decay >= 0.0) {
        return bad("weight_decay", "must be a non-negative number");
    }
    if !(h.max_grad_norm.is_finite() && h.max_grad_norm >= 0.0) {
        return bad(
            "max_grad_norm",
            "must be a non-negative number (0 disables clipping)",
        );
    }
    if !(0.0..1.0).contains(&h.validation_fraction) {
        return bad("validation_fraction", "must be in [0, 1)");
    }
    if h.eval_interval == 0 {
        return bad("eval_interval", "must be at least 1");
    }
    if h.early_stopping.enabled && h.early_stopping.patience == 0 {
        return bad("early_stopping.patience", "must be at least 1");
    }
    if !(h.early_stopping.min_delta.is_finite() && h.early_stopping.min_delta >= 0.0) {
        return bad("early_stopping.min_delta", "must be a non-negative number");
    }
    Ok(())
}

/// Which file of the configuration a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `model.yaml` (the key is relative to it).
    Model,
    /// A hyperparameter (`training.<key>` in whichever layer set it).
    Hyperparameter,
    /// `final_training.yaml` `trainer.precision`.
    Precision,
    /// `best_model_selection.yaml` `objective.metric`.
    Objective,
}

/// What the built-in trainer would refuse in this configuration, checked by `config check`,
/// `plan` and `train` before anything is written (docs/contract.md, "Refused before the first
/// write"): the same checks its `Setup::prepare` makes on the job file, minus the dataset
/// (which the orchestrator validates itself).
pub fn preflight(
    model: &Value,
    hp: &Hyperparameters,
    precision: &str,
    objective_metric: &str,
) -> Result<(), (Refused, String, String)> {
    feature_config_at(model).map_err(|(k, m)| (Refused::Model, k, m))?;
    check_hyperparameters(hp).map_err(|(k, m)| (Refused::Hyperparameter, k, m))?;
    if precision == "bf16" {
        return Err((
            Refused::Precision,
            "trainer.precision".into(),
            "bf16 is not supported by the built-in trainer (use fp32 or fp16)".into(),
        ));
    }
    if !Evaluation::METRICS.contains(&objective_metric) {
        return Err((
            Refused::Objective,
            "objective.metric".into(),
            format!(
                "objective metric `{objective_metric}` is not produced by the built-in trainer (one of {:?})",
                Evaluation::METRICS
            ),
        ));
    }
    Ok(())
}

/// Everything derived from the job before training: settings and the prepared examples.
pub struct Setup {
    pub job: JobFile,
    pub features: FeatureConfig,
    pub hp: Hyperparameters,
    pub seed: u64,
    pub half: bool,
    pub labels: Vec<String>,
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    /// `validation`, `holdout` (sliced off train) or `train` (too little data to hold out).
    pub eval_source: &'static str,
    pub test: Option<Vec<Example>>,
    pub truncated: BTreeMap<&'static str, u64>,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
}

/// Optimizer steps per epoch: ceil(ceil(n / batch) / accumulation); a dataset smaller than
/// one batch still makes one (partial) batch and one step.
pub fn steps_per_epoch(n_train: u64, batch_size: u64, accumulation: u64) -> u64 {
    n_train
        .max(1)
        .div_ceil(batch_size.max(1))
        .div_ceil(accumulation.max(1))
}

/// Turns records into examples: tokens, gold labels, features; tokens past `max_length` are
/// dropped and counted.
pub fn examples(records: &[Record], labels: &[String], f: &FeatureConfig) -> (Vec<Example>, u64) {
    let mut out = Vec::with_capacity(records.len());
    let mut truncated = 0u64;
    for r in records {
        let mut tokens = text::tokenize(&r.text);
        let kept = tokens.len().min(f.max_length as usize);
        truncated += (tokens.len() - kept) as u64;
        tokens.truncate(kept);
        let id_of = |label: &str| labels.iter().position(|l| l == label).unwrap_or(0) as u16;
        // A token's gold label is the type of the span covering its first character.
        let mut gold = Vec::with_capacity(kept);
        let mut s = 0;
        for t in &tokens {
            while s < r.spans.len() && r.spans[s].1 <= t.start {
                s += 1;
            }
            let covering = r
                .spans
                .get(s)
                .filter(|sp| sp.0 <= t.start && t.start < sp.1);
            gold.push(covering.map_or(0, |sp| id_of(&sp.2)));
        }
        let kept_end = tokens.last().map_or(0, |t| t.end);
        let gold_spans = r
            .spans
            .iter()
            .filter(|sp| sp.1 <= kept_end)
            .map(|sp| (sp.0, sp.1, id_of(&sp.2)))
            .collect();
        let feats = text::features(&r.text, &tokens, f);
        out.push(Example {
            feats,
            gold,
            tokens: tokens.iter().map(|t| (t.start, t.end)).collect(),
            gold_spans,
        });
    }
    (out, truncated)
}

/// The examples of every split, as `Setup` holds them.
struct Splits {
    train: Vec<Example>,
    eval: Vec<Example>,
    eval_source: &'static str,
    test: Option<Vec<Example>>,
    truncated: BTreeMap<&'static str, u64>,
}

/// Whether the job's precision emulates fp16 (`fp32`: no; `bf16` and others refused).
fn half_precision(precision: &str) -> Result<bool, String> {
    match precision {
        "fp32" => Ok(false),
        "fp16" => Ok(true),
        "bf16" => Err("bf16 is not supported by the built-in trainer (use fp32 or fp16)".into()),
        other => Err(format!("unknown precision `{other}` (fp32, fp16)")),
    }
}

/// The job's seed as a u64 (a negative integer keeps its bits).
fn job_seed(seed: &Value) -> Result<u64, String> {
    seed.as_u64()
        .or_else(|| seed.as_i64().map(|s| s as u64))
        .ok_or_else(|| format!("seed must be an integer, found {seed}"))
}

/// Refuses zero save/log intervals and an objective metric this trainer does not produce.
fn check_job_settings(job: &JobFile) -> Result<(), String> {
    if job.save_interval == 0 || job.log_interval == 0 {
        return Err("save_interval and log_interval must be at least 1".into());
    }
    if !Evaluation::METRICS.contains(&job.objective_metric.as_str()) {
        return Err(format!(
            "objective_metric `{}` is not produced by the built-in trainer (one of {:?})",
            job.objective_metric,
            Evaluation::METRICS
        ));
    }
    Ok(())
}

/// Checks that `labels` is `["O"]` + the sorted unique entity types; returns those types.
fn entity_types_of(labels: &[String]) -> Result<Vec<String>, String> {
    if labels.first().map(String::as_str) != Some("O") || labels.len() > MAX_LABELS {
        return Err(format!(
            "labels must start with \"O\" (at most {MAX_LABELS}), found {labels:?}"
        ));
    }
    let entity_types: Vec<String> = labels[1..].to_vec();
    if data::labels(&entity_types) != labels {
        return Err(format!(
            "labels must be [\"O\"] + sorted unique entity types, found {labels:?}"
        ));
    }
    Ok(entity_types)
}

impl Splits {
    /// Loads the job's dataset splits and turns them into examples. Without a (non-empty)
    /// validation split a slice of train is held out, or train itself evaluated when too small.
    fn load(
        job: &JobFile,
        hp: &Hyperparameters,
        labels: &[String],
        entity_types: &[String],
        features: &FeatureConfig,
    ) -> Result<Splits, String> {
        for role in job.dataset.keys() {
            if !["train", "validation", "test"].contains(&role.as_str()) {
                return Err(format!(
                    "unknown dataset role `{role}` (train, validation, test)"
                ));
            }
        }
        let path_of = |role: &str| job.dataset.get(role).cloned().flatten();
        let train_path = path_of("train").ok_or("the job has no dataset.train")?;
        let load = |p: &Path| data::load_split(p, entity_types).map_err(|e| e.to_string());
        let mut train_records = load(&train_path)?;
        data::require_nonempty(&train_records, &train_path).map_err(|e| e.to_string())?;
        let mut truncated = BTreeMap::new();
        let validation = match path_of("validation") {
            Some(p) => load(&p)?,
            None => Vec::new(),
        };
        // An absent or empty validation split: hold a slice of train out instead.
        let (eval_records, eval_source) = match validation.is_empty() {
            false => (validation, "validation"),
            true => {
                let (t, v) = data::holdout(train_records, hp.validation_fraction);
                train_records = t;
                if v.is_empty() {
                    (train_records.clone(), "train")
                } else {
                    (v, "holdout")
                }
            }
        };
        let (train, n) = examples(&train_records, labels, features);
        truncated.insert("train", n);
        let (eval, n) = examples(&eval_records, labels, features);
        if eval_source != "train" {
            // Evaluating on train: its truncated tokens are counted once, above.
            truncated.insert("validation", n);
        }
        let test = match path_of("test") {
            Some(p) => {
                let (t, n) = examples(&load(&p)?, labels, features);
                truncated.insert("test", n);
                Some(t)
            }
            None => None,
        };
        Ok(Splits {
            train,
            eval,
            eval_source,
            test,
            truncated,
        })
    }
}

impl Setup {
    pub fn prepare(job: JobFile) -> Result<Setup, String> {
        let features = feature_config(&job.model)?;
        let hp = job.hyperparameters.clone();
        check_hyperparameters(&hp).map_err(|(_, message)| message)?;
        let half = half_precision(&job.precision)?;
        let seed = job_seed(&job.seed)?;
        check_job_settings(&job)?;
        let labels = job.labels.clone();
        let entity_types = entity_types_of(&labels)?;
        let Splits {
            train,
            eval,
            eval_source,
            test,
            truncated,
        } = Splits::load(&job, &hp, &labels, &entity_types, &features)?;
        let spe = steps_per_epoch(
            train.len() as u64,
            hp.batch_size,
            hp.gradient_accumulation_steps,
        );
        let total_steps = spe * hp.epochs;
        Ok(Setup {
            job,
            features,
            hp,
            seed,
            half,
            labels,
            train,
            eval,
            eval_source,
            test,
            truncated,
            steps_per_epoch: spe,
            total_steps,
        })
    }

    fn config_echo(&self) -> Value {
        json!({
            "trainer_version": TRAINER_VERSION,
            "labels": self.labels,
            "seed": self.seed,
            "hyperparameters": self.hp,
            "features": feature_json(&self.features),
            "precision": if self.half { "fp16" } else { "fp32" },
            "objective_metric": self.job.objective_metric,
            "train_records": self.train.len(),
            "eval_records": self.eval.len(),
            "eval_source": self.eval_source,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        })
    }

    /// The order of the training records in `epoch`: a pure function of (seed, epoch).
    fn epoch_order(&self, epoch: u64) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.train.len() as u32).collect();
        SplitMix64::derived(self.seed, epoch_tag(epoch)).shuffle(&mut order);
        order
    }
}

fn epoch_tag(epoch: u64) -> u64 {
    0x5348_5546_0000_0000 ^ epoch
}

const DROPOUT_TAG: u64 = 0xD50F_0000_0000_0001;

/// The resumable scalar state (everything besides the tensors).
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Optimizer steps done (skipped fp16 steps included).
    pub step: u64,
    /// Completed epochs; the current epoch's index.
    pub epoch: u64,
    /// Optimizer steps done inside the current epoch.
    pub epoch_step: u64,
    /// Adam updates applied (bias correction count).
    pub adam_t: u64,
    pub rng: SplitMix64,
    pub scaler: LossScaler,
    pub skipped_steps: u64,
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    pub bad_evals: u64,
    pub stopped_early: bool,
    pub evaluations: u64,
    pub window_loss: f64,
    pub window_steps: u64,
    pub epoch_loss: f64,
    pub epoch_steps: u64,
    pub last_epoch_loss: Option<f64>,
}

impl Progress {
    fn fresh(seed: u64, half: bool) -> Progress {
        Progress {
            step: 0,
            epoch: 0,
            epoch_step: 0,
            adam_t: 0,
            rng: SplitMix64::derived(seed, DROPOUT_TAG),
            scaler: LossScaler::new(half),
            skipped_steps: 0,
            best_metric: None,
            best_step: None,
            bad_evals: 0,
            stopped_early: false,
            evaluations: 0,
            window_loss: 0.0,
            window_steps: 0,
            epoch_loss: 0.0,
            epoch_steps: 0,
            last_epoch_loss: None,
        }
    }

    /// The progress saved in a `trainer_state.json`. The loss scaler is restored only when
    /// the state was written with the same precision (`same_precision`), else it starts
    /// afresh for `half`.
    fn from_state(state: &Value, same_precision: bool, half: bool) -> Result<Progress, String> {
        let es = &state["early_stopping"];
        let scaler = &state["loss_scaler"];
        let loss = &state["loss"];
        Ok(Progress {
            step: u64_field(state, "step")?,
            epoch: u64_field(state, "epoch")?,
            epoch_step: u64_field(state, "epoch_step")?,
            adam_t: u64_field(&state["optimizer"], "t")?,
            rng: SplitMix64::new(u64_field(state, "rng")?),
            scaler: if same_precision {
                LossScaler {
                    enabled: half,
                    scale: f64_field(scaler, "scale")? as f32,
                    good_steps: u64_field(scaler, "good_steps")?,
                }
            } else {
                LossScaler::new(half)
            },
            skipped_steps: u64_field(scaler, "skipped_steps")?,
            best_metric: opt_f64(es, "best_metric")?,
            best_step: opt_u64(es, "best_step")?,
            bad_evals: u64_field(es, "bad_evals")?,
            stopped_early: es.get("stopped").and_then(Value::as_bool).unwrap_or(false),
            evaluations: u64_field(es, "evaluations")?,
            window_loss: f64_field(loss, "window_sum")?,
            window_steps: u64_field(loss, "window_steps")?,
            epoch_loss: f64_field(loss, "epoch_sum")?,
            epoch_steps: u64_field(loss, "epoch_steps")?,
            last_epoch_loss: opt_f64(loss, "last_epoch_mean")?,
        })
    }
}

/// The trainer: setup, tensors and progress.
pub struct Trainer {
    pub setup: Setup,
    pub params: Params,
    pub m: Params,
    pub v: Params,
    grads: Params,
    touched: Touched,
    /// Weights at the best evaluation (early stopping enabled only).
    pub best: Option<Params>,
    pub st: Progress,
    tokens_trained: u64,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))
}

/// The label list of a checkpoint's config.json (`id2label` consistent with `label2id`).
fn checkpoint_labels(dir: &Path) -> Result<Vec<String>, String> {
    let path = dir.join(CONFIG_FILE);
    let config = read_json(&path)?;
    let map = crate::protocol::label_map(&config)
        .ok_or_else(|| format!("{}: no consistent id2label/label2id", path.display()))?;
    Ok(map.into_values().collect())
}

fn f64_field(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("trainer state: `{key}` missing or not a number"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("trainer state: `{key}` missing or not an integer"))
}

fn opt_f64(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("trainer state: `{key}` not a number")),
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("trainer state: `{key}` not an integer")),
    }
}

impl Trainer {
    /// Builds the start state: resumed (full state), warm-started (weights only) or fresh.
    pub fn init(setup: Setup) -> Result<Trainer, String> {
        let f = &setup.features;
        let shape = Params::zeros(f.hash_dim as usize, setup.labels.len(), f.use_crf);
        let mut t = Trainer {
            params: shape.clone(),
            m: shape.clone(),
            v: shape.clone(),
            grads: shape,
            touched: Touched::new(f.hash_dim as usize),
            best: None,
            st: Progress::fresh(setup.seed, setup.half),
            setup,
            tokens_trained: 0,
        };
        if let Some(dir) = t.setup.job.resume_from.clone() {
            t.restore(&dir)?;
        } else if let Some(dir) = t.setup.job.init_checkpoint.clone() {
            t.warm_start(&dir)?;
        }
        Ok(t)
    }

    /// Weights only from `dir/model.safetensors`; optimizer, scheduler and step start fresh.
    fn warm_start(&mut self, dir: &Path) -> Result<(), String> {
        let got = checkpoint_labels(dir)?;
        if got != self.setup.labels {
            return Err(format!(
                "label_map_mismatch: init checkpoint {} has labels {got:?}, the job has {:?}",
                dir.display(),
                self.setup.labels
            ));
        }
        let config = read_json(&dir.join(CONFIG_FILE))?;
        if let Some(h) = config.pointer("/features/hash_dim").and_then(Value::as_u64) {
            if h != u64::from(self.setup.features.hash_dim) {
                return Err(format!(
                    "init checkpoint {} has hash_dim {h}, the model config has {}",
                    dir.display(),
                    self.setup.features.hash_dim
                ));
            }
        }
        if let Some(theirs) = config.get("features") {
            let ours = feature_json(&self.setup.features);
            for key in ["window", "char_ngrams", "lowercase"] {
                if theirs.get(key) != ours.get(key) {
                    println!(
                        "warning: init checkpoint features.{key} = {} differs from this run's {}",
                        theirs.get(key).unwrap_or(&Value::Null),
                        ours[key]
                    );
                }
            }
        }
        let path = dir.join(MODEL_FILE);
        let tensors = ckpt::read_tensors(&path)?;
        self.params = ckpt::params_from(&tensors, "", &self.params, true, &path)?;
        println!(
            "warm start: weights from {} (optimizer, scheduler and step start fresh)",
            path.display()
        );
        Ok(())
    }

    /// Full state from a `checkpoints/step-<k>` dir or a finished `checkpoint/` dir (continue).
    fn restore(&mut self, dir: &Path) -> Result<(), String> {
        let state = read_json(&dir.join(STATE_FILE))?;
        if state.get("format").and_then(Value::as_str) != Some(STATE_FORMAT) {
            return Err(format!(
                "{}: not a built-in trainer state",
                dir.join(STATE_FILE).display()
            ));
        }
        let is_final = state.get("final").and_then(Value::as_bool).unwrap_or(false);
        let echo = state.get("config").cloned().unwrap_or(Value::Null);
        let ours = self.setup.config_echo();
        self.check_compatible(dir, &echo, &ours, is_final)?;
        let same_precision = echo["precision"] == ours["precision"];
        self.st = Progress::from_state(&state, same_precision, self.setup.half)?;
        self.load_state_tensors(dir)?;
        if is_final {
            self.start_continue_segment(dir)?;
        }
        println!(
            "resumed from {} at step {} (epoch {}, step {} of the epoch){}",
            dir.display(),
            self.st.step,
            self.st.epoch,
            self.st.epoch_step,
            if is_final {
                " to continue training"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Refuses a checkpoint in `dir` whose config echo does not fit this job: other labels or
    /// features always, and for a step checkpoint (`!is_final`) any other setting that would
    /// change what the resumed run computes.
    fn check_compatible(
        &self,
        dir: &Path,
        echo: &Value,
        ours: &Value,
        is_final: bool,
    ) -> Result<(), String> {
        let labels: Vec<String> =
            serde_json::from_value(echo["labels"].clone()).unwrap_or_default();
        if labels != self.setup.labels {
            return Err(format!(
                "label_map_mismatch: resume checkpoint {} has labels {labels:?}, the job has {:?}",
                dir.display(),
                self.setup.labels
            ));
        }
        if echo["features"] != ours["features"] {
            return Err(format!(
                "resume checkpoint {} was trained with features {}, the model config gives {}",
                dir.display(),
                echo["features"],
                ours["features"]
            ));
        }
        if !is_final {
            // A step checkpoint resumes the very same run: any difference would break
            // resume equivalence, so it is an error rather than a silent divergence.
            for key in [
                "hyperparameters",
                "seed",
                "precision",
                "objective_metric",
                "train_records",
                "eval_records",
                "trainer_version",
            ] {
                if echo[key] != ours[key] {
                    return Err(format!(
                        "resume checkpoint {} was written with a different {key}: {} (this job: {})",
                        dir.display(),
                        echo[key],
                        ours[key]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Loads the weights (and the best ones, when early stopping tracks them) and the Adam
    /// moments of the checkpoint in `dir`.
    fn load_state_tensors(&mut self, dir: &Path) -> Result<(), String> {
        let wpath = dir.join(WEIGHTS_FILE);
        let weights = ckpt::read_tensors(&wpath)?;
        self.params = ckpt::params_from(&weights, "", &self.params, false, &wpath)?;
        self.best = None;
        if self.setup.hp.early_stopping.enabled && weights.contains_key("best.weight") {
            self.best = Some(ckpt::params_from(
                &weights,
                "best.",
                &self.params,
                false,
                &wpath,
            )?);
        }
        if self.setup.hp.early_stopping.enabled && self.best.is_none() {
            // Early stopping was off when this state was written: start tracking afresh.
            self.st.best_metric = None;
            self.st.best_step = None;
        }
        let opath = dir.join(OPTIMIZER_FILE);
        let opt = ckpt::read_tensors(&opath)?;
        self.m = ckpt::params_from(&opt, "exp_avg.", &self.params, false, &opath)?;
        self.v = ckpt::params_from(&opt, "exp_avg_sq.", &self.params, false, &opath)?;
        Ok(())
    }

    /// continue_from_previous: after restoring the finished run in `dir`, starts a new
    /// training segment up to the configured epochs (none left is an error).
    fn start_continue_segment(&mut self, dir: &Path) -> Result<(), String> {
        if self.st.epoch >= self.setup.hp.epochs {
            return Err(format!(
                "nothing_to_continue: {} already trained {} epochs, the job asks for {}",
                dir.display(),
                self.st.epoch,
                self.setup.hp.epochs
            ));
        }
        self.st.stopped_early = false;
        self.st.bad_evals = 0;
        if self.st.epoch_step >= self.setup.steps_per_epoch {
            self.st.epoch += 1;
            self.st.epoch_step = 0;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr_at(self.st.step)
    }

    fn lr_at(&self, step: u64) -> f64 {
        optim::scheduled_rate(
            self.setup.hp.lr_scheduler.unwrap_or_default(),
            self.setup.hp.learning_rate,
            step,
            self.setup.hp.warmup_steps,
            self.setup.total_steps,
        )
    }

    /// One optimizer step over the micro-batches of the current position. Returns the mean
    /// training loss of the step.
    fn step(&mut self, order: &[u32]) -> Result<f64, String> {
        let half = self.setup.half;
        let scale = f64::from(self.st.scaler.scale);
        let step_loss = self.accumulate_gradients(order, scale);
        if !step_loss.is_finite() {
            return Err(format!(
                "training diverged: non-finite loss at step {}",
                self.st.step + 1
            ));
        }
        let lr = self.lr();
        let rows = self.touched.sorted().to_vec();
        let overflow = half && !optim::round_grads_f16(&mut self.grads, &rows);
        if overflow {
            self.st.skipped_steps += 1;
            println!(
                "step {} skipped: fp16 gradient overflow at loss scale {}",
                self.st.step + 1,
                self.st.scaler.scale
            );
        } else {
            self.apply_gradients(&rows, scale, lr)?;
        }
        self.st.scaler.update(overflow);
        optim::zero_grads(&mut self.grads, &mut self.touched);
        Ok(step_loss)
    }

    /// Runs forward and backward over the micro-batches of the current step (in `order`),
    /// adding their gradients, scaled by the loss `scale`, into `grads`. Returns the step's
    /// mean training loss.
    fn accumulate_gradients(&mut self, order: &[u32], scale: f64) -> f64 {
        let n = self.setup.train.len();
        let bs = self.setup.hp.batch_size as usize;
        let accum = self.setup.hp.gradient_accumulation_steps as usize;
        let n_batches = n.div_ceil(bs);
        let b0 = self.st.epoch_step as usize * accum;
        let b1 = (b0 + accum).min(n_batches);
        assert!(
            b0 < b1,
            "epoch position {} past the epoch's batches",
            self.st.epoch_step
        );
        let n_micro = (b1 - b0) as f64;
        let mut step_loss = 0.0f64;
        for b in b0..b1 {
            let idx = &order[b * bs..((b + 1) * bs).min(n)];
            let tokens: usize = idx
                .iter()
                .map(|&i| self.setup.train[i as usize].len())
                .sum();
            let denom = tokens.max(1) as f64 * n_micro;
            let coef = scale / denom;
            let micro_loss = self.micro_batch(idx, coef);
            step_loss += micro_loss / denom;
        }
        step_loss
    }

    /// Forward and backward over the training examples `idx` of one micro-batch, gradients
    /// scaled by `coef`. Returns the summed loss of its tokens.
    fn micro_batch(&mut self, idx: &[u32], coef: f64) -> f64 {
        let half = self.setup.half;
        let mut micro_loss = 0.0f64;
        for &i in idx {
            let ex = &self.setup.train[i as usize];
            if ex.is_empty() {
                continue;
            }
            let vals = dropout_values(&mut self.st.rng, self.setup.hp.dropout as f32, ex);
            let em = emissions(&self.params, ex, vals.as_deref(), half);
            let (loss, d) = loss_and_demissions(
                &self.params,
                &em,
                &ex.gold,
                half,
                coef,
                Some(&mut self.grads),
            );
            backward_weights(
                ex,
                vals.as_deref(),
                &d,
                coef,
                half,
                &mut self.grads,
                &mut self.touched,
            );
            micro_loss += loss;
            self.tokens_trained += ex.len() as u64;
        }
        micro_loss
    }

    /// Applies the accumulated gradients of the touched `rows`: unscales them by the loss
    /// `scale` (fp16), clips their norm, then takes an AdamW step at `lr`.
    fn apply_gradients(&mut self, rows: &[u32], scale: f64, lr: f64) -> Result<(), String> {
        if self.setup.half {
            optim::scale_grads(&mut self.grads, rows, (1.0 / scale) as f32);
        }
        let norm = optim::grad_sq_norm(&self.grads, rows).sqrt();
        if !norm.is_finite() {
            return Err(format!(
                "training diverged: non-finite gradient at step {}",
                self.st.step + 1
            ));
        }
        let max = self.setup.hp.max_grad_norm;
        if max > 0.0 && norm > max {
            optim::scale_grads(&mut self.grads, rows, (max / (norm + 1e-6)) as f32);
        }
        self.st.adam_t += 1;
        optim::adamw_step(
            &mut self.params,
            &self.grads,
            &mut self.m,
            &mut self.v,
            lr,
            self.setup.hp.weight_decay,
            self.st.adam_t,
        );
        Ok(())
    }

    /// Evaluates on the eval set and updates early stopping.
    fn evaluate_and_track(&mut self) -> Evaluation {
        let e = evaluate(&self.params, &self.setup.eval, self.setup.half);
        self.st.evaluations += 1;
        let name = self.setup.job.objective_metric.clone();
        let value = e.metric(&name).unwrap_or(0.0);
        let es = self.setup.hp.early_stopping.clone();
        if es.enabled {
            let improved = match self.st.best_metric {
                None => true,
                Some(b) if Evaluation::maximize(&name) => value > b + es.min_delta,
                Some(b) => value < b - es.min_delta,
            };
            if improved {
                self.st.best_metric = Some(value);
                self.st.best_step = Some(self.st.step);
                self.st.bad_evals = 0;
                self.best = Some(self.params.clone());
            } else {
                self.st.bad_evals += 1;
                if self.st.bad_evals >= es.patience {
                    self.st.stopped_early = true;
                }
            }
        }
        println!(
            "eval step {} epoch {} {name} {:.6} span-f1 {:.6} loss {:.6} on {} ({} records){}",
            self.st.step,
            self.st.epoch,
            value,
            e.span_f1,
            e.loss,
            self.setup.eval_source,
            self.setup.eval.len(),
            if es.enabled {
                format!(
                    " best {:.6} at step {} patience {}/{}{}",
                    self.st.best_metric.unwrap_or(f64::NAN),
                    self.st.best_step.unwrap_or(0),
                    self.st.bad_evals,
                    es.patience,
                    if self.st.stopped_early {
                        " -> early stop"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            }
        );
        self.log_metrics(&[
            (&format!("eval/{name}"), value),
            ("eval/span-f1", e.span_f1),
            ("eval/loss", e.loss),
        ]);
        e
    }

    /// Appends metric points to `logs/metrics.jsonl` in the variant dir, one JSON line each
    /// (`step`, `key`, `value`, `timestamp_ms`): what the orchestrator forwards to the
    /// tracker. Best effort and outside the byte-identical outputs; a resumed run appends
    /// again from its checkpoint step, and readers keep the last point per (key, step).
    fn log_metrics(&self, points: &[(&str, f64)]) {
        let dir = self.setup.job.variant_dir.join("logs");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut text = String::new();
        for (key, value) in points {
            if value.is_finite() {
                text.push_str(
                    &json!({"step": self.st.step, "key": key, "value": value, "timestamp_ms": ts})
                        .to_string(),
                );
                text.push('\n');
            }
        }
        // A log: appended, not synced (the orchestrator reads it back for tracking).
        let fs = trainctl_core::fs::OsFs;
        let _ = trainctl_core::fs::Fs::create_dir_all(&fs, &dir).and_then(|()| {
            trainctl_core::fs::Fs::append(&fs, &dir.join("metrics.jsonl"), text.as_bytes())
        });
    }

    /// The training loop, from the current state to the end (or `stop_after` for tests).
    pub fn train(&mut self, stop_after: Option<u64>) -> Result<Ending, String> {
        let total = self.setup.total_steps;
        let spe = self.setup.steps_per_epoch;
        let epochs = self.setup.hp.epochs;
        self.print_plan();
        let mut reports = Reporter::open(self.setup.job.progress_path.as_deref());
        reports.report(self, true);
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        let steps0 = self.st.step;
        let mut order_epoch = u64::MAX;
        let mut order = Vec::new();
        // Bounded: every iteration advances `step`, and the epoch counter reaches `epochs`.
        while self.st.epoch < epochs && !self.st.stopped_early {
            if order_epoch != self.st.epoch {
                order = self.setup.epoch_order(self.st.epoch);
                order_epoch = self.st.epoch;
            }
            let loss = self.step(&order)?;
            self.count_step(loss);
            if self.st.step % self.setup.job.log_interval == 0 || self.st.step == total {
                self.log_step();
            }
            let epoch_end = self.st.epoch_step >= spe;
            let evaluated = self.st.step % self.setup.hp.eval_interval == 0 || epoch_end;
            if evaluated {
                let e = self.evaluate_and_track();
                reports.metric = e.metric(&self.setup.job.objective_metric);
            }
            if epoch_end {
                self.end_epoch();
            }
            reports.report(self, evaluated || self.st.step == total);
            if self.st.step % self.setup.job.save_interval == 0 {
                let dir = self
                    .setup
                    .job
                    .checkpoints_dir
                    .join(format!("step-{}", self.st.step));
                self.save(&dir, false)?;
                if stop_after == Some(self.st.step) {
                    return Ok(Ending::StoppedAt(self.st.step));
                }
            }
        }
        reports.report(self, true);
        self.print_summary(started, cpu0, steps0);
        Ok(Ending::Finished)
    }

    /// Prints what the run is about to train (and a note when the job's step count differs).
    fn print_plan(&self) {
        let total = self.setup.total_steps;
        if let Some(t) = self.setup.job.total_steps {
            if t != total {
                println!("note: the job says total_steps {t}; with the held-out slice this run makes {total}");
            }
        }
        println!(
            "training {} records ({} eval from {}), {} steps/epoch, {} epochs, {} steps, {}{}",
            self.setup.train.len(),
            self.setup.eval.len(),
            self.setup.eval_source,
            self.setup.steps_per_epoch,
            self.setup.hp.epochs,
            total,
            if self.setup.features.use_crf {
                "crf"
            } else {
                "softmax"
            },
            if self.setup.half {
                ", fp16 (emulated)"
            } else {
                ""
            }
        );
    }

    /// Advances the position by one step with mean training loss `loss`.
    fn count_step(&mut self, loss: f64) {
        self.st.step += 1;
        self.st.epoch_step += 1;
        self.st.window_loss += loss;
        self.st.window_steps += 1;
        self.st.epoch_loss += loss;
        self.st.epoch_steps += 1;
    }

    /// Prints and logs the mean loss since the last log line, then starts a new window.
    fn log_step(&mut self) {
        println!(
            "step {}/{} loss {:.6} lr {:.6e}{}",
            self.st.step,
            self.setup.total_steps,
            self.st.window_loss / self.st.window_steps.max(1) as f64,
            self.lr_at(self.st.step - 1),
            if self.setup.half {
                format!(" scale {}", self.st.scaler.scale)
            } else {
                String::new()
            }
        );
        self.log_metrics(&[
            (
                "train/loss",
                self.st.window_loss / self.st.window_steps.max(1) as f64,
            ),
            ("train/lr", self.lr_at(self.st.step - 1)),
        ]);
        self.st.window_loss = 0.0;
        self.st.window_steps = 0;
    }

    /// Closes the current epoch: its mean loss is kept and the next one starts.
    fn end_epoch(&mut self) {
        self.st.epoch += 1;
        self.st.epoch_step = 0;
        self.st.last_epoch_loss = Some(self.st.epoch_loss / self.st.epoch_steps.max(1) as f64);
        self.st.epoch_loss = 0.0;
        self.st.epoch_steps = 0;
    }

    /// Prints the throughput of this segment (from `steps0`, begun at `started` with `cpu0`
    /// CPU seconds).
    fn print_summary(&self, started: Instant, cpu0: f64, steps0: u64) {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "trained {} steps ({} tokens) in {:.3}s wall, {:.3}s cpu: {:.0} tokens/s{}",
            self.st.step - steps0,
            self.tokens_trained,
            secs,
            cpu_seconds() - cpu0,
            self.tokens_trained as f64 / secs.max(1e-9),
            if self.st.stopped_early {
                ", stopped early"
            } else {
                ""
            }
        );
    }

    fn state_json(&self, is_final: bool) -> Value {
        let es = &self.setup.hp.early_stopping;
        json!({
            "format": STATE_FORMAT,
            "final": is_final,
            "step": self.st.step,
            "epoch": self.st.epoch,
            "epoch_step": self.st.epoch_step,
            "epoch_batch": self.st.epoch_step * self.setup.hp.gradient_accumulation_steps,
            "epoch_shuffle": {"seed": self.setup.seed, "tag": epoch_tag(self.st.epoch), "algorithm": "splitmix64-fisher-yates"},
            "rng": self.st.rng.state,
            "scheduler": {
                "kind": self.setup.hp.lr_scheduler.unwrap_or_default().as_str(),
                "base_lr": self.setup.hp.learning_rate,
                "warmup_steps": self.setup.hp.warmup_steps,
                "total_steps": self.setup.total_steps,
                "next_lr": self.lr(),
            },
            "optimizer": {
                "kind": "adamw",
                "t": self.st.adam_t,
                "beta1": optim::BETA1,
                "beta2": optim::BETA2,
                "eps": optim::EPS,
                "weight_decay": self.setup.hp.weight_decay,
            },
            "loss_scaler": {
                "enabled": self.st.scaler.enabled,
                "scale": self.st.scaler.scale,
                "good_steps": self.st.scaler.good_steps,
                "growth_interval": optim::GROWTH_INTERVAL,
                "skipped_steps": self.st.skipped_steps,
            },
            "early_stopping": {
                "enabled": es.enabled,
                "metric": self.setup.job.objective_metric,
                "patience": es.patience,
                "min_delta": es.min_delta,
                "best_metric": self.st.best_metric,
                "best_step": self.st.best_step,
                "bad_evals": self.st.bad_evals,
                "evaluations": self.st.evaluations,
                "stopped": self.st.stopped_early,
            },
            "loss": {
                "window_sum": self.st.window_loss,
                "window_steps": self.st.window_steps,
                "epoch_sum": self.st.epoch_loss,
                "epoch_steps": self.st.epoch_steps,
                "last_epoch_mean": self.st.last_epoch_loss,
            },
            "config": self.setup.config_echo(),
        })
    }

    /// The full-state files (weights incl. best, Adam moments, trainer_state.json).
    fn state_files(&self, is_final: bool) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
        let mut weights = TensorSet::default();
        weights.add_params("", &self.params);
        if let Some(b) = &self.best {
            weights.add_params("best.", b);
        }
        let mut opt = TensorSet::default();
        opt.add_params("exp_avg.", &self.m);
        opt.add_params("exp_avg_sq.", &self.v);
        let state =
            serde_json::to_vec_pretty(&self.state_json(is_final)).map_err(|e| e.to_string())?;
        Ok(vec![
            (WEIGHTS_FILE, weights.serialize("trainctl-builtin-weights")?),
            (OPTIMIZER_FILE, opt.serialize("trainctl-builtin-adamw")?),
            (STATE_FILE, state),
        ])
    }

    fn save(&self, dir: &Path, is_final: bool) -> Result<(), String> {
        let files = self.state_files(is_final)?;
        ckpt::write_dir_atomic(dir, &files)?;
        println!("saved {}", dir.display());
        Ok(())
    }

    /// The weights the run exports: the best by the validation objective when early stopping
    /// is enabled, else the final ones.
    fn exported(&self) -> &Params {
        match (&self.best, self.setup.hp.early_stopping.enabled) {
            (Some(b), true) => b,
            _ => &self.params,
        }
    }

    fn model_config(&self) -> Value {
        let mut id2label = Map::new();
        let mut label2id = Map::new();
        for (i, l) in self.setup.labels.iter().enumerate() {
            id2label.insert(i.to_string(), json!(l));
            label2id.insert(l.clone(), json!(i));
        }
        json!({
            "model_type": "trainctl-builtin",
            "architectures": [if self.setup.features.use_crf { "HashedLinearCrf" } else { "HashedLinearSoftmax" }],
            "trainer_version": TRAINER_VERSION,
            "num_labels": self.setup.labels.len(),
            "id2label": id2label,
            "label2id": label2id,
            "features": feature_json(&self.setup.features),
            "tokenizer": "unicode-word-punct/1",
            "feature_hash": "fnv1a64",
        })
    }

    /// Writes `checkpoint/` (atomically), then `metrics.json` (atomically).
    pub fn finish(&self) -> Result<(), String> {
        let exported = self.exported();
        let mut model = TensorSet::default();
        model.add_params("", exported);
        let mut files = vec![
            (MODEL_FILE, model.serialize("pt")?),
            (
                CONFIG_FILE,
                serde_json::to_vec_pretty(&self.model_config()).map_err(|e| e.to_string())?,
            ),
        ];
        files.extend(self.state_files(true)?);
        ckpt::write_dir_atomic(&self.setup.job.checkpoint_dir, &files)?;
        let metrics = self.metrics_json();
        let bytes = serde_json::to_vec_pretty(&metrics).map_err(|e| e.to_string())?;
        ckpt::write_file_atomic(&self.setup.job.metrics_path, &bytes)?;
        println!(
            "final {} {} on {}; wrote {} and {}",
            self.setup.job.objective_metric,
            metrics[&self.setup.job.objective_metric],
            self.setup.eval_source,
            self.setup.job.checkpoint_dir.display(),
            self.setup.job.metrics_path.display()
        );
        Ok(())
    }

    pub fn metrics_json(&self) -> Value {
        let exported = self.exported();
        let e = evaluate(exported, &self.setup.eval, self.setup.half);
        let mut m = e.to_json(&self.setup.labels);
        m.insert("evaluated_on".into(), json!(self.setup.eval_source));
        let train_loss = self
            .st
            .last_epoch_loss
            .or((self.st.epoch_steps > 0).then(|| self.st.epoch_loss / self.st.epoch_steps as f64));
        m.insert("train_loss".into(), json!(train_loss));
        m.insert("steps".into(), json!(self.st.step));
        m.insert("total_steps".into(), json!(self.setup.total_steps));
        m.insert("epochs_completed".into(), json!(self.st.epoch));
        m.insert("stopped_early".into(), json!(self.st.stopped_early));
        m.insert("best_step".into(), json!(self.st.best_step));
        m.insert("best_metric".into(), json!(self.st.best_metric));
        m.insert("skipped_steps".into(), json!(self.st.skipped_steps));
        m.insert(
            "truncated_tokens".into(),
            json!(self.setup.truncated.values().sum::<u64>()),
        );
        m.insert(
            "truncated_tokens_by_split".into(),
            json!(self.setup.truncated),
        );
        m.insert(
            "precision".into(),
            json!(if self.setup.half { "fp16" } else { "fp32" }),
        );
        if let Some(test) = &self.setup.test {
            let t = evaluate(exported, test, self.setup.half);
            m.insert("test".into(), Value::Object(t.to_json(&self.setup.labels)));
        }
        Value::Object(m)
    }
}

/// Dropout-scaled feature values of one example: each feature but the bias is dropped with
/// probability `p` (drawn from the checkpointed RNG) and kept ones are scaled by 1/(1−p).
fn dropout_values(rng: &mut SplitMix64, p: f32, ex: &Example) -> Option<Vec<f32>> {
    if p <= 0.0 {
        return None;
    }
    let keep = 1.0 / (1.0 - p);
    let mut vals = vec![keep; ex.feats.ids.len()];
    for t in 0..ex.len() {
        let lo = ex.feats.offsets[t];
        vals[lo] = 1.0;
        for v in &mut vals[lo + 1..ex.feats.offsets[t + 1]] {
            if rng.next_f32() < p {
                *v = 0.0;
            }
        }
    }
    Some(vals)
}

/// Writes progress reports to the channel the job names, at most every
/// `REPORT_EVERY` unless forced (an evaluation, the last step). Best effort: a channel that
/// cannot be written is dropped, never a failed training.
struct Reporter {
    out: Option<std::fs::File>,
    last: Option<Instant>,
    /// The latest evaluation of the objective metric.
    metric: Option<f64>,
    /// The step of the last report written (a forced report of the same step is not news).
    last_step: Option<u64>,
}

const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Reporter {
    fn open(path: Option<&Path>) -> Reporter {
        let env = std::env::var_os(trainctl_core::progress::ENV).map(std::path::PathBuf::from);
        let out = path.map(Path::to_path_buf).or(env).and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Reporter {
            out,
            last: None,
            metric: None,
            last_step: None,
        }
    }

    fn report(&mut self, t: &Trainer, force: bool) {
        use std::io::Write;
        let Some(out) = &mut self.out else { return };
        if self.last_step == Some(t.st.step)
            || (!force && self.last.is_some_and(|l| l.elapsed() < REPORT_EVERY))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.last_step = Some(t.st.step);
        let line = trainctl_core::progress::Progress {
            step: t.st.step,
            total: Some(t.setup.total_steps),
            epoch: Some(t.st.epoch),
            epochs: Some(t.setup.hp.epochs),
            // The mean loss of the epoch in progress (of the last one, right after it ended).
            loss: if t.st.epoch_steps > 0 {
                Some(t.st.epoch_loss / t.st.epoch_steps as f64)
            } else {
                t.st.last_epoch_loss
            },
            metric: self.metric,
            metric_name: Some(t.setup.job.objective_metric.clone()),
        }
        .to_line();
        if out.write_all(line.as_bytes()).is_err() {
            self.out = None;
        }
    }
}

/// CPU time of this process (user + system), seconds; for the log line only.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other preconditions.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
}

/// Entity spans `(start, end, label)` in char offsets predicted for `text` by the model in
/// `dir` (a `checkpoint/` dir or an inference bundle: `config.json` + `model.safetensors`).
/// Consecutive tokens with the same label are merged. The whole text is used (no truncation).
pub fn predict(dir: &Path, text: &str) -> Result<Vec<(usize, usize, String)>, String> {
    let labels = checkpoint_labels(dir)?;
    let config = read_json(&dir.join(CONFIG_FILE))?;
    let f = config
        .get("features")
        .ok_or_else(|| format!("{}: no `features` section", dir.join(CONFIG_FILE).display()))?;
    let features = feature_config(&json!({
        "preprocessing": {"max_length": f.get("max_length"), "lowercase": f.get("lowercase")},
        "features": {"hash_dim": f.get("hash_dim"), "window": f.get("window"), "char_ngrams": f.get("char_ngrams")},
        "decoding": {"use_crf": f.get("use_crf")},
    }))?;
    let path = dir.join(MODEL_FILE);
    let tensors = ckpt::read_tensors(&path)?;
    let like = Params::zeros(features.hash_dim as usize, labels.len(), features.use_crf);
    let params = ckpt::params_from(&tensors, "", &like, false, &path)?;
    let tokens = text::tokenize(text);
    let ex = Example {
        feats: text::features(text, &tokens, &features),
        gold: vec![0; tokens.len()],
        tokens: tokens.iter().map(|t| (t.start, t.end)).collect(),
        gold_spans: Vec::new(),
    };
    let em = emissions(&params, &ex, None, false);
    let pred = model::decode(&params, &em, ex.len(), false);
    Ok(metrics::spans_of(&ex.tokens, &pred)
        .into_iter()
        .map(|(s, e, l)| (s, e, labels[l as usize].clone()))
        .collect())
}

#[cfg(test)]
mod tests;
