#![no_main]
//! Fuzz target `mlflow_response`: `trainctl::fuzzing::Target::MlflowResponse` (docs/contract.md, "Fuzzed loaders").

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = trainctl::fuzzing::Target::MlflowResponse.run(data) {
        panic!("{broken}");
    }
});
