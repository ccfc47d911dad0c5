//! Commands as typed reports (docs/contract.md, "Commands return typed reports"): each module
//! runs one command and returns a report that serialises to its `--json` document and
//! displays as its human text; the CLI only parses arguments and renders. `status` is here;
//! `gc` returns `crate::gc::Report`. The older commands still build their JSON in
//! `src/cli.rs` (the rest of that move is open work, docs/contract.md "Not done yet").

pub mod status;
