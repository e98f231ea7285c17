//! A fresh read-model version loaded from the log in bulk: the log read once up to its end (on a
//! thread of its own), folded in memory, and each row written once with COPY into tables whose
//! indexes are built after the load (PostgreSQL's bulk-loading advice).
//!
//! Each table is loaded on a connection and transaction of its own, so PostgreSQL takes several at
//! once: the dedup records and the event index as the log is read, the folded tables (users,
//! orders, payments, stock, with their documents) once it is. A table's writer empties it, drops
//! its indexes, takes its rows, builds its indexes and statistics again, and commits only when the
//! whole fold got through. The checkpoints (and dead letters) commit last: until they do, the
//! version counts as holding nothing, and whatever a load cut off left behind is emptied before
//! the next load or the batch path.
//!
//! The batch path (`project`) applies the same events with the same rules, row by row through
//! indexed tables: it stays the reference. A rebuild uses the bulk load for the stretch of the log
//! that exists when it starts, then catches up the rest (and switches) with the batch path.
//! Anything the bulk load cannot do as the batch path would, it does not do: a row the database
//! refuses (the batch path parks its key), a log larger than memory allows
//! (`EVENTLINE_REBUILD_BULK_MAX_KEYS`), an error reading the log. It then gives way, keeping
//! nothing, and the batch path replays from the start. `verify` folds with the batch path, so it
//! checks the two agree.

mod copy;
mod main_fold;
mod orders_by_status_fold;
mod refused;

pub use refused::Refused;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use eventline_events::{DecodeError, Envelope};
use eventline_read_models::{Projection, State, Version};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use self::copy::{CopyRows, TableLoad, Writers, Writing};
use self::main_fold::MainFold;
use self::orders_by_status_fold::OrdersByStatusFold;
use crate::Config;
use crate::live::consumer::RangeReader;
use crate::operations::progress::{Progress, Reporter};
use crate::project::checkpoint::{self, load_version};
use crate::project::{self, DeadLetters, Record, Writer};

/// Records read from the log per chunk handed to the fold.
const READ_CHUNK: usize = 20_000;

/// What a bulk load did.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The versions loaded.
    pub versions: Vec<Version>,
    /// Records read (the log up to where it ended when the load began).
    pub records: i64,
    pub seconds: f64,
}

/// One version's fold.
enum Fold {
    Main(Box<MainFold>),
    OrdersByStatus(OrdersByStatusFold),
}

/// A version being loaded.
struct Loading {
    version: Version,
    fold: Fold,
    /// Its dedup records (`processed_events`) not sent yet.
    processed: CopyRows,
}

impl Loading {
    fn new(version: Version) -> Loading {
        let fold = match version.projection {
            Projection::Main => Fold::Main(Box::default()),
            Projection::OrdersByStatus => Fold::OrdersByStatus(OrdersByStatusFold::default()),
        };
        Loading { version, fold, processed: CopyRows::new() }
    }

    fn entries(&self) -> usize {
        match &self.fold {
            Fold::Main(fold) => fold.entries(),
            Fold::OrdersByStatus(fold) => fold.entries(),
        }
    }

    fn apply(&mut self, topic: &str, record: &Record, envelope: &Envelope) {
        if !self.version.projection.consumes(envelope.event_type()) {
            return;
        }
        let row = &mut self.processed;
        row.value(&envelope.event_id).text(topic).value(&record.partition).value(&record.offset);
        row.text(envelope.event_type().as_str());
        row.end();
        match &mut self.fold {
            Fold::Main(fold) => fold.apply(record, envelope),
            Fold::OrdersByStatus(fold) => fold.apply(envelope),
        }
    }

    /// Sends what is streamed as it is read: dedup records and event index rows.
    async fn send_streamed(&mut self, sink: &Writers) -> Result<(), Refused> {
        let schema = self.version.schema();
        let columns = "event_id, topic, partition, log_offset, event_type";
        sink.send(format!("{schema}.processed_events"), columns, self.processed.take()).await?;
        match &mut self.fold {
            Fold::Main(fold) => fold.send_streamed(sink, &schema).await,
            Fold::OrdersByStatus(_) => Ok(()),
        }
    }

    /// Sends the folded tables.
    async fn write_folded(self, sink: &Writers) -> Result<(), Refused> {
        let schema = self.version.schema();
        match self.fold {
            Fold::Main(fold) => fold.write(sink, &schema).await,
            Fold::OrdersByStatus(fold) => fold.write(sink, &schema).await,
        }
    }
}

/// The tables of `version` a load writes as the log is read: complete once it is.
fn streamed_tables(version: Version) -> Vec<String> {
    let schema = version.schema();
    let mut tables = vec![format!("{schema}.processed_events")];
    if version.projection == Projection::Main {
        tables.push(format!("{schema}.event_index"));
    }
    tables
}

/// The tables of `version` a load writes once the log is read.
fn folded_tables(version: Version) -> Vec<String> {
    let streamed = streamed_tables(version);
    let schema = version.schema();
    version
        .projection
        .read_models()
        .iter()
        .map(|t| format!("{schema}.{t}"))
        .filter(|t| !streamed.contains(t))
        .collect()
}

/// Every table of `version` a load writes.
fn tables(version: Version) -> Vec<String> {
    streamed_tables(version).into_iter().chain(folded_tables(version)).collect()
}

/// What was read of the log.
#[derive(Default)]
struct Read {
    records: i64,
    /// Partition → next offset.
    next: BTreeMap<i32, i64>,
    appended_ms: BTreeMap<i32, i64>,
    /// Records that can never be events (for the dead-letter queue).
    dead: Vec<(Record, Arc<DecodeError>)>,
}

/// Loads the versions among `versions` that hold nothing yet (in `state`, which only this process
/// writes: the caller holds their rebuild locks) from the log in bulk, in one read of it. `None`
/// when there was nothing to load, or the load gave way to the batch path (logged); either way
/// the caller catches the versions up with the batch path from wherever they are.
pub async fn load(
    config: &Config,
    public: &PgPool,
    versions: &[Version],
    state: State,
    progress: Progress,
) -> anyhow::Result<Option<Loaded>> {
    let topic = &config.kafka.topic;
    let mut fresh = Vec::new();
    for &version in versions {
        if load_version(public, version, topic).await?.is_empty() {
            fresh.push(version);
        }
    }
    if fresh.is_empty() {
        return Ok(None);
    }
    let loaded = attempt(config, public, &fresh, state, progress).await?;
    if loaded.is_none() {
        // The batch path fills it instead, from empty tables: a load cut off between its tables'
        // commits and its checkpoints' left rows behind.
        empty(public, &fresh, state).await?;
    }
    Ok(loaded)
}

/// Empties the tables a load writes, of `versions` that hold nothing yet.
async fn empty(public: &PgPool, versions: &[Version], state: State) -> anyhow::Result<()> {
    let mut tx = public.begin().await?;
    hold_all(&mut tx, versions, state).await?;
    let tables: Vec<String> = versions.iter().flat_map(|&v| tables(v)).collect();
    sqlx::query(&format!("TRUNCATE {}", tables.join(", "))).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The bulk load of `fresh`, if it can be made (`None` when it is off, the log is empty or its
/// end unknown, or the load gave way).
async fn attempt(
    config: &Config,
    public: &PgPool,
    fresh: &[Version],
    state: State,
    progress: Progress,
) -> anyhow::Result<Option<Loaded>> {
    if config.rebuild_bulk_max_keys == 0 {
        return Ok(None);
    }
    let ends = crate::live::status::high_watermarks(&config.kafka).await?;
    let Some(ends) =
        ends.into_iter().map(|(p, end)| end.map(|end| (p, (0, end)))).collect::<Option<BTreeMap<_, _>>>()
    else {
        tracing::info!("The log's end is not known; replaying batch by batch");
        return Ok(None);
    };
    let total: i64 = ends.values().map(|(_, end)| end).sum();
    if total == 0 {
        return Ok(None);
    }
    let started = Instant::now();
    let names: Vec<String> = fresh.iter().map(Version::to_string).collect();
    let mut reporter = Reporter::new(progress, format!("loading {} in bulk", names.join(", ")));
    let outcome = load_table_by_table(config, public, fresh, state, ends, &mut reporter).await;
    reporter.loading(&BTreeMap::new());
    match outcome {
        Ok(read) => {
            reporter.finish();
            let loaded = Loaded {
                versions: fresh.to_vec(),
                records: read.records,
                seconds: started.elapsed().as_secs_f64(),
            };
            tracing::info!(
                versions = ?names,
                records = loaded.records,
                seconds = loaded.seconds,
                records_per_s = (loaded.records as f64 / loaded.seconds.max(0.001)).round(),
                "Loaded in bulk"
            );
            Ok(Some(loaded))
        }
        Err(refused) => {
            reporter.problem(format!("bulk load gave way to the batch path: {refused}"));
            tracing::warn!(
                versions = ?names,
                reason = %refused,
                "The bulk load gave way (its tables are emptied); replaying batch by batch"
            );
            Ok(None)
        }
    }
}

async fn load_table_by_table(
    config: &Config,
    public: &PgPool,
    versions: &[Version],
    state: State,
    ranges: BTreeMap<i32, (i64, i64)>,
    reporter: &mut Reporter,
) -> Result<Read, Refused> {
    let topic = &config.kafka.topic;
    let mut loads = Vec::new();
    for &version in versions {
        for table in tables(version) {
            loads.push(table_writer(config, versions, state, table).await?);
        }
    }
    let (writers, writing) = Writers::start(loads);
    let outcome = fold_the_log(config, versions, ranges, &writers, reporter).await;
    // Each table commits only if the whole fold got through (otherwise its writer rolls back).
    let told = match outcome {
        Ok(_) => writers.commit().await,
        Err(_) => {
            drop(writers);
            Ok(())
        }
    };
    // The writers' errors first: a fold that stopped because a writer did says only that.
    committed(writing).await?;
    told?;
    let read = outcome?;
    // Every table committed; the checkpoints last: until they commit, the version counts as
    // holding nothing (and the next load empties what one cut off left).
    let mut tx = public.begin().await?;
    hold_all(&mut tx, versions, state).await?;
    let new_dead_letters = if versions.iter().any(|v| v.projection.records_dead_letters()) {
        let dead: Vec<(&Record, Arc<DecodeError>)> = read.dead.iter().map(|(r, e)| (r, e.clone())).collect();
        project::record_dead_letters_as(&mut tx, topic, DeadLetters::RecordUnseen, &dead).await?
    } else {
        Vec::new()
    };
    for &version in versions {
        project::scope_to(&mut tx, version).await?;
        checkpoint::advance(&mut tx, topic, &read.next, &read.appended_ms).await?;
    }
    tx.commit().await?;
    mirror(config, public, &new_dead_letters).await;
    Ok(read)
}

/// Takes a share lock on each version's row (as a batch does, so a switch waits) and checks each
/// is still in `state`.
async fn hold_all(conn: &mut PgConnection, versions: &[Version], state: State) -> Result<(), Refused> {
    for &version in versions {
        let writer = Writer { version, state, dead_letters: DeadLetters::RecordUnseen };
        if project::hold(conn, writer).await?.is_err() {
            return Err(Refused::Superseded(version, state));
        }
    }
    Ok(())
}

/// The connection `table` is loaded on, of its own (a load must not take the pool's, which may be
/// small): in a transaction holding the versions' rows, the table emptied (of a load cut off before
/// it committed its checkpoints) and its indexes dropped, to be built again once it is full.
async fn table_writer(
    config: &Config,
    versions: &[Version],
    state: State,
    table: String,
) -> Result<TableLoad, Refused> {
    let options = eventline_runtime::db::connect_options(&config.database)
        .map_err(|error| Refused::Log(format!("the database configuration: {error:#}")))?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query("BEGIN").execute(&mut conn).await?;
    hold_all(&mut conn, versions, state).await?;
    // Index builds sort in memory up to this (the default, 64 MB, spills a million rows to disk).
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut conn).await?;
    sqlx::query(&format!("TRUNCATE {table}")).execute(&mut conn).await?;
    let indexes = drop_indexes(&mut conn, &table).await?;
    Ok(TableLoad { table, conn, indexes })
}

/// Waits for every writer to commit; the first error if one did not.
async fn committed(writing: Writing) -> Result<(), Refused> {
    let mut first = Ok(());
    for writer in writing {
        let outcome = match writer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Refused::Database(error)),
            Err(error) => Err(Refused::Log(format!("a writer task failed: {error}"))),
        };
        if first.is_ok() {
            first = outcome;
        }
    }
    first
}

/// Reads `ranges` of the log and folds them into every version of `versions`, handing the rows to
/// the writers as they are ready: dedup records and event index rows as they are read, the folded
/// tables at the end.
async fn fold_the_log(
    config: &Config,
    versions: &[Version],
    ranges: BTreeMap<i32, (i64, i64)>,
    writers: &Writers,
    reporter: &mut Reporter,
) -> Result<Read, Refused> {
    let topic = &config.kafka.topic;
    let total: i64 = ranges.values().map(|(_, end)| end).sum();
    let mut loading: Vec<Loading> = versions.iter().map(|&v| Loading::new(v)).collect();
    let mut read = Read::default();
    // Sized for the whole log at once: growing it rehashes everything held so far.
    let mut seen: foldhash::HashSet<Uuid> = foldhash::HashSet::with_capacity_and_hasher(
        usize::try_from(total).unwrap_or(0).min(config.rebuild_bulk_max_keys),
        Default::default(),
    );
    let mut chunks = read_decoded(config, ranges);
    let (mut waited_s, mut folded_s, mut sent_s) = (0.0, 0.0, 0.0);
    let mut at = Instant::now();
    while let Some(chunk) = chunks.recv().await {
        waited_s += at.elapsed().as_secs_f64();
        at = Instant::now();
        for (record, decoded) in chunk.map_err(Refused::Log)? {
            read.records += 1;
            let next = read.next.entry(record.partition).or_insert(0);
            *next = (*next).max(record.offset + 1);
            if let Some(at) = record.appended_at_ms {
                let newest = read.appended_ms.entry(record.partition).or_insert(at);
                *newest = (*newest).max(at);
            }
            match decoded {
                // A repeated event id is a redelivered copy: applied once, at its first place.
                Ok(envelope) if seen.insert(envelope.event_id) => {
                    for l in &mut loading {
                        l.apply(topic, &record, &envelope);
                    }
                }
                Ok(_) => {}
                Err(error) => read.dead.push((record, Arc::new(error))),
            }
        }
        let held = seen.len() + loading.iter().map(Loading::entries).sum::<usize>();
        if held > config.rebuild_bulk_max_keys {
            return Err(Refused::TooLarge(config.rebuild_bulk_max_keys));
        }
        folded_s += at.elapsed().as_secs_f64();
        at = Instant::now();
        for l in &mut loading {
            l.send_streamed(writers).await?;
        }
        sent_s += at.elapsed().as_secs_f64();
        reporter.update(read.records, total);
        reporter.loading(&read.next);
        at = Instant::now();
    }
    drop(seen);
    tracing::info!(waited_s, folded_s, sent_s, "Bulk load: the log read and folded");
    // The streamed tables are complete (each chunk's rows were handed on): indexed on their
    // connections while the folded ones are encoded and written on theirs.
    let at = Instant::now();
    for &version in versions {
        for table in streamed_tables(version) {
            writers.complete(&table).await?;
        }
    }
    for l in loading {
        let version = l.version;
        l.write_folded(writers).await?;
        for table in folded_tables(version) {
            writers.complete(&table).await?;
        }
    }
    tracing::info!(seconds = at.elapsed().as_secs_f64(), "Bulk load: the folded tables encoded");
    Ok(read)
}

/// Drops the indexes (and the constraints they back) of `table`; returns the statements that
/// build them again.
async fn drop_indexes(conn: &mut PgConnection, table: &str) -> sqlx::Result<Vec<String>> {
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)),
                format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname)
         FROM pg_constraint WHERE conrelid = $1::regclass AND contype IN ('p', 'u')
         UNION ALL
         SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass)
         FROM pg_index i WHERE i.indrelid = $1::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    for (_, drop) in &found {
        sqlx::query(drop).execute(&mut *conn).await?;
    }
    Ok(found.into_iter().map(|(create, _)| create).collect())
}

/// A record, and its event unless it is not one.
type DecodedRecord = (Record, Result<Envelope, DecodeError>);

/// The log's records in `ranges`, decoded, in chunks: read and decoded on a thread of their own
/// while the fold and the COPYs run.
fn read_decoded(
    config: &Config,
    ranges: BTreeMap<i32, (i64, i64)>,
) -> tokio::sync::mpsc::Receiver<Result<Vec<DecodedRecord>, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let kafka = config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = match RangeReader::open(&kafka, &ranges) {
            Ok(reader) => reader,
            Err(error) => {
                let _ = tx.blocking_send(Err(error.to_string()));
                return;
            }
        };
        while !reader.is_done() {
            // A decoded event's record keeps only its place in the log (what the fold reads); an
            // undecodable one all of it, for the dead-letter queue.
            let chunk = reader
                .next_chunk_with(READ_CHUNK, |message| {
                    match Envelope::decode(rdkafka::Message::payload(message).unwrap_or_default()) {
                        Ok(envelope) => (Record::place_of(message), Ok(envelope)),
                        Err(error) => (Record::from_message(message), Err(error)),
                    }
                })
                .map_err(|e| e.to_string());
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Publishes the dead letters the load recorded to the Redis mirror (best effort: the live
/// projector reconciles the mirror when it is behind).
async fn mirror(config: &Config, public: &PgPool, new: &[i64]) {
    if new.is_empty() {
        return;
    }
    let published = match crate::dlq::Mirror::new(&config.redis, &config.kafka.topic) {
        Ok(mirror) => crate::dlq::publish_new(public, &mirror, new).await,
        Err(error) => Err(error),
    };
    if let Err(error) = published {
        tracing::warn!(%error, "Dead letters are safe in PostgreSQL but not yet mirrored to Redis");
    }
}
