//! `plan` latency against the number of cache records (100 … 100,000, with 100 variants) and
//! against the number of variant dirs (with a 100,000-record cache present) (issue: foundation,
//! performance; issue 8). Run: `cargo bench --bench plan`; prints a Markdown table
//! for docs/performance.md. A benchmark, not a test: nothing here asserts a time.

#[path = "../props/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time_plan(root: &std::path::Path, overrides: &[&str], runs: usize) -> (Duration, String) {
    let host = support::host();
    let mut times = Vec::with_capacity(runs);
    let mut decision = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        let opts = support::opts(root, overrides);
        let env = trainctl::cmd::Env {
            opts: &opts,
            cwd: root,
            fs: &trainctl::fs::OsFs,
            host: &host,
        };
        let report = trainctl::cmd::plan::run(&env).expect("plan");
        times.push(start.elapsed());
        decision = format!("{} v{}", report.chosen.decision, report.chosen.variant);
    }
    (median(times), decision)
}

fn time_binary(project: &support::Project, args: &[&str], runs: usize) -> Duration {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let (code, _, stderr) = project.run(args);
        assert_eq!(code, 0, "{stderr}");
        times.push(start.elapsed());
    }
    median(times)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let project = support::Project::new();
    let root = project.root().to_path_buf();
    let config =
        trainctl::config::load(&support::opts(&root, &[]), &root, &support::no_vars).expect("load");
    let job =
        trainctl::job::prepare(config, &trainctl::fs::OsFs, &support::host()).expect("prepare");

    // Cache records grow 100 → 100,000 with 100 complete variants (plan must not read the
    // records: its time should not move).
    let cache = job.layout.out.join("cache/final_training");
    std::fs::create_dir_all(&cache).expect("cache dir");
    for v in 1..=100 {
        support::write_complete_variant(&job.layout, &job.identity, v);
    }
    println!("| cache records (100 variants) | reuse | force_new |");
    println!("|---:|---:|---:|");
    let mut written = 0u32;
    let t = Instant::now();
    for records in [100u32, 1_000, 10_000, 100_000] {
        for i in written..records {
            let name = format!("final_training_builtin_{i:06}_20260101T000000.{i:06}Z.json");
            std::fs::write(cache.join(name), format!("{{\"record\":{i}}}")).expect("record");
        }
        written = records;
        let (reuse, _) = time_plan(&root, &[], runs);
        let (force, _) = time_plan(&root, &["run.mode=force_new"], runs);
        println!(
            "| {records} | {:.2} ms | {:.2} ms |",
            reuse.as_secs_f64() * 1e3,
            force.as_secs_f64() * 1e3
        );
    }
    eprintln!(
        "wrote 100000 cache records and timed plan in {:?}",
        t.elapsed()
    );
    println!();

    // A second identity whose variants are all incomplete (metadata missing): the worst case
    // for reuse_if_exists, which must look at every variant to find no complete one.
    let worst = trainctl::paths::Identity {
        spec_fp: "ffffffffffffffff".into(),
        ..job.identity.clone()
    };

    println!("| variants | reuse (all complete) | force_new | resume_if_incomplete | reuse, none complete (worst) | binary `plan`, all complete |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut made = 0u64; // rewriting the first 100 complete variants is harmless
    for target in [100u64, 1_000, 10_000] {
        let t = Instant::now();
        for v in made + 1..=target {
            support::write_complete_variant(&job.layout, &job.identity, v);
            support::write_incomplete_variant(&job.layout, &worst, v, None);
        }
        made = target;
        eprintln!("made {target} variants (x2) in {:?}", t.elapsed());
        let (reuse, d1) = time_plan(&root, &[], runs);
        let (force, d2) = time_plan(&root, &["run.mode=force_new"], runs);
        let (resume, d3) = time_plan(&root, &["run.mode=resume_if_incomplete"], runs);
        // Point the worst-case identity at the plan: only spec_fp differs, so time the
        // observation + decision directly on it.
        let facts = trainctl::lease::LivenessFacts {
            this_host: "test-host",
            now_ms: 0,
            lease_timeout_ms: 600_000,
            process_start_time: &support::no_process,
            clock: None,
        };
        let mut times = Vec::new();
        let mut d4 = String::new();
        for _ in 0..runs {
            let start = Instant::now();
            let variants = trainctl::observe::FsVariants::scan(
                &trainctl::fs::OsFs,
                &job.layout,
                &worst,
                &facts,
            )
            .expect("scan");
            let request = trainctl::plan::Request {
                mode: trainctl::config::schema::RunMode::ReuseIfExists,
                explicit_variant: None,
                parent: None,
                target_epochs: 1,
                reuse_depth: trainctl::completion::Depth::Sizes,
                wait_for_owner: true,
            };
            let decision = trainctl::plan::decide(&request, &variants).expect("decide");
            times.push(start.elapsed());
            d4 = format!("{} v{}", decision.name(), decision.variant());
        }
        let worst_t = median(times);
        let binary = time_binary(&project, &["plan"], runs.min(9));
        eprintln!("decisions: {d1} | {d2} | {d3} | {d4}");
        println!(
            "| {target} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            reuse.as_secs_f64() * 1e3,
            force.as_secs_f64() * 1e3,
            resume.as_secs_f64() * 1e3,
            worst_t.as_secs_f64() * 1e3,
            binary.as_secs_f64() * 1e3,
        );
    }
}
