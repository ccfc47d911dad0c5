//! Reference models of the trainctl contract, restated from docs/contract.md alone; this crate must
//! never import from the `trainctl` crate (it is the oracle the orchestrator is checked against).

pub mod concurrent;
pub mod decision;
pub mod machine;

pub use decision::{
    decide, expects_force_new_warning, ErrorKind, Expected, Mode, ParentView, Request, VariantView,
};
