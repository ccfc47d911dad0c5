#![no_main]
//! Fuzz target `trials`: `trainctl::fuzzing::Target::Trials` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::Trials.run(data) {
        panic!("{broken}");
    }
});
