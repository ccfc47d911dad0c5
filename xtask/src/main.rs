//! `cargo xtask`: trainctl's repository automation (the xtask convention; alias in
//! .cargo/config.toml). `gate` is the release gate, `bench` refreshes docs/performance.md,
//! `repro` replays one failure, `stats` sums what the campaigns explored per hour. It drives
//! cargo, cargo-nextest and cargo-mutants and writes reports; it never changes sources (bench
//! rewrites only its own section of docs/performance.md).

mod bench;
mod gate;
mod mutants;
mod repro;
mod stats;
mod util;

use std::process::ExitCode;

fn usage() -> String {
    let mut text = format!(
        "usage:\n  {}\n\n  {}\n\n  {}\n\n  {}",
        gate::USAGE.replace('\n', "\n  "),
        bench::USAGE.replace('\n', "\n  "),
        repro::USAGE.replace('\n', "\n  "),
        stats::USAGE.replace('\n', "\n  ")
    );
    let traces = repro::recent_traces();
    if !traces.is_empty() {
        text.push_str("\n\nrecent failure traces:");
        for t in traces.iter().take(5) {
            text.push_str(&format!("\n  {}", t.display()));
        }
    }
    text
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gate") => gate::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("repro") if args.len() > 1 => repro::run(&args[1..]),
        Some("stats") => stats::run(&args[1..]),
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}
