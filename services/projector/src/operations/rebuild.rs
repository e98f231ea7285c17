//! Rebuilding the read models by replaying the log, with zero downtime.
//!
//! A rebuild creates a new read-model version next to the live one (same tables, in a schema of
//! its own), replays the topic into it from the beginning with its own consumer group and the same
//! projection code as the live projector, and keeps following the log until it has reached both
//! the log's end and the live version's positions. Then one transaction switches: the new version
//! becomes live, the old one `previous` (kept for `rollback`), older ones are dropped. Query
//! services and live projectors learn of the switch by notification and move over; the switch
//! holds the version rows locked, so no live batch commits to the old version after it, and the
//! new version is never behind what the old one showed.
//!
//! A rollback is the same catch-up and switch, applied to the previous version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use eventline_read_models::{self as read_models, Projection, State, Version};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::live::prepare;
use crate::live::runner::{Role, Runner};
use crate::live::target::Target;
use crate::operations::bulk;
use crate::operations::progress::{Progress, Reporter};
use crate::project::checkpoint::load_version;

/// What a rebuild or rollback did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Switched {
    pub projection: Projection,
    /// The version that is live now.
    pub live: Version,
    /// The version that was live before (kept for rollback); none for a projection live for the
    /// first time.
    pub previous: Option<Version>,
    /// Events applied to the new live version by this run.
    pub events: i64,
    /// Of the log's records, those loaded in bulk by this run (the rest were applied batch by
    /// batch); 0 when the bulk load was not used or gave way.
    pub loaded_in_bulk: i64,
    pub seconds: f64,
}

/// Builds a new version of `projection` from the log and switches to it. Resumes a rebuild that
/// was interrupted (its version is still `building`) instead of starting over.
pub async fn rebuild(
    config: &Config,
    projection: Projection,
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<Switched> {
    let mut switched = rebuild_set(config, &[projection], progress, batch_size).await?;
    switched.pop().context("a rebuild of one projection switched none")
}

/// Builds a new version of each of `projections` and switches each, one after the other. The
/// versions that hold nothing yet are loaded in bulk from one read of the log; each then catches
/// up with the batch path until it can switch.
pub async fn rebuild_set(
    config: &Config,
    projections: &[Projection],
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<Vec<Switched>> {
    let public = prepare(config).await?;
    let mut held = Vec::with_capacity(projections.len());
    let mut versions = Vec::with_capacity(projections.len());
    for &projection in projections {
        held.push(exclusive(&config.database.url, projection).await?);
        let version = match read_models::in_state(&public, projection, State::Building).await? {
            Some(version) => {
                tracing::info!(%version, "Resuming the interrupted rebuild");
                version
            }
            None => create(&public, projection, State::Building).await?,
        };
        // The new version is a replay of the log the broker serves now.
        crate::log_check::check(&public, version, &config.kafka, true).await?;
        versions.push(version);
    }
    let loaded = bulk::load(config, &public, &versions, State::Building, progress.clone()).await?;
    let mut switched = Vec::with_capacity(versions.len());
    for version in versions {
        let mut done =
            catch_up_and_switch(config, &public, version, State::Building, progress.clone(), batch_size)
                .await?;
        if let Some(loaded) = loaded.as_ref().filter(|l| l.versions.contains(&version)) {
            done.loaded_in_bulk = loaded.records;
            done.events += loaded.records;
        }
        switched.push(done);
    }
    Ok(switched)
}

/// Switches `projection` back to its previous version, after bringing it up to date with the log.
pub async fn rollback(
    config: &Config,
    projection: Projection,
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<Switched> {
    let public = prepare(config).await?;
    let _exclusive = exclusive(&config.database.url, projection).await?;
    let Some(previous) = read_models::in_state(&public, projection, State::Previous).await? else {
        bail!("the {projection} projection has no previous version to roll back to")
    };
    catch_up_and_switch(config, &public, previous, State::Previous, progress, batch_size).await
}

/// Rolls back `projection`, or, when none is named, every projection that has a previous version.
pub async fn rollback_chosen(
    config: &Config,
    projection: Option<Projection>,
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<Vec<Switched>> {
    if let Some(projection) = projection {
        return Ok(vec![rollback(config, projection, progress, batch_size).await?]);
    }
    let public = prepare(config).await?;
    let mut switched = Vec::new();
    for projection in with_previous(&public).await? {
        switched.push(rollback(config, projection, progress.clone(), batch_size).await?);
    }
    Ok(switched)
}

/// The projections that have a previous version to roll back to (an error when none has).
pub(crate) async fn with_previous(public: &PgPool) -> anyhow::Result<Vec<Projection>> {
    let previous = read_models::all_in_state(public, State::Previous).await?;
    if previous.is_empty() {
        bail!("no projection has a previous version to roll back to");
    }
    Ok(previous.into_iter().map(|v| v.projection).collect())
}

/// Holds a session-level advisory lock so that one rebuild, rollback, verify or first catch-up
/// of `projection` runs at a time; released when the connection closes (also when the process
/// dies).
pub(crate) async fn exclusive(url: &str, projection: Projection) -> anyhow::Result<PgConnection> {
    try_exclusive(url, projection).await?.with_context(|| {
        format!("another rebuild, rollback or verify of the {projection} projection is running")
    })
}

/// `exclusive`, or `None` while someone else holds it.
pub(crate) async fn try_exclusive(url: &str, projection: Projection) -> anyhow::Result<Option<PgConnection>> {
    let mut connection = PgConnection::connect(url).await.context("connecting to PostgreSQL")?;
    let acquired: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('eventline-rebuild:' || $1))")
            .bind(projection.name())
            .fetch_one(&mut connection)
            .await?;
    Ok(acquired.then_some(connection))
}

/// Creates the next version of `projection`, in `state`: an empty copy of its live version's
/// tables, with its own identity.
pub(crate) async fn create(public: &PgPool, projection: Projection, state: State) -> anyhow::Result<Version> {
    let mut tx = public.begin().await?;
    let live = read_models::live(&mut *tx, projection)
        .await
        .with_context(|| format!("the {projection} projection has no live version to copy the tables of"))?;
    let next: i32 = sqlx::query_scalar(
        "SELECT COALESCE(max(version), 0) + 1 FROM read_model_versions WHERE projection = $1",
    )
    .bind(projection)
    .fetch_one(&mut *tx)
    .await?;
    let next = projection.version(next);
    let (from, to) = (live.schema(), next.schema());
    sqlx::query(&format!("CREATE SCHEMA {to}")).execute(&mut *tx).await?;
    for table in projection.tables() {
        sqlx::query(&format!("CREATE TABLE {to}.{table} (LIKE {from}.{table} INCLUDING ALL)"))
            .execute(&mut *tx)
            .await?;
        // LIKE copies no storage parameters (the fill factor of migration 0009).
        let options: Option<Vec<String>> =
            sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = $1::regclass")
                .bind(format!("{from}.{table}"))
                .fetch_one(&mut *tx)
                .await?;
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            sqlx::query(&format!("ALTER TABLE {to}.{table} SET ({})", options.join(", ")))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(&format!("INSERT INTO {to}.projection_identity DEFAULT VALUES")).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO read_model_versions (projection, version, state) VALUES ($1, $2, $3)")
        .bind(projection)
        .bind(next.number)
        .bind(state)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(version = %next, %state, live = %live, "Created a new read-model version");
    Ok(next)
}

/// Catches `version` (in `state`) up with the log batch by batch and switches it live: a
/// rebuild's (after its bulk load), a rollback's, or the first catch-up of a projection never
/// live.
pub(crate) async fn catch_up_and_switch(
    config: &Config,
    public: &PgPool,
    version: Version,
    state: State,
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<Switched> {
    let topic = &config.kafka.topic;
    // Nothing left to apply (a bulk load reached the log's end, the live version is not ahead):
    // switched at once, without a consumer group.
    let (theirs, ours) = both_positions(public, version, topic).await?;
    if caught_up(&log_ends(config).await, &theirs, &ours)
        && let Some(previous) = switch(public, version, state, topic).await?
    {
        let switched = Switched {
            projection: version.projection,
            live: version,
            previous,
            events: 0,
            loaded_in_bulk: 0,
            seconds: 0.0,
        };
        return switched_to(public, switched).await;
    }
    let target = vec![Target::open(&config.database, version).await?];
    let group = format!("{}.rebuild.{}", config.group_id, version.schema());
    let (runner, assignments) =
        Runner::new(config, public.clone(), target, Role::CatchUp(state), &group, batch_size)?;
    let stop = CancellationToken::new();
    let replaying = runner.status.clone();
    let mut replay = tokio::spawn(runner.run(assignments, stop.clone()));
    // Whichever way this returns, the replay stops with it.
    let _stop_replay = stop.clone().drop_guard();

    let started = Instant::now();
    let started_at = load_version(public, version, topic).await?.values().sum::<i64>();
    let mut reporter = Reporter::new(progress, format!("catching up {version}"));
    let mut ends = BTreeMap::new();
    let mut ends_read = None::<Instant>;
    let mut failing_since = None::<Instant>;
    let switched = loop {
        tokio::select! {
            ended = &mut replay => {
                ended.context("the replay task failed")?.context("the replay stopped")?;
                bail!("read-model version {version} left the `{state}` state while it was being caught up");
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (_, problem) in replaying.retried.take() {
            reporter.problem(problem);
        }
        if ends_read.is_none_or(|at: Instant| at.elapsed() > Duration::from_secs(2)) {
            ends = log_ends(config).await;
            ends_read = Some(Instant::now());
        }
        // The replay retries database errors by itself; watching it does too, for a while.
        let (theirs, ours) = match both_positions(public, version, topic).await {
            Ok(both) => {
                failing_since = None;
                both
            }
            Err(error) if failing_since.get_or_insert_with(Instant::now).elapsed() < GIVE_UP_AFTER => {
                tracing::warn!(error = format!("{error:#}"), "Reading the positions failed; retrying");
                reporter.problem(format!("reading the positions failed: {error:#}"));
                continue;
            }
            Err(error) => {
                return Err(error.context(format!("reading the positions failed for {GIVE_UP_AFTER:?}")));
            }
        };
        let done: i64 = ours.values().sum();
        reporter.update(done, goal(&ends, &theirs).values().sum::<i64>().max(done));
        if caught_up(&ends, &theirs, &ours)
            && let Some(previous) = switch(public, version, state, topic).await?
        {
            break Switched {
                projection: version.projection,
                live: version,
                previous,
                events: done - started_at,
                loaded_in_bulk: 0,
                seconds: started.elapsed().as_secs_f64(),
            };
        }
    };
    stop.cancel();
    if let Ok(Err(error)) = replay.await {
        tracing::warn!(%error, "The replay ended with an error after the switch");
    }
    reporter.finish();
    switched_to(public, switched).await
}

/// Where a version must be to switch: the log's end (`ends`), and never behind the live version
/// (`theirs`).
fn goal(ends: &BTreeMap<i32, i64>, theirs: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let mut goal = ends.clone();
    for (&partition, &offset) in theirs {
        let at = goal.entry(partition).or_insert(0);
        *at = (*at).max(offset);
    }
    goal
}

/// Whether positions `ours` reach the [`goal`].
fn caught_up(ends: &BTreeMap<i32, i64>, theirs: &BTreeMap<i32, i64>, ours: &BTreeMap<i32, i64>) -> bool {
    goal(ends, theirs).iter().all(|(p, goal)| ours.get(p).copied().unwrap_or(0) >= *goal)
}

/// Logs a switch and drops the versions it retired.
async fn switched_to(public: &PgPool, switched: Switched) -> anyhow::Result<Switched> {
    tracing::info!(
        live = %switched.live,
        previous = switched.previous.map(|p| p.to_string()).unwrap_or_default(),
        events = switched.events,
        seconds = switched.seconds,
        events_per_s = (switched.events as f64 / switched.seconds.max(0.001)).round(),
        "Read models switched"
    );
    prune(public).await?;
    Ok(switched)
}

/// How long watching a catch-up tolerates a database that does not answer.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// The positions of the live version of `version`'s projection (none when it has none yet) and
/// `version`'s.
async fn both_positions(
    public: &PgPool,
    version: Version,
    topic: &str,
) -> anyhow::Result<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let theirs = match read_models::in_state(public, version.projection, State::Live).await? {
        Some(live) => load_version(public, live, topic).await?,
        None => BTreeMap::new(),
    };
    Ok((theirs, load_version(public, version, topic).await?))
}

/// Makes `version` live if it is still in `state` and not behind the live version of its
/// projection on any partition; returns the version that was live (`Some(None)` for a projection
/// live for the first time). `None` (nothing changed) when it is behind.
async fn switch(
    public: &PgPool,
    version: Version,
    state: State,
    topic: &str,
) -> anyhow::Result<Option<Option<Version>>> {
    let mut tx = public.begin().await?;
    // Waits for live batches under way; later ones see the new states and move over.
    let rows = read_models::lock_live_and(&mut *tx, version).await?;
    if !rows.contains(&(version, state)) {
        bail!("read-model version {version} is no longer `{state}`");
    }
    let Some(live) = rows.iter().find(|(_, s)| *s == State::Live).map(|(v, _)| *v) else {
        read_models::set_state(&mut *tx, version, State::Live).await?;
        announce_switch(&mut tx, version).await?;
        tx.commit().await?;
        tracing::info!(live = %version, "The projection is live for the first time");
        return Ok(Some(None));
    };
    if behind(&mut tx, version, live, topic).await? {
        return Ok(None);
    }
    // In this order, no two versions are ever live or previous at once (unique indexes).
    if let Some(previous) =
        read_models::in_state(&mut *tx, version.projection, State::Previous).await?.filter(|p| *p != version)
    {
        read_models::set_state(&mut *tx, previous, State::Retired).await?;
    }
    for (subject, state) in [(live, State::Retired), (version, State::Live), (live, State::Previous)] {
        read_models::set_state(&mut *tx, subject, state).await?;
    }
    announce_switch(&mut tx, version).await?;
    tx.commit().await?;
    tracing::info!(live = %version, previous = %live, "Switched the live read-model version");
    Ok(Some(Some(live)))
}

/// Makes `version`, of a projection never live, live at once if the main projection's live
/// version has applied nothing it has not (a fresh database: both start at offset 0): the live
/// runner then applies it with the others from one consumption of the log, rather than a
/// catch-up reading the same log beside it. `false` (nothing changed) when the main projection is
/// ahead of it: it must be caught up first.
pub(crate) async fn adopt_if_not_behind(
    public: &PgPool,
    version: Version,
    topic: &str,
) -> anyhow::Result<bool> {
    let mut tx = public.begin().await?;
    // The main projection's batches wait meanwhile, so its checkpoints cannot move past ours.
    let main = read_models::live_for_update(&mut *tx, Projection::Main).await?;
    let rows = read_models::lock_live_and(&mut *tx, version).await?;
    if rows != [(version, State::Building)] {
        return Ok(false);
    }
    if behind(&mut tx, version, main, topic).await? {
        return Ok(false);
    }
    read_models::set_state(&mut *tx, version, State::Live).await?;
    announce_switch(&mut tx, version).await?;
    tx.commit().await?;
    tracing::info!(live = %version, "The projection is live: nothing was applied to any other yet");
    Ok(true)
}

/// Whether `version` is behind `other` on some partition of `topic` (a partition `version` never
/// applied counts from 0).
async fn behind(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    version: Version,
    other: Version,
    topic: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {theirs}.projection_checkpoints t
                        LEFT JOIN {ours}.projection_checkpoints o USING (topic, partition)
                        WHERE t.topic = $1 AND COALESCE(o.next_offset, 0) < t.next_offset)",
        theirs = other.schema(),
        ours = version.schema()
    ))
    .bind(topic)
    .fetch_one(&mut **tx)
    .await
}

/// Tells readers and writers, as the switch commits, that `version` is live.
async fn announce_switch(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    version: Version,
) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(read_models::CHANNEL)
        .bind(format!("{} {}", version.projection, version.number))
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Drops retired versions.
pub(crate) async fn prune(public: &PgPool) -> anyhow::Result<()> {
    for version in read_models::all_in_state(public, State::Retired).await? {
        let mut tx = public.begin().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", version.schema())).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM read_model_versions WHERE projection = $1 AND version = $2")
            .bind(version.projection)
            .bind(version.number)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(%version, "Dropped a retired read-model version");
    }
    Ok(())
}

/// The log's end per partition, as far as the broker answers.
async fn log_ends(config: &Config) -> BTreeMap<i32, i64> {
    crate::live::status::high_watermarks(&config.kafka)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(partition, end)| end.map(|end| (partition, end)))
        .collect()
}

/// A version as `status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub projection: Projection,
    pub version: Version,
    pub schema: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub switched_at: Option<DateTime<Utc>>,
    /// Checkpoints: partition → next offset to apply.
    pub positions: BTreeMap<i32, i64>,
    /// Events applied (the sum of the positions).
    pub events: i64,
}

/// Every version, oldest first.
pub async fn versions(pool: &PgPool, topic: &str) -> anyhow::Result<Vec<VersionStatus>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        projection: Projection,
        version: i32,
        state: String,
        created_at: DateTime<Utc>,
        switched_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT projection, version, state, created_at, switched_at FROM public.read_model_versions \
         ORDER BY projection, version",
    )
    .fetch_all(pool)
    .await?;
    let mut versions = Vec::with_capacity(rows.len());
    for Row { projection, version, state, created_at, switched_at } in rows {
        let version = projection.version(version);
        let positions = load_version(pool, version, topic).await.unwrap_or_default();
        let events = positions.values().sum();
        versions.push(VersionStatus {
            projection,
            version,
            schema: version.schema(),
            state,
            created_at,
            switched_at,
            positions,
            events,
        });
    }
    Ok(versions)
}
