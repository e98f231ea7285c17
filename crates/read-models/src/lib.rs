//! The read models' bookkeeping, shared by the projector (which writes them) and the query service
//! (which reads them): their projections, versions, tables and checkpoints.
//!
//! A projection (`Projection`) is a unit of read models that change together: it has its own
//! versions, checkpoints, dedup records and parked keys, and is rebuilt, verified and rolled back
//! on its own. Each version of a projection lives in a PostgreSQL schema of its own,
//! `<prefix>_v<N>` (migrations 0004 and 0014), and at most one version per projection is live.
//! The query service reads the live ones; the projector writes them, side by side from one
//! consumption of the log; a rebuild fills a new version of one projection next to its live one
//! and switches.

pub mod checkpoints;
pub mod documents;
pub mod fold;
pub mod history;
pub mod orders_by_status;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use eventline_events::EventType;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgExecutor, PgPool};

use eventline_runtime::config::DatabaseConfig;
use eventline_runtime::log_identity::LogIdentity;

/// The notification channel on which a switch of a live version is announced (payload:
/// `<projection> <version>`), so readers and writers move without polling.
pub const CHANNEL: &str = "eventline_read_model_versions";

/// The tables that make a version a projection of the log on its own: the dedup records, the
/// checkpoints, its identity, and the keys parked behind an event the database refused (with
/// their events).
pub const BOOKKEEPING: [&str; 5] =
    ["processed_events", "projection_checkpoints", "projection_identity", "parked_keys", "parked_events"];

/// A named set of read models that change together, with its own progress through the log.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// Users, orders with their items and payments, inventory, the served documents that join
    /// them, and the event index (histories, as-of reads, live streams).
    Main,
    /// Orders by status (`GET /orders?status=`): the orders still awaiting a payment, and the
    /// paid ones, by when they were placed.
    OrdersByStatus,
}

impl Projection {
    pub const ALL: [Projection; 2] = [Projection::Main, Projection::OrdersByStatus];

    /// The name operators use (`rebuild --projection <name>`) and the database stores.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Main => "main",
            Projection::OrdersByStatus => "orders_by_status",
        }
    }

    /// Its versions' schemas are `<prefix>_v<N>` (the main projection keeps the name it had
    /// when it was the only one).
    fn schema_prefix(self) -> &'static str {
        match self {
            Projection::Main => "read_model",
            Projection::OrdersByStatus => "orders_by_status",
        }
    }

    /// Its read models: what the query API serves from it, and what `verify` compares.
    pub fn read_models(self) -> &'static [&'static str] {
        match self {
            Projection::Main => &["users", "orders", "order_items", "payments", "inventory", "event_index"],
            Projection::OrdersByStatus => &["orders_by_status"],
        }
    }

    /// Every table of one of its versions: its read models and their bookkeeping.
    pub fn tables(self) -> impl Iterator<Item = &'static str> {
        self.read_models().iter().copied().chain(BOOKKEEPING)
    }

    /// Whether events of `event_type` change it. It claims (dedups), applies and parks only
    /// those; its checkpoints move past the others.
    pub fn consumes(self, event_type: EventType) -> bool {
        match self {
            Projection::Main => true,
            Projection::OrdersByStatus => {
                matches!(event_type, EventType::OrderPlaced | EventType::PaymentSettled)
            }
        }
    }

    /// Whether its writer records the log's undecodable messages in the dead-letter queue (one
    /// projection does, so the queue holds each once and its metrics count it once).
    pub fn records_dead_letters(self) -> bool {
        self == Projection::Main
    }

    /// Its version `number`.
    pub fn version(self, number: i32) -> Version {
        Version { projection: self, number }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Projection {
    type Err = String;

    fn from_str(name: &str) -> Result<Projection, String> {
        Projection::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
            format!("no projection is named {name:?} (there are: {})", names.join(", "))
        })
    }
}

/// A version of a projection: the number of its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub projection: Projection,
    pub number: i32,
}

impl Version {
    /// A version of the main projection.
    pub const fn main(number: i32) -> Version {
        Version { projection: Projection::Main, number }
    }

    /// The PostgreSQL schema holding the version's tables (built from a fixed prefix and an
    /// integer, so it is always a safe identifier).
    pub fn schema(self) -> String {
        format!("{}_v{}", self.projection.schema_prefix(), self.number)
    }
}

/// As its number: the projection is named beside it where versions of several are listed.
impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.number)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.projection, self.number)
    }
}

/// Where a version is in its life (`public.read_model_versions.state`; the migrations' CHECK
/// constraint lists the same names). Every state but `Retired` is held by one version of a
/// projection at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being filled from the log by `rebuild` (or, for a projection never live, by the live
    /// projector catching it up); not served.
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

/// The live version of `projection`.
pub async fn live<'e>(db: impl PgExecutor<'e>, projection: Projection) -> sqlx::Result<Version> {
    in_state(db, projection, State::Live).await?.ok_or(sqlx::Error::RowNotFound)
}

/// The live version of every projection that has one (a projection never caught up has none).
pub async fn live_versions<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<Version>> {
    all_in_state(db, State::Live).await
}

/// The live version of `projection`, its row held until the transaction ends: no switch happens
/// meanwhile, and the live projector's next batch of it waits.
pub async fn live_for_update<'e>(db: impl PgExecutor<'e>, projection: Projection) -> sqlx::Result<Version> {
    sqlx::query_scalar(
        "SELECT version FROM public.read_model_versions WHERE projection = $1 AND state = $2 FOR UPDATE",
    )
    .bind(projection)
    .bind(State::Live)
    .fetch_one(db)
    .await
    .map(|number| projection.version(number))
}

/// The version of `projection` in `state`, if one is (for every state but `Retired`, one at most).
pub async fn in_state<'e>(
    db: impl PgExecutor<'e>,
    projection: Projection,
    state: State,
) -> sqlx::Result<Option<Version>> {
    sqlx::query_scalar(
        "SELECT version FROM public.read_model_versions WHERE projection = $1 AND state = $2 LIMIT 1",
    )
    .bind(projection)
    .bind(state)
    .fetch_optional(db)
    .await
    .map(|number| number.map(|number| projection.version(number)))
}

/// Every version in `state`, of every projection.
pub async fn all_in_state<'e>(db: impl PgExecutor<'e>, state: State) -> sqlx::Result<Vec<Version>> {
    let rows: Vec<(Projection, i32)> = sqlx::query_as(
        "SELECT projection, version FROM public.read_model_versions WHERE state = $1 ORDER BY projection, version",
    )
    .bind(state)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(projection, number)| projection.version(number)).collect())
}

/// Moves `version` to `state` (a switch to `Live` also records when).
pub async fn set_state<'e>(db: impl PgExecutor<'e>, version: Version, state: State) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE public.read_model_versions SET state = $3, \
         switched_at = CASE WHEN $3 = $4 THEN now() ELSE switched_at END WHERE projection = $1 AND version = $2",
    )
    .bind(version.projection)
    .bind(version.number)
    .bind(state)
    .bind(State::Live)
    .execute(db)
    .await
    .map(|_| ())
}

/// The states of the versions whose row this transaction now holds for update: the live one of
/// `version`'s projection (if it has one) and `version`. A switch takes them so that batches
/// under way finish first and later ones see the new states.
pub async fn lock_live_and<'e>(
    db: impl PgExecutor<'e>,
    version: Version,
) -> sqlx::Result<Vec<(Version, State)>> {
    let rows: Vec<(i32, State)> = sqlx::query_as(
        "SELECT version, state FROM public.read_model_versions \
         WHERE projection = $1 AND (state = $3 OR version = $2) ORDER BY version FOR UPDATE",
    )
    .bind(version.projection)
    .bind(version.number)
    .bind(State::Live)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(number, state)| (version.projection.version(number), state)).collect())
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
        "SELECT log_cluster_id, log_topic_id FROM public.read_model_versions WHERE projection = $1 AND version = $2",
    )
    .bind(version.projection)
    .bind(version.number)
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
        "UPDATE public.read_model_versions SET log_cluster_id = $3, log_topic_id = $4 \
         WHERE projection = $1 AND version = $2 AND log_cluster_id IS NULL",
    )
    .bind(version.projection)
    .bind(version.number)
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
        assert_eq!(Version::main(3).schema(), "read_model_v3");
        assert_eq!(Version::main(3).to_string(), "main v3");
        assert_eq!(Projection::OrdersByStatus.version(1).schema(), "orders_by_status_v1");
    }

    #[test]
    fn projections_are_found_by_name() {
        for projection in Projection::ALL {
            assert_eq!(projection.name().parse::<Projection>(), Ok(projection));
        }
        assert!("users".parse::<Projection>().unwrap_err().contains("main, orders_by_status"));
    }
}
