//! The fuzz corpora replayed on the stable toolchain (docs/contract.md, "Fuzzed loaders"):
//! every committed input of `fuzz/corpus/<target>/` goes through the same entry point the
//! cargo-fuzz target calls (`trainctl::fuzzing::Target::run`), so an input the fuzzer once
//! crashed on, committed with its fix, stays checked by every `cargo test`.

use trainctl::fuzzing::Target;

#[test]
fn every_committed_fuzz_input_keeps_its_promises() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in Target::ALL {
        let dir = root.join(target.name());
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no seed corpus for {}", target.name());
        for input in inputs {
            let data = std::fs::read(&input).expect("read input");
            if let Err(broken) = target.run(&data) {
                panic!("{}: {broken}", input.display());
            }
        }
    }
}
