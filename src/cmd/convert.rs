//! `trainctl convert --from DIR | --latest` (docs/contract.md, "Source, checkpoint and
//! conversion"): a complete final training to a serving bundle, verified, published once, then
//! tracked.

use super::{warning_lines, Env};
use crate::error::Result;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;

/// What `convert` did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `new` or `reuse`.
    pub decision: &'static str,
    pub output_dir: PathBuf,
    pub conv_fp: String,
    pub run_name: String,
    /// The manifest's parent, files, converter and tags.
    pub parent: Value,
    pub files: Value,
    pub converter: Value,
    pub tags: Value,
    /// What the tracking store recorded of the conversion.
    pub tracking: Value,
    pub warnings: Vec<String>,
}

/// Converts (or reuses the conversion of) one final training.
pub fn run(env: &Env<'_>, from: &crate::convert::From, now_us: &dyn Fn() -> u64) -> Result<Report> {
    let config = env.config()?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let storage = crate::storage::establish(&config, &layout.out)?;
    let now = || crate::cache::rfc3339(now_us());
    let mut conv = crate::convert::convert(&config, env.fs, env.host, env.cwd, from, &now)
        .map_err(|e| crate::storage::on_out(e, &layout.out, Some(&storage.report)))?;
    let tracking = crate::track::lifecycle::after_conversion(
        &config,
        env.host.var,
        env.cwd,
        &mut conv,
        (now_us() / 1000) as i64,
    );
    Ok(of(conv, tracking))
}

/// The report of a conversion and what tracking made of it.
pub fn of(conv: crate::convert::Report, tracking: Value) -> Report {
    let field = |k: &str| conv.manifest[k].clone();
    Report {
        decision: conv.decision,
        parent: field("parent"),
        files: field("files"),
        converter: field("converter"),
        tags: field("tags"),
        output_dir: conv.output_dir,
        conv_fp: conv.conv_fp,
        run_name: conv.run_name,
        tracking,
        warnings: conv.warnings,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} conversion: {}\nrun_name: {}\nconv_fp: {}\nparent: {}",
            self.decision,
            self.output_dir.display(),
            self.run_name,
            self.conv_fp,
            self.parent["dir"].as_str().unwrap_or("?"),
        )?;
        let mut w = String::new();
        warning_lines(&mut w, &self.warnings);
        f.write_str(&w)
    }
}
