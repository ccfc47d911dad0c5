#![no_main]
//! Fuzz target `cache_record`: `trainctl::fuzzing::Target::CacheRecord` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::CacheRecord.run(data) {
        panic!("{broken}");
    }
});
