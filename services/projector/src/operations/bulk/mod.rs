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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound as _, Utc};
use eventline_events::{DecodeError, Envelope};
use eventline_read_models::{Projection, State, Version};
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use self::copy::{CopyRows, Writers, Writing};
use self::main_fold::MainFold;
use self::orders_by_status_fold::OrdersByStatusFold;
use crate::Config;
use crate::live::consumer::RangeReader;
use crate::operations::progress::{Progress, Reporter};
use crate::project::checkpoint::load_version;
use crate::project::{self, DeadLetters, Record, Writer};

/// Rows per COPY statement.
const CHUNK_ROWS: usize = 50_000;

/// Records read from the log per chunk handed to the fold.
const READ_CHUNK: usize = 20_000;

/// Times as PostgreSQL keeps them (and sqlx sends them): cut to the microsecond.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Why a bulk load gave way to the batch path.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a user's paid total passes the decimal range")]
    Overflow,
    #[error("a document could not be encoded: {0}")]
    Encoding(String),
    #[error(
        "the log holds more keys than a bulk load keeps in memory ({0}, EVENTLINE_REBUILD_BULK_MAX_KEYS)"
    )]
    TooLarge(usize),
    #[error("reading the log failed: {0}")]
    Log(String),
    #[error("read-model version {0} is no longer `{1}`")]
    Superseded(Version, State),
    #[error("a writer of the load stopped")]
    WriterStopped,
    #[error("no writer for {0}")]
    NoWriter(String),
}

impl Refused {
    fn encoding(error: serde_json::Error) -> Refused {
        Refused::Encoding(error.to_string())
    }
}

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
        row.plain(envelope.event_id).text(topic).plain(record.partition).plain(record.offset);
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

    /// The tables written as the log is read: complete once it is.
    fn streamed_tables(&self) -> Vec<String> {
        let schema = self.version.schema();
        let mut tables = vec![format!("{schema}.processed_events")];
        if let Fold::Main(_) = self.fold {
            tables.push(format!("{schema}.event_index"));
        }
        tables
    }

    /// Every table a load writes.
    fn tables(&self) -> Vec<String> {
        self.streamed_tables().into_iter().chain(self.folded_tables()).collect()
    }

    /// The tables written once the log is read.
    fn folded_tables(&self) -> Vec<String> {
        let schema = self.version.schema();
        let streamed = self.streamed_tables();
        self.version
            .projection
            .read_models()
            .iter()
            .map(|t| format!("{schema}.{t}"))
            .filter(|t| !streamed.contains(t))
            .collect()
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

/// Sets `version`'s checkpoints to where the load read to.
async fn record_checkpoints(
    conn: &mut PgConnection,
    version: Version,
    topic: &str,
    read: &Read,
) -> sqlx::Result<()> {
    let partitions: Vec<i32> = read.next.keys().copied().collect();
    let next: Vec<i64> = read.next.values().copied().collect();
    let appended: Vec<Option<i64>> = partitions.iter().map(|p| read.appended_ms.get(p).copied()).collect();
    sqlx::query(&format!(
        "INSERT INTO {}.projection_checkpoints (topic, partition, next_offset, updated_at, last_appended_at)
         SELECT $1, p, o, now(), to_timestamp(a / 1000.0) FROM UNNEST($2::int[], $3::bigint[], $4::bigint[]) AS t(p, o, a)",
        version.schema()
    ))
    .bind(topic)
    .bind(&partitions)
    .bind(&next)
    .bind(&appended)
    .execute(&mut *conn)
    .await
    .map(|_| ())
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
    let tables: Vec<String> = versions.iter().flat_map(|&v| Loading::new(v).tables()).collect();
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
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for &version in versions {
        for table in Loading::new(version).tables() {
            let (tx, dropped) = table_writer(config, versions, state, &table).await?;
            tables.push((table, tx));
            indexes.extend(dropped);
        }
    }
    let (writers, writing) = Writers::start(tables);
    let outcome = fold_the_log(config, versions, ranges, &indexes, &writers, reporter).await;
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
    for &version in versions {
        record_checkpoints(&mut tx, version, topic, &read).await?;
    }
    let new_dead_letters = if versions.iter().any(|v| v.projection.records_dead_letters()) {
        let dead: Vec<(&Record, Arc<DecodeError>)> = read.dead.iter().map(|(r, e)| (r, e.clone())).collect();
        project::record_dead_letters_as(&mut tx, topic, DeadLetters::RecordUnseen, &dead).await?
    } else {
        Vec::new()
    };
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
/// it committed its checkpoints) and its indexes dropped, returned to be built again once it is
/// full.
async fn table_writer(
    config: &Config,
    versions: &[Version],
    state: State,
    table: &str,
) -> Result<(PgConnection, Vec<(String, String)>), Refused> {
    let options = eventline_runtime::db::connect_options(&config.database)
        .map_err(|error| Refused::Log(format!("the database configuration: {error:#}")))?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query("BEGIN").execute(&mut conn).await?;
    hold_all(&mut conn, versions, state).await?;
    // Index builds sort in memory up to this (the default, 64 MB, spills a million rows to disk).
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut conn).await?;
    sqlx::query(&format!("TRUNCATE {table}")).execute(&mut conn).await?;
    let indexes = drop_indexes(&mut conn, &[table.to_owned()]).await?;
    Ok((conn, indexes))
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
    indexes: &[(String, String)],
    writers: &Writers,
    reporter: &mut Reporter,
) -> Result<Read, Refused> {
    let topic = &config.kafka.topic;
    let total: i64 = ranges.values().map(|(_, end)| end).sum();
    let mut loading: Vec<Loading> = versions.iter().map(|&v| Loading::new(v)).collect();
    let mut read = Read::default();
    let mut seen: foldhash::HashSet<Uuid> = foldhash::HashSet::default();
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
    // The streamed tables are complete: indexed on their connection while the folded ones are
    // encoded and written on the other.
    let at = Instant::now();
    for l in &mut loading {
        l.send_streamed(writers).await?;
        for table in l.streamed_tables() {
            complete(writers, &table, indexes).await?;
        }
    }
    for l in loading {
        let tables = l.folded_tables();
        l.write_folded(writers).await?;
        for table in tables {
            complete(writers, &table, indexes).await?;
        }
    }
    tracing::info!(seconds = at.elapsed().as_secs_f64(), "Bulk load: the folded tables encoded");
    Ok(read)
}

/// Drops the indexes (and the constraints they back) of `tables`; returns, per table, the
/// statements that build them again.
async fn drop_indexes(conn: &mut PgConnection, tables: &[String]) -> sqlx::Result<Vec<(String, String)>> {
    let found: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text,
                format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)),
                format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname)
         FROM pg_constraint WHERE conrelid = ANY($1::text[]::regclass[]) AND contype IN ('p', 'u')
         UNION ALL
         SELECT i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass)
         FROM pg_index i WHERE i.indrelid = ANY($1::text[]::regclass[])
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
    )
    .bind(tables)
    .fetch_all(&mut *conn)
    .await?;
    for (_, _, drop) in &found {
        sqlx::query(drop).execute(&mut *conn).await?;
    }
    Ok(found.into_iter().map(|(table, create, _)| (table, create)).collect())
}

/// Hands the writer what makes `table` ready once it holds all its rows: its indexes, built again,
/// and its statistics (for the batch path's plans once the version is switched to).
async fn complete(writers: &Writers, table: &str, indexes: &[(String, String)]) -> Result<(), Refused> {
    for (_, create) in indexes.iter().filter(|(t, _)| t == table) {
        writers.execute(table, create.clone()).await?;
    }
    writers.execute(table, format!("ANALYZE {table}")).await
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
            let chunk = reader.next_chunk(READ_CHUNK).map_err(|e| e.to_string()).map(|records| {
                records
                    .into_iter()
                    .map(|record| {
                        let decoded = Envelope::decode(&record.payload);
                        (record, decoded)
                    })
                    .collect()
            });
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
