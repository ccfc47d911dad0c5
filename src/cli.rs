//! The command line (SPEC §10): argument parsing, the commands, human and `--json` output,
//! and the one place that maps errors to exit codes.

use crate::config::{self, LoadOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::Fs;
use crate::job::{self, Host};
use crate::plan::{self, VariantOracle};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

/// Examples shown under `--help`.
const EXAMPLES: &str = "Examples:
  trainctl plan                                   what `train` would do, writing nothing
  trainctl train                                  train, or reuse a complete variant
  trainctl -o run.mode=force_new train            always a new variant
  trainctl -o run.mode=resume_if_incomplete train finish an interrupted variant
  trainctl -o train:training.epochs=8 train       another hyperparameter (train.yaml)
  trainctl -o paths:base.outputs=/mnt/out status  every variant under another OUT
  trainctl --json config show                     every value with where it came from

Exit codes: 0 ok, 1 internal, 2 usage or config, 3 precondition, 4 busy, 5 training failed,
6 storage (full, read-only, permission, I/O), 7 `cache check` found problems.
The contract: docs/contract.md in the repository.";

#[derive(Parser, Debug)]
#[command(
    name = "trainctl",
    version,
    about = "Final-training orchestrator: plan, train, track, cache, convert",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Project root (default: nearest ancestor of the cwd holding config/).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Config directory (default: ROOT/config).
    #[arg(long, global = true)]
    pub config_dir: Option<PathBuf>,
    /// Experiment under CONFIG/experiment/ (default: resume_ner_baseline).
    #[arg(long, global = true)]
    pub experiment: Option<String>,
    /// Storage environment: local, colab, kaggle or azureml (default: detected).
    #[arg(long, global = true)]
    pub env: Option<String>,
    /// Override a config value: `[file:]dotted.key=value` (file defaults to final_training).
    #[arg(
        short = 'o',
        long = "override",
        global = true,
        value_name = "KEY=VALUE"
    )]
    pub overrides: Vec<String>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on stderr while working: no progress, no waiting notices (warnings
    /// and errors are still reported).
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// How `train` and `pipeline` show the trainer's progress on stderr: a bar on a
    /// terminal and a line every 10 s elsewhere (auto), or one of them always, or none.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "STYLE"
    )]
    pub progress: crate::progress::Style,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Decide what `train` would do, writing nothing.
    #[command(after_help = "Examples:
  trainctl plan                              what `train` would do now
  trainctl -o run.mode=force_new plan        the number a new variant would get
  trainctl --json plan                       the decision with both fingerprints")]
    Plan,
    /// Decide and execute: allocate or lease a variant, train, verify, record, cache.
    #[command(after_help = "Examples:
  trainctl train                                    train, or reuse a complete variant
  trainctl -o run.mode=force_new train              always a new variant
  trainctl -o run.mode=resume_if_incomplete train   finish the highest interrupted variant
  trainctl -o run.mode=resume_if_incomplete -o variant.number=3 train   resume v3
  trainctl -o train:training.epochs=8 train         another hyperparameter (train.yaml)
  trainctl -o checkpoint.keep_last=all train        keep every step checkpoint
  trainctl -q --json train                          no progress, one JSON document")]
    Train,
    /// List variants under OUT: state and reason, created/finished times, run name and
    /// tracking state, objective metric, size, and who holds each (running or abandoned).
    #[command(after_help = "Examples:
  trainctl status                          every variant under OUT
  trainctl status --state incomplete       only the ones that need a resume or gc
  trainctl status --identity spec-93702a67 one identity
  trainctl status --deep                   also re-hash every checkpoint file")]
    Status {
        /// Also re-hash every manifest file (sha256).
        #[arg(long)]
        deep: bool,
        /// Only variants whose identity path contains this text.
        #[arg(long, value_name = "TEXT")]
        identity: Option<String>,
        /// Only variants in this state: complete, running, incomplete or invalid (a file or
        /// symlink where a variant should be).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
    },
    /// Show or check the merged configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Internal: the built-in trainer, run by `train` as a subprocess (job file in
    /// `TRAINCTL_JOB`).
    #[command(name = "__builtin-train", hide = true)]
    BuiltinTrain,
    /// Convert a complete final training for serving; the built-in converter
    /// writes an inference bundle that `predict` loads.
    #[command(after_help = "Examples:
  trainctl convert --latest                      the newest complete final training
  trainctl convert --from OUT/final_training/local/builtin/spec-…_exec-…/v2")]
    Convert {
        /// The final-training variant dir (…/spec-<spec8>_exec-<exec8>/v<N>).
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "latest",
            required_unless_present = "latest"
        )]
        from: Option<PathBuf>,
        /// The latest complete final training of the configured model and storage_env.
        #[arg(long)]
        latest: bool,
    },
    /// Best-model selection: rank HPO candidates, record the winner in the
    /// best_model_selection cache (reused when config and candidates are unchanged).
    #[command(after_help = "Examples:
  trainctl select                                 HPO runs of the tracking store (else the fixture)
  trainctl select --trials fixtures/hpo/trials.json
  trainctl -o best_model_selection:objective.metric=macro-f1 select")]
    Select {
        /// Candidates as JSON (schema in docs/contract.md); without it, the HPO runs of the
        /// tracking store (experiment `<experiment>-hpo-<model>`), and when it has none,
        /// ROOT/fixtures/hpo/trials.json if present (as `pipeline` does).
        #[arg(long, value_name = "FILE")]
        trials: Option<PathBuf>,
    },
    /// The whole flow: environment, config, tracking, Drive restore, selection (cached),
    /// skip-or-retrain, final training, backup, conversion. Each step reports a line;
    /// a second run reuses everything.
    #[command(after_help = "Examples:
  trainctl pipeline                              the whole flow on the shipped config, offline
  trainctl pipeline --trials my_trials.json      other HPO candidates
  trainctl --env colab pipeline                  as on Colab (backup to the Drive mount)")]
    Pipeline {
        /// HPO candidates (default: ROOT/fixtures/hpo/trials.json when present).
        #[arg(long, value_name = "FILE")]
        trials: Option<PathBuf>,
    },
    /// Drive backup (colab only): mirror complete variants, conversion outputs and
    /// caches to the Drive mount; verified copy, then an atomic swap.
    Backup,
    /// List what OUT no longer needs; with --apply, remove it: step checkpoints beyond
    /// checkpoint.keep_last, abandoned incomplete variants, interrupted-write debris.
    /// Never a complete variant's final artifacts, a live lease, or a cache record.
    #[command(after_help = "Examples:
  trainctl gc                          what would be removed, and how many bytes
  trainctl gc --apply                  remove it
  trainctl gc --apply --older-than 2h  also variants whose owner was silent for 2 hours")]
    Gc {
        /// Remove (without it, gc only lists: a dry run).
        #[arg(long)]
        apply: bool,
        /// An incomplete variant nobody holds is abandoned once its owner was silent this
        /// long: seconds, or `90s`, `30m`, `2h` (default 24h).
        #[arg(long, value_name = "DURATION")]
        older_than: Option<String>,
    },
    /// Tag the entities in TEXT with an inference bundle (or a built-in checkpoint dir).
    Predict {
        /// A conversion output dir (or a `checkpoint/` dir of the built-in trainer).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// The text to tag.
        text: String,
    },
    /// Check or repair the dual-file caches (records, latest, index).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Tracking-store maintenance (MLflow).
    Track {
        #[command(subcommand)]
        action: TrackAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrackAction {
    /// Upload the complete variants whose run the tracking store missed during training
    /// (`status` flags them); idempotent: a run that exists is finished, never duplicated.
    Sync {
        /// Also upload variants trained with tracking off.
        #[arg(long)]
        include_untracked: bool,
        /// List what would be uploaded; contact nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// Report inconsistencies between records and their views (read-only).
    Check {
        /// One cache: final_training, best_model_selection or best_configurations.
        kind: Option<String>,
    },
    /// Rebuild latest and index from the records; remove interrupted-write debris.
    Repair { kind: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print every effective value with where it came from, and the fingerprints.
    Show,
    /// Load and validate everything `plan` needs; exit 0 when valid.
    Check,
}

/// What a command prints: a JSON document and the human rendering of it, and its exit code
/// when it succeeded (0, or [`CHECK_FOUND_PROBLEMS`]).
pub struct Output {
    pub json: Value,
    pub human: String,
    pub code: i32,
}

/// The exit code of a check that ran and found problems (`cache check`): its report is the
/// normal output, not an error document (docs/contract.md, "Exit codes").
pub const CHECK_FOUND_PROBLEMS: i32 = 7;

fn load_options(g: &Global) -> LoadOptions {
    LoadOptions {
        root: g.root.clone(),
        config_dir: g.config_dir.clone(),
        experiment: g.experiment.clone(),
        env: g.env.clone(),
        overrides: g.overrides.clone(),
        best_configuration: None,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs one parsed command against the real world (OsFs, env vars, git, /proc).
pub fn run(cli: &Cli) -> Result<Output> {
    let cwd = std::env::current_dir().map_err(|e| Error::internal(format!("current dir: {e}")))?;
    let host = Host {
        var: &env_var,
        now_ms: now_ms(),
        hostname: crate::lease::this_host(),
        process_start_time: &crate::lease::process_start_time,
        git: &job::git_state,
    };
    // OUT may be a bucket (`s3://…`): its paths go to the object store, the rest to OsFs.
    let fs = crate::store::cloud::CloudFs::new();
    let opts = load_options(&cli.global);
    match &cli.command {
        Command::Plan => plan_command(&opts, &cwd, &fs, &host),
        Command::Train => {
            crate::trainer::install_signal_forwarding();
            let display = crate::progress::Display::new(
                cli.global.progress,
                cli.global.quiet,
                cli.global.json,
                "train",
            );
            let out = train_command(&opts, &cwd, &fs, &host, &now_us, &display, cli.global.quiet);
            display.finish();
            out
        }
        Command::Cache { action } => cache_command(&opts, &cwd, &fs, &host, action),
        Command::BuiltinTrain => {
            let job = std::env::var_os("TRAINCTL_JOB").ok_or_else(|| {
                Error::new(ErrorKind::Usage, "__builtin-train needs TRAINCTL_JOB")
            })?;
            crate::builtin::run(std::path::Path::new(&job))
                .map_err(|m| Error::new(ErrorKind::TrainingFailed, m))?;
            Ok(Output {
                code: 0,
                json: json!({"ok": true}),
                human: String::new(),
            })
        }
        Command::Status {
            deep,
            identity,
            state,
        } => {
            let filter = crate::cmd::status::Filter {
                identity: identity.clone(),
                state: state.clone(),
            };
            status_command(&opts, &cwd, &fs, &host, *deep, &filter)
        }
        Command::Convert { from, latest } => {
            let from = match (from, latest) {
                (Some(dir), false) => crate::convert::From::Dir(dir.clone()),
                _ => crate::convert::From::Latest,
            };
            convert_command(&opts, &cwd, &fs, &host, &from)
        }
        Command::Select { trials } => select_command(&opts, &cwd, &fs, &host, trials.as_deref()),
        Command::Backup => backup_command(&opts, &cwd, &host),
        Command::Gc { apply, older_than } => {
            gc_command(&opts, &cwd, &fs, &host, *apply, older_than.as_deref())
        }
        Command::Track {
            action:
                TrackAction::Sync {
                    include_untracked,
                    dry_run,
                },
        } => track_sync_command(&opts, &cwd, &fs, &host, *include_untracked, *dry_run),
        Command::Pipeline { trials } => {
            crate::trainer::install_signal_forwarding();
            let quiet = cli.global.quiet;
            let progress = |line: &str| {
                if !quiet {
                    eprintln!("{line}")
                }
            };
            let display = crate::progress::Display::new(
                cli.global.progress,
                quiet,
                cli.global.json,
                "pipeline train",
            );
            let world = crate::pipeline::World {
                training: &display,
                quiet,
                fs: &fs,
                host: &host,
                cwd: &cwd,
                now_us: &now_us,
                trainer_for: &trainer_for,
                progress: &progress,
            };
            let (json, human) = crate::pipeline::run(&opts, trials.as_deref(), &world)?;
            Ok(Output {
                code: 0,
                json,
                human,
            })
        }
        Command::Predict { bundle, text } => predict_command(&fs, &cwd, bundle, text),
        Command::Config {
            action: ConfigAction::Show,
        } => config_show(&opts, &cwd, &fs, &host),
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let config = config::load(&opts, &cwd, host.var)?;
            let job = job::prepare(config, &fs, &host)?;
            // Variant 1 stands for any: the checks depend on the name's shape, not its number.
            job.preflight(1)?;
            Ok(Output {
                code: 0,
                json: json!({"ok": true, "spec_fp": job.spec_fp(), "exec_fp": job.exec_fp(), "warnings": job.warnings}),
                human: format!(
                    "config ok (spec_fp {}, exec_fp {})\n",
                    job.spec_fp(),
                    job.exec_fp()
                ),
            })
        }
    }
}

/// `trainctl plan`: the decision, with everything `train` would use. Reads only.
pub fn plan_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let job = job::prepare(config, fs, host)?;
    let facts = host.facts(job.config.lease_timeout_s() * 1000);
    let request = job.request();
    let (variants, decision) =
        crate::observe::decide(fs, &job.layout, &job.identity, &facts, &request)?;
    let variant = decision.variant();
    let output_dir = job.layout.variant_dir(&job.identity, variant)?;
    let (run_name, _) = job.run_name(variant)?;
    let name_warnings = job.preflight(variant)?;
    let mut warnings = job.warnings.clone();
    warnings.extend(variants.unverified_warnings());
    warnings.extend(name_warnings);
    let reason = match decision {
        plan::Decision::Resume { .. } => {
            variants.observe(variant).0.reason().map(|r| r.to_string())
        }
        _ => None,
    };
    let doc = json!({
        "decision": decision.name(),
        "variant": variant,
        "mode": job.config.mode().as_str(),
        "output_dir": output_dir,
        "spec_fp": job.spec_fp(),
        "exec_fp": job.exec_fp(),
        "run_name": run_name,
        "storage_env": job.identity.storage_env.as_str(),
        "model": job.identity.model,
        "experiment": job.config.experiment_name,
        "out": job.layout.out,
        "source": source_json(&job),
        "existing_variants": variants.numbers().len(),
        "resume_reason": reason,
        "warnings": warnings,
    });
    let mut human = format!(
        "decision: {} v{variant} ({})\noutput_dir: {}\nrun_name: {run_name}\nspec_fp: {}  exec_fp: {}\nstorage_env: {}  model: {}  source: {}\n",
        decision.name(),
        job.config.mode().as_str(),
        output_dir.display(),
        job.spec_fp(),
        job.exec_fp(),
        job.identity.storage_env.as_str(),
        job.identity.model,
        job.source.kind.as_str(),
    );
    if let plan::Decision::Wait { variant } = decision {
        human.push_str(&format!(
            "v{variant} is being trained by a live owner: `train` waits for it (up to run.wait_for_owner, {} s) and reuses its result\n",
            job.config.wait_for_owner_ms() / 1000
        ));
    }
    for w in &warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok(Output {
        code: 0,
        json: doc,
        human,
    })
}

/// The trainer of the job: `trainer.command`, or the built-in one (this executable, run as a
/// subprocess with the hidden `__builtin-train` command).
pub fn trainer_for(job: &job::Job) -> Result<crate::trainer::CommandTrainer> {
    match &job.config.final_training.trainer.command {
        Some(argv) => Ok(crate::trainer::CommandTrainer {
            argv: argv.clone(),
            env: Vec::new(),
        }),
        None => {
            let exe = std::env::current_exe().map_err(|e| {
                Error::internal(format!("cannot locate the trainctl executable: {e}"))
            })?;
            Ok(crate::trainer::CommandTrainer {
                argv: vec![exe.display().to_string(), "__builtin-train".into()],
                env: Vec::new(),
            })
        }
    }
}

/// `trainctl train`: plan, then execute (SPEC §2, §5, §8).
pub fn train_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    now_us: &dyn Fn() -> u64,
    display: &crate::progress::Display,
    quiet: bool,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let job = job::prepare(config, fs, host)?;
    let trainer = trainer_for(&job)?;
    let progress = |p: &crate::progress::Progress| display.show(p);
    let storage = crate::storage::establish_or_defer(&job.config, &job.layout.out)?;
    let (opened, tracking_warnings) =
        crate::track::lifecycle::open_for_train(&job.config, host.var, cwd)?;
    let ctx = crate::train::Context {
        waiting: if quiet {
            crate::train::waiting_silently()
        } else {
            crate::train::waiting_on_stderr()
        },
        progress: &progress,
        fs,
        host,
        owner: crate::lease::Owner::current(),
        trainer: &trainer,
        now_us,
        tracking: opened.as_ref().map(|o| crate::train::Tracking {
            tracker: o.tracker.as_ref(),
            backend: &o.describe,
        }),
    };
    let mut report = crate::train::train(&job, &ctx)
        .map_err(|e| on_out(e, &job.layout.out, storage.as_ref().map(|s| &s.report)))?;
    report.warnings.extend(tracking_warnings);
    // SPEC §3: after a run completes on colab, back up the variant and its cache. The run is
    // complete and recorded whatever happens here, so a failed backup is a warning.
    let backup = match report.decision {
        crate::plan::Decision::Reuse { .. } => None,
        _ => match crate::backup::after_run(&job.config, &job.layout, &report.output_dir) {
            Ok(r) => Some(r),
            Err(e) => {
                report
                    .warnings
                    .push(format!("Drive backup failed: {}", e.message));
                None
            }
        },
    };
    let doc = json!({
        "decision": report.decision.name(),
        "variant": report.decision.variant(),
        "mode": job.config.mode().as_str(),
        "output_dir": report.output_dir,
        "spec_fp": job.spec_fp(),
        "exec_fp": job.exec_fp(),
        "run_name": report.run_name,
        "storage_env": job.identity.storage_env.as_str(),
        "model": job.identity.model,
        "experiment": job.config.experiment_name,
        "source": source_json(&job),
        "cache_record": report.cache_record,
        "backfilled": report.backfilled,
        "metrics": report.metrics,
        "backup": backup,
        "storage": storage.as_ref().map(|s| &s.report),
        "warnings": report.warnings,
    });
    let mut human = format!(
        "{} v{}: {}\nrun_name: {}\n",
        report.decision.name(),
        report.decision.variant(),
        report.output_dir.display(),
        report.run_name
    );
    if let Some(m) = &report.metrics {
        let objective = job.config.objective_metric();
        let shown: Vec<String> = [objective.as_str(), "span-f1", "loss"]
            .iter()
            .filter_map(|k| m.get(*k).map(|v| format!("{k} {v}")))
            .collect();
        human.push_str(&format!(
            "metrics: {} (all in metrics.json)\n",
            shown.join(", ")
        ));
    }
    if let Some(b) = &backup {
        if b.skipped.is_none() {
            human.push_str(&backup_human(b));
        }
    }
    for w in &report.warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok(Output {
        code: 0,
        json: doc,
        human,
    })
}

/// A storage error names OUT and the profile in force (docs/contract.md, "Storage errors");
/// other errors pass unchanged.
pub fn on_out(
    mut e: Error,
    out: &std::path::Path,
    storage: Option<&crate::fs::profile::Report>,
) -> Error {
    if e.kind.is_storage() {
        e.message = format!(
            "{}\n(OUT is {}{})",
            e.message,
            out.display(),
            storage
                .map(|r| format!(", storage profile {}", r.line()))
                .unwrap_or_else(|| ", storage profile unknown: its probe failed".into())
        );
    }
    e
}

/// `trainctl cache check|repair [KIND]`.
pub fn cache_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    action: &CacheAction,
) -> Result<Output> {
    use crate::cache::{Cache, CacheKind, CacheSettings};
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let (kind, repair) = match action {
        CacheAction::Check { kind } => (kind, false),
        CacheAction::Repair { kind } => (kind, true),
    };
    let kinds: Vec<CacheKind> = match kind {
        Some(k) => vec![CacheKind::parse(k).ok_or_else(|| crate::cache::unknown_kind(k))?],
        None => CacheKind::ALL.to_vec(),
    };
    if repair {
        crate::storage::establish(&config, &layout.out)?;
    }
    let mut report = serde_json::Map::new();
    let mut human = String::new();
    let mut total = 0;
    for kind in kinds {
        let cache = Cache::new(fs, CacheSettings::from_paths(&config.paths, &layout, kind)?);
        if repair {
            let warnings = cache.repair()?;
            for w in &warnings {
                human.push_str(&format!("{}: warning: {w}\n", kind.as_str()));
            }
        }
        let problems = cache.check()?;
        total += problems.len();
        for p in &problems {
            human.push_str(&format!(
                "{}: {} {} ({})\n",
                kind.as_str(),
                p.kind,
                p.file,
                p.detail
            ));
        }
        if problems.is_empty() {
            human.push_str(&format!("{}: ok\n", kind.as_str()));
        }
        report.insert(kind.as_str().into(), json!({"problems": problems}));
    }
    // The report is the output either way; a check that found problems exits
    // CHECK_FOUND_PROBLEMS so that cron and CI notice (docs/contract.md). After `repair`, what
    // is left is what repair cannot fix (corrupt records).
    let doc = json!({"repaired": repair, "problems": total, "caches": report});
    let code = if total > 0 { CHECK_FOUND_PROBLEMS } else { 0 };
    Ok(Output {
        code,
        json: doc,
        human,
    })
}

/// `trainctl convert --from DIR | --latest`.
pub fn convert_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    from: &crate::convert::From,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let storage = crate::storage::establish(&config, &layout.out)?;
    let now = || crate::cache::rfc3339(now_us());
    let mut report = crate::convert::convert(&config, fs, host, cwd, from, &now)
        .map_err(|e| on_out(e, &layout.out, Some(&storage.report)))?;
    let tracking = crate::track::lifecycle::after_conversion(
        &config,
        host.var,
        cwd,
        &mut report,
        (now_us() / 1000) as i64,
    );
    let doc = json!({
        "decision": report.decision,
        "output_dir": report.output_dir,
        "conv_fp": report.conv_fp,
        "run_name": report.run_name,
        "parent": report.manifest["parent"],
        "files": report.manifest["files"],
        "converter": report.manifest["converter"],
        "tags": report.manifest["tags"],
        "tracking": tracking,
        "warnings": report.warnings,
    });
    let mut human = format!(
        "{} conversion: {}\nrun_name: {}\nconv_fp: {}\nparent: {}\n",
        report.decision,
        report.output_dir.display(),
        report.run_name,
        report.conv_fp,
        report.manifest["parent"]["dir"].as_str().unwrap_or("?"),
    );
    for w in &report.warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok(Output {
        code: 0,
        json: doc,
        human,
    })
}

/// `trainctl backup`.
/// `trainctl gc` (docs/contract.md, "Retention and gc").
pub fn gc_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    apply: bool,
    older_than: Option<&str>,
) -> Result<Output> {
    let older_than_ms = match older_than {
        None => crate::gc::DEFAULT_OLDER_THAN_MS,
        Some(s) => config::parse_duration_ms(&Value::String(s.to_string()))
            .map_err(|m| Error::new(ErrorKind::Usage, format!("--older-than: {m}")))?,
    };
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    // A removed variant's run ends as KILLED; without a tracking store gc still works.
    let (opened, mut warnings) = if apply {
        crate::track::lifecycle::open_for_train(&config, host.var, cwd)?
    } else {
        (None, Vec::new())
    };
    let world = crate::gc::World {
        fs,
        host,
        owner: crate::lease::Owner::current(),
        tracker: opened.as_ref().map(|o| o.tracker.as_ref()),
        config: Some(&config),
    };
    let mut report = crate::gc::run(
        &config,
        &layout,
        &world,
        crate::gc::Options {
            apply,
            older_than_ms,
        },
    )?;
    warnings.append(&mut report.warnings);
    report.warnings = warnings;
    let failed = report.items.iter().any(|i| i.error.is_some());
    let mut human = report.to_string();
    for w in &report.warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok(Output {
        // A removal that failed on storage is not a clean run: exit 6, the report still out.
        code: if failed && apply { 6 } else { 0 },
        json: json!({ "gc": report }),
        human,
    })
}

pub fn backup_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    host: &Host<'_>,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let facts = host.facts(config.lease_timeout_s() * 1000);
    let units = crate::backup::units(&config, &layout, &facts);
    let report = crate::backup::run(&config, &layout, &units, &crate::backup::no_fault)?;
    Ok(Output {
        code: 0,
        human: backup_human(&report),
        json: json!({"backup": report}),
    })
}

fn backup_human(report: &crate::backup::Report) -> String {
    let mut human = String::new();
    if let Some(why) = &report.skipped {
        human.push_str(&format!("backup skipped: {why}\n"));
    }
    for u in &report.units {
        human.push_str(&format!(
            "backup {:<10} {} -> {} ({} files, {} bytes)\n",
            u.outcome,
            u.source.display(),
            u.target.display(),
            u.files,
            u.bytes
        ));
    }
    human
}

/// `trainctl select [--trials FILE]` (without a file: the tracking store's HPO runs).
pub fn select_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    trials: Option<&std::path::Path>,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let path = trials.map(|t| crate::convert::normalize(cwd, t));
    // Without --trials and without HPO runs in the tracking store, the offline fixture, as
    // `pipeline` does (docs/contract.md, "Best-model selection").
    let fixture = config.root.join(crate::pipeline::DEFAULT_TRIALS);
    let loaded = match crate::select::load_candidates(&config, fs, path.as_deref(), host.var, cwd) {
        Err(e)
            if path.is_none()
                && e.kind == ErrorKind::NoEligibleCandidates
                && fs.is_file(&fixture) =>
        {
            crate::select::Loaded {
                candidates: crate::select::read_trials(fs, &fixture)?,
                source: fixture.display().to_string(),
                warnings: vec![format!(
                    "{}; using {} instead (pass --trials FILE to choose)",
                    e.message,
                    crate::pipeline::DEFAULT_TRIALS
                )],
            }
        }
        other => other?,
    };
    let mut out = crate::select::select(&config, fs, &loaded.candidates, &loaded.source, now_us())?;
    out.warnings.splice(0..0, loaded.warnings);
    let selected = &out.payload["selected"];
    let doc = json!({
        "decision": out.decision,
        "key": out.key,
        "record": out.record,
        "selected": selected,
        "ranking": out.payload["ranking"],
        "excluded": out.payload["excluded"],
        "warnings": out.warnings,
    });
    let latency = match selected["latency_ms"].as_f64() {
        Some(l) => format!(", latency {l} ms"),
        None => String::new(),
    };
    let mut human = format!(
        "{} selection: {}: {} {}{latency}, composite {:.4} (by {})\nrecord: {}\n",
        out.decision,
        selected["run_id"].as_str().unwrap_or("?"),
        selected["objective_metric"].as_str().unwrap_or("objective"),
        selected["objective"],
        selected["composite"].as_f64().unwrap_or(f64::NAN),
        selected["rule"].as_str().unwrap_or("?"),
        out.record
    );
    for w in &out.warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    Ok(Output {
        code: 0,
        json: doc,
        human,
    })
}

/// `trainctl predict --bundle DIR TEXT`: entity spans (char offsets) from a bundle. A
/// conversion output is verified against its manifest before it is loaded.
pub fn predict_command(
    fs: &dyn Fs,
    cwd: &std::path::Path,
    bundle: &std::path::Path,
    text: &str,
) -> Result<Output> {
    let dir = crate::convert::normalize(cwd, bundle);
    if !fs.is_dir(&dir) {
        return Err(Error::new(
            ErrorKind::CheckpointMissing,
            format!("bundle {} does not exist", dir.display()),
        ));
    }
    if fs.exists(&dir.join(crate::convert::MANIFEST_FILE)) {
        crate::convert::check_output(fs, &dir).map_err(|reason| {
            Error::new(
                ErrorKind::CheckpointInvalid,
                format!("bundle {} does not verify ({reason})", dir.display()),
            )
        })?;
    }
    let spans = if crate::store::stage::is_remote(fs, &dir) {
        // A bundle in a bucket is loaded from a local copy (removed after).
        let local = std::env::temp_dir().join(format!("trainctl-predict-{}", fs.unique()));
        let copied = crate::store::stage::copy_tree(fs, &dir, &local, "")
            .map_err(|e| Error::io_op("download the bundle", &dir, &e));
        let spans = copied.and_then(|_| {
            crate::builtin::predict(&local, text)
                .map_err(|m| Error::new(ErrorKind::CheckpointInvalid, m))
        });
        let _ = fs.remove_dir_all(&local);
        spans?
    } else {
        crate::builtin::predict(&dir, text)
            .map_err(|m| Error::new(ErrorKind::CheckpointInvalid, m))?
    };
    let entities: Vec<Value> = spans
        .iter()
        .map(|(start, end, label)| {
            let piece: String = text.chars().skip(*start).take(end - start).collect();
            json!({"start": start, "end": end, "label": label, "text": piece})
        })
        .collect();
    let mut human = String::new();
    if entities.is_empty() {
        human.push_str("no entities\n");
    }
    for e in &entities {
        human.push_str(&format!(
            "{:<14} {:?} [{}, {})\n",
            e["label"].as_str().unwrap_or(""),
            e["text"].as_str().unwrap_or(""),
            e["start"],
            e["end"]
        ));
    }
    Ok(Output {
        code: 0,
        json: json!({"bundle": dir, "text": text, "entities": entities}),
        human,
    })
}

fn source_json(job: &job::Job) -> Value {
    json!({
        "type": job.source.kind.as_str(),
        "load": job.source.load,
        "identity": job.source.identity,
        "init_checkpoint": job.source.init_checkpoint,
        "parent": job.source.parent,
        "selection": job.source.selection,
    })
}

/// `trainctl track sync`: upload the complete variants the tracking store is missing.
pub fn track_sync_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    include_untracked: bool,
    dry_run: bool,
) -> Result<Output> {
    use crate::track::sync::{self, Action};
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    if !dry_run {
        crate::storage::establish(&config, &layout.out)?;
    }
    let facts = host.facts(config.lease_timeout_s() * 1000);
    let unavailable = |message: String| Error::new(ErrorKind::TrackingUnavailable, message);
    let opened = crate::track::lifecycle::open_training(
        &config,
        std::sync::Arc::new(crate::store::cloud::CloudFs::new()),
        host.var,
        cwd,
    )
    .map_err(|e| unavailable(format!("the tracking store cannot be opened: {e}")))?;
    if !opened.tracker.is_enabled() {
        return Err(unavailable(
            "tracking is disabled (mlflow.yaml tracking.training.enabled: false): nothing to sync"
                .into(),
        ));
    }
    let entries = sync::sync(
        &config,
        &layout,
        fs,
        &*opened.tracker,
        &sync::Options {
            include_untracked,
            dry_run,
            now_ms: host.now_ms as i64,
            facts: &facts,
        },
    );
    let mut human = format!("tracking store: {}\n", opened.describe);
    for w in &opened.warnings {
        human.push_str(&format!("warning: {w}\n"));
    }
    let count = |a: Action| entries.iter().filter(|e| e.action == a).count();
    for e in &entries {
        let what = match e.action {
            Action::Tracked | Action::AlreadySynced | Action::Untracked => continue,
            Action::Adopted => "adopted (the store had it, FINISHED)".to_string(),
            Action::Completed => "completed its unfinished run".to_string(),
            Action::Uploaded => "uploaded".to_string(),
            Action::ArtifactsUploaded => "uploaded the artifacts its run ended without".to_string(),
            Action::WouldSync => "would upload".to_string(),
            Action::Failed => format!("FAILED: {}", e.error.clone().unwrap_or_default()),
        };
        human.push_str(&format!(
            "{}  {what}{}\n",
            e.dir.display(),
            e.run_id
                .as_ref()
                .map(|r| format!(" (run {r})"))
                .unwrap_or_default()
        ));
    }
    let synced = count(Action::Uploaded)
        + count(Action::Completed)
        + count(Action::Adopted)
        + count(Action::ArtifactsUploaded);
    human.push_str(&format!(
        "{synced} synced, {} already in the store, {} untracked (--include-untracked), {} failed{}\n",
        count(Action::Tracked) + count(Action::AlreadySynced),
        count(Action::Untracked),
        count(Action::Failed),
        if dry_run {
            format!(", {} would sync (dry run)", count(Action::WouldSync))
        } else {
            String::new()
        }
    ));
    let failed = count(Action::Failed);
    if failed > 0 {
        return Err(unavailable(format!(
            "{failed} variant(s) could not be synced to {}; a later `trainctl track sync` retries them:\n{}",
            opened.describe,
            entries
                .iter()
                .filter(|e| e.action == Action::Failed)
                .map(|e| format!("  {}: {}", e.dir.display(), e.error.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    Ok(Output {
        code: 0,
        json: json!({"tracking_store": opened.describe, "dry_run": dry_run, "variants": entries}),
        human,
    })
}

/// `trainctl status`: every variant under OUT with state, reasons and lease.
pub fn status_command(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
    deep: bool,
    filter: &crate::cmd::status::Filter,
) -> Result<Output> {
    if let Some(state) = &filter.state {
        if !crate::cmd::status::STATES.contains(&state.as_str()) {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "--state {state}: expected one of {}",
                    crate::cmd::status::STATES.join(", ")
                ),
            ));
        }
    }
    let config = config::load(opts, cwd, host.var)?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let facts = host.facts(config.lease_timeout_s() * 1000);
    let report = crate::cmd::status::run(&config, &layout, fs, &facts, deep, filter);
    Ok(Output {
        code: 0,
        human: report.to_string(),
        json: serde_json::to_value(&report)
            .map_err(|e| Error::internal(format!("status report: {e}")))?,
    })
}

/// `trainctl config show`: provenance of every value, the merged trees and fingerprints.
pub fn config_show(
    opts: &LoadOptions,
    cwd: &std::path::Path,
    fs: &dyn Fs,
    host: &Host<'_>,
) -> Result<Output> {
    let config = config::load(opts, cwd, host.var)?;
    let mut human = format!(
        "experiment: {}\nstorage_env: {} ({})\nroot: {}\nconfig_dir: {}\n\n# effective hyperparameters and seed\n",
        config.experiment_name,
        config.env.env.as_str(),
        config.env.reason,
        config.root.display(),
        config.config_dir.display()
    );
    let mut effective = serde_json::Map::new();
    for p in config.provenance.iter() {
        human.push_str(&format!("{} = {}    # {}\n", p.key, p.value, p.origin));
        effective.insert(
            p.key.clone(),
            json!({"value": p.value, "origin": p.origin.to_string()}),
        );
    }
    let mut files = serde_json::Map::new();
    for (role, doc) in config.docs.iter() {
        human.push_str(&format!("\n# {role}: {}\n", doc.name));
        let mut keys = serde_json::Map::new();
        for (key, value) in config::flatten(&doc.tree) {
            let origin = doc
                .origin_of(&key)
                .map(|o| o.to_string())
                .unwrap_or_else(|| "default".into());
            human.push_str(&format!("{key} = {value}    # {origin}\n"));
            keys.insert(key, json!({"value": value, "origin": origin}));
        }
        let rel = config.files.get(role).map(|p| {
            p.strip_prefix(&config.config_dir)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.display().to_string())
        });
        files.insert(
            role.clone(),
            json!({"file": doc.name, "path": rel, "tree": doc.tree, "keys": keys}),
        );
    }
    let storage = match crate::paths::Layout::from_config(&config) {
        Ok(layout) => {
            let (doc, line) = crate::storage::describe(&config, &layout.out);
            human.push_str(&format!(
                "\n# storage of OUT {}\nprofile = {line}\n",
                layout.out.display()
            ));
            for key in ["file_publish", "dir_publish", "dir_swap", "scope_reason"] {
                if let Some(v) = doc[key].as_str() {
                    human.push_str(&format!("{key} = {v}\n"));
                }
            }
            let mut doc = doc;
            // Colab: the Drive mirror is written too, on its own filesystem.
            if let crate::backup::Plan::Mirror { drive_root, .. } =
                crate::backup::plan(&config, &layout)
            {
                let (drive, line) = crate::storage::describe_dir(&drive_root);
                human.push_str(&format!(
                    "# storage of the Drive mirror {}\nprofile = {line}\n",
                    drive_root.display()
                ));
                doc["drive_mirror"] = drive;
            }
            doc
        }
        Err(e) => json!({"error": e.to_json()["error"]}),
    };
    let fingerprints = match job::prepare(config.clone(), fs, host) {
        Ok(job) => {
            human.push_str(&format!(
                "\n# identity\nspec_fp = {}\nexec_fp = {}\nspec inputs: {}\nexec inputs: {}\n",
                job.spec_fp(),
                job.exec_fp(),
                crate::identity::canonical_json(&job.spec.to_json()),
                crate::identity::canonical_json(&job.exec.to_json()),
            ));
            json!({"spec_fp": job.spec_fp(), "exec_fp": job.exec_fp(), "spec_inputs": job.spec.to_json(), "exec_inputs": job.exec.to_json()})
        }
        Err(e) => {
            human.push_str(&format!("\n# identity\nnot computable: {e}\n"));
            json!({"error": e.to_json()["error"]})
        }
    };
    Ok(Output {
        code: 0,
        json: json!({
            "experiment": config.experiment_name,
            "storage_env": config.env.env.as_str(),
            "env_reason": config.env.reason,
            "root": config.root,
            "config_dir": config.config_dir,
            "effective": effective,
            "hyperparameters": config.hyperparameters,
            "seed": config.seed,
            "files": files,
            "fingerprints": fingerprints,
            "storage": storage,
            "warnings": config.warnings,
        }),
        human,
    })
}

/// Prints the outcome and returns the process exit code (the one mapping of SPEC §10).
pub fn report(result: Result<Output>, json_mode: bool) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match result {
        Ok(out) => {
            let text = if json_mode {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&out.json).unwrap_or_default()
                )
            } else {
                out.human
            };
            let _ = stdout.lock().write_all(text.as_bytes());
            out.code
        }
        Err(e) => {
            if json_mode {
                let _ = writeln!(
                    stdout.lock(),
                    "{}",
                    serde_json::to_string_pretty(&e.to_json()).unwrap_or_default()
                );
            } else {
                let _ = writeln!(stderr.lock(), "error: {e}");
            }
            e.kind.exit_code()
        }
    }
}

/// Options that take a value and may stand anywhere on the command line (before or after the
/// subcommand): each may be given once, or again with the same value.
const VALUED_GLOBALS: [&str; 4] = ["--root", "--config-dir", "--experiment", "--env"];

/// Subcommand options that take a value: their value is never read as a global option.
const VALUED_LOCALS: [&str; 3] = ["--from", "--trials", "--bundle"];

/// The global options of an argv, wherever they stand, and the rest in order.
#[derive(Debug, Default, PartialEq)]
struct Hoisted {
    /// Every `-o`/`--override`, in command-line order.
    overrides: Vec<std::ffi::OsString>,
    /// `(option, value)` of the valued globals, at most one per option.
    scalars: Vec<(&'static str, std::ffi::OsString)>,
    json: bool,
    /// The program, the subcommand and its own arguments.
    rest: Vec<std::ffi::OsString>,
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// Collects the global options from anywhere in `args` (docs/contract.md, "Command line"):
/// clap keeps only the occurrences after the subcommand when a global option is given on both
/// sides, which silently dropped an `-o` before the subcommand. Every `-o` counts, in order;
/// a valued global given twice with different values is a usage error. Stops at `--`.
fn hoist(args: Vec<std::ffi::OsString>) -> Result<Hoisted> {
    let mut out = Hoisted::default();
    let mut it = args.into_iter();
    out.rest.extend(it.next());
    let mut verbatim = false;
    while let Some(arg) = it.next() {
        let text = arg.to_str().map(str::to_string);
        let Some(text) = text.filter(|_| !verbatim) else {
            out.rest.push(arg);
            continue;
        };
        let mut value_of = |name: &str| -> Result<std::ffi::OsString> {
            it.next()
                .ok_or_else(|| usage(format!("`{name}` needs a value")))
        };
        if text == "--" {
            verbatim = true;
            out.rest.push(arg);
        } else if text == "--json" {
            out.json = true;
        } else if text == "-o" || text == "--override" {
            out.overrides.push(value_of(&text)?);
        } else if let Some(v) = text.strip_prefix("--override=") {
            out.overrides.push(v.into());
        } else if let Some(v) = text.strip_prefix("-o").filter(|v| !v.is_empty()) {
            out.overrides.push(v.strip_prefix('=').unwrap_or(v).into());
        } else if let Some(name) = VALUED_GLOBALS.iter().find(|n| **n == text) {
            let value = value_of(name)?;
            out.scalars.push((name, value));
        } else if let Some((name, v)) = VALUED_GLOBALS
            .iter()
            .find_map(|n| Some((*n, text.strip_prefix(n)?.strip_prefix('=')?)))
        {
            out.scalars.push((name, v.into()));
        } else if VALUED_LOCALS.contains(&text.as_str()) {
            out.rest.push(arg);
            out.rest.extend(it.next());
        } else {
            out.rest.push(arg);
        }
    }
    let mut kept: Vec<(&'static str, std::ffi::OsString)> = Vec::new();
    for (name, value) in std::mem::take(&mut out.scalars) {
        match kept.iter().find(|(n, _)| *n == name) {
            Some((_, first)) if *first != value => {
                return Err(usage(format!(
                    "`{name}` is given twice with different values ({} and {}); give it once",
                    first.to_string_lossy(),
                    value.to_string_lossy()
                )))
            }
            Some(_) => {}
            None => kept.push((name, value)),
        }
    }
    out.scalars = kept;
    Ok(out)
}

/// The argv clap parses: the hoisted globals first, once each, then the rest.
fn rebuilt(h: &Hoisted) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = h.rest.iter().take(1).cloned().collect();
    for (name, value) in &h.scalars {
        argv.push((*name).into());
        argv.push(value.clone());
    }
    if h.json {
        argv.push("--json".into());
    }
    for o in &h.overrides {
        argv.push("-o".into());
        argv.push(o.clone());
    }
    argv.extend(h.rest.iter().skip(1).cloned());
    argv
}

/// Parses `args` (program name first). Usage errors are `Err` with exit 2 (`--help` and
/// `--version` print and give 0); under `--json` they are the documented JSON error document
/// on stdout, like every other error.
pub fn parse_from(args: Vec<std::ffi::OsString>) -> std::result::Result<Cli, i32> {
    let json_anywhere = args.iter().any(|a| a == "--json");
    let hoisted = match hoist(args) {
        Ok(h) => h,
        Err(e) => return Err(report(Err(e), json_anywhere)),
    };
    let e = match Cli::try_parse_from(rebuilt(&hoisted)) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    let informational = matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    );
    if hoisted.json && !informational {
        let rendered = e.render().to_string();
        let message = rendered.trim().trim_start_matches("error: ").to_string();
        return Err(report(Err(usage(message)), true));
    }
    let _ = e.print();
    Err(if informational {
        0
    } else {
        ErrorKind::Usage.exit_code()
    })
}

/// Maps clap's failures to exit 2 (usage), keeping `--help`/`--version` at 0.
pub fn parse_args() -> std::result::Result<Cli, i32> {
    parse_from(std::env::args_os().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("trainctl")
            .chain(s.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn every_override_counts_in_order_wherever_it_stands() {
        let h = hoist(argv(&[
            "-o",
            "a=1",
            "--root",
            "R",
            "plan",
            "-o",
            "b=2",
            "--override=c=3",
            "-od=4",
        ]))
        .unwrap();
        assert_eq!(h.overrides, ["a=1", "b=2", "c=3", "d=4"]);
        assert_eq!(h.scalars, [("--root", "R".into())]);
        let cli = Cli::try_parse_from(rebuilt(&h)).unwrap();
        assert_eq!(cli.global.overrides, ["a=1", "b=2", "c=3", "d=4"]);
        assert_eq!(cli.global.root, Some(PathBuf::from("R")));
        let cli = Cli::try_parse_from(rebuilt(
            &hoist(argv(&[
                "-o", "x=1", "cache", "-o", "y=2", "check", "--json",
            ]))
            .unwrap(),
        ))
        .unwrap();
        assert_eq!(cli.global.overrides, ["x=1", "y=2"]);
        assert!(cli.global.json);
    }

    #[test]
    fn a_global_given_twice_with_different_values_is_a_usage_error() {
        for args in [
            &["--root", "A", "plan", "--root", "B"][..],
            &["--env", "local", "train", "--env=colab"],
            &["--experiment", "x", "--experiment", "y", "plan"],
        ] {
            let e = hoist(argv(args)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage, "{args:?}");
            assert!(e.message.contains("given twice"), "{e}");
        }
        let same = hoist(argv(&["--root", "A", "plan", "--root", "A"])).unwrap();
        assert_eq!(same.scalars.len(), 1);
        assert_eq!(
            hoist(argv(&["plan", "-o"])).unwrap_err().kind,
            ErrorKind::Usage
        );
    }

    #[test]
    fn values_of_subcommand_options_and_words_after_a_double_dash_are_left_alone() {
        let h = hoist(argv(&["predict", "--bundle", "-o", "--", "--root", "-o"])).unwrap();
        assert!(h.overrides.is_empty() && h.scalars.is_empty(), "{h:?}");
        assert_eq!(h.rest.len(), 7);
    }
}
