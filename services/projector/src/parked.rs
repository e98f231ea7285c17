//! Parked keys, as operators work them: listed grouped by error, opened with their events,
//! redriven (their events applied in log order through the projection's own code, once the
//! cause is fixed) or discarded with a reason. The projection parks them (`project::parking`,
//! migrations/0012); the CLI (`eventline-projector parked …`) and the console call these.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use eventline_read_models::Version;

use crate::project::{self, Decoded, Record, Writer, failure};

/// One parked key: why, since when, and how many events wait behind it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedKey {
    /// The key as text (lossy where it is not UTF-8; `keyBase64` is exact).
    #[sqlx(skip)]
    pub key: String,
    #[sqlx(skip)]
    pub key_base64: String,
    #[serde(skip)]
    pub message_key: Vec<u8>,
    pub partition: i32,
    /// Where the first refused event is.
    #[sqlx(rename = "log_offset")]
    pub offset: i64,
    pub event_type: String,
    pub sqlstate: Option<String>,
    pub error: String,
    pub trace_id: Option<String>,
    pub parked_at: DateTime<Utc>,
    /// Redrives tried that failed again.
    pub attempts: i32,
    /// Events waiting, the first refused one included.
    pub events: i64,
}

impl ParkedKey {
    fn shown(mut self) -> ParkedKey {
        self.key = String::from_utf8_lossy(&self.message_key).into_owned();
        self.key_base64 = base64::engine::general_purpose::STANDARD.encode(&self.message_key);
        self
    }
}

/// One event waiting behind a parked key.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedEvent {
    pub partition: i32,
    #[sqlx(rename = "log_offset")]
    pub offset: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub trace_id: Option<String>,
    pub parked_at: DateTime<Utc>,
    #[serde(skip)]
    pub payload: Vec<u8>,
    #[serde(skip)]
    #[schema(value_type = Object)]
    pub headers: sqlx::types::Json<BTreeMap<String, String>>,
    #[serde(skip)]
    pub message_key: Vec<u8>,
    #[serde(skip)]
    pub appended_at: Option<DateTime<Utc>>,
}

impl ParkedEvent {
    fn record(&self) -> Record {
        Record {
            partition: self.partition,
            offset: self.offset,
            key: Some(self.message_key.clone()),
            payload: self.payload.clone(),
            headers: self.headers.0.clone(),
            appended_at_ms: self.appended_at.map(|at| at.timestamp_millis()),
        }
    }

    /// The payload as text (personal data: shown only to operators).
    pub fn payload_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Keys parked with the same error, for the console's and the CLI's overview.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorGroup {
    pub sqlstate: Option<String>,
    pub error: String,
    pub keys: i64,
    pub events: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

const KEY_COLUMNS: &str = "k.message_key, k.partition, k.log_offset, k.event_type, k.sqlstate, k.error, \
                           k.trace_id, k.parked_at, k.attempts, \
                           (SELECT count(*) FROM parked_events e WHERE e.topic = k.topic AND e.message_key = k.message_key) AS events";

/// Every parked key of `topic` in the version `pool` reads, oldest first (at most `limit`).
pub async fn list(pool: &PgPool, topic: &str, limit: i64) -> sqlx::Result<Vec<ParkedKey>> {
    let keys: Vec<ParkedKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM parked_keys k WHERE k.topic = $1 ORDER BY k.parked_at, k.partition, k.log_offset LIMIT $2"
    ))
    .bind(topic)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(keys.into_iter().map(ParkedKey::shown).collect())
}

/// The parked keys grouped by their error.
pub async fn groups(pool: &PgPool, topic: &str) -> sqlx::Result<Vec<ErrorGroup>> {
    sqlx::query_as(
        "SELECT k.sqlstate, k.error, count(*) AS keys,
                sum((SELECT count(*) FROM parked_events e WHERE e.topic = k.topic AND e.message_key = k.message_key))::bigint AS events,
                min(k.parked_at) AS oldest, max(k.parked_at) AS newest
         FROM parked_keys k WHERE k.topic = $1
         GROUP BY k.sqlstate, k.error ORDER BY keys DESC, oldest",
    )
    .bind(topic)
    .fetch_all(pool)
    .await
}

/// Keys and events parked now.
pub async fn depth(pool: &PgPool, topic: &str) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM parked_keys WHERE topic = $1), (SELECT count(*) FROM parked_events WHERE topic = $1)",
    )
    .bind(topic)
    .fetch_one(pool)
    .await
}

/// One parked key with its events in log order; `None` when the key is not parked.
pub async fn get(
    pool: &PgPool,
    topic: &str,
    key: &[u8],
) -> sqlx::Result<Option<(ParkedKey, Vec<ParkedEvent>)>> {
    let found: Option<ParkedKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM parked_keys k WHERE k.topic = $1 AND k.message_key = $2"
    ))
    .bind(topic)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    let Some(found) = found else { return Ok(None) };
    let events = events(pool, topic, key).await?;
    Ok(Some((found.shown(), events)))
}

async fn events<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    topic: &str,
    key: &[u8],
) -> sqlx::Result<Vec<ParkedEvent>> {
    sqlx::query_as(
        "SELECT partition, log_offset, event_id, event_type, trace_id, parked_at, payload, headers, message_key, appended_at
         FROM parked_events WHERE topic = $1 AND message_key = $2 ORDER BY partition, log_offset",
    )
    .bind(topic)
    .bind(key)
    .fetch_all(executor)
    .await
}

/// What a redrive did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Redriven {
    /// Every event of the key applied (or found applied already), in log order; the key is no
    /// longer parked. In a dry run, nothing was kept.
    Applied {
        events: usize,
        applied: usize,
        duplicates: usize,
        #[serde(rename = "dryRun")]
        dry_run: bool,
    },
    /// The database still refuses one of the key's events: nothing was applied, the key stays
    /// parked (with one more attempt and the new error, unless a dry run).
    FailedAgain { sqlstate: Option<String>, error: String },
    /// The key is not parked (redriven or discarded meanwhile, or never parked).
    NotParked,
    /// The version it was to be applied to is no longer live (a rebuild or rollback switched
    /// meanwhile): nothing was applied; run it again.
    NotLive { version: i32 },
}

/// Applies a parked key's events to the live read-model `version` (which `pool` writes), in log
/// order, through the projection's own code (`project::apply_in`), now that what refused them
/// may be fixed. All or nothing: on success the key and its events leave the parking in the same
/// transaction; a refusal leaves everything as it was. With `dry_run`, the transaction is rolled
/// back whatever happens.
///
/// The key's row is locked for update first: the live projector parks a new event of the key
/// under a share lock on that row, so it either parked it before (and the redrive applies it
/// too) or finds the key no longer parked after (and applies it itself, after these).
pub async fn redrive(
    pool: &PgPool,
    version: Version,
    topic: &str,
    key: &[u8],
    dry_run: bool,
) -> sqlx::Result<Redriven> {
    let mut tx = pool.begin().await?;
    let writer = Writer::live(version);
    if project::hold(&mut tx, writer).await?.is_err() {
        return Ok(Redriven::NotLive { version: version.number });
    }
    if !lock(&mut tx, topic, key).await? {
        return Ok(Redriven::NotParked);
    }
    let parked = events(&mut *tx, topic, key).await?;
    remove(&mut tx, topic, key).await?;
    let records: Vec<Record> = parked.iter().map(ParkedEvent::record).collect();
    let decoded = Decoded::new(&records);
    match project::apply_in(&mut tx, writer, topic, &decoded, &HashSet::new()).await {
        Ok(outcome) => {
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(Redriven::Applied {
                events: records.len(),
                applied: outcome.applied,
                duplicates: outcome.duplicates,
                dry_run,
            })
        }
        Err(error) if failure::classify(&error) == failure::Cause::Outage => Err(error),
        Err(error) => {
            drop(tx);
            let refusal = project::Refusal::of(&error);
            if !dry_run {
                sqlx::query(
                    "UPDATE parked_keys SET attempts = attempts + 1, sqlstate = $3, error = $4
                     WHERE topic = $1 AND message_key = $2",
                )
                .bind(topic)
                .bind(key)
                .bind(&refusal.sqlstate)
                .bind(&refusal.error)
                .execute(pool)
                .await?;
            }
            Ok(Redriven::FailedAgain { sqlstate: refusal.sqlstate, error: refusal.error })
        }
    }
}

/// Removes a parked key and its events without applying them. Returns the events discarded
/// (`None` when the key is not parked). Their ids stay unclaimed: the log still holds them, and a
/// rebuild applies them if the database takes them then.
pub async fn discard(pool: &PgPool, topic: &str, key: &[u8]) -> sqlx::Result<Option<Vec<ParkedEvent>>> {
    let mut tx = pool.begin().await?;
    if !lock(&mut tx, topic, key).await? {
        return Ok(None);
    }
    let parked = events(&mut *tx, topic, key).await?;
    remove(&mut tx, topic, key).await?;
    tx.commit().await?;
    tracing::warn!(events = parked.len(), "Discarded a parked key's events: they will not be applied");
    Ok(Some(parked))
}

/// Locks the key's row for update; `false` when it is not parked.
async fn lock(tx: &mut Transaction<'_, Postgres>, topic: &str, key: &[u8]) -> sqlx::Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM parked_keys WHERE topic = $1 AND message_key = $2 FOR UPDATE")
            .bind(topic)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

async fn remove(tx: &mut Transaction<'_, Postgres>, topic: &str, key: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM parked_events WHERE topic = $1 AND message_key = $2")
        .bind(topic)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM parked_keys WHERE topic = $1 AND message_key = $2")
        .bind(topic)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
