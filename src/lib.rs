//! trainctl: final-training orchestrator. The library owns every decision and effect; the
//! binary (`main.rs`) only parses arguments and maps errors to exit codes.
