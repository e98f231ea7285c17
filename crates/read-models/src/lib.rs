//! The read models' bookkeeping, shared by the projector (which writes them) and the query service
//! (which reads them): their versions, tables and checkpoints.
//!
//! Versions (migrations/0004): each lives in a PostgreSQL schema of its own, `read_model_v<N>`,
//! and exactly one is live. The query service reads the live one; the projector writes it; a
//! rebuild fills a new one next to it and switches.

pub mod checkpoints;
pub mod documents;
pub mod fold;
pub mod history;

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgExecutor, PgPool};

use eventline_runtime::config::DatabaseConfig;
use eventline_runtime::log_identity::LogIdentity;

/// The notification channel on which a switch of the live version is announced (payload: the
/// new live version), so readers and writers move without polling.
pub const CHANNEL: &str = "eventline_read_model_versions";

/// The read models of one version: what the query API serves, and what `verify` compares.
pub const READ_MODELS: [&str; 6] = ["users", "orders", "order_items", "payments", "inventory", "event_index"];

/// The tables that make a version a projection of the log on its own: the dedup records, the
/// checkpoints, its identity, and the keys parked behind an event the database refused (with
/// their events).
pub const BOOKKEEPING: [&str; 5] =
    ["processed_events", "projection_checkpoints", "projection_identity", "parked_keys", "parked_events"];

/// Every table of one version: its read models and their bookkeeping.
pub fn tables() -> impl Iterator<Item = &'static str> {
    READ_MODELS.into_iter().chain(BOOKKEEPING)
}

/// A read-model version: the number of its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Version(pub i32);

impl Version {
    /// The PostgreSQL schema holding the version's tables (built from an integer, so it is always
    /// a safe identifier).
    pub fn schema(self) -> String {
        format!("read_model_v{}", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Where a version is in its life (`public.read_model_versions.state`; the migrations' CHECK
/// constraint lists the same names). Every state but `Retired` is held by one version at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being filled from the log by `rebuild`; not served.
    Building,
    /// Served by the query service and written by the projector.
    Live,
    /// The version live before the last switch, kept for `rollback`.
    Previous,
    /// A scratch copy folded by `verify`, dropped when it ends.
    Verifying,
    /// Out of use; its schema can be dropped.
    Retired,
}

impl State {
    pub const ALL: [State; 5] =
        [State::Building, State::Live, State::Previous, State::Verifying, State::Retired];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Building => "building",
            State::Live => "live",
            State::Previous => "previous",
            State::Verifying => "verifying",
            State::Retired => "retired",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The live version.
pub async fn live<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Version> {
    in_state(db, State::Live).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The live version, its row held until the transaction ends: no switch happens meanwhile, and
/// the live projector's next batch waits.
pub async fn live_for_update<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Version> {
    sqlx::query_scalar("SELECT version FROM public.read_model_versions WHERE state = $1 FOR UPDATE")
        .bind(State::Live)
        .fetch_one(db)
        .await
        .map(Version)
}

/// The version in `state`, if one is (for every state but `Retired`, one at most).
pub async fn in_state<'e>(db: impl PgExecutor<'e>, state: State) -> sqlx::Result<Option<Version>> {
    sqlx::query_scalar("SELECT version FROM public.read_model_versions WHERE state = $1 LIMIT 1")
        .bind(state)
        .fetch_optional(db)
        .await
        .map(|version| version.map(Version))
}

/// Every version in `state` (for `Retired`, any number of them).
pub async fn all_in_state<'e>(db: impl PgExecutor<'e>, state: State) -> sqlx::Result<Vec<Version>> {
    sqlx::query_scalar("SELECT version FROM public.read_model_versions WHERE state = $1 ORDER BY version")
        .bind(state)
        .fetch_all(db)
        .await
        .map(|versions| versions.into_iter().map(Version).collect())
}

/// Moves `version` to `state` (a switch to `Live` also records when).
pub async fn set_state<'e>(db: impl PgExecutor<'e>, version: Version, state: State) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.read_model_versions SET state = $2, \
         switched_at = CASE WHEN $2 = $3 THEN now() ELSE switched_at END WHERE version = $1",
    )
    .bind(version.0)
    .bind(state)
    .bind(State::Live)
    .execute(db)
    .await
    .map(|_| ())
}

/// The states of the versions whose row this transaction now holds for update: the live one and
/// `version`. A switch takes them so that batches under way finish first and later ones see the
/// new states.
pub async fn lock_live_and<'e>(
    db: impl PgExecutor<'e>,
    version: Version,
) -> sqlx::Result<Vec<(Version, State)>> {
    let rows: Vec<(i32, State)> = sqlx::query_as(
        "SELECT version, state FROM public.read_model_versions WHERE state = $2 OR version = $1 \
         ORDER BY version FOR UPDATE",
    )
    .bind(version.0)
    .bind(State::Live)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(version, state)| (Version(version), state)).collect())
}

/// How a version's recorded log identity compares with the log the broker serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogMatch {
    /// Built from this log.
    Same,
    /// No identity recorded yet (a new or pre-identity version).
    Unbound,
    /// Built from another log: its offsets mean nothing in this one.
    Other { recorded: LogIdentity, current: LogIdentity },
}

impl LogMatch {
    pub fn is_other(&self) -> bool {
        matches!(self, LogMatch::Other { .. })
    }
}

/// The identity of the log `version` was built from, if it records one.
pub async fn recorded_log<'e>(
    db: impl PgExecutor<'e>,
    version: Version,
) -> sqlx::Result<Option<LogIdentity>> {
    let recorded: Option<(Option<String>, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT log_cluster_id, log_topic_id FROM public.read_model_versions WHERE version = $1",
    )
    .bind(version.0)
    .fetch_optional(db)
    .await?;
    Ok(match recorded {
        Some((Some(cluster_id), topic_id)) => {
            Some(LogIdentity { cluster_id, topic_id: topic_id.unwrap_or_default() })
        }
        _ => None,
    })
}

/// Compares a recorded log identity with the current one. Topic ids decide when both sides have
/// one (a broker without topic ids reports the nil id; then the cluster id alone decides).
pub fn compare_log(recorded: Option<LogIdentity>, current: &LogIdentity) -> LogMatch {
    let Some(recorded) = recorded else { return LogMatch::Unbound };
    let same = recorded.cluster_id == current.cluster_id
        && (recorded.topic_id.is_nil() || current.topic_id.is_nil() || recorded.topic_id == current.topic_id);
    if same { LogMatch::Same } else { LogMatch::Other { recorded, current: current.clone() } }
}

/// Records that `version` is built from `log`, unless it already records a log.
pub async fn bind_log<'e>(db: impl PgExecutor<'e>, version: Version, log: &LogIdentity) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.read_model_versions SET log_cluster_id = $2, log_topic_id = $3 \
         WHERE version = $1 AND log_cluster_id IS NULL",
    )
    .bind(version.0)
    .bind(&log.cluster_id)
    .bind(log.topic_id)
    .execute(db)
    .await
    .map(|_| ())
}

/// A lazily connecting pool whose unqualified table names are `version`'s tables (and, after them,
/// `public`'s: the dead letters are shared by all versions). The schema is part of the connection
/// options, so it costs no statement per query.
pub fn pool(config: &DatabaseConfig, version: Version) -> anyhow::Result<PgPool> {
    let options = eventline_runtime::db::connect_options(config)?
        .options([("search_path", format!("{},public", version.schema()))]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_the_same_only_with_the_same_cluster_and_topic_id() {
        let log = |cluster: &str, topic: u128| LogIdentity {
            cluster_id: cluster.into(),
            topic_id: uuid::Uuid::from_u128(topic),
        };
        assert_eq!(compare_log(None, &log("a", 1)), LogMatch::Unbound);
        assert_eq!(compare_log(Some(log("a", 1)), &log("a", 1)), LogMatch::Same);
        assert!(compare_log(Some(log("a", 1)), &log("a", 2)).is_other(), "a recreated topic");
        assert!(compare_log(Some(log("a", 1)), &log("b", 1)).is_other(), "another cluster");
        // Brokers without topic ids: the cluster id alone decides.
        assert_eq!(compare_log(Some(log("a", 0)), &log("a", 2)), LogMatch::Same);
    }

    #[test]
    fn versions_name_their_schema() {
        assert_eq!(Version(3).schema(), "read_model_v3");
        assert_eq!(Version(3).to_string(), "v3");
    }
}
