//! Applying a batch of log records to the read models: one PostgreSQL transaction holding the
//! dedup by event id, the set-based upserts, the dead letters, the parked keys and the checkpoint.
//!
//! A batch the database refuses for its data (`failure`) is applied again with the refused
//! events found and their keys parked (`isolate`, `parking`): every other event is applied, in
//! the same one transaction.

pub mod checkpoint;
pub mod failure;
mod index;
mod inventory;
mod isolate;
mod orders;
mod orders_by_status;
mod parking;
mod payments;
mod users;

pub use parking::Refusal;

use eventline_runtime::db;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tracing::Instrument as _;

use eventline_events::{DecodeError, Envelope, Event, EventType};
use eventline_read_models::{self as read_models, Projection, State, Version, documents};
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

    /// Only the message's place in the log (no key, payload or headers): for a reader that has
    /// taken what it needs of the rest already (the bulk load, which decoded the event).
    pub fn place_of(message: &impl Message) -> Record {
        Record {
            partition: message.partition(),
            offset: message.offset(),
            key: None,
            payload: Vec::new(),
            headers: BTreeMap::new(),
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
pub struct BatchOutcome {
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
    /// Events parked: behind a key parked before, or refused by the database with their key.
    pub parked: usize,
    /// Keys this batch parked.
    pub parked_keys: usize,
    /// The ids of the parked events (for the Redis fast path, which must not call them applied).
    pub parked_ids: Vec<Uuid>,
    /// The checkpoint after the batch, per partition it touched.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// An event decoded from a record, with where it came from.
#[derive(Clone)]
struct Positioned<'a> {
    record: &'a Record,
    /// Shared by the views of the batch each projection applies (decoded once).
    envelope: Arc<Envelope>,
    /// The aggregate id, as the key of an event whose message has none (else empty).
    unkeyed: Arc<[u8]>,
}

impl Positioned<'_> {
    /// The event's key, the unit of order and of parking: its Kafka message key (the aggregate
    /// id when the producer follows docs/events.md), or its aggregate id when it has none.
    fn key(&self) -> &[u8] {
        self.record.key.as_deref().unwrap_or(&self.unkeyed)
    }
}

/// A batch of records, decoded: the events, and the records that can never be events. As
/// `new` makes it, the whole batch; as a projection applies it (`for_projection`), its part.
#[derive(Clone)]
pub struct Decoded<'a> {
    /// Whose part of the batch this is (`None`: the whole batch, as read).
    projection: Option<Projection>,
    records: Vec<&'a Record>,
    events: Vec<Positioned<'a>>,
    dead: Vec<(&'a Record, Arc<DecodeError>)>,
}

impl<'a> Decoded<'a> {
    pub fn new(records: &'a [Record]) -> Self {
        let mut events = Vec::with_capacity(records.len());
        let mut dead = Vec::new();
        for record in records {
            match Envelope::decode(&record.payload) {
                Ok(envelope) => {
                    let unkeyed: Arc<[u8]> = if record.key.is_some() {
                        Arc::from(Vec::new())
                    } else {
                        Arc::from(envelope.aggregate_id().into_bytes())
                    };
                    events.push(Positioned { record, envelope: Arc::new(envelope), unkeyed })
                }
                Err(error) => dead.push((record, Arc::new(error))),
            }
        }
        Decoded { projection: None, records: records.iter().collect(), events, dead }
    }

    /// The part of the batch `projection` applies: the records at or past `from` (its
    /// checkpoints: partition → next offset), of which the events of the types it consumes, and
    /// the undecodable ones if it is the projection that records them. Its checkpoints move past
    /// every record of the part.
    pub fn for_projection(&self, projection: Projection, from: &BTreeMap<i32, i64>) -> Decoded<'a> {
        let unapplied = |record: &Record| record.offset >= from.get(&record.partition).copied().unwrap_or(0);
        Decoded {
            projection: Some(projection),
            records: self.records.iter().copied().filter(|r| unapplied(r)).collect(),
            events: self
                .events
                .iter()
                .filter(|e| unapplied(e.record) && projection.consumes(e.envelope.event_type()))
                .cloned()
                .collect(),
            dead: if projection.records_dead_letters() {
                self.dead.iter().filter(|(r, _)| unapplied(r)).cloned().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// This batch as `projection` applies it: itself if it is that projection's part already.
    fn scoped(&self, projection: Projection) -> std::borrow::Cow<'_, Decoded<'a>> {
        if self.projection == Some(projection) {
            std::borrow::Cow::Borrowed(self)
        } else {
            std::borrow::Cow::Owned(self.for_projection(projection, &BTreeMap::new()))
        }
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Why the first undecodable record could not be decoded.
    pub fn first_error(&self) -> Option<&DecodeError> {
        self.dead.first().map(|(_, error)| &**error)
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

/// How a batch the database refuses for its data is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parking {
    /// Most keys parked at once: a batch that would park more applies nothing and fails with
    /// [`ApplyError::BreakerOpen`] (a bad deploy halts the projection instead of parking the log).
    pub max_keys: usize,
    /// Whether an error that is neither a data error nor an outage (`failure::Cause::Unknown`)
    /// counts as data now: the runner says so once such an error has been retried enough.
    pub unknown_is_data: bool,
}

impl Parking {
    /// For a replay that must end as the live projection would, whatever it meets (`verify`'s
    /// fold): no breaker, and no error left unclassed.
    pub const REPLAY: Parking = Parking { max_keys: usize::MAX, unknown_is_data: true };

    /// The live projector's, with the breaker at `max_keys`.
    pub fn live(max_keys: usize) -> Parking {
        Parking { max_keys, unknown_is_data: false }
    }
}

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database could not take the batch now (or refused it, without parking): nothing of it
    /// was applied; retry it.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The batch would park more keys than the breaker allows: nothing of it was applied.
    #[error(
        "the breaker is open: parking this batch's refused events would leave more than {limit} keys parked \
         ({parked} parked already); the last refusal was SQLSTATE {sqlstate}: {error}"
    )]
    BreakerOpen { limit: usize, parked: i64, sqlstate: String, error: String },
}

impl ApplyError {
    /// The SQLSTATE behind the error, where there is one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            ApplyError::Database(error) => failure::sqlstate(error),
            ApplyError::BreakerOpen { sqlstate, .. } => Some(sqlstate.clone()),
        }
    }
}

/// Applies a decoded batch in one transaction, as `writer`. `known` are event ids the fast path
/// (Redis) says were applied already: they are skipped without asking PostgreSQL. Everything else
/// is claimed in `processed_events`, which alone decides what is applied.
///
/// The transaction first takes a share lock on the version's row and checks its state; a switch
/// takes that row for update, so it waits for batches under way and every later batch of a
/// superseded writer is refused: exactly one writer per version, across processes.
///
/// When the database refuses the batch's data, it is applied again in a new transaction with the
/// refused events found and their keys parked ([`isolate`]); keys without trouble pay nothing.
pub async fn apply(
    pool: &PgPool,
    writer: Writer,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
    parking: Parking,
) -> Result<Result<BatchOutcome, Superseded>, ApplyError> {
    let batch = &*batch.scoped(writer.version.projection);
    let mut tx = pool.begin().await?;
    if let Err(superseded) = hold(&mut tx, writer).await? {
        return Ok(Err(superseded));
    }
    let refused = match apply_in(&mut tx, writer, topic, batch, known).await {
        Ok(outcome) => {
            tx.commit().instrument(db::span("COMMIT", "read models")).await?;
            return Ok(Ok(outcome));
        }
        Err(error) => match failure::classify(&error) {
            failure::Cause::Data => error,
            failure::Cause::Unknown if parking.unknown_is_data => error,
            failure::Cause::Outage | failure::Cause::Unknown => return Err(error.into()),
        },
    };
    drop(tx);
    tracing::info!(
        sqlstate = failure::sqlstate(&refused).as_deref().unwrap_or("none"),
        records = batch.records.len(),
        "The database refused a batch's data; finding the events it refuses"
    );
    let mut tx = pool.begin().await?;
    if let Err(superseded) = hold(&mut tx, writer).await? {
        return Ok(Err(superseded));
    }
    let outcome = isolate::apply_parking(&mut tx, topic, batch, known, writer.dead_letters, parking).await?;
    tx.commit().instrument(db::span("COMMIT", "read models")).await?;
    Ok(Ok(outcome))
}

/// Takes a share lock on the writer's version row, held until `tx` ends, and checks the version
/// is still in the writer's state. Every write to a read-model version goes through this.
pub async fn hold(tx: &mut sqlx::PgConnection, writer: Writer) -> sqlx::Result<Result<(), Superseded>> {
    let state: Option<State> = sqlx::query_scalar(
        "SELECT state FROM public.read_model_versions WHERE projection = $1 AND version = $2 FOR SHARE",
    )
    .bind(writer.version.projection)
    .bind(writer.version.number)
    .fetch_optional(&mut *tx)
    .instrument(db::span("SELECT", "read_model_versions"))
    .await?;
    Ok(if state == Some(writer.state) { Ok(()) } else { Err(Superseded) })
}

/// Makes the unqualified table names of the rest of the transaction on `conn` `version`'s tables
/// (then `public`'s), as a version's pool does for every connection.
pub async fn scope_to(conn: &mut sqlx::PgConnection, version: Version) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!("{},public", version.schema()))
        .execute(conn)
        .await
        .map(|_| ())
}

/// `apply` inside a transaction the caller commits (a redrive also removes its dead letter or
/// its parked key in it), without parking: a refusal of the data is returned as the error.
/// Events of keys parked before wait behind them (they join their key).
pub async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    writer: Writer,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
) -> sqlx::Result<BatchOutcome> {
    let batch = &*batch.scoped(writer.version.projection);
    let candidates: Vec<&Positioned<'_>> =
        batch.events.iter().filter(|e| !known.contains(&e.envelope.event_id)).collect();
    let claimed = claim_event_ids(tx, topic, &candidates).await?;
    let (waiting, free): (Vec<&Positioned<'_>>, Vec<&Positioned<'_>>) =
        candidates.iter().partition(|e| claimed.parked.contains(e.key()));
    let to_apply = first_fresh(&free, &claimed.fresh);
    effects(tx, writer.version.projection, &to_apply).await?;
    parking::join(tx, topic, &waiting).await?;
    let parked = Parked { events: waiting, new_keys: 0 };
    finish(tx, topic, batch, known, writer.dead_letters, &to_apply, &parked).await
}

/// The events of a batch that did not reach the read models: they wait behind their key.
struct Parked<'p, 'a> {
    events: Vec<&'p Positioned<'a>>,
    new_keys: usize,
}

/// What every way of applying a batch ends with: its dead letters, its checkpoint, its outcome.
async fn finish(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    batch: &Decoded<'_>,
    known: &HashSet<Uuid>,
    dead_letters: DeadLetters,
    applied: &[&Positioned<'_>],
    parked: &Parked<'_, '_>,
) -> sqlx::Result<BatchOutcome> {
    let (records, dead) = (&batch.records, &batch.dead);
    let new_dead_letters = record_dead_letters_as(tx, topic, dead_letters, dead).await?;

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
    for event in applied {
        *applied_by_type.entry(event.envelope.event_type()).or_insert(0) += 1;
    }
    let unknown = batch.events.iter().filter(|e| !known.contains(&e.envelope.event_id)).count();
    Ok(BatchOutcome {
        applied: applied.len(),
        applied_by_type,
        duplicates: batch.events.len() - applied.len() - parked.events.len(),
        known_to_fast_path: batch.events.len() - unknown,
        dead_lettered: dead.len(),
        new_dead_letters,
        parked: parked.events.len(),
        parked_keys: parked.new_keys,
        parked_ids: parked.events.iter().map(|e| e.envelope.event_id).collect(),
        next_offsets,
    })
}

/// The events to apply among `events`: the first occurrence of each fresh id (later copies in
/// the batch are duplicates).
fn first_fresh<'p, 'a>(events: &[&'p Positioned<'a>], fresh: &HashSet<Uuid>) -> Vec<&'p Positioned<'a>> {
    let mut seen = HashSet::with_capacity(fresh.len());
    events
        .iter()
        .copied()
        .filter(|e| fresh.contains(&e.envelope.event_id) && seen.insert(e.envelope.event_id))
        .collect()
}

/// What the claim found: the fresh event ids it claimed, and the keys that are parked (whose
/// events it did not claim: they wait behind their key).
struct Claimed {
    fresh: HashSet<Uuid>,
    parked: HashSet<Vec<u8>>,
}

/// Inserts the batch's event ids into `processed_events` and returns those that were not there:
/// the exactly-once guard. A concurrent transaction claiming the same id makes this one wait and
/// then see it as taken. Events of parked keys are not claimed: the same statement looks their
/// keys up (locking them against a redrive until the transaction ends, see `parking`).
async fn claim_event_ids(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    events: &[&Positioned<'_>],
) -> sqlx::Result<Claimed> {
    if events.is_empty() {
        return Ok(Claimed { fresh: HashSet::new(), parked: HashSet::new() });
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.envelope.event_id).collect();
    let partitions: Vec<i32> = events.iter().map(|e| e.record.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|e| e.record.offset).collect();
    let types: Vec<&str> = events.iter().map(|e| e.envelope.event_type().as_str()).collect();
    let keys: Vec<&[u8]> = events.iter().map(|e| e.key()).collect();
    let rows: Vec<(Option<Uuid>, Option<Vec<u8>>)> = sqlx::query_as(
        "WITH parked AS MATERIALIZED (
             SELECT message_key FROM parked_keys
             WHERE topic = $2 AND message_key = ANY($6::bytea[]) FOR SHARE),
         claimed AS (
             INSERT INTO processed_events (event_id, topic, partition, log_offset, event_type)
             SELECT id, $2, p, o, t
             FROM UNNEST($1::uuid[], $3::int[], $4::bigint[], $5::text[], $6::bytea[]) AS u(id, p, o, t, k)
             WHERE NOT EXISTS (SELECT 1 FROM parked WHERE parked.message_key = u.k)
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id)
         SELECT event_id, NULL::bytea FROM claimed
         UNION ALL SELECT NULL::uuid, message_key FROM parked",
    )
    .bind(&ids)
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&types)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .instrument(db::span("INSERT", "processed_events"))
    .await?;
    let mut claimed = Claimed { fresh: HashSet::with_capacity(rows.len()), parked: HashSet::new() };
    for row in rows {
        match row {
            (Some(id), _) => {
                claimed.fresh.insert(id);
            }
            (None, Some(key)) => {
                claimed.parked.insert(key);
            }
            (None, None) => {}
        }
    }
    Ok(claimed)
}

/// Records the undecodable `dead` records as `mode` says; returns the ids of the new entries.
pub async fn record_dead_letters_as(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    mode: DeadLetters,
    dead: &[(&Record, Arc<DecodeError>)],
) -> sqlx::Result<Vec<i64>> {
    match mode {
        DeadLetters::Record => record_dead_letters(tx, topic, &dead.iter().collect::<Vec<_>>()).await,
        // The live version's positions are read only for a batch that holds dead letters (few do).
        DeadLetters::RecordUnseen if !dead.is_empty() => {
            let passed = passed_by_live_projections(tx, topic).await?;
            let unseen: Vec<&(&Record, Arc<DecodeError>)> = dead
                .iter()
                .filter(|(record, _)| record.offset >= passed.get(&record.partition).copied().unwrap_or(0))
                .collect();
            record_dead_letters(tx, topic, &unseen).await
        }
        DeadLetters::RecordUnseen | DeadLetters::Skip => Ok(Vec::new()),
    }
}

/// Per partition, the furthest position a live version that records dead letters has passed:
/// whatever undecodable message lies before it was recorded as a dead letter then. (A projection
/// that records none passing a message says nothing about it.)
async fn passed_by_live_projections(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
) -> sqlx::Result<BTreeMap<i32, i64>> {
    let mut passed = BTreeMap::new();
    let recording = read_models::live_versions(&mut **tx).await?;
    for live in recording.into_iter().filter(|v| v.projection.records_dead_letters()) {
        for (partition, next) in checkpoint::load_version(&mut **tx, live, topic).await? {
            let at = passed.entry(partition).or_insert(next);
            *at = (*at).max(next);
        }
    }
    Ok(passed)
}

/// The effects of fresh events on `projection`'s read models.
async fn effects(
    tx: &mut Transaction<'_, Postgres>,
    projection: Projection,
    events: &[&Positioned<'_>],
) -> sqlx::Result<()> {
    match projection {
        Projection::Main => {
            apply_events(tx, events).await?;
            index::record(tx, events).await
        }
        Projection::OrdersByStatus => orders_by_status::apply(tx, events).await,
    }
}

/// Dispatches fresh events to their read model, each type set-based.
async fn apply_events(tx: &mut Transaction<'_, Postgres>, events: &[&Positioned<'_>]) -> sqlx::Result<()> {
    let (mut users, mut orders, mut payments, mut adjustments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for event in events {
        let envelope: &Envelope = &event.envelope;
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

/// Per order, the first and the last time it was placed in `events`: an order's `placedAt` is its
/// earliest placement and its `updatedAt` the latest, however the log is cut into batches.
fn placement_times(
    events: &[(&Envelope, &eventline_events::OrderPlaced)],
) -> std::collections::HashMap<Uuid, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let mut times = std::collections::HashMap::new();
    for (envelope, order) in events {
        let at = envelope.occurred_at;
        let (first, last) = times.entry(order.order_id).or_insert((at, at));
        *first = (*first).min(at);
        *last = (*last).max(at);
    }
    times
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
    dead: &[&(&Record, Arc<DecodeError>)],
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

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_events::{AdjustmentType, InventoryAdjusted, UserCreated};

    fn record(partition: i32, offset: i64, payload: Vec<u8>) -> Record {
        Record {
            partition,
            offset,
            key: Some(b"k".to_vec()),
            payload,
            headers: BTreeMap::new(),
            appended_at_ms: None,
        }
    }

    fn user() -> Vec<u8> {
        Envelope::new(Event::UserCreated(UserCreated {
            user_id: Uuid::now_v7(),
            email: "a@example.com".into(),
            first_name: "A".into(),
            last_name: "B".into(),
        }))
        .encode()
    }

    fn adjustment() -> Vec<u8> {
        Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku: "S".into(),
            quantity: 1,
            adjustment_type: AdjustmentType::Add,
            reason: "r".into(),
        }))
        .encode()
    }

    #[test]
    fn a_projection_is_handed_its_part_of_the_batch() {
        let records = vec![
            record(0, 5, user()),
            record(0, 6, adjustment()),
            record(1, 2, b"not an event".to_vec()),
            record(1, 3, user()),
        ];
        let batch = Decoded::new(&records);
        assert_eq!((batch.len(), batch.events.len(), batch.dead.len()), (4, 3, 1));

        // The main projection past its checkpoints: partition 0 from offset 6, partition 1 whole.
        let main = batch.for_projection(Projection::Main, &BTreeMap::from([(0, 6)]));
        assert_eq!(main.len(), 3, "records past the checkpoint, each moving it");
        assert_eq!(main.events.len(), 2);
        assert_eq!(main.dead.len(), 1, "the main projection records the dead letters");

        // Orders by status consumes neither users nor stock: its checkpoints still move over them.
        let orders = batch.for_projection(Projection::OrdersByStatus, &BTreeMap::new());
        assert_eq!(orders.len(), 4);
        assert!(orders.events.is_empty());
        assert!(orders.dead.is_empty(), "dead letters are recorded once, by the main projection");

        // Nothing past a checkpoint beyond the batch.
        assert!(batch.for_projection(Projection::Main, &BTreeMap::from([(0, 9), (1, 9)])).is_empty());
    }
}
