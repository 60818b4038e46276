//! The request path: the decision a request keeps (`decision`), the phase
//! handlers that make and count it and feed back its outcome (`phases`, and
//! `postconfiguration`, which registers them), the
//! engine's view of an nginx request (`request`), the `$migration_*` variables
//! and the status handler. Reads `state/` and `conf/`.

pub mod decision;
pub mod drain;
pub mod host_verdict;
pub mod phases;
pub mod postconfiguration;
pub mod request;
pub mod status;
pub mod sticky;
pub mod variables;
