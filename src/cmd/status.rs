//! `trainctl status` (docs/contract.md, "Status"): every variant under OUT with its state and
//! reason, when it was created and finished, its run name and tracking state, the objective
//! metric, its size, and who holds it (a dead owner is `abandoned`, never `running`). Files
//! and symlinks where a variant should be are listed, never hidden.

use crate::completion::{Completion, Depth};
use crate::fs::Fs;
use crate::lease::{LeaseView, LivenessFacts};
use crate::observe;
use crate::paths::Layout;
use serde::Serialize;
use std::path::PathBuf;

/// Which variants to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A substring of the identity path (`local/builtin/spec-…_exec-…`).
    pub identity: Option<String>,
    /// `complete`, `running`, `incomplete`, `invalid` or `removed` (by gc).
    pub state: Option<String>,
}

/// The states a row can have (what `--state` accepts).
pub const STATES: [&str; 5] = ["complete", "running", "incomplete", "invalid", "removed"];

/// Who holds (or last held) a variant.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    pub lease_generation: u64,
    /// `running` (the lease is live), `abandoned` (held, but the owner is gone: stale), or
    /// `released`.
    pub liveness: &'static str,
}

/// The objective metric of a complete variant.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Objective {
    pub name: String,
    pub value: f64,
}

/// One row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub dir: PathBuf,
    pub identity: String,
    pub variant: u64,
    pub state: &'static str,
    pub reason: Option<String>,
    pub lease: &'static str,
    pub owner: Option<Owner>,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
    pub run_name: Option<String>,
    pub tracking: Option<String>,
    pub missing_from_tracking: bool,
    pub objective: Option<Objective>,
    pub bytes: u64,
}

/// What `status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub storage: serde_json::Value,
    #[serde(skip)]
    pub storage_line: String,
    pub variants: Vec<Row>,
}

/// `trainctl status`: checks the filter, loads the config and builds the report.
pub fn command(env: &super::Env<'_>, deep: bool, filter: &Filter) -> crate::error::Result<Report> {
    if let Some(state) = &filter.state {
        if !STATES.contains(&state.as_str()) {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::Usage,
                format!("--state {state}: expected one of {}", STATES.join(", ")),
            ));
        }
    }
    let config = env.config()?;
    let layout = Layout::from_config(&config)?;
    let facts = env.host.facts(config.lease_timeout_s() * 1000);
    Ok(run(&config, &layout, env.fs, &facts, deep, filter))
}

/// Builds the report.
pub fn run(
    config: &crate::config::Config,
    layout: &Layout,
    fs: &dyn Fs,
    facts: &LivenessFacts<'_>,
    deep: bool,
    filter: &Filter,
) -> Report {
    let depth = if deep { Depth::Digests } else { Depth::Sizes };
    let (storage, storage_line) = crate::storage::describe(config, &layout.out);
    let mut rows: Vec<Row> = observe::scan_all(fs, layout, facts, depth, None)
        .iter()
        .map(|v| row(fs, layout, v))
        .collect();
    rows.extend(observe::odd_variants(fs, layout).into_iter().map(|o| Row {
        identity: o.identity_segments.join("/"),
        dir: o.path,
        variant: o.variant,
        state: if o.reason == "removed_by_gc" {
            "removed"
        } else {
            "invalid"
        },
        reason: Some(o.reason.to_string()),
        lease: "none",
        owner: None,
        created_at: None,
        finished_at: None,
        run_name: None,
        tracking: None,
        missing_from_tracking: false,
        objective: None,
        bytes: 0,
    }));
    rows.sort_by(|a, b| a.dir.cmp(&b.dir));
    rows.retain(|r| {
        filter
            .identity
            .as_ref()
            .is_none_or(|i| r.identity.contains(i.as_str()))
            && filter.state.as_ref().is_none_or(|s| r.state == s)
    });
    Report {
        out: layout.out.clone(),
        storage,
        storage_line,
        variants: rows,
    }
}

/// Who holds (or last held) a variant, with liveness from the lease view.
fn owner(fs: &dyn Fs, v: &observe::FoundVariant) -> Option<Owner> {
    let current = crate::lease::current(fs, &v.dir).unwrap_or_default();
    current.record.map(|r| Owner {
        liveness: match &v.lease {
            LeaseView::Live(_) => "running",
            LeaseView::Stale { .. } => "abandoned",
            LeaseView::None { .. } => "released",
        },
        host: r.host,
        pid: r.pid,
        lease_generation: current.generation,
    })
}

/// What tracking recorded at training time (docs/contract.md, "Tracking of final training"):
/// `error` (or a `running` left by a crash) on a complete variant means its run is missing from, or
/// unfinished in, the tracking store, until `track sync` uploads it and leaves a sync record
/// (then `synced`).
fn tracking(
    fs: &dyn Fs,
    layout: &Layout,
    v: &observe::FoundVariant,
    meta: Option<&crate::store::meta::VariantMeta>,
) -> Option<String> {
    let recorded = meta.and_then(|m| m.tracking_state().map(str::to_string));
    let synced = crate::track::sync::read_record(fs, layout, &v.dir);
    match (&recorded, &synced) {
        (Some(s), Some(_)) if s != "finished" => Some("synced".to_string()),
        _ => recorded,
    }
}

fn row(fs: &dyn Fs, layout: &Layout, v: &observe::FoundVariant) -> Row {
    let meta = crate::store::meta::VariantMeta::read(fs, &v.dir);
    let (state, reason) = match (&v.completion, &v.lease) {
        (Completion::Complete(_), _) => ("complete", None),
        (Completion::Incomplete(r), LeaseView::Live(_)) => ("running", Some(r.to_string())),
        // Metadata still says `running`, but nobody holds the lease: the owner died.
        (Completion::Incomplete(crate::completion::Reason::Running), _) => {
            ("incomplete", Some("abandoned".to_string()))
        }
        (Completion::Incomplete(r), _) => ("incomplete", Some(r.to_string())),
    };
    let lease = match &v.lease {
        LeaseView::None { .. } => "none",
        LeaseView::Live(_) => "live",
        LeaseView::Stale { .. } => "stale",
    };
    let owner = owner(fs, v);
    let tracking = tracking(fs, layout, v, meta.as_ref());
    let missing = state == "complete"
        && matches!(
            tracking.as_deref(),
            Some("error") | Some("running") | Some("failed")
        );
    let objective = meta.as_ref().and_then(|m| {
        let name = m.objective_metric.clone()?;
        let value = m.metrics.as_ref()?.get(&name)?.as_f64()?;
        Some(Objective { name, value })
    });
    let finished_at = meta.as_ref().and_then(|m| match state {
        "complete" => m.completed_at.clone(),
        "incomplete" if m.failure.is_some() => m.updated_at.clone(),
        _ => None,
    });
    Row {
        dir: v.dir.clone(),
        identity: v.identity_segments.join("/"),
        variant: v.variant,
        state,
        reason,
        lease,
        owner,
        created_at: meta.as_ref().and_then(|m| m.created_at.clone()),
        finished_at,
        run_name: meta.as_ref().and_then(|m| m.run_name.clone()),
        tracking,
        missing_from_tracking: missing,
        objective,
        bytes: crate::retention::tree_bytes(fs, &v.dir),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "OUT: {}", self.out.display())?;
        writeln!(f, "storage: {}", self.storage_line)?;
        if self.variants.is_empty() {
            writeln!(f, "no variants")?;
        }
        for r in &self.variants {
            writeln!(
                f,
                "{:<10} {}/v{}{}{}",
                r.state,
                r.identity,
                r.variant,
                r.reason
                    .as_ref()
                    .map(|x| format!("  [{x}]"))
                    .unwrap_or_default(),
                if r.lease == "none" {
                    String::new()
                } else {
                    format!("  lease:{}", r.lease)
                },
            )?;
            let mut facts = Vec::new();
            if let Some(o) = &r.objective {
                facts.push(format!("{} {:.4}", o.name, o.value));
            }
            if r.state != "invalid" && r.state != "removed" {
                facts.push(crate::gc::human_bytes(r.bytes));
            }
            if let Some(t) = &r.created_at {
                facts.push(format!("created {t}"));
            }
            if let Some(t) = &r.finished_at {
                facts.push(format!("finished {t}"));
            }
            if let Some(o) = r.owner.as_ref().filter(|o| o.liveness != "released") {
                facts.push(format!("{} by {} pid {}", o.liveness, o.host, o.pid));
            }
            if !facts.is_empty() {
                writeln!(f, "           {}", facts.join(", "))?;
            }
            if let Some(name) = &r.run_name {
                writeln!(
                    f,
                    "           run {name}{}",
                    r.tracking
                        .as_ref()
                        .map(|t| format!(" (tracking: {t})"))
                        .unwrap_or_default()
                )?;
            }
            if r.missing_from_tracking {
                writeln!(f, "           ^ missing from tracking (the tracking store failed during training); `trainctl track sync` uploads it")?;
            }
        }
        Ok(())
    }
}
