//! Test support for the unit tests inside the workspace's crates (feature `testing`): the same
//! replay promise as the suite's (docs/contract.md, "Replaying a failure"), so a failing
//! property here also prints its seed and a one-line replay command.

/// A proptest config whose RNG seed is known: `TRAINCTL_SEED` if set, else a fresh one; the
/// seed and the replay command (`cargo test --release --lib -- <module>::<test>`) are printed
/// first, and libtest shows them when the test fails. `PROPTEST_CASES` overrides `cases`.
/// `module` is the caller's `module_path!()`.
pub fn seeded_config(cases: u32, module: &str) -> proptest::test_runner::Config {
    let seed = seed();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    // libtest names each test's thread after its path in the crate (`track::tests::name`).
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_string)
        .unwrap_or_else(|| {
            module
                .split_once("::")
                .map_or(module, |(_, m)| m)
                .to_string()
        });
    let krate = module
        .split("::")
        .next()
        .unwrap_or(module)
        .replace('_', "-");
    eprintln!(
        "seed {seed}; replay: TRAINCTL_SEED={seed} PROPTEST_CASES={cases} cargo test --release -p {krate} --lib -- {test} --exact"
    );
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..proptest::test_runner::Config::default()
    }
}

/// The seed of a property run: `TRAINCTL_SEED` when set (a replay), else a fresh one from the
/// clock and the process id. The suite's configs in `props/` take theirs from here too.
pub fn seed() -> u64 {
    std::env::var("TRAINCTL_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(std::process::id()).rotate_left(32)
        })
}
