#![no_main]
//! Fuzz target `config`: `trainctl::fuzzing::Target::Config` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::Config.run(data) {
        panic!("{broken}");
    }
});
