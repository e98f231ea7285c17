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
//! - `reported`: the errors a runner retried and a bulk load's position, for whoever watches;
//! - `status`: partitions, checkpoints, watermarks, lag and dead letters (the admin API, the
//!   metrics and the `status` command report it);
//!
//! `prepare` (migrations and the topic) and `runner::Runner::new` are what the wiring
//! (`crate::startup`) and the operations start the live part with.

pub(crate) mod batch;
pub(crate) mod consumer;
pub(crate) mod coverage;
pub(crate) mod dedup;
pub(crate) mod observer;
pub(crate) mod reported;
pub(crate) mod runner;
pub(crate) mod spans;
pub mod status;
pub(crate) mod target;

use anyhow::Context as _;
use sqlx::PgPool;

use crate::Config;

/// Migrates the database and ensures the topic; returns a pool on `public`. (Creating the database
/// is `migrate`'s job: it needs rights on the server that a running projector should not.)
pub(crate) async fn prepare(config: &Config) -> anyhow::Result<PgPool> {
    let public = eventline_runtime::db::pool(&config.database)?;
    eventline_runtime::db::migrate(&public).await?;
    eventline_runtime::kafka::ensure_topic(&config.kafka).await.context("preparing the event topic")?;
    Ok(public)
}
