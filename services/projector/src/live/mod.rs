//! The running projector: reads the log, applies it batch by batch, and reports on itself.
//!
//! - `consumer`: the Kafka consumer, positioned from the checkpoints on every assignment;
//! - `runner`: the loop: partitions positioned from the checkpoints, rebalances and version
//!   switches followed, one batch applied while the next is read;
//! - `batch`: applying one batch in one transaction, retried with backoff until it commits;
//! - `dedup`: the Redis fast path that recognises redelivered events early;
//! - `target`: which read-model version is written, following switches;
//! - `coverage`: partitions with lag that no member of the group consumes;
//! - `spans`: traces of the work, joined to the traces of the requests that appended the events;
//! - `observer`: status metrics, unconsumed partitions, the DLQ mirror and the log's identity,
//!   watched every few seconds;
//! - `status`: partitions, checkpoints, watermarks, lag and dead letters (the admin API, the
//!   metrics and the `status` command report it);
//! - `admin`: health, readiness, metrics and status over HTTP;
//! - `startup`: wires them together (`Application`).

pub(crate) mod admin;
pub(crate) mod batch;
pub(crate) mod consumer;
pub(crate) mod coverage;
pub(crate) mod dedup;
pub(crate) mod observer;
pub(crate) mod runner;
pub(crate) mod spans;
pub(crate) mod startup;
pub mod status;
pub(crate) mod target;
