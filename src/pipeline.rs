//! `trainctl pipeline`: the notebook flow of the Python original as one command (issue 7).
//!
//! Steps, each reported by a progress line and in the JSON summary: detect the environment;
//! load and validate the config; tracking; Drive check and restore (colab); best-model
//! selection (cached); skip or retrain; final training with the selected hyperparameters as
//! the best-configuration layer; backup; conversion. A second run reuses every step's result
//! and says so.

use crate::config::{self, LoadOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::Fs;
use crate::job::{self, Host};
use crate::paths::Layout;
use serde_json::{json, Value};
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

/// One step of the summary.
fn step(name: &str, status: &str, detail: Value) -> Value {
    json!({"step": name, "status": status, "detail": detail})
}

/// Everything the pipeline needs from the outside world.
pub struct World<'a> {
    pub fs: &'a dyn Fs,
    pub host: &'a Host<'a>,
    pub cwd: &'a Path,
    pub now_us: &'a dyn Fn() -> u64,
    /// The trainer of a prepared job (the CLI passes the built-in/command trainer).
    pub trainer_for: &'a dyn Fn(&job::Job) -> Result<crate::trainer::CommandTrainer>,
    /// A progress line for humans (stderr).
    pub progress: &'a dyn Fn(&str),
    /// The final training's live progress (docs/contract.md, "Live progress").
    pub training: &'a crate::progress::Display,
    /// Whether waiting notices are printed (not under `--quiet`).
    pub quiet: bool,
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

/// Runs the pipeline; returns the summary document and its human rendering.
pub fn run(
    opts: &LoadOptions,
    trials: Option<&Path>,
    world: &World<'_>,
) -> Result<(Value, String)> {
    let mut steps = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let total = 9;
    let say = |i: usize, name: &str, line: &str| {
        (world.progress)(&format!("[{i}/{total}] {name}: {line}"))
    };

    // 1-2. environment and config.
    let config = config::load(opts, world.cwd, world.host.var)?;
    say(
        1,
        "environment",
        &format!("{} ({})", config.env.env.as_str(), config.env.reason),
    );
    steps.push(step(
        "environment",
        "ok",
        json!({"env": config.env.env.as_str(), "reason": config.env.reason}),
    ));
    let layout = Layout::from_config(&config)?;
    // The configuration, the data invariants and the source (init checkpoint, parent) are
    // checked now, before the first write; only a best_selected source without
    // `checkpoint.source` waits for the selection record this run writes in step 5.
    job::dataset_files(&config, world.fs)?;
    job::preflight_source(&config, world.fs, world.host)?;
    let storage = crate::storage::establish_or_defer(&config, &layout.out)?;
    let storage_line = storage.as_ref().map_or_else(
        || "unknown: its probe cannot write".to_string(),
        |s| s.report.line(),
    );
    say(
        2,
        "config",
        &format!(
            "{} valid, OUT {} (storage {})",
            config.config_dir.display(),
            layout.out.display(),
            storage_line
        ),
    );
    steps.push(step(
        "config",
        "ok",
        json!({"config_dir": config.config_dir, "out": layout.out, "storage": storage.as_ref().map(|s| &s.report)}),
    ));

    // 3. tracking: which store the final training will log to (checked for reachability
    // when `tracking.required`).
    match crate::track::lifecycle::open_for_train(&config, world.host.var, world.cwd)? {
        (Some(opened), w) => {
            say(3, "tracking", &opened.describe);
            warnings.extend(w);
            steps.push(step("tracking", "ok", json!({"backend": opened.describe})));
        }
        (None, w) => {
            let why = w
                .first()
                .cloned()
                .unwrap_or_else(|| "tracking.training.enabled is false".into());
            say(3, "tracking", &format!("off ({why})"));
            warnings.extend(w);
            steps.push(step("tracking", "skipped", json!({"reason": why})));
        }
    }

    // 4. Drive check and restore.
    let facts = world.host.facts(config.lease_timeout_s() * 1000);
    match crate::backup::plan(&config, &layout) {
        crate::backup::Plan::Mirror { drive_root, .. } => {
            let restored = crate::backup::restore(&config, &layout, &facts)?;
            say(
                4,
                "drive",
                &format!(
                    "mirror {} ; restored {} run(s)",
                    drive_root.display(),
                    restored.len()
                ),
            );
            steps.push(step(
                "drive",
                if restored.is_empty() {
                    "checked"
                } else {
                    "restored"
                },
                json!({"mirror": drive_root, "restored": restored}),
            ));
        }
        other => {
            let why = match other {
                crate::backup::Plan::NotColab(env) => format!("{} has no Drive", env.as_str()),
                crate::backup::Plan::AlreadyOnDrive(m) => {
                    format!("OUT is on the Drive mount {}", m.display())
                }
                crate::backup::Plan::InABucket(out) => {
                    format!("OUT {} is a bucket: no Drive mirror", out.display())
                }
                crate::backup::Plan::Mirror { .. } => unreachable!("handled above"),
            };
            say(4, "drive", &format!("skipped ({why})"));
            steps.push(step("drive", "skipped", json!({"reason": why})));
        }
    }

    // 5. selection: `--trials`, else the tracking store's HPO runs, else the shipped
    // trials file (the offline default), else skipped.
    let mut selection_notes = Vec::new();
    let loaded: Option<crate::select::Loaded> = match trials {
        Some(p) => {
            let path = crate::convert::normalize(world.cwd, p);
            Some(crate::select::Loaded {
                candidates: crate::select::read_trials(world.fs, &path)?,
                source: path.display().to_string(),
                warnings: Vec::new(),
            })
        }
        None => {
            let tracked =
                match crate::select::tracking_candidates(&config, world.host.var, world.cwd) {
                    Ok(l) if !l.candidates.is_empty() => Some(l),
                    Ok(l) => {
                        selection_notes.push(format!("no HPO runs in {}", l.source));
                        None
                    }
                    Err(e) if e.kind == ErrorKind::Usage => {
                        selection_notes.push("tracking.selection.enabled is false".to_string());
                        None
                    }
                    Err(e) => {
                        warnings.push(format!("{}; using {DEFAULT_TRIALS}", e.message));
                        selection_notes.push("the tracking store is unreadable".to_string());
                        None
                    }
                };
            match tracked {
                Some(l) => Some(l),
                None => {
                    let p = config.root.join(DEFAULT_TRIALS);
                    if world.fs.is_file(&p) {
                        Some(crate::select::Loaded {
                            candidates: crate::select::read_trials(world.fs, &p)?,
                            source: p.display().to_string(),
                            warnings: Vec::new(),
                        })
                    } else {
                        None
                    }
                }
            }
        }
    };
    let mut selected = Value::Null;
    let mut best_layer = None;
    match &loaded {
        Some(loaded) => {
            warnings.extend(loaded.warnings.iter().cloned());
            let out = crate::select::select(
                &config,
                world.fs,
                &loaded.candidates,
                &loaded.source,
                (world.now_us)(),
            )?;
            warnings.extend(out.warnings.iter().cloned());
            selected = out.payload["selected"].clone();
            best_layer = best_configuration(&selected, &mut warnings);
            say(
                5,
                "selection",
                &format!(
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
                ),
            );
            steps.push(step(
                "selection",
                if out.decision == "reuse" {
                    "reused"
                } else {
                    "ok"
                },
                json!({"source": loaded.source, "record": out.record, "key": out.key, "selected": selected}),
            ));
        }
        None => {
            selection_notes.push(format!("no --trials and no {DEFAULT_TRIALS}"));
            let why = selection_notes.join("; ");
            say(5, "selection", &format!("skipped ({why})"));
            steps.push(step("selection", "skipped", json!({"reason": why})));
        }
    }

    // 6-7. skip or retrain, then final training with the best configuration.
    let reuse_selected = selected
        .get("trained_on_full_data")
        .and_then(Value::as_bool)
        == Some(true);
    let mut opts = opts.clone();
    if let (Some(layer), Some(loaded)) = (&best_layer, &loaded) {
        let label = format!(
            "best configuration ({} in {})",
            selected["run_id"].as_str().unwrap_or("?"),
            loaded.source
        );
        opts.best_configuration = Some((label, layer.clone()));
    }
    let variant_dir: PathBuf;
    if reuse_selected {
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
        variant_dir = ckpt.parent().map(Path::to_path_buf).unwrap_or(ckpt);
        say(
            6,
            "decide",
            &format!(
                "skip training: the selected run is already a final training on full data ({})",
                variant_dir.display()
            ),
        );
        steps.push(step("decide", "skip", json!({"reason": "selected run is a final training on full data", "variant_dir": variant_dir})));
        say(7, "train", "skipped");
        steps.push(step("train", "skipped", json!({})));
    } else {
        say(
            6,
            "decide",
            "final training needed: the selected run is an HPO trial, not a final training on full data (a complete final training of it is reused)",
        );
        steps.push(step("decide", "retrain", json!({})));
        let config = config::load(&opts, world.cwd, world.host.var)?;
        let job = job::prepare(config, world.fs, world.host)?;
        let trainer = (world.trainer_for)(&job)?;
        let (opened, tracking_warnings) =
            crate::track::lifecycle::open_for_train(&job.config, world.host.var, world.cwd)?;
        warnings.extend(tracking_warnings);
        let training = |p: &crate::progress::Progress| world.training.show(p);
        let ctx = crate::train::Context {
            waiting: if world.quiet {
                crate::train::waiting_silently()
            } else {
                crate::train::waiting_on_stderr()
            },
            progress: &training,
            fs: world.fs,
            host: world.host,
            owner: crate::lease::Owner::current(),
            trainer: &trainer,
            now_us: world.now_us,
            tracking: opened.as_ref().map(|o| crate::train::Tracking {
                tracker: o.tracker.as_ref(),
                backend: &o.describe,
            }),
        };
        let report = crate::train::train(&job, &ctx);
        world.training.finish();
        let report = report
            .map_err(|e| crate::cli::on_out(e, &layout.out, storage.as_ref().map(|s| &s.report)))?;
        warnings.extend(report.warnings.iter().cloned());
        variant_dir = report.output_dir.clone();
        let decision = report.decision.name();
        say(
            7,
            "train",
            &format!(
                "{decision} v{} {}",
                report.decision.variant(),
                variant_dir.display()
            ),
        );
        steps.push(step(
            "train",
            if decision == "reuse" { "reused" } else { "ok" },
            json!({
                "decision": decision,
                "variant": report.decision.variant(),
                "output_dir": variant_dir,
                "run_name": report.run_name,
                "spec_fp": job.spec_fp(),
                "exec_fp": job.exec_fp(),
                "hyperparameters": job.config.hyperparameters,
                "metrics": report.metrics,
            }),
        ));
    }

    // 8. backup.
    let backup = crate::backup::after_run(&config, &layout, &variant_dir)?;
    match &backup.skipped {
        Some(why) => {
            say(8, "backup", &format!("skipped ({why})"));
            steps.push(step("backup", "skipped", json!({"reason": why})));
        }
        None => {
            let copied = backup
                .units
                .iter()
                .filter(|u| u.outcome == "copied")
                .count();
            say(
                8,
                "backup",
                &format!(
                    "{copied} copied, {} up to date",
                    backup.units.len() - copied
                ),
            );
            steps.push(step(
                "backup",
                if copied == 0 { "reused" } else { "ok" },
                json!({"units": backup.units}),
            ));
        }
    }

    // 9. conversion.
    let now = || crate::cache::rfc3339((world.now_us)());
    let mut conv = crate::convert::convert(
        &config,
        world.fs,
        world.host,
        world.cwd,
        &crate::convert::From::Dir(variant_dir.clone()),
        &now,
    )?;
    let conv_tracking = crate::track::lifecycle::after_conversion(
        &config,
        world.host.var,
        world.cwd,
        &mut conv,
        ((world.now_us)() / 1000) as i64,
    );
    warnings.extend(conv.warnings.iter().cloned());
    say(
        9,
        "convert",
        &format!(
            "{} {}",
            if conv.decision == "reuse" {
                "reused"
            } else {
                "converted"
            },
            conv.output_dir.display()
        ),
    );
    steps.push(step(
        "convert",
        if conv.decision == "reuse" {
            "reused"
        } else {
            "ok"
        },
        json!({"output_dir": conv.output_dir, "conv_fp": conv.conv_fp, "run_name": conv.run_name, "tracking": conv_tracking}),
    ));

    let reused_everything = steps
        .iter()
        .filter(|s| {
            !matches!(
                s["step"].as_str(),
                Some("environment" | "config" | "tracking" | "decide")
            )
        })
        .all(|s| matches!(s["status"].as_str(), Some("reused" | "skipped" | "checked")));
    let mut human = String::new();
    human.push_str(&format!("model: {}\n", variant_dir.display()));
    let metrics_path = variant_dir.join(crate::completion::METRICS_FILE);
    if let Some(m) = world
        .fs
        .read(&metrics_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        let objective = config.objective_metric();
        let shown: Vec<String> = [objective.as_str(), "span-f1"]
            .iter()
            .filter_map(|k| {
                m.get(*k)
                    .and_then(Value::as_f64)
                    .map(|v| format!("{k} {v:.4}"))
            })
            .collect();
        human.push_str(&format!("metrics: {}\n", shown.join(", ")));
    }
    human.push_str(&format!(
        "bundle: {}\ntry it: {} predict --bundle {} \"Jane Doe is a data engineer in Berlin\"\n",
        conv.output_dir.display(),
        invoked_as(),
        conv.output_dir.display()
    ));
    if reused_everything {
        human.push_str("everything was already done: every step reused its previous result\n");
    }
    for w in &warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok((
        json!({
            "steps": steps,
            "model_dir": variant_dir,
            "bundle": conv.output_dir,
            "reused_everything": reused_everything,
            "warnings": warnings,
        }),
        human,
    ))
}
