//! The projector: consumes the event log and applies it to the PostgreSQL read models so that each
//! event changes them exactly once, whatever Kafka redelivers and wherever a crash happens.
//!
//! - `project`: the projection itself, one transaction per batch: dedup by event id, the
//!   set-based upserts, dead letters and the checkpoint, guarded by the version's state;
//! - `live`: the running service around it: the Kafka consumer and its assignments, the loop
//!   that reads and applies with retries, the Redis fast path, traces, the admin API;
//! - `operations`: what operators run against it: `rebuild`, `rollback`, `verify`, and the
//!   command line with progress reporting (`status` reads `live::status`);
//! - `console`: the operator console on the admin port (the page and its JSON endpoints), fed
//!   by the live part's observer and acting through `dlq`;
//! - shared by both: `dlq` (the dead-letter queue, written by the projection, worked by
//!   operators), `parked` (keys parked behind an event the database refused, worked by
//!   operators the same way) and `log_check` (whether the read models belong to the log the broker serves).
//!
//! Operations reach the live part only through `live::startup::{prepare, runner}` (a runner in a
//! catch-up role, `live::runner::Role`), `live::consumer::RangeReader`, `live::target::Target` and
//! `live::status`; the live part never reaches into operations.

pub mod config;
pub mod console;
pub mod dlq;
mod live;
pub mod log_check;
pub mod metrics;
pub mod operations;
pub mod parked;
pub mod project;

pub use config::Config;
pub use live::startup::Application;
pub use live::status;
pub use operations::{cli, progress, rebuild, verify};
pub use project::checkpoint;
