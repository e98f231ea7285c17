//! The decision state in PostgreSQL (schema `command_state`): locks, reads, writes and the pending
//! envelopes of decisions not yet confirmed in the log.
//!
//! Locks are session-level advisory locks, held from before the state is read until the decided
//! events are acknowledged by the broker, so that two decisions on one aggregate reach the log in
//! the order they were made. Every decision also holds one lock shared by all deciders, which a
//! rebuild takes exclusively.

use std::collections::{BTreeSet, HashMap};

use eventline_events::LogPosition;
use eventline_runtime::log_identity::LogIdentity;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::model::{Aggregates, OrderState, SkuState, UserState};

const SCHEMA: &str = include_str!("schema.sql");

/// Held shared by every decision and exclusively by a rebuild or verify.
pub const STATE_LOCK: i64 = 7_245_830_441_003_152_114;

/// Creates the schema if it is missing and (re)defines its functions (safe to run concurrently:
/// one transaction under an advisory lock).
pub async fn ensure_schema(conn: &mut PgConnection) -> sqlx::Result<()> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
    // Every statement of the file, in one simple-protocol round trip. (Through `Executor`:
    // `RawSql::execute`'s future is not `Send` for every lifetime, which a spawned task needs.)
    sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(SCHEMA)).await?;
    tx.commit().await
}

/// Serialises schema creation between instances.
const SCHEMA_LOCK: i64 = 7_245_830_441_003_152_113;

/// The advisory lock id of a lock key (`sku:A`, `email:ada@example.com`). Two keys may share an
/// id; that only serialises them.
pub fn lock_id(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Takes the state lock exclusively: every decision in flight has been appended, none starts.
pub async fn lock_exclusive(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)").bind(STATE_LOCK).execute(conn).await.map(|_| ())
}

pub async fn unlock_all(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock_all()").execute(conn).await.map(|_| ())
}

/// The aggregates a group of commands needs to see.
#[derive(Debug, Default)]
pub struct Wanted {
    pub users: BTreeSet<Uuid>,
    pub emails: BTreeSet<String>,
    pub orders: BTreeSet<Uuid>,
    pub payments: BTreeSet<Uuid>,
    pub skus: BTreeSet<String>,
}

fn vec<T: Clone>(set: &BTreeSet<T>) -> Vec<T> {
    set.iter().cloned().collect()
}

/// What a group reads under its locks: the state of the wanted aggregates and the decisions that
/// concern it.
pub struct GroupRead {
    pub state: Aggregates,
    pub decisions: Vec<Decision>,
}

/// The decision state's rows, as `command_state.lock_and_read` returns them (JSON arrays) and as
/// the tables hold them.
#[derive(Deserialize)]
struct StateRows {
    users: Vec<(Uuid, String, i64)>,
    orders: Vec<(Uuid, Uuid, String, String, Option<Uuid>, i64)>,
    payments: Vec<(Uuid, Uuid)>,
    skus: Vec<(String, i64, i64)>,
}

impl StateRows {
    fn into_state(self) -> anyhow::Result<Aggregates> {
        let mut state = Aggregates::default();
        for (user_id, email_key, version) in self.users {
            state.emails.insert(email_key.clone(), user_id);
            state.users.insert(user_id, UserState { email_key, version });
        }
        for (order_id, user_id, currency, total, payment_id, version) in self.orders {
            let order = OrderState {
                user_id,
                currency: parse_stored(&currency, "currency")?,
                total: parse_stored(&total, "total")?,
                payment_id,
                version,
            };
            state.orders.insert(order_id, order);
        }
        state.payments.extend(self.payments);
        for (sku, stock, version) in self.skus {
            state.skus.insert(sku, SkuState { stock, version });
        }
        Ok(state)
    }
}

/// `command_state.lock_and_read`'s answer.
#[derive(Deserialize)]
struct ReadRows {
    #[serde(flatten)]
    state: StateRows,
    /// Event id, partition and offset once appended, whether it is pending; oldest first.
    decisions: Vec<(Uuid, Option<i32>, Option<i64>, bool)>,
}

/// Takes the shared state lock and the locks of `lock_ids` (held until [`unlock_all`]), then reads
/// the `wanted` aggregates, the decisions among `event_ids` (a retried request finds its own) and
/// every pending decision on `aggregates`, oldest first: one round trip, plus one when a decision
/// is pending (its envelope).
pub async fn lock_and_read(
    conn: &mut PgConnection,
    lock_ids: &BTreeSet<i64>,
    wanted: &Wanted,
    event_ids: &[Uuid],
    aggregates: &[String],
) -> anyhow::Result<GroupRead> {
    let ids: Vec<i64> = lock_ids.iter().copied().collect();
    let Json(rows): Json<ReadRows> =
        sqlx::query_scalar("SELECT command_state.lock_and_read($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(STATE_LOCK)
            .bind(ids)
            .bind(vec(&wanted.users))
            .bind(vec(&wanted.emails))
            .bind(vec(&wanted.orders))
            .bind(vec(&wanted.payments))
            .bind(vec(&wanted.skus))
            .bind(event_ids)
            .bind(aggregates)
            .fetch_one(&mut *conn)
            .await?;
    let state = rows.state.into_state()?;
    let pending: Vec<Uuid> = rows.decisions.iter().filter(|d| d.3).map(|d| d.0).collect();
    let mut envelopes: HashMap<Uuid, Vec<u8>> = if pending.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as("SELECT event_id, envelope FROM command_state.decisions WHERE event_id = ANY($1)")
            .bind(&pending)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let decisions = rows
        .decisions
        .into_iter()
        .map(|(event_id, partition, offset, _)| Decision {
            event_id,
            position: partition.zip(offset).map(|(partition, offset)| LogPosition { partition, offset }),
            pending_envelope: envelopes.remove(&event_id),
        })
        .collect();
    Ok(GroupRead { state, decisions })
}

fn parse_stored<T: std::str::FromStr<Err: std::fmt::Display>>(stored: &str, what: &str) -> anyhow::Result<T> {
    stored.parse::<T>().map_err(|e| anyhow::anyhow!("stored {what} {stored}: {e}"))
}

/// A decided event as stored: where it sits in the log once appended, its envelope while pending.
#[derive(Debug, Clone)]
pub struct Decision {
    pub event_id: Uuid,
    pub position: Option<LogPosition>,
    pub pending_envelope: Option<Vec<u8>>,
}

/// The envelopes of the oldest `limit` pending decisions, oldest first (for the sweep).
pub async fn all_pending(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Vec<u8>>> {
    sqlx::query_scalar(
        "SELECT envelope FROM command_state.decisions WHERE envelope IS NOT NULL ORDER BY seq LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A new decision to record as pending.
pub struct NewDecision<'a> {
    pub event_id: Uuid,
    pub aggregate: String,
    pub envelope: &'a [u8],
}

/// Writes the state of `changed` aggregates (insert or replace) and the new pending decisions, in
/// order: one statement, which commits on a connection outside any transaction.
pub async fn save(
    conn: &mut PgConnection,
    changed: &Aggregates,
    new: &[NewDecision<'_>],
) -> sqlx::Result<()> {
    let users = &changed.users;
    let orders = &changed.orders;
    let skus = &changed.skus;
    sqlx::query(
        "SELECT command_state.save($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(users.keys().copied().collect::<Vec<Uuid>>())
    .bind(users.values().map(|u| u.email_key.as_str()).collect::<Vec<&str>>())
    .bind(users.values().map(|u| u.version).collect::<Vec<i64>>())
    .bind(orders.keys().copied().collect::<Vec<Uuid>>())
    .bind(orders.values().map(|o| o.user_id).collect::<Vec<Uuid>>())
    .bind(orders.values().map(|o| o.currency.to_string()).collect::<Vec<String>>())
    .bind(orders.values().map(|o| o.total.to_string()).collect::<Vec<String>>())
    .bind(orders.values().map(|o| o.payment_id).collect::<Vec<Option<Uuid>>>())
    .bind(orders.values().map(|o| o.version).collect::<Vec<i64>>())
    .bind(changed.payments.keys().copied().collect::<Vec<Uuid>>())
    .bind(changed.payments.values().copied().collect::<Vec<Uuid>>())
    .bind(skus.keys().map(String::as_str).collect::<Vec<&str>>())
    .bind(skus.values().map(|s| s.stock).collect::<Vec<i64>>())
    .bind(skus.values().map(|s| s.version).collect::<Vec<i64>>())
    .bind(new.iter().map(|d| d.event_id).collect::<Vec<Uuid>>())
    .bind(new.iter().map(|d| d.aggregate.as_str()).collect::<Vec<&str>>())
    .bind(new.iter().map(|d| d.envelope).collect::<Vec<&[u8]>>())
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records where appended decisions landed; they are no longer pending. Not waiting for the disk
/// (see `command_state.mark_appended`).
pub async fn mark_appended(conn: &mut PgConnection, appended: &[(Uuid, LogPosition)]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = appended.iter().map(|(id, _)| *id).collect();
    let partitions: Vec<i32> = appended.iter().map(|(_, p)| p.partition).collect();
    let offsets: Vec<i64> = appended.iter().map(|(_, p)| p.offset).collect();
    sqlx::query("SELECT command_state.mark_appended($1, $2, $3)")
        .bind(ids)
        .bind(partitions)
        .bind(offsets)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Which log the state is a fold of, if it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedLog {
    pub topic: String,
    pub identity: LogIdentity,
}

pub async fn recorded_log(conn: &mut PgConnection) -> sqlx::Result<Option<RecordedLog>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        topic: String,
        cluster_id: String,
        topic_id: uuid::Uuid,
    }
    let row: Option<Row> = sqlx::query_as("SELECT topic, cluster_id, topic_id FROM command_state.log")
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| RecordedLog {
        topic: row.topic,
        identity: LogIdentity { cluster_id: row.cluster_id, topic_id: row.topic_id },
    }))
}

/// Everything the state holds, for verify.
pub async fn load_all(conn: &mut PgConnection) -> anyhow::Result<Aggregates> {
    let rows = StateRows {
        users: sqlx::query_as("SELECT user_id, email_key, version FROM command_state.users")
            .fetch_all(&mut *conn)
            .await?,
        orders: sqlx::query_as(
            "SELECT order_id, user_id, currency, total, payment_id, version FROM command_state.orders",
        )
        .fetch_all(&mut *conn)
        .await?,
        payments: sqlx::query_as("SELECT payment_id, order_id FROM command_state.payments")
            .fetch_all(&mut *conn)
            .await?,
        skus: sqlx::query_as("SELECT sku, stock, version FROM command_state.skus")
            .fetch_all(&mut *conn)
            .await?,
    };
    rows.into_state()
}

/// Replaces the whole state with `state`, a fold of `log`, with its decisions (all appended).
pub async fn replace_all(
    conn: &mut PgConnection,
    log: &RecordedLog,
    state: &Aggregates,
    decided: &[(Uuid, String, LogPosition)],
) -> sqlx::Result<()> {
    sqlx::query(
        "TRUNCATE command_state.log, command_state.users, command_state.orders, command_state.payments, \
         command_state.skus, command_state.decisions",
    )
    .execute(&mut *conn)
    .await?;
    // In slices, so that one statement's arrays stay small.
    const SLICE: usize = 10_000;
    let mut rest = state.clone();
    while !(rest.users.is_empty()
        && rest.orders.is_empty()
        && rest.payments.is_empty()
        && rest.skus.is_empty())
    {
        let slice = Aggregates {
            users: take(&mut rest.users, SLICE),
            emails: HashMap::new(),
            orders: take(&mut rest.orders, SLICE),
            payments: take(&mut rest.payments, SLICE),
            skus: take(&mut rest.skus, SLICE),
        };
        save(conn, &slice, &[]).await?;
    }
    for chunk in decided.chunks(SLICE) {
        let ids: Vec<Uuid> = chunk.iter().map(|d| d.0).collect();
        let aggregates: Vec<&str> = chunk.iter().map(|d| d.1.as_str()).collect();
        let partitions: Vec<i32> = chunk.iter().map(|d| d.2.partition).collect();
        let offsets: Vec<i64> = chunk.iter().map(|d| d.2.offset).collect();
        sqlx::query(
            "INSERT INTO command_state.decisions (event_id, aggregate, log_partition, log_offset) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int4[], $4::int8[]) ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(aggregates)
        .bind(partitions)
        .bind(offsets)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO command_state.log (topic, cluster_id, topic_id, folded_events) VALUES ($1, $2, $3, $4)",
    )
    .bind(&log.topic)
    .bind(&log.identity.cluster_id)
    .bind(log.identity.topic_id)
    .bind(decided.len() as i64)
    .execute(conn)
    .await
    .map(|_| ())
}

fn take<K: Clone + Eq + std::hash::Hash, V: Clone>(map: &mut HashMap<K, V>, n: usize) -> HashMap<K, V> {
    let keys: Vec<K> = map.keys().take(n).cloned().collect();
    keys.into_iter().filter_map(|k| map.remove_entry(&k)).collect()
}
