#![no_main]
//! Fuzz target `lease`: `trainctl::fuzzing::Target::Lease` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::Lease.run(data) {
        panic!("{broken}");
    }
});
