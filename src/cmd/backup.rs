//! `trainctl backup` (colab): mirror complete variants, conversion outputs and caches to the
//! Drive mount (docs/contract.md, "Drive backup").

use super::Env;
use crate::error::Result;
use serde::Serialize;
use std::fmt;

/// What `backup` did: the `--json` document is `{"backup": …}`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub backup: crate::backup::Report,
}

/// Mirrors every unit.
pub fn run(env: &Env<'_>) -> Result<Report> {
    let config = env.config()?;
    let layout = crate::paths::Layout::from_config(&config)?;
    let facts = env.host.facts(config.lease_timeout_s() * 1000);
    let units = crate::backup::units(&config, &layout, &facts);
    let backup = crate::backup::run(&config, &layout, &units, &crate::backup::no_fault)?;
    Ok(Report { backup })
}

/// The human lines of a backup (also shown after a `train` on colab).
pub struct Lines<'a>(pub &'a crate::backup::Report);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.0.skipped {
            writeln!(f, "backup skipped: {why}")?;
        }
        for u in &self.0.units {
            writeln!(
                f,
                "backup {:<10} {} -> {} ({} files, {} bytes)",
                u.outcome,
                u.source.display(),
                u.target.display(),
                u.files,
                u.bytes
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Lines(&self.backup).fmt(f)
    }
}
