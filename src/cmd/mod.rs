//! Commands as typed reports (docs/contract.md, "Commands return typed reports"): each module
//! runs one command and returns a report that serialises to its `--json` document
//! (serde) and displays as its human text (`Display`). The CLI (`src/cli.rs`) only parses
//! arguments, calls one of these and renders the report it gets back. `pipeline`'s report
//! (its steps as an enum) lives with the flow in `src/pipeline.rs`.

pub mod backup;
pub mod cache;
pub mod config;
pub mod convert;
pub mod gc;
pub mod plan;
pub mod predict;
pub mod select;
pub mod status;
pub mod track;
pub mod train;

use crate::config::LoadOptions;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::job::Host;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What every command reads from the world: the load options of the command line, the
/// working directory, the filesystem port and the host (env vars, clock, git, /proc).
pub struct Env<'a> {
    pub opts: &'a LoadOptions,
    pub cwd: &'a Path,
    pub fs: &'a dyn Fs,
    pub host: &'a Host<'a>,
}

impl Env<'_> {
    /// The configuration of this command line (docs/contract.md, "Configuration").
    pub fn config(&self) -> Result<crate::config::Config> {
        crate::config::load(self.opts, self.cwd, self.host.var)
    }
}

/// The exit code of a check that ran and found problems (`cache check`): its report is the
/// normal output, not an error document (docs/contract.md, "Exit codes").
pub const CHECK_FOUND_PROBLEMS: i32 = 7;

/// The exit code of a command whose report is out but some of whose removals failed on
/// storage (`gc --apply`): the storage code, with the report on stdout.
pub const STORAGE_FAILED: i32 = 6;

/// What a command prints: its report as a JSON document and as human text, and its exit
/// code when it succeeded (0, or one of the codes above).
pub struct Output {
    pub json: Value,
    pub human: String,
    pub code: i32,
}

impl Output {
    /// A report rendered both ways.
    pub fn of<R: Serialize + std::fmt::Display>(report: &R, code: i32) -> Result<Output> {
        Ok(Output {
            json: serde_json::to_value(report)
                .map_err(|e| Error::internal(format!("report as JSON: {e}")))?,
            human: report.to_string(),
            code,
        })
    }
}

/// What `plan` and `train` both report about the variant a decision names: the decision,
/// where it lives, its name, its identity and where its model comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Chosen {
    /// `new`, `reuse`, `resume`, `continue` or `wait`.
    pub decision: &'static str,
    pub variant: u64,
    pub mode: &'static str,
    pub output_dir: PathBuf,
    pub spec_fp: String,
    pub exec_fp: String,
    pub run_name: String,
    pub storage_env: &'static str,
    pub model: String,
    pub experiment: String,
    pub source: crate::job::ResolvedSource,
}

impl Chosen {
    pub fn of(
        job: &crate::job::Job,
        decision: &crate::plan::Decision,
        output_dir: PathBuf,
        run_name: String,
    ) -> Chosen {
        Chosen {
            decision: decision.name(),
            variant: decision.variant(),
            mode: job.config.mode().as_str(),
            output_dir,
            spec_fp: job.spec_fp().to_string(),
            exec_fp: job.exec_fp().to_string(),
            run_name,
            storage_env: job.identity.storage_env.as_str(),
            model: job.identity.model.clone(),
            experiment: job.config.experiment_name.clone(),
            source: job.source.clone(),
        }
    }
}

/// `warning: …` lines, one per warning, appended to a human rendering.
pub fn warning_lines(out: &mut String, warnings: &[String]) {
    for w in warnings {
        let _ = writeln!(out, "warning: {w}");
    }
}

/// A map that keeps insertion order and serialises as a JSON object (caches in the order they
/// were checked, config keys in file order).
#[derive(Clone, Debug)]
pub struct Ordered<T>(Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn push(&mut self, key: String, value: T) {
        self.0.push((key, value));
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
