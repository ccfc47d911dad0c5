#![no_main]
//! Fuzz target `safetensors`: `trainctl::fuzzing::Target::Safetensors` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::Safetensors.run(data) {
        panic!("{broken}");
    }
});
