//! `trainctl gc [--apply] [--older-than DUR]` (docs/contract.md, "Retention and gc").

use super::{warning_lines, Env};
use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;
use std::fmt;

/// What gc found and (with `--apply`) removed: the `--json` document is `{"gc": …}`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub gc: crate::gc::Report,
}

/// `--older-than` in milliseconds (default 24 h).
pub fn older_than_ms(arg: Option<&str>) -> Result<u64> {
    match arg {
        None => Ok(crate::gc::DEFAULT_OLDER_THAN_MS),
        Some(s) => crate::config::parse_duration_ms(&serde_json::Value::String(s.to_string()))
            .map_err(|m| Error::new(ErrorKind::Usage, format!("--older-than: {m}"))),
    }
}

/// Lists, and with `apply` removes, what OUT no longer needs.
pub fn run(env: &Env<'_>, apply: bool, older_than: Option<&str>) -> Result<Report> {
    let older_than_ms = older_than_ms(older_than)?;
    let config = env.config()?;
    let layout = crate::paths::Layout::from_config(&config)?;
    // A removed variant's run ends as KILLED; without a tracking store gc still works.
    let (opened, mut warnings) = if apply {
        crate::track::lifecycle::open_for_train(&config, env.host.var, env.cwd)?
    } else {
        (None, Vec::new())
    };
    let world = crate::gc::World {
        fs: env.fs,
        host: env.host,
        owner: crate::lease::Owner::current(),
        tracker: opened.as_ref().map(|o| o.tracker.as_ref()),
        config: Some(&config),
    };
    let options = crate::gc::Options {
        apply,
        older_than_ms,
    };
    let mut gc = crate::gc::run(&config, &layout, &world, options)?;
    warnings.append(&mut gc.warnings);
    gc.warnings = warnings;
    Ok(Report { gc })
}

impl Report {
    /// A removal that failed on storage is not a clean run: the storage code, with the report
    /// still out.
    pub fn exit_code(&self) -> i32 {
        let failed = self.gc.items.iter().any(|i| i.error.is_some());
        if failed && self.gc.applied {
            super::STORAGE_FAILED
        } else {
            0
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.gc.fmt(f)?;
        let mut w = String::new();
        warning_lines(&mut w, &self.gc.warnings);
        f.write_str(&w)
    }
}
