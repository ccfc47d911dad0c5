#![no_main]
//! Fuzz target `metadata`: `trainctl::fuzzing::Target::Metadata` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::Metadata.run(data) {
        panic!("{broken}");
    }
});
