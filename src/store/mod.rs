//! OUT in an object store (issue 17, docs/contract.md "OUT in an object store"). So far: the
//! object-store port (`objects`) with the one protocol rule every create-if-absent needs (a
//! timed-out create resolved by reading the object back), and the simulated store the suite
//! will run the orchestrator on (`sim`). The typed store layer over it and the Fs port, and
//! the `object_store` backend, are not built yet.

pub mod bucket;
pub mod cloud;
pub mod meta;
pub mod objects;
pub mod sim;
pub mod stage;
