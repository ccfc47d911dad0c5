//! `trainctl plan`: the decision `train` would take now, with everything it would use.
//! Reads only (docs/contract.md, "Run modes").

use super::{warning_lines, Chosen, Env};
use crate::config::schema::RunMode;
use crate::error::Result;
use crate::job;
use crate::plan::{Decision, VariantOracle};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// What `plan` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub chosen: Chosen,
    pub out: PathBuf,
    pub existing_variants: usize,
    /// Why the variant resumed is incomplete (resume only).
    pub resume_reason: Option<String>,
    pub warnings: Vec<String>,
    /// How long `train` would wait for the live owner (wait only), in seconds.
    #[serde(skip)]
    pub wait_for_owner_s: Option<u64>,
}

/// Decides without writing.
pub fn run(env: &Env<'_>) -> Result<Report> {
    let job = job::prepare(env.config()?, env.fs, env.host)?;
    let facts = env.host.facts(job.config.lease_timeout_s() * 1000);
    let (variants, decision) =
        crate::observe::decide(env.fs, &job.layout, &job.identity, &facts, &job.request())?;
    let variant = decision.variant();
    let output_dir = job.layout.variant_dir(&job.identity, variant)?;
    let (run_name, _) = job.run_name(variant)?;
    let name_warnings = job.preflight(variant)?;
    let mut warnings = job.warnings.clone();
    warnings.extend(variants.unverified_warnings());
    warnings.extend(variants.skew_warnings());
    warnings.extend(name_warnings);
    if job.config.mode() == RunMode::ResumeIfIncomplete && job.request().explicit_variant.is_none()
    {
        warnings.extend(crate::observe::lower_incomplete_hint(&variants, variant));
    }
    let resume_reason = match decision {
        Decision::Resume { .. } => variants.observe(variant).0.reason().map(|r| r.to_string()),
        _ => None,
    };
    Ok(Report {
        chosen: Chosen::of(&job, &decision, output_dir, run_name),
        out: job.layout.out.clone(),
        existing_variants: variants.numbers().len(),
        resume_reason,
        warnings,
        wait_for_owner_s: matches!(decision, Decision::Wait { .. })
            .then(|| job.config.wait_for_owner_ms() / 1000),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "decision: {} v{} ({})\noutput_dir: {}\nrun_name: {}\nspec_fp: {}  exec_fp: {}\nstorage_env: {}  model: {}  source: {}",
            self.chosen.decision,
            self.chosen.variant,
            self.chosen.mode,
            self.chosen.output_dir.display(),
            self.chosen.run_name,
            self.chosen.spec_fp,
            self.chosen.exec_fp,
            self.chosen.storage_env,
            self.chosen.model,
            self.chosen.source.kind.as_str(),
        )?;
        if let Some(s) = self.wait_for_owner_s {
            writeln!(
                f,
                "v{} is being trained by a live owner: `train` waits for it (up to run.wait_for_owner, {s} s) and reuses its result",
                self.chosen.variant
            )?;
        }
        let mut w = String::new();
        warning_lines(&mut w, &self.warnings);
        f.write_str(&w)
    }
}
