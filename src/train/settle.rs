//! The decide loop of `train` (docs/contract.md, "Identical starts share one training" and "A
//! resume right after a crash"): decide on fresh facts until a decision holds, waiting for a
//! live owner of the identity or for a dead owner's dying trainer on the way, and end holding
//! the variant (allocated, or its lease taken over) or reusing a complete one.

use super::{
    allocate_with, backfill, owner_of, recorded_run_name, Collision, Context, Report,
    DYING_TRAINER_WAIT_MS, MAX_DECISION_ROUNDS, WAIT_NOTICE_EVERY_MS,
};
use crate::cache::Cache;
use crate::completion::{self, METRICS_FILE};
use crate::config::schema::RunMode;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::lease::{self, LeaseRecord, LivenessFacts, Take};
use crate::observe::FsVariants;
use crate::plan::{Decision, Request, VariantOracle};
use std::path::{Path, PathBuf};

/// How the decide loop ended.
pub(super) enum Settled {
    /// A complete variant is reused: the report is `train`'s answer.
    Reused(Report),
    /// This start holds a variant's lease and trains it.
    Held(HeldVariant),
}

/// A variant this start holds the lease of, and the decision that got it there.
pub(super) struct HeldVariant {
    pub decision: Decision,
    pub variant: u64,
    pub dir: PathBuf,
    pub lease: LeaseRecord,
}

/// The state of one start's decide loop.
pub(super) struct Settling<'a> {
    pub job: &'a Job,
    pub ctx: &'a Context<'a>,
    pub cache: &'a Cache<'a>,
    pub request: Request,
    pub lease_timeout_ms: u64,
    /// `run.wait_for_owner`.
    pub wait_limit_ms: u64,
    /// When this start began (what the waits are bounded from).
    pub started_ms: u64,
    pub last_notice_ms: Option<u64>,
    /// The variant whose owner this start last waited for.
    pub waited_for: Option<u64>,
}

impl Settling<'_> {
    fn now_ms(&self) -> u64 {
        (self.ctx.now_us)() / 1000
    }

    /// Passes `line` to the waiting notice, at most once every `WAIT_NOTICE_EVERY_MS`.
    fn say(&mut self, line: String) {
        let now = self.now_ms();
        if self
            .last_notice_ms
            .is_none_or(|t| now.saturating_sub(t) >= WAIT_NOTICE_EVERY_MS)
        {
            self.last_notice_ms = Some(now);
            (self.ctx.waiting.notice)(&line);
        }
    }

    /// Decides again until a decision holds (at most `MAX_DECISION_ROUNDS` rounds; the waits
    /// themselves are bounded by time). `warnings` gets the first round's listing warnings;
    /// a reuse takes them into its report.
    pub(super) fn settle(&mut self, warnings: &mut Vec<String>) -> Result<Settled> {
        for round in 1..=MAX_DECISION_ROUNDS {
            if let Some(settled) = self.round(round == 1, warnings)? {
                return Ok(settled);
            }
        }
        Err(Error::internal(format!(
            "no decision held in {MAX_DECISION_ROUNDS} rounds"
        )))
    }

    /// One round: decide, then act on the decision. `None` = decide again.
    fn round(&mut self, first: bool, warnings: &mut Vec<String>) -> Result<Option<Settled>> {
        let (job, ctx) = (self.job, self.ctx);
        // Fresh facts every round: a wait lasts minutes, and liveness across hosts is by
        // heartbeat age.
        let facts = ctx.host.facts_at(self.lease_timeout_ms, self.now_ms());
        let decided =
            crate::observe::decide(ctx.fs, &job.layout, &job.identity, &facts, &self.request);
        let (variants, decision) = match decided {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::Busy => {
                self.wait_for_dying_trainer(e, &facts)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if first {
            warnings.extend(variants.unverified_warnings());
            warnings.extend(variants.skew_warnings());
        }
        // Nothing the trainer or the tracking store would refuse reaches the first write (an
        // allocated vN with a name the store then refuses would be junk that shifts
        // numbering). Refused whatever the decision, as `plan` and `config check` refuse it.
        job.preflight(decision.variant())?;
        let decision = self.take_over_if_abandoned(decision, &variants);
        match decision {
            Decision::Wait { variant } => {
                self.wait_for_owner(variant)?;
                Ok(None)
            }
            Decision::Reuse { variant } => Ok(Some(Settled::Reused(
                self.reuse(decision, variant, warnings)?,
            ))),
            Decision::New { variant } | Decision::Continue { variant } => {
                Ok(self.allocate_new(decision, variant)?.map(Settled::Held))
            }
            Decision::Resume { variant } => Ok(Some(Settled::Held(
                self.resume(decision, &variants, variant)?,
            ))),
        }
    }

    /// A `busy` decision: a resume of a variant whose owner is dead while its trainer is still
    /// being reaped waits (bounded) for the trainer to exit, never races it. `Ok` after a
    /// pause (decide again); otherwise the `busy` error, naming the owner when there is one.
    fn wait_for_dying_trainer(&mut self, e: Error, facts: &LivenessFacts<'_>) -> Result<()> {
        let (job, fs) = (self.job, self.ctx.fs);
        let target = self.request.explicit_variant.or_else(|| {
            FsVariants::scan(fs, &job.layout, &job.identity, facts)
                .ok()?
                .numbers()
                .last()
                .copied()
        });
        let target_dir = match target {
            Some(v) => Some(job.layout.variant_dir(&job.identity, v)?),
            None => None,
        };
        let dying = target_dir
            .as_ref()
            .and_then(|d| lease::dying_trainer(fs, d, facts));
        match (dying, &target_dir) {
            (Some(pid), Some(_))
                if self.now_ms().saturating_sub(self.started_ms) < DYING_TRAINER_WAIT_MS =>
            {
                self.say(format!("waiting for the trainer (pid {pid}) of a dead owner to exit before taking its variant over"));
                (self.ctx.waiting.pause)();
                Ok(())
            }
            (_, Some(d)) => Err(Error::new(
                ErrorKind::Busy,
                format!("{}; held by {}", e.message, owner_of(fs, d)),
            )),
            _ => Err(e),
        }
    }

    /// The owner waited for died and nobody completed: take its variant over by the
    /// stale-lease rule and resume it, instead of training the same thing again.
    fn take_over_if_abandoned(&self, decision: Decision, variants: &FsVariants<'_>) -> Decision {
        match (decision, self.waited_for) {
            (Decision::New { .. }, Some(v))
                if !variants.observe(v).1.is_live()
                    && !variants.observe(v).0.is_complete()
                    && variants.numbers().contains(&v) =>
            {
                Decision::Resume { variant: v }
            }
            (d, _) => d,
        }
    }

    /// A `wait` decision: `Ok` after a pause (decide again), `busy` once the wait reached
    /// `run.wait_for_owner`.
    fn wait_for_owner(&mut self, variant: u64) -> Result<()> {
        let (job, fs) = (self.job, self.ctx.fs);
        let dir = job.layout.variant_dir(&job.identity, variant)?;
        let waited = self.now_ms().saturating_sub(self.started_ms);
        if waited >= self.wait_limit_ms {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "variant {variant} of this identity is being trained by {}; waited {} s (run.wait_for_owner) for its result",
                    owner_of(fs, &dir),
                    waited / 1000
                ),
            ));
        }
        self.waited_for = Some(variant);
        // The owner's bar, while its result is awaited (a local OUT only: a bucket owner's
        // progress stays on its machine).
        if let Some(p) = crate::progress::latest_in_file(&dir.join(crate::progress::FILE)) {
            (self.ctx.progress)(&p);
        }
        self.say(format!(
            "waiting for v{variant}, trained by {}, to complete (same identity: its result is reused); waited {} s of {} s",
            owner_of(fs, &dir),
            waited / 1000,
            self.wait_limit_ms / 1000
        ));
        (self.ctx.waiting.pause)();
        Ok(())
    }

    /// A `reuse` decision: backfill the cache and report the complete variant (taking
    /// `warnings` into the report).
    fn reuse(
        &self,
        decision: Decision,
        variant: u64,
        warnings: &mut Vec<String>,
    ) -> Result<Report> {
        let (job, fs) = (self.job, self.ctx.fs);
        let backfilled = backfill(self.ctx, job, self.cache)?;
        let dir = job.layout.variant_dir(&job.identity, variant)?;
        let metrics = fs
            .read(&dir.join(METRICS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // The name the reused variant was trained under (auto-increment may have suffixed
        // it); the configured name for variants from before names were recorded.
        let run_name = match recorded_run_name(fs, &dir) {
            Some(name) => name,
            None => {
                let (name, w) = job.run_name(variant)?;
                warnings.extend(w);
                name
            }
        };
        Ok(Report {
            decision,
            output_dir: dir,
            run_name,
            cache_record: None,
            backfilled,
            metrics,
            warnings: std::mem::take(warnings),
        })
    }

    /// A `new` or `continue` decision: allocate the variant. `None` = the number was taken
    /// and the rule is to decide again.
    fn allocate_new(&self, decision: Decision, variant: u64) -> Result<Option<HeldVariant>> {
        let job = self.job;
        let mode = job.config.mode();
        let explicit = mode != RunMode::ForceNew && self.request.explicit_variant == Some(variant);
        // reuse_if_exists: identical starts share one training, so a start that loses the
        // race for the number decides again (and waits for the winner) instead of training
        // the same thing under the next number.
        let on_collision = if explicit {
            Collision::Busy
        } else if mode == RunMode::ReuseIfExists && self.request.wait_for_owner {
            Collision::DecideAgain
        } else {
            Collision::NextNumber
        };
        let allocated = allocate_with(
            self.ctx.fs,
            job,
            variant,
            on_collision,
            &self.ctx.owner,
            self.now_ms(),
            decision.name(),
        )?;
        Ok(allocated.map(|(variant, dir, lease)| HeldVariant {
            decision,
            variant,
            dir,
            lease,
        }))
    }

    /// A `resume` decision: take the lease of the variant over (it must not be live), then
    /// make sure under the lease that the variant is still incomplete.
    fn resume(
        &self,
        decision: Decision,
        variants: &FsVariants<'_>,
        variant: u64,
    ) -> Result<HeldVariant> {
        let (job, fs) = (self.job, self.ctx.fs);
        let dir = job.layout.variant_dir(&job.identity, variant)?;
        let observed = variants.observe(variant).1;
        if observed.is_live() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "variant {variant} is held by a live owner: {}",
                    owner_of(fs, &dir)
                ),
            ));
        }
        let taken = self.take_lease(&dir, observed.generation(), variant)?;
        let Take::Won(lease) = taken else {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("variant {variant} was taken over by another resume at the same time"),
            ));
        };
        // Under the lease, make sure the variant is still incomplete: a complete variant is
        // never modified (defence in depth for the read order above).
        let now_complete = completion::check(
            fs,
            &job.layout,
            &dir,
            Some(&job.identity),
            variant,
            completion::Depth::Sizes,
        )
        .is_complete();
        if now_complete {
            let _ = lease::release(fs, &dir, &lease, self.now_ms());
            return Err(Error::new(
                ErrorKind::Busy,
                format!("variant {variant} was completed by another process meanwhile"),
            ));
        }
        Ok(HeldVariant {
            decision,
            variant,
            dir,
            lease,
        })
    }

    /// Publishes the lease generation after `generation` (the one observed free or stale).
    /// A variant `trainctl gc` removed since it was observed is `busy`.
    fn take_lease(&self, dir: &Path, generation: u64, variant: u64) -> Result<Take> {
        match lease::take(
            self.ctx.fs,
            dir,
            generation,
            &self.ctx.owner,
            self.now_ms(),
            "resume",
        ) {
            // `trainctl gc` removed the abandoned variant since it was observed.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("variant {variant} was removed meanwhile (trainctl gc)"),
                ))
            }
            other => other,
        }
        .map_err(|e| super::io(dir, e))
    }
}
