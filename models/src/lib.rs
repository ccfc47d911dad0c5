//! Reference models of the trainctl contract (placeholder, being written).
