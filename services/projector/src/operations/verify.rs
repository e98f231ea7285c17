//! Verify: is the live read model what the log says it should be?
//!
//! The log is folded into a scratch read-model version (`verifying`, a schema of its own) with the
//! projection code, up to the live version's positions. The last stretch is folded while the live
//! version's row is locked, which holds the live projector between two batches for a moment; a
//! snapshot taken then sees both versions at exactly the same positions, and the comparison runs
//! in that snapshot after the lock is released. Per table: row count and a checksum, and where
//! they differ a sample of the rows found on one side only. The scratch version is dropped
//! afterwards; an interrupted verify leaves it behind and the next one resumes it.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use eventline_read_models::{self as read_models, Projection, State, Version};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::Config;
use crate::live::consumer::RangeReader;
use crate::live::prepare;
use crate::operations::progress::{Progress, Reporter};
use crate::operations::rebuild::{create, exclusive, prune};
use crate::project::checkpoint::load_version;
use crate::project::{self, DeadLetters, Decoded, Parking, Writer};

/// The scratch version's state.
const STATE: State = State::Verifying;

/// At most this many events are folded while the live projector is held.
const HELD_GAP: i64 = 5_000;

/// Unheld rounds of catching up with the live version before holding it regardless.
const ROUNDS: usize = 20;

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub projection: Projection,
    /// The version compared.
    pub live: Version,
    /// The positions both were compared at (partition → next offset).
    pub positions: BTreeMap<i32, i64>,
    pub tables: Vec<TableReport>,
    pub seconds: f64,
}

impl Report {
    /// The tables whose content differs.
    pub fn differing(&self) -> Vec<&'static str> {
        self.tables.iter().filter(|t| !t.matches()).map(|t| t.table).collect()
    }
}

/// One table compared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableReport {
    pub table: &'static str,
    pub live_rows: i64,
    pub folded_rows: i64,
    pub live_checksum: String,
    pub folded_checksum: String,
    /// Rows of the live version that the fold does not have (as JSON), a sample.
    pub only_live: Vec<serde_json::Value>,
    /// Rows of the fold that the live version does not have, a sample.
    pub only_folded: Vec<serde_json::Value>,
}

impl TableReport {
    pub fn matches(&self) -> bool {
        self.live_rows == self.folded_rows && self.live_checksum == self.folded_checksum
    }
}

/// Compares the live version of `projection` with the log folded from the start; `sample` rows
/// per table and side are shown where they differ.
pub async fn verify(
    config: &Config,
    projection: Projection,
    progress: Progress,
    batch_size: usize,
    sample: usize,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let public = prepare(config).await?;
    let _exclusive = exclusive(&config.database.url, projection).await?;
    let scratch = match read_models::in_state(&public, projection, STATE).await? {
        Some(version) => {
            tracing::info!(%version, "Resuming the interrupted verify");
            version
        }
        None => create(&public, projection, STATE).await?,
    };
    let fold = Fold {
        config,
        pool: read_models::pool(&config.database, scratch)?,
        scratch,
        batch_size: batch_size.max(1),
    };
    let mut reporter = Reporter::new(progress, format!("folding the log into {scratch}"));

    // Catch up without holding anyone, until little is left.
    for _ in 0..ROUNDS {
        let live = read_models::live(&public, projection).await?;
        let theirs = load_version(&public, live, fold.topic()).await?;
        let ours = load_version(&public, scratch, fold.topic()).await?;
        if gap(&ours, &theirs) <= HELD_GAP {
            break;
        }
        fold.up_to(&ours, &theirs, &mut reporter).await?;
    }

    // The rest with the live projector held, then a snapshot of both at the same positions.
    let mut hold = public.begin().await?;
    let live = read_models::live_for_update(&mut *hold, projection)
        .await
        .context("finding the live read-model version")?;
    let theirs = load_version(&mut *hold, live, fold.topic()).await?;
    let ours = load_version(&public, scratch, fold.topic()).await?;
    if let Some((partition, at)) = ours.iter().find(|(p, o)| theirs.get(p).copied().unwrap_or(0) < **o) {
        bail!(
            "the fold is ahead of live version {live} on partition {partition} ({at} against {}): its \
             checkpoint moved back",
            theirs.get(partition).copied().unwrap_or(0)
        );
    }
    fold.up_to(&ours, &theirs, &mut reporter).await?;
    reporter.finish();
    let mut snapshot = public.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *snapshot).await?;
    sqlx::query("SELECT 1").execute(&mut *snapshot).await?; // takes the snapshot
    hold.rollback().await?;

    // The read models only: the bookkeeping legitimately differs (projection ids, checkpoint times).
    let mut tables = Vec::with_capacity(projection.read_models().len());
    for &table in projection.read_models() {
        tables.push(compare(&mut snapshot, live, scratch, table, sample).await?);
    }
    snapshot.commit().await?;
    drop_scratch(&public, scratch).await?;
    Ok(Report { projection, live, positions: theirs, tables, seconds: started.elapsed().as_secs_f64() })
}

/// Folds stretches of the log into the scratch version.
struct Fold<'a> {
    config: &'a Config,
    /// On the scratch version.
    pool: PgPool,
    scratch: Version,
    batch_size: usize,
}

impl Fold<'_> {
    fn topic(&self) -> &str {
        &self.config.kafka.topic
    }

    /// Applies the log from `ours` up to `theirs` (per partition, next offsets), a batch per
    /// transaction, with the projection code.
    async fn up_to(
        &self,
        ours: &BTreeMap<i32, i64>,
        theirs: &BTreeMap<i32, i64>,
        reporter: &mut Reporter,
    ) -> anyhow::Result<()> {
        let ranges: BTreeMap<i32, (i64, i64)> =
            theirs.iter().map(|(&p, &end)| (p, (ours.get(&p).copied().unwrap_or(0), end))).collect();
        let kafka = self.config.kafka.clone();
        let mut reader = tokio::task::spawn_blocking(move || RangeReader::open(&kafka, &ranges))
            .await?
            .context("reading the log")?;
        let writer = Writer { version: self.scratch, state: STATE, dead_letters: DeadLetters::Skip };
        let mut done: i64 = ours.values().sum();
        let total = theirs.values().sum::<i64>().max(done);
        while !reader.is_done() {
            let batch_size = self.batch_size;
            let (returned, chunk) = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk(batch_size);
                (reader, chunk)
            })
            .await?;
            reader = returned;
            let chunk = chunk.context("reading the log")?;
            let decoded = Decoded::new(&chunk);
            let applied = project::apply(
                &self.pool,
                writer,
                self.topic(),
                &decoded,
                &Default::default(),
                Parking::REPLAY,
            )
            .await
            .context("applying the log to the scratch version")?;
            if applied.is_err() {
                bail!("read-model version {} is no longer `{STATE}`", self.scratch);
            }
            done += chunk.len() as i64;
            reporter.update(done, total);
        }
        Ok(())
    }
}

/// Events the fold lacks to reach the live positions.
fn gap(ours: &BTreeMap<i32, i64>, theirs: &BTreeMap<i32, i64>) -> i64 {
    theirs.iter().map(|(p, end)| (end - ours.get(p).copied().unwrap_or(0)).max(0)).sum()
}

/// Row count and checksum of `table` in both versions, and samples of the rows on one side only
/// when they differ.
async fn compare(
    snapshot: &mut PgConnection,
    live: Version,
    scratch: Version,
    table: &'static str,
    sample: usize,
) -> anyhow::Result<TableReport> {
    let (live_schema, scratch_schema) = (live.schema(), scratch.schema());
    let (live_rows, live_checksum) = checksum(snapshot, &live_schema, table).await?;
    let (folded_rows, folded_checksum) = checksum(snapshot, &scratch_schema, table).await?;
    let mut report = TableReport {
        table,
        live_rows,
        folded_rows,
        live_checksum,
        folded_checksum,
        only_live: Vec::new(),
        only_folded: Vec::new(),
    };
    if !report.matches() {
        report.only_live = only_in(snapshot, &live_schema, &scratch_schema, table, sample).await?;
        report.only_folded = only_in(snapshot, &scratch_schema, &live_schema, table, sample).await?;
    }
    Ok(report)
}

/// Rows and an order-independent checksum of their text (64-bit row hashes, summed).
async fn checksum(db: &mut PgConnection, schema: &str, table: &str) -> sqlx::Result<(i64, String)> {
    sqlx::query_as(&format!(
        "SELECT count(*), left(md5(COALESCE(sum(hashtextextended(t::text, 0)), 0)::text), 16)
         FROM {schema}.{table} t"
    ))
    .fetch_one(db)
    .await
}

/// Up to `limit` rows of `table` in `schema` that `other` does not have, as JSON, in order.
async fn only_in(
    db: &mut PgConnection,
    schema: &str,
    other: &str,
    table: &str,
    limit: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT row_to_json(d)::text FROM
             (SELECT * FROM {schema}.{table} EXCEPT ALL SELECT * FROM {other}.{table}) d
         ORDER BY 1 LIMIT $1"
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?;
    rows.iter().map(|row| serde_json::from_str(row).context("a row as JSON")).collect()
}

/// Retires the scratch version, and drops it with any other retired one.
async fn drop_scratch(public: &PgPool, scratch: Version) -> anyhow::Result<()> {
    read_models::set_state(public, scratch, State::Retired).await?;
    prune(public).await
}
