//! The command line (docs/contract.md, "Command line"): argument parsing, the commands, human and
//! `--json` output, and the one place that maps errors to exit codes.

use crate::cmd;
use crate::config::LoadOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{self, Host};
use clap::{Args, Parser, Subcommand};
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
    #[command(after_help = "Examples:
  trainctl config show                          every value with the file and line it came from
  trainctl -o train:training.epochs=8 config show   what an override changes, and the fingerprints
  trainctl --json config show                   the same as one JSON document
  trainctl config check                         validate everything `plan` needs, write nothing")]
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
    #[command(after_help = "Examples:
  trainctl --env colab backup         mirror everything complete to the Drive mount
  trainctl --json --env colab backup  what was copied and what was already up to date")]
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
    #[command(after_help = "Examples:
  trainctl predict --bundle OUT/conversion/local/builtin/spec-…_exec-…/v1/conv-… \"Jane Doe is a data engineer in Berlin\"
  trainctl --json predict --bundle DIR \"…\"    entities with char offsets [start, end)")]
    Predict {
        /// A conversion output dir (or a `checkpoint/` dir of the built-in trainer).
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        /// The text to tag.
        text: String,
    },
    /// Check or repair the dual-file caches (records, latest, index).
    #[command(after_help = "Examples:
  trainctl cache check                    every cache; exit 7 when it finds problems
  trainctl cache check final_training     one cache
  trainctl cache repair                   rebuild latest and index from the records, remove debris")]
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Tracking-store maintenance (MLflow).
    #[command(after_help = "Examples:
  trainctl track sync --dry-run            which complete variants the store is missing
  trainctl track sync                      upload them (a run that exists is finished, never duplicated)
  trainctl track sync --include-untracked  also variants trained with tracking off")]
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

pub use crate::cmd::{Output, CHECK_FOUND_PROBLEMS};

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
    now_us() / 1000
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

/// Runs one parsed command against the real world (OsFs, env vars, git, /proc) and renders
/// its report.
pub fn run(cli: &Cli) -> Result<Output> {
    let cwd = std::env::current_dir().map_err(|e| Error::internal(format!("current dir: {e}")))?;
    let host = Host {
        var: &env_var,
        now_ms: now_ms(),
        hostname: crate::lease::this_host(),
        process_start_time: &crate::lease::process_start_time,
        git: &job::git_state,
        clock: Some(&now_ms),
    };
    // OUT may be a bucket (`s3://…`): its paths go to the object store, the rest to OsFs.
    let fs = crate::store::cloud::CloudFs::new();
    let opts = load_options(&cli.global);
    let env = cmd::Env {
        opts: &opts,
        cwd: &cwd,
        fs: &fs,
        host: &host,
    };
    dispatch(cli, &env)
}

/// One command: its report, rendered both ways, with its exit code.
fn dispatch(cli: &Cli, env: &cmd::Env<'_>) -> Result<Output> {
    let g = &cli.global;
    match &cli.command {
        Command::Plan => Output::of(&cmd::plan::run(env)?, 0),
        Command::Train => {
            crate::trainer::install_signal_forwarding();
            let display = crate::progress::Display::new(g.progress, g.quiet, g.json, "train");
            let live = cmd::train::Live {
                display: &display,
                quiet: g.quiet,
                now_us: &now_us,
            };
            Output::of(&cmd::train::run(env, &live)?, 0)
        }
        Command::Cache { action } => {
            let (action, kind) = match action {
                CacheAction::Check { kind } => (cmd::cache::Action::Check, kind),
                CacheAction::Repair { kind } => (cmd::cache::Action::Repair, kind),
            };
            let report = cmd::cache::run(env, action, kind.as_deref())?;
            Output::of(&report, report.exit_code())
        }
        Command::BuiltinTrain => builtin_train(),
        Command::Status {
            deep,
            identity,
            state,
        } => {
            let filter = cmd::status::Filter {
                identity: identity.clone(),
                state: state.clone(),
            };
            Output::of(&cmd::status::command(env, *deep, &filter)?, 0)
        }
        Command::Convert { from, latest } => {
            let from = match (from, latest) {
                (Some(dir), false) => crate::convert::From::Dir(dir.clone()),
                _ => crate::convert::From::Latest,
            };
            Output::of(&cmd::convert::run(env, &from, &now_us)?, 0)
        }
        Command::Select { trials } => {
            Output::of(&cmd::select::run(env, trials.as_deref(), now_us())?, 0)
        }
        Command::Backup => Output::of(&cmd::backup::run(env)?, 0),
        Command::Gc { apply, older_than } => {
            let report = cmd::gc::run(env, *apply, older_than.as_deref())?;
            Output::of(&report, report.exit_code())
        }
        Command::Track {
            action:
                TrackAction::Sync {
                    include_untracked,
                    dry_run,
                },
        } => Output::of(&cmd::track::run(env, *include_untracked, *dry_run)?, 0),
        Command::Pipeline { trials } => pipeline(g, env, trials.as_deref()),
        Command::Predict { bundle, text } => {
            Output::of(&cmd::predict::run(env.fs, env.cwd, bundle, text)?, 0)
        }
        Command::Config {
            action: ConfigAction::Show,
        } => Output::of(&cmd::config::show(env)?, 0),
        Command::Config {
            action: ConfigAction::Check,
        } => Output::of(&cmd::config::check(env)?, 0),
    }
}

/// `pipeline`: step lines on stderr while it runs (not under `--quiet`), the summary after.
fn pipeline(g: &Global, env: &cmd::Env<'_>, trials: Option<&std::path::Path>) -> Result<Output> {
    crate::trainer::install_signal_forwarding();
    let quiet = g.quiet;
    let progress = |line: &str| {
        if !quiet {
            eprintln!("{line}")
        }
    };
    let display = crate::progress::Display::new(g.progress, quiet, g.json, "pipeline train");
    let live = cmd::train::Live {
        display: &display,
        quiet,
        now_us: &now_us,
    };
    let world = crate::pipeline::World {
        env,
        live: &live,
        progress: &progress,
    };
    Output::of(&crate::pipeline::run(trials, &world)?, 0)
}

/// The hidden `__builtin-train`: the built-in trainer on the job file in `TRAINCTL_JOB`.
fn builtin_train() -> Result<Output> {
    let job = std::env::var_os("TRAINCTL_JOB")
        .ok_or_else(|| Error::new(ErrorKind::Usage, "__builtin-train needs TRAINCTL_JOB"))?;
    crate::builtin::run(std::path::Path::new(&job))
        .map_err(|m| Error::new(ErrorKind::TrainingFailed, m))?;
    Ok(Output {
        code: 0,
        json: serde_json::json!({"ok": true}),
        human: String::new(),
    })
}

/// Prints the outcome and returns the process exit code (the one mapping of docs/contract.md,
/// "Command line").
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
