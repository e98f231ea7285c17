//! The dead-letter queue: messages the projector could never apply.
//!
//! The durable record is the `dead_letters` table, written in the same transaction that moves the
//! checkpoint past the message, so no entry is ever lost. Redis holds a mirror, the stream
//! `eventline:dlq:<topic>`, for operators to watch (`XREAD`); it is rebuilt from PostgreSQL when
//! Redis lost it. Listing, inspecting, redriving and purging work on the durable record.

use eventline_runtime::config::RedisConfig;
use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use chrono::{DateTime, Utc};
use eventline_runtime::redis::LazyRedis;
use serde::Serialize;
use sqlx::PgPool;

use crate::project::{self, Decoded, Record, Writer};

/// One dead letter.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    #[sqlx(rename = "dead_letter_id")]
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    #[sqlx(rename = "log_offset")]
    pub offset: i64,
    #[serde(skip)]
    pub message_key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub headers: sqlx::types::Json<BTreeMap<String, String>>,
    pub error_code: String,
    pub error: String,
    pub attempts: i32,
    pub trace_id: Option<String>,
    pub dead_at: DateTime<Utc>,
}

/// A dead letter as shown to operators: the original bytes as text where they are UTF-8, and
/// always in base64.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shown<'a> {
    #[serde(flatten)]
    pub entry: &'a DeadLetter,
    pub key: Option<String>,
    pub payload: String,
    pub payload_base64: String,
}

impl DeadLetter {
    pub fn shown(&self) -> Shown<'_> {
        Shown {
            entry: self,
            key: self.message_key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: String::from_utf8_lossy(&self.payload).into_owned(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&self.payload),
        }
    }

    fn record(&self) -> Record {
        Record {
            partition: self.partition,
            offset: self.offset,
            key: self.message_key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.0.clone(),
            appended_at_ms: None,
        }
    }
}

const COLUMNS: &str = "dead_letter_id, topic, partition, log_offset, message_key, payload, headers, error_code, \
                       error, attempts, trace_id, dead_at";

/// Every dead letter of `topic`, oldest first.
pub async fn list(pool: &PgPool, topic: &str) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE topic = $1 ORDER BY dead_letter_id"))
        .bind(topic)
        .fetch_all(pool)
        .await
}

/// The entries of `topic` with one of `ids`, `error_code` and the `event-type` header
/// `event_type` (each when given), oldest first, at most `limit`.
pub async fn select(
    pool: &PgPool,
    topic: &str,
    ids: Option<&[i64]>,
    error_code: Option<&str>,
    event_type: Option<&str>,
    limit: Option<i64>,
) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE topic = $1 AND ($2::bigint[] IS NULL OR dead_letter_id = ANY($2))
           AND ($3::text IS NULL OR error_code = $3) AND ($4::text IS NULL OR headers->>$5 = $4)
         ORDER BY dead_letter_id LIMIT $6"
    ))
    .bind(topic)
    .bind(ids)
    .bind(error_code)
    .bind(event_type)
    .bind(eventline_events::HEADER_EVENT_TYPE)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE dead_letter_id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Number of dead letters of `topic`.
pub async fn depth(pool: &PgPool, topic: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE topic = $1").bind(topic).fetch_one(pool).await
}

/// Removes an entry without applying it. Returns whether it existed.
pub async fn purge(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let deleted =
        sqlx::query("DELETE FROM dead_letters WHERE dead_letter_id = $1").bind(id).execute(pool).await?;
    Ok(deleted.rows_affected() > 0)
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Redriven {
    /// Decoded and applied (or found already applied); the entry is gone.
    Applied { id: i64, duplicate: bool },
    /// Decoded, and its key is parked behind an event the database refused: it joined the key,
    /// in order (`parked redrive` applies it with the key); the entry is gone.
    Parked { id: i64 },
    /// Still cannot be applied; the entry stays with one more attempt and the new error.
    FailedAgain { id: i64, error_code: String, error: String },
    /// Not applied: the version it was to be applied to is no longer live (a rebuild or rollback
    /// switched meanwhile). The entry stays; run the redrive again.
    NotLive { id: i64, version: i32 },
}

/// Applies a dead letter to the live version of every projection (in one transaction, `public`
/// a pool on the `public` schema) through the same code path as live projection, now that the
/// bug that put it there may be fixed. On success the entry is removed in the same transaction.
/// Like the projector, it writes only while those versions are live: a switch waits for it, and
/// after one it refuses.
pub async fn redrive(public: &PgPool, entry: &DeadLetter) -> sqlx::Result<Redriven> {
    let records = [entry.record()];
    let decoded = Decoded::new(&records);
    if let Some(error) = decoded.first_error() {
        return failed_again(public, entry.id, error.code().to_owned(), error.to_string()).await;
    }
    let mut tx = public.begin().await?;
    let (mut applied, mut parked) = (0, 0);
    let versions = eventline_read_models::live_versions(&mut *tx).await?;
    if !versions.iter().any(|v| v.projection == eventline_read_models::Projection::Main) {
        // Between two states (a switch under way, or a database not migrated): nothing to write.
        return Ok(Redriven::NotLive { id: entry.id, version: 0 });
    }
    for version in versions {
        let writer = Writer::live(version);
        // The projection's tables for what follows in this transaction, `public` after them.
        project::scope_to(&mut tx, version).await?;
        if project::hold(&mut tx, writer).await?.is_err() {
            return Ok(Redriven::NotLive { id: entry.id, version: version.number });
        }
        let outcome = match project::apply_in(&mut tx, writer, &entry.topic, &decoded, &HashSet::new()).await
        {
            Ok(outcome) => outcome,
            Err(error) if project::failure::classify(&error) == project::failure::Cause::Outage => {
                return Err(error);
            }
            Err(error) => {
                // It decodes now, but the database refuses it: it stays, with why.
                drop(tx);
                let refusal = project::Refusal::of(&error);
                let error =
                    format!("SQLSTATE {}: {}", refusal.sqlstate.as_deref().unwrap_or("none"), refusal.error);
                return failed_again(public, entry.id, "refused-by-database".to_owned(), error).await;
            }
        };
        applied += outcome.applied;
        parked += outcome.parked;
    }
    sqlx::query("DELETE FROM public.dead_letters WHERE dead_letter_id = $1")
        .bind(entry.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if parked > 0 {
        return Ok(Redriven::Parked { id: entry.id });
    }
    Ok(Redriven::Applied { id: entry.id, duplicate: applied == 0 })
}

/// A redrive that failed again: the entry stays, with one more attempt and the new error.
async fn failed_again(pool: &PgPool, id: i64, error_code: String, error: String) -> sqlx::Result<Redriven> {
    sqlx::query(
        "UPDATE dead_letters SET attempts = attempts + 1, error_code = $2, error = $3 WHERE dead_letter_id = $1",
    )
    .bind(id)
    .bind(&error_code)
    .bind(&error)
    .execute(pool)
    .await?;
    Ok(Redriven::FailedAgain { id, error_code, error })
}

/// Publishes the dead letters `ids` (new in PostgreSQL) to the Redis mirror.
pub async fn publish_new(public: &PgPool, mirror: &Mirror, ids: &[i64]) -> redis::RedisResult<()> {
    let mut entries = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Ok(Some(entry)) = get(public, id).await {
            entries.push(entry);
        }
    }
    mirror.publish(&entries).await
}

/// The Redis mirror of the dead letters of one topic.
pub struct Mirror {
    redis: LazyRedis,
    stream: String,
}

impl Mirror {
    pub fn new(redis: &RedisConfig, topic: &str) -> redis::RedisResult<Self> {
        Ok(Mirror { redis: LazyRedis::new(redis)?, stream: format!("eventline:dlq:{topic}") })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Entries in the stream.
    pub async fn len(&self) -> redis::RedisResult<i64> {
        let mut connection = self.redis.get().await?;
        redis::cmd("XLEN").arg(&self.stream).query_async(&mut connection).await
    }

    /// Adds entries to the stream.
    pub async fn publish(&self, entries: &[DeadLetter]) -> redis::RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut connection = self.redis.get().await?;
        let mut pipeline = redis::pipe();
        for entry in entries {
            let shown = entry.shown();
            pipeline
                .cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("id")
                .arg(entry.id)
                .arg("partition")
                .arg(entry.partition)
                .arg("offset")
                .arg(entry.offset)
                .arg("errorCode")
                .arg(&entry.error_code)
                .arg("error")
                .arg(&entry.error)
                .arg("traceId")
                .arg(entry.trace_id.as_deref().unwrap_or(""))
                .arg("deadAt")
                .arg(entry.dead_at.to_rfc3339())
                .arg("key")
                .arg(shown.key.unwrap_or_default())
                .arg("payload")
                .arg(&shown.payload_base64)
                .ignore();
        }
        pipeline.query_async(&mut connection).await
    }

    /// The dead-letter ids the stream holds, with their stream entry ids.
    async fn mirrored(&self) -> redis::RedisResult<Vec<(String, i64)>> {
        let mut connection = self.redis.get().await?;
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&self.stream).arg("-").arg("+").query_async(&mut connection).await?;
        Ok(reply
            .ids
            .into_iter()
            .filter_map(|entry| {
                let id: i64 = entry.get("id")?;
                Some((entry.id, id))
            })
            .collect())
    }

    /// Makes the stream hold exactly the durable entries: adds what Redis lost, removes what was
    /// redriven or purged.
    pub async fn reconcile(&self, pool: &PgPool, topic: &str) -> anyhow::Result<()> {
        let durable = list(pool, topic).await?;
        let mirrored = self.mirrored().await?;
        let durable_ids: HashSet<i64> = durable.iter().map(|e| e.id).collect();
        let mirrored_ids: HashSet<i64> = mirrored.iter().map(|(_, id)| *id).collect();
        let missing: Vec<DeadLetter> =
            durable.into_iter().filter(|e| !mirrored_ids.contains(&e.id)).collect();
        self.publish(&missing).await?;
        // Entries no longer durable (redriven, purged), and second copies of one entry.
        let mut seen = HashSet::new();
        let stale: Vec<&String> = mirrored
            .iter()
            .filter(|(_, id)| !durable_ids.contains(id) || !seen.insert(*id))
            .map(|(stream_id, _)| stream_id)
            .collect();
        if !stale.is_empty() {
            let mut connection = self.redis.get().await?;
            let _: i64 =
                redis::cmd("XDEL").arg(&self.stream).arg(&stale).query_async(&mut connection).await?;
        }
        Ok(())
    }
}
