//! `trainctl pipeline`: the notebook flow of the Python original as one command (issue 7).
//!
//! Steps, each reported by a progress line and in the JSON summary: detect the environment;
//! load and validate the config; tracking; Drive check and restore (colab); best-model
//! selection (cached); skip or retrain; final training with the selected hyperparameters as
//! the best-configuration layer; backup; conversion. A second run reuses every step's result
//! and says so.

use crate::cmd::train::Live;
use crate::cmd::Env;
use crate::config::{Config, LoadOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::paths::Layout;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt;
use std::path::{Path, PathBuf};

/// Hyperparameter keys a selected candidate's `params` may set (the `training.*` layer).
pub const BEST_CONFIGURATION_KEYS: [&str; 9] = [
    "learning_rate",
    "epochs",
    "batch_size",
    "dropout",
    "weight_decay",
    "gradient_accumulation_steps",
    "warmup_steps",
    "max_grad_norm",
    "lr_scheduler",
];

/// The offline default candidates: without `--trials` and without HPO runs in the tracking
/// store, `fixtures/hpo/trials.json` under ROOT.
pub const DEFAULT_TRIALS: &str = "fixtures/hpo/trials.json";

/// How the user can run trainctl again: `trainctl` when it was found on PATH, else the path
/// it was started by (`cargo run` leaves it at `target/…/trainctl`, which is not on PATH).
fn invoked_as() -> String {
    match std::env::args_os().next() {
        Some(a) if std::path::Path::new(&a).components().count() > 1 => {
            a.to_string_lossy().into_owned()
        }
        _ => "trainctl".into(),
    }
}

/// The selected candidate's params as a best-configuration layer: known keys only (the rest
/// are named in a warning).
fn best_configuration(selected: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    let params = selected.get("params")?.as_object()?;
    let mut layer = serde_json::Map::new();
    let mut ignored = Vec::new();
    for (k, v) in params {
        if BEST_CONFIGURATION_KEYS.contains(&k.as_str()) {
            layer.insert(k.clone(), v.clone());
        } else {
            ignored.push(k.as_str());
        }
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "selected params not used as hyperparameters: {}",
            ignored.join(", ")
        ));
    }
    (!layer.is_empty()).then_some(Value::Object(layer))
}

/// The steps, in order. Each reports one progress line while it runs and one entry in the
/// summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Environment,
    Config,
    Tracking,
    Drive,
    Selection,
    Decide,
    Train,
    Backup,
    Convert,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Environment,
        Step::Config,
        Step::Tracking,
        Step::Drive,
        Step::Selection,
        Step::Decide,
        Step::Train,
        Step::Backup,
        Step::Convert,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Environment => "environment",
            Step::Config => "config",
            Step::Tracking => "tracking",
            Step::Drive => "drive",
            Step::Selection => "selection",
            Step::Decide => "decide",
            Step::Train => "train",
            Step::Backup => "backup",
            Step::Convert => "convert",
        }
    }

    /// 1-based, as the progress lines count.
    fn number(self) -> usize {
        Step::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }

    /// Whether the step produces something a second run reuses (the others check or decide,
    /// and run every time).
    fn produces(self) -> bool {
        !matches!(
            self,
            Step::Environment | Step::Config | Step::Tracking | Step::Decide
        )
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Not applicable here (no Drive off colab, no candidates, a selected final training).
    Skipped,
    /// Looked, nothing to do (the Drive mirror had nothing to restore).
    Checked,
    Restored,
    /// The previous run's result, unchanged.
    Reused,
    /// Decide: the selected run is already a final training on full data.
    Skip,
    /// Decide: the selected run is an HPO trial: a final training is needed.
    Retrain,
}

/// One step of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub status: Status,
    /// What the step used and made (its shape depends on the step).
    pub detail: Value,
}

/// What `pipeline` did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub steps: Vec<StepReport>,
    pub model_dir: PathBuf,
    pub bundle: PathBuf,
    /// Every producing step reused its previous result (or had nothing to do).
    pub reused_everything: bool,
    pub warnings: Vec<String>,
    /// The objective and span-f1 of the model, for humans.
    #[serde(skip)]
    pub metrics_line: Option<String>,
}

/// Everything the pipeline needs from the outside world.
pub struct World<'a> {
    pub env: &'a Env<'a>,
    /// How the final training shows its progress.
    pub live: &'a Live<'a>,
    /// A progress line for humans (stderr).
    pub progress: &'a dyn Fn(&str),
}

/// A pipeline under way: the steps done so far and the warnings gathered.
struct Run<'a> {
    world: &'a World<'a>,
    steps: Vec<StepReport>,
    warnings: Vec<String>,
}

impl Run<'_> {
    /// Records a finished step and says so.
    fn done(&mut self, step: Step, status: Status, line: &str, detail: Value) {
        (self.world.progress)(&format!(
            "[{}/{}] {}: {line}",
            step.number(),
            Step::ALL.len(),
            step.name()
        ));
        self.steps.push(StepReport {
            step,
            status,
            detail,
        });
    }

    fn now_us(&self) -> u64 {
        (self.world.live.now_us)()
    }
}

/// `reused`, or `ok` when the step made something new.
fn reused_or_ok(decision: &str) -> Status {
    if decision == "reuse" {
        Status::Reused
    } else {
        Status::Ok
    }
}

/// Steps 1-2: the environment and the configuration. Everything is checked now, before the
/// first write: the configuration, the data invariants and the source (init checkpoint,
/// parent); only a best_selected source without `checkpoint.source` waits for the selection
/// record this run writes in step 5.
fn environment_and_config(
    run: &mut Run<'_>,
) -> Result<(Config, Layout, Option<crate::fs::profile::Report>)> {
    let env = run.world.env;
    let config = env.config()?;
    let (name, reason) = (config.env.env.as_str(), config.env.reason.clone());
    let line = format!("{name} ({reason})");
    run.done(
        Step::Environment,
        Status::Ok,
        &line,
        json!({"env": name, "reason": reason}),
    );
    let layout = Layout::from_config(&config)?;
    crate::job::dataset_files(&config, env.fs)?;
    crate::job::preflight_source(&config, env.fs, env.host)?;
    let storage = crate::storage::establish_or_defer(&config, &layout.out)?.map(|s| s.report);
    let storage_line = storage.as_ref().map_or_else(
        || "unknown: its probe cannot write".to_string(),
        |s| s.line(),
    );
    let line = format!(
        "{} valid, OUT {} (storage {storage_line})",
        config.config_dir.display(),
        layout.out.display(),
    );
    let detail = json!({"config_dir": config.config_dir, "out": layout.out, "storage": storage});
    run.done(Step::Config, Status::Ok, &line, detail);
    Ok((config, layout, storage))
}

/// Step 3: which store the final training will log to (checked for reachability when
/// `tracking.required`).
fn tracking(run: &mut Run<'_>, config: &Config) -> Result<()> {
    let env = run.world.env;
    match crate::track::lifecycle::open_for_train(config, env.host.var, env.cwd)? {
        (Some(opened), w) => {
            run.warnings.extend(w);
            let detail = json!({"backend": opened.describe});
            run.done(Step::Tracking, Status::Ok, &opened.describe, detail);
        }
        (None, w) => {
            let why = w
                .first()
                .cloned()
                .unwrap_or_else(|| "tracking.training.enabled is false".into());
            run.warnings.extend(w);
            let line = format!("off ({why})");
            run.done(
                Step::Tracking,
                Status::Skipped,
                &line,
                json!({"reason": why}),
            );
        }
    }
    Ok(())
}

/// Step 4: on colab, check the Drive mirror and restore what OUT lacks.
fn drive(run: &mut Run<'_>, config: &Config, layout: &Layout) -> Result<()> {
    use crate::backup::Plan;
    let why = match crate::backup::plan(config, layout) {
        Plan::Mirror { drive_root, .. } => {
            let facts = run.world.env.host.facts(config.lease_timeout_s() * 1000);
            let restored = crate::backup::restore(config, layout, &facts)?;
            let line = format!(
                "mirror {} ; restored {} run(s)",
                drive_root.display(),
                restored.len()
            );
            let status = if restored.is_empty() {
                Status::Checked
            } else {
                Status::Restored
            };
            let detail = json!({"mirror": drive_root, "restored": restored});
            run.done(Step::Drive, status, &line, detail);
            return Ok(());
        }
        Plan::NotColab(env) => format!("{} has no Drive", env.as_str()),
        Plan::AlreadyOnDrive(m) => format!("OUT is on the Drive mount {}", m.display()),
        Plan::InABucket(out) => format!("OUT {} is a bucket: no Drive mirror", out.display()),
    };
    let line = format!("skipped ({why})");
    run.done(Step::Drive, Status::Skipped, &line, json!({"reason": why}));
    Ok(())
}

/// A trials file as candidates.
fn trials_file(run: &Run<'_>, path: &Path) -> Result<crate::select::Loaded> {
    Ok(crate::select::Loaded {
        candidates: crate::select::read_trials(run.world.env.fs, path)?,
        source: path.display().to_string(),
        warnings: Vec::new(),
    })
}

/// The candidates of step 5: `--trials`, else the tracking store's HPO runs, else the shipped
/// trials file (the offline default); `None` with the reasons when there are none.
fn candidates(
    run: &mut Run<'_>,
    config: &Config,
    trials: Option<&Path>,
) -> Result<std::result::Result<crate::select::Loaded, Vec<String>>> {
    let env = run.world.env;
    if let Some(p) = trials {
        return trials_file(run, &crate::convert::normalize(env.cwd, p)).map(Ok);
    }
    let mut notes = Vec::new();
    match crate::select::tracking_candidates(config, env.host.var, env.cwd) {
        Ok(l) if !l.candidates.is_empty() => return Ok(Ok(l)),
        Ok(l) => notes.push(format!("no HPO runs in {}", l.source)),
        Err(e) if e.kind == ErrorKind::Usage => {
            notes.push("tracking.selection.enabled is false".to_string())
        }
        Err(e) => {
            run.warnings
                .push(format!("{}; using {DEFAULT_TRIALS}", e.message));
            notes.push("the tracking store is unreadable".to_string());
        }
    }
    let p = config.root.join(DEFAULT_TRIALS);
    if env.fs.is_file(&p) {
        return trials_file(run, &p).map(Ok);
    }
    notes.push(format!("no --trials and no {DEFAULT_TRIALS}"));
    Ok(Err(notes))
}

/// The winner of step 5 and where the candidates came from.
struct Selected {
    candidate: Value,
    source: String,
}

/// Step 5: best-model selection (cached), or skipped without candidates.
fn selection(
    run: &mut Run<'_>,
    config: &Config,
    trials: Option<&Path>,
) -> Result<Option<Selected>> {
    let loaded = match candidates(run, config, trials)? {
        Ok(loaded) => loaded,
        Err(notes) => {
            let why = notes.join("; ");
            let line = format!("skipped ({why})");
            run.done(
                Step::Selection,
                Status::Skipped,
                &line,
                json!({"reason": why}),
            );
            return Ok(None);
        }
    };
    run.warnings.extend(loaded.warnings.iter().cloned());
    let now = run.now_us();
    let out = crate::select::select(
        config,
        run.world.env.fs,
        &loaded.candidates,
        &loaded.source,
        now,
    )?;
    run.warnings.extend(out.warnings.iter().cloned());
    let selected = out.payload["selected"].clone();
    let line = format!(
        "{} {} ({} {}) from {}, record {}",
        if out.decision == "reuse" {
            "reused"
        } else {
            "selected"
        },
        selected["run_id"].as_str().unwrap_or("?"),
        selected["objective_metric"].as_str().unwrap_or(""),
        selected["objective"],
        loaded.source,
        out.record
    );
    let detail = json!({"source": loaded.source, "record": out.record, "key": out.key, "selected": selected});
    run.done(Step::Selection, reused_or_ok(out.decision), &line, detail);
    Ok(Some(Selected {
        candidate: selected,
        source: loaded.source,
    }))
}

/// Steps 6-7 when the selected run is already a final training on full data: its
/// checkpoint's variant is the model, nothing is trained.
fn skip_training(run: &mut Run<'_>, config: &Config, selected: &Value) -> Result<PathBuf> {
    let ckpt = selected["checkpoint"].as_str().ok_or_else(|| {
        Error::new(
            ErrorKind::SelectionMissing,
            "the selected run is a final training on full data but names no checkpoint",
        )
    })?;
    let ckpt = crate::paths::DatasetPath::parse(ckpt).resolve(
        ckpt,
        &config.root,
        "selected.checkpoint",
    )?;
    let variant_dir = ckpt.parent().map(Path::to_path_buf).unwrap_or(ckpt);
    let line = format!(
        "skip training: the selected run is already a final training on full data ({})",
        variant_dir.display()
    );
    let detail = json!({"reason": "selected run is a final training on full data", "variant_dir": variant_dir});
    run.done(Step::Decide, Status::Skip, &line, detail);
    run.done(Step::Train, Status::Skipped, "skipped", json!({}));
    Ok(variant_dir)
}

/// Steps 6-7 otherwise: the final training with the selected hyperparameters as the
/// best-configuration layer (a complete final training of them is reused).
fn final_training(
    run: &mut Run<'_>,
    opts: &LoadOptions,
    layout: &Layout,
    storage: Option<&crate::fs::profile::Report>,
) -> Result<PathBuf> {
    run.done(
        Step::Decide,
        Status::Retrain,
        "final training needed: the selected run is an HPO trial, not a final training on full data (a complete final training of it is reused)",
        json!({}),
    );
    let world = run.world;
    let env = Env { opts, ..*world.env };
    let job = crate::job::prepare(env.config()?, env.fs, env.host)?;
    let report = crate::cmd::train::execute(&env, world.live, &job)
        .map_err(|e| crate::storage::on_out(e, &layout.out, storage))?;
    run.warnings.extend(report.warnings.iter().cloned());
    let decision = report.decision.name();
    let variant = report.decision.variant();
    let line = format!("{decision} v{variant} {}", report.output_dir.display());
    let detail = json!({
        "decision": decision,
        "variant": variant,
        "output_dir": report.output_dir,
        "run_name": report.run_name,
        "spec_fp": job.spec_fp(),
        "exec_fp": job.exec_fp(),
        "hyperparameters": job.config.hyperparameters,
        "metrics": report.metrics,
    });
    run.done(Step::Train, reused_or_ok(decision), &line, detail);
    Ok(report.output_dir)
}

/// Step 8: the Drive backup of the model (colab), or why there is none.
fn backup(run: &mut Run<'_>, config: &Config, layout: &Layout, variant_dir: &Path) -> Result<()> {
    let backup = crate::backup::after_run(config, layout, variant_dir)?;
    if let Some(why) = &backup.skipped {
        let line = format!("skipped ({why})");
        run.done(Step::Backup, Status::Skipped, &line, json!({"reason": why}));
        return Ok(());
    }
    let copied = backup
        .units
        .iter()
        .filter(|u| u.outcome == "copied")
        .count();
    let line = format!(
        "{copied} copied, {} up to date",
        backup.units.len() - copied
    );
    let status = if copied == 0 {
        Status::Reused
    } else {
        Status::Ok
    };
    run.done(Step::Backup, status, &line, json!({"units": backup.units}));
    Ok(())
}

/// Step 9: the serving bundle of the model; returns its dir.
fn convert(run: &mut Run<'_>, config: &Config, variant_dir: &Path) -> Result<PathBuf> {
    let env = run.world.env;
    let now_us = run.world.live.now_us;
    let now = || crate::cache::rfc3339(now_us());
    let from = crate::convert::From::Dir(variant_dir.to_path_buf());
    let mut conv = crate::convert::convert(config, env.fs, env.host, env.cwd, &from, &now)?;
    let now_ms = (now_us() / 1000) as i64;
    let tracking =
        crate::track::lifecycle::after_conversion(config, env.host.var, env.cwd, &mut conv, now_ms);
    run.warnings.extend(conv.warnings.iter().cloned());
    let verb = if conv.decision == "reuse" {
        "reused"
    } else {
        "converted"
    };
    let line = format!("{verb} {}", conv.output_dir.display());
    let detail = json!({"output_dir": conv.output_dir, "conv_fp": conv.conv_fp, "run_name": conv.run_name, "tracking": tracking});
    run.done(Step::Convert, reused_or_ok(conv.decision), &line, detail);
    Ok(conv.output_dir)
}

/// The objective and span-f1 of a variant's metrics.json, for humans.
fn metrics_line(run: &Run<'_>, config: &Config, variant_dir: &Path) -> Option<String> {
    let bytes = run
        .world
        .env
        .fs
        .read(&variant_dir.join(crate::completion::METRICS_FILE))
        .ok()?;
    let m: Value = serde_json::from_slice(&bytes).ok()?;
    let objective = config.objective_metric();
    let shown: Vec<String> = [objective.as_str(), "span-f1"]
        .iter()
        .filter_map(|k| {
            m.get(*k)
                .and_then(Value::as_f64)
                .map(|v| format!("{k} {v:.4}"))
        })
        .collect();
    Some(shown.join(", "))
}

/// Runs the pipeline: the steps in order, each one's result reported; the first error stops
/// it (what earlier steps made stays, and a second run reuses it).
pub fn run(trials: Option<&Path>, world: &World<'_>) -> Result<Report> {
    let mut run = Run {
        world,
        steps: Vec::new(),
        warnings: Vec::new(),
    };
    let (config, layout, storage) = environment_and_config(&mut run)?;
    tracking(&mut run, &config)?;
    drive(&mut run, &config, &layout)?;
    let selected = selection(&mut run, &config, trials)?;
    let full_data = |s: &Selected| {
        s.candidate
            .get("trained_on_full_data")
            .and_then(Value::as_bool)
    };
    let variant_dir = match &selected {
        Some(s) if full_data(s) == Some(true) => skip_training(&mut run, &config, &s.candidate)?,
        _ => {
            let mut opts = world.env.opts.clone();
            let layer = selected.as_ref().and_then(|s| {
                let layer = best_configuration(&s.candidate, &mut run.warnings)?;
                let run_id = s.candidate["run_id"].as_str().unwrap_or("?");
                Some((
                    format!("best configuration ({run_id} in {})", s.source),
                    layer,
                ))
            });
            opts.best_configuration = layer;
            final_training(&mut run, &opts, &layout, storage.as_ref())?
        }
    };
    backup(&mut run, &config, &layout, &variant_dir)?;
    let bundle = convert(&mut run, &config, &variant_dir)?;
    let reused_everything = run
        .steps
        .iter()
        .filter(|s| s.step.produces())
        .all(|s| matches!(s.status, Status::Reused | Status::Skipped | Status::Checked));
    Ok(Report {
        metrics_line: metrics_line(&run, &config, &variant_dir),
        steps: run.steps,
        model_dir: variant_dir,
        bundle,
        reused_everything,
        warnings: run.warnings,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model: {}", self.model_dir.display())?;
        if let Some(m) = &self.metrics_line {
            writeln!(f, "metrics: {m}")?;
        }
        writeln!(
            f,
            "bundle: {}\ntry it: {} predict --bundle {} \"Jane Doe is a data engineer in Berlin\"",
            self.bundle.display(),
            invoked_as(),
            self.bundle.display()
        )?;
        if self.reused_everything {
            writeln!(
                f,
                "everything was already done: every step reused its previous result"
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
