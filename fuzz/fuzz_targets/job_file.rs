#![no_main]
//! Fuzz target `job_file`: `trainctl::fuzzing::Target::JobFile` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::JobFile.run(data) {
        panic!("{broken}");
    }
});
