//! The projector: consumes the event log and applies it to the PostgreSQL read models so that each
//! event changes them exactly once, whatever Kafka redelivers and wherever a crash happens.
//!
//! Read top-down; each layer uses only the layers below it:
//!
//! - the wiring: `command_line` (what the binary runs), `startup` (the service put together:
//!   `Application`) and `admin` (health, readiness, metrics, status and the console on the admin
//!   port);
//! - `console`: the operator console (the page and its JSON endpoints), fed by the live part's
//!   observer through `live::observer::Observations` and acting through `operations` and `dlq`;
//! - `operations`: what operators run: `rebuild`, `rollback`, `verify`, the bulk load, and the
//!   command line's commands with progress reporting;
//! - `live`: the running projection: the Kafka consumer and its assignments, the loop that reads
//!   and applies with retries, the Redis fast path, traces, the observer and `status`. It starts
//!   from `live::prepare` and `live::runner::Runner::new`, which the wiring and the operations call;
//! - `project`: one batch in one transaction: dedup by event id, the set-based upserts, dead
//!   letters, parked keys and the checkpoint, guarded by the version's state;
//! - shared by them: `dlq` (the dead-letter queue), `parked` (keys parked behind an event the
//!   database refused), `log_check` (whether the read models belong to the log the broker
//!   serves), `metrics` and `config`.
//!
//! `live` never names `console` or `operations`, and no circle of imports spans more than two
//! files: `layers` (a test over this folder) checks both.

mod admin;
pub mod command_line;
pub mod config;
pub mod console;
pub mod dlq;
mod live;
pub mod log_check;
pub mod metrics;
pub mod operations;
pub mod parked;
pub mod project;
mod startup;

#[cfg(test)]
mod layers;

pub use config::Config;
pub use live::status;
pub use operations::{cli, progress, rebuild, verify};
pub use project::checkpoint;
pub use startup::Application;
