//! Applying a batch of log records to the read models: one PostgreSQL transaction holding the
//! dedup by event id, the set-based upserts, the dead letters and the checkpoint.

pub mod checkpoint;
mod index;
mod inventory;
mod orders;
mod payments;
mod users;

use eventline_runtime::db;
use std::collections::{BTreeMap, HashSet};
use tracing::Instrument as _;

use eventline_events::{DecodeError, Envelope, Event, EventType};
use eventline_read_models::{self as read_models, State, Version, documents};
use rdkafka::Message;
use rdkafka::message::Headers;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// One message as read from the log, owned so a batch can be retried after a transient failure.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// When the broker says the message was appended (milliseconds since the epoch), if it says.
    pub appended_at_ms: Option<i64>,
}

impl Record {
    /// Copies a message read from the log.
    pub fn from_message(message: &impl Message) -> Record {
        let headers = message.headers().map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                })
                .collect()
        });
        Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: headers.unwrap_or_default(),
            appended_at_ms: message.timestamp().to_millis(),
        }
    }

    /// The W3C trace id of the `traceparent` header, if any.
    pub fn trace_id(&self) -> Option<&str> {
        let traceparent = self.headers.get("traceparent")?;
        traceparent.split('-').nth(1).filter(|id| id.len() == 32)
    }
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Events applied for the first time.
    pub applied: usize,
    /// The same, per event type.
    pub applied_by_type: BTreeMap<EventType, usize>,
    /// Events already applied before (redeliveries): no effect.
    pub duplicates: usize,
    /// Of those, the ones Redis recognised without a database round trip.
    pub known_to_fast_path: usize,
    /// Records that can never be applied, recorded as dead letters.
    pub dead_lettered: usize,
    /// Ids of the dead letters this batch created (not those recorded before).
    pub new_dead_letters: Vec<i64>,
    /// The checkpoint after the batch, per partition it touched.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// An event decoded from a record, with where it came from.
struct Positioned<'a> {
    record: &'a Record,
    envelope: Envelope,
}

/// A batch of records, decoded: the events, and the records that can never be events.
pub struct Decoded<'a> {
    records: &'a [Record],
    events: Vec<Positioned<'a>>,
    dead: Vec<(&'a Record, DecodeError)>,
}

impl<'a> Decoded<'a> {
    pub fn new(records: &'a [Record]) -> Self {
        let mut events = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for record in records {
            match Envelope::decode(&record.payload) {
                Ok(envelope) => events.push(Positioned { record, envelope }),
                Err(error) => dead.push((record, error)),
            }
        }
        Decoded { records, events, dead }
    }

    /// Why the first undecodable record could not be decoded.
    pub fn first_error(&self) -> Option<&DecodeError> {
        self.dead.first().map(|(_, error)| error)
    }

    /// The ids of the batch's events.
    pub fn event_ids(&self) -> Vec<Uuid> {
        self.events.iter().map(|e| e.envelope.event_id).collect()
    }
}

/// Who may write a read-model version: the projector of the live version, or the rebuild (or
/// rollback) filling a version in the state it found it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    pub version: Version,
    /// The state the version must still be in.
    pub state: State,
    pub dead_letters: DeadLetters,
}

impl Writer {
    /// The live projector of `version`, as the service runs it.
    pub fn live(version: Version) -> Writer {
        Writer { version, state: State::Live, dead_letters: DeadLetters::Record }
    }
}

/// What becomes of records that can never be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// Recorded in the dead-letter queue (shared by all versions; a record already there stays
    /// as it is).
    Record,
    /// Recorded only at positions the live version has not passed: for a replay into another
    /// version (rebuild, rollback). What the live projector passed it recorded then, and an
    /// operator may have redriven or purged it since; recording it again would bring it back.
    RecordUnseen,
    /// Only skipped: for a scratch fold of the log (`verify`), which must not touch the queue
    /// operators work (it would bring back entries they purged).
    Skip,
}

/// The batch was not applied: its version changed state (a switch), so this writer no longer
/// writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded;

/// Applies a decoded batch in one transaction, as `writer`. `known` are event ids the fast path
/// (Redis) says were applied already: they are skipped without asking PostgreSQL. Everything else
/// is claimed in `processed_events`, which alone decides what is applied.
///
/// The transaction first takes a share lock on the version's row and checks its state; a switch
/// takes that row for update, so it waits for batches under way and every later batch of a
/// superseded writer is refused: exactly one writer per version, across processes.
pub async fn apply(
    pool: &PgPool,
    writer: Writer,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
) -> sqlx::Result<Result<Outcome, Superseded>> {
    let mut tx = pool.begin().await?;
    if let Err(superseded) = hold(&mut tx, writer).await? {
        return Ok(Err(superseded));
    }
    let outcome = apply_in(&mut tx, topic, batch, known, writer.dead_letters).await?;
    tx.commit().instrument(db::span("COMMIT", "read models")).await?;
    Ok(Ok(outcome))
}

/// Takes a share lock on the writer's version row, held until `tx` ends, and checks the version
/// is still in the writer's state. Every write to a read-model version goes through this.
pub async fn hold(
    tx: &mut Transaction<'_, Postgres>,
    writer: Writer,
) -> sqlx::Result<Result<(), Superseded>> {
    let state: Option<State> =
        sqlx::query_scalar("SELECT state FROM public.read_model_versions WHERE version = $1 FOR SHARE")
            .bind(writer.version.0)
            .fetch_optional(&mut **tx)
            .instrument(db::span("SELECT", "read_model_versions"))
            .await?;
    Ok(if state == Some(writer.state) { Ok(()) } else { Err(Superseded) })
}

/// `apply` inside a transaction the caller commits (a redrive also removes its dead letter in it).
pub async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
    dead_letters: DeadLetters,
) -> sqlx::Result<Outcome> {
    let (records, dead) = (batch.records, &batch.dead);
    let candidates: Vec<&Positioned<'_>> =
        batch.events.iter().filter(|e| !known.contains(&e.envelope.event_id)).collect();
    let fresh = claim_event_ids(tx, topic, &candidates).await?;
    let mut seen = HashSet::with_capacity(fresh.len());
    // The first occurrence of each fresh id is applied; later copies in the batch are duplicates.
    let to_apply: Vec<&Positioned<'_>> = candidates
        .iter()
        .copied()
        .filter(|e| fresh.contains(&e.envelope.event_id) && seen.insert(e.envelope.event_id))
        .collect();
    apply_events(tx, &to_apply).await?;
    index::record(tx, &to_apply).await?;
    let new_dead_letters = match dead_letters {
        DeadLetters::Record => record_dead_letters(tx, topic, &dead.iter().collect::<Vec<_>>()).await?,
        // The live version's positions are read only for a batch that holds dead letters (few do).
        DeadLetters::RecordUnseen if !dead.is_empty() => {
            let live = read_models::live(&mut **tx).await?;
            let passed = checkpoint::load_version(&mut **tx, live, topic).await?;
            let unseen: Vec<&(&Record, DecodeError)> = dead
                .iter()
                .filter(|(record, _)| record.offset >= passed.get(&record.partition).copied().unwrap_or(0))
                .collect();
            record_dead_letters(tx, topic, &unseen).await?
        }
        DeadLetters::RecordUnseen | DeadLetters::Skip => Vec::new(),
    };

    let mut next_offsets = BTreeMap::new();
    let mut appended = BTreeMap::new();
    for record in records {
        let next = next_offsets.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
        if let Some(at) = record.appended_at_ms {
            let newest = appended.entry(record.partition).or_insert(at);
            *newest = (*newest).max(at);
        }
    }
    checkpoint::advance(tx, topic, &next_offsets, &appended).await?;

    let mut applied_by_type = BTreeMap::new();
    for event in &to_apply {
        *applied_by_type.entry(event.envelope.event_type()).or_insert(0) += 1;
    }
    Ok(Outcome {
        applied: to_apply.len(),
        applied_by_type,
        duplicates: batch.events.len() - to_apply.len(),
        known_to_fast_path: batch.events.len() - candidates.len(),
        dead_lettered: dead.len(),
        new_dead_letters,
        next_offsets,
    })
}

/// Inserts the batch's event ids into `processed_events` and returns those that were not there:
/// the exactly-once guard. A concurrent transaction claiming the same id makes this one wait and
/// then see it as taken.
async fn claim_event_ids(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    events: &[&Positioned<'_>],
) -> sqlx::Result<HashSet<Uuid>> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.envelope.event_id).collect();
    let partitions: Vec<i32> = events.iter().map(|e| e.record.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.record.offset).collect();
    let types: Vec<&str> = events.iter().map(|e| e.envelope.event_type().as_str()).collect();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, topic, partition, log_offset, event_type)
         SELECT id, $2, p, o, t FROM UNNEST($1::uuid[], $3::int[], $4::bigint[], $5::text[]) AS u(id, p, o, t)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids)
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&types)
    .fetch_all(&mut **tx)
    .instrument(db::span("INSERT", "processed_events"))
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Dispatches fresh events to their read model, each type set-based.
async fn apply_events(tx: &mut Transaction<'_, Postgres>, events: &[&Positioned<'_>]) -> sqlx::Result<()> {
    let (mut users, mut orders, mut payments, mut adjustments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for event in events {
        let envelope = &event.envelope;
        match &envelope.event {
            Event::UserCreated(e) => users.push((envelope, e)),
            Event::OrderPlaced(e) => orders.push((envelope, e)),
            Event::PaymentSettled(e) => payments.push((envelope, e)),
            Event::InventoryAdjusted(e) => adjustments.push((envelope, e)),
        }
    }
    users::apply_created(tx, &users).await?;
    // Orders before payments, so a payment in the same batch as its order marks it paid.
    let mut owners = orders::apply_placed(tx, &orders).await?;
    payments::apply_settled(tx, &payments).await?;
    inventory::apply_adjusted(tx, &adjustments).await?;
    // Last, from the batch's outcome: the documents (and figures) of the users created, ordering
    // or paying in this batch, and of the orders placed or paid.
    owners.extend(users.iter().map(|(_, user)| user.user_id));
    let changed_orders: Vec<Uuid> = orders
        .iter()
        .map(|(_, order)| order.order_id)
        .chain(payments.iter().map(|(_, payment)| payment.order_id))
        .collect();
    documents::refresh(tx, &owners, &changed_orders).instrument(db::span("UPDATE", "documents")).await
}

/// The last event per key, for upserts that may touch a row only once per statement; `events`
/// are in log order, so the last one is the latest state.
fn last_per_key<'a, T, K: std::hash::Hash + Eq>(
    events: &[(&'a Envelope, &'a T)],
    key: impl Fn(&T) -> K,
) -> Vec<(&'a Envelope, &'a T)> {
    let mut latest = std::collections::HashMap::new();
    for &(envelope, event) in events {
        latest.insert(key(event), (envelope, event));
    }
    latest.into_values().collect()
}

/// Records dead letters (poison is rare: one statement each is fine) and returns the ids of the
/// new entries, for the Redis mirror once the transaction has committed.
async fn record_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    dead: &[&(&Record, DecodeError)],
) -> sqlx::Result<Vec<i64>> {
    let mut inserted = Vec::new();
    for (record, error) in dead {
        // The error's text can quote the payload (personal data): it goes to the dead-letter
        // queue with the payload, the log gets only its code and position.
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            error_code = error.code(),
            "Dead-lettering a message that can never be applied (details: eventline-projector dlq list)"
        );
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO dead_letters
                 (topic, partition, log_offset, message_key, payload, headers, error_code, error, trace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (topic, partition, log_offset) DO NOTHING
             RETURNING dead_letter_id",
        )
        .bind(topic)
        .bind(record.partition)
        .bind(record.offset)
        .bind(record.key.as_deref())
        .bind(&record.payload)
        .bind(sqlx::types::Json(&record.headers))
        .bind(error.code())
        .bind(error.to_string())
        .bind(record.trace_id())
        .fetch_optional(&mut **tx)
        .instrument(db::span("INSERT", "dead_letters"))
        .await?;
        inserted.extend(id);
    }
    Ok(inserted)
}
