//! Operator commands: `status`, `verify` and `dlq …`. They print for people (or JSON with `--json`) and
//! work on PostgreSQL and the broker directly, so they run beside a live projector.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Subcommand;
use sqlx::PgPool;

use crate::Config;
use crate::dlq::{self, Mirror, Redriven};
use crate::operations::progress::Progress;
use crate::parked;
use eventline_read_models::{Projection, Version};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One entry per line (a JSON array with the original payloads with --json).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Everything about one entry, as JSON.
    Show { id: i64 },
    /// Apply entries again through the projection code (after the bug is fixed); entries that
    /// apply are removed, those that fail again stay with one more attempt.
    Redrive {
        /// The entry to redrive.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Redrive every entry.
        #[arg(long)]
        all: bool,
    },
    /// Remove an entry without applying it.
    Purge { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum ParkedCommand {
    /// The parked keys grouped by error, then one key per line (JSON with --json).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One parked key with its events in log order and their payloads, as JSON.
    Show {
        /// The key (the aggregate id: a user id, an order id or a sku).
        key: String,
    },
    /// Apply a parked key's events in log order through the projection code, once what refused
    /// them is fixed: all of them or none. Without --confirm, a dry run that applies and rolls
    /// back, saying what would happen.
    Redrive {
        key: String,
        /// The key again, typed to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Remove a parked key and its events without applying them (they stay in the log; a
    /// rebuild would meet them again). Requires a reason and the key typed again.
    Discard {
        key: String,
        #[arg(long)]
        reason: String,
        /// The key again, typed to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
}

/// Whether a command may bring the schema up to date first. Commands that only read never migrate:
/// an operator looking at a database must not change it (and may lack the rights to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadOnly,
    Migrating,
}

/// The main projection's live version and a pool on it (and, behind it, `public`: the dead
/// letters).
async fn live_pool(config: &Config, access: Access) -> anyhow::Result<(PgPool, Version)> {
    live_pool_of(config, Projection::Main, access).await
}

/// `projection`'s live version and a pool on it.
async fn live_pool_of(
    config: &Config,
    projection: Projection,
    access: Access,
) -> anyhow::Result<(PgPool, Version)> {
    let public = eventline_runtime::db::pool(&config.database)?;
    if access == Access::Migrating {
        eventline_runtime::db::migrate(&public).await?;
    }
    let live = eventline_read_models::live(&public, projection).await.with_context(|| {
        format!("finding the live version of the {projection} projection (not migrated yet? `eventline-projector migrate`)")
    })?;
    Ok((eventline_read_models::pool(&config.database, live)?, live))
}

pub async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let (pool, _) = live_pool(config, Access::ReadOnly).await?;
    let status = crate::live::status::collect(&pool, &config.kafka).await?;
    let versions = crate::operations::rebuild::versions(&pool, &config.kafka.topic).await?;
    if json {
        let both = serde_json::json!({"projection": status, "versions": versions});
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(());
    }
    println!(
        "{:<18}  {:>7}  {:<8}  {:>12}  {:<32}  positions",
        "projection", "version", "state", "events", "switched"
    );
    for v in &versions {
        let positions: Vec<String> = v.positions.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        println!(
            "{:<18}  {:>7}  {:<8}  {:>12}  {:<32}  {}",
            v.projection.name(),
            v.version.number,
            v.state,
            v.events,
            v.switched_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            positions.join(",")
        );
    }
    println!();
    println!(
        "topic {}  lag {}  dead letters {}  parked keys {} ({} events)",
        status.topic, status.lag, status.dead_letters, status.parked_keys, status.parked_events
    );
    println!("{:>9}  {:>12}  {:>14}  {:>8}", "partition", "next offset", "high watermark", "lag");
    let unknown = || "?".to_owned();
    for p in &status.partitions {
        println!(
            "{:>9}  {:>12}  {:>14}  {:>8}",
            p.partition,
            p.next_offset,
            p.high_watermark.map_or_else(unknown, |h| h.to_string()),
            p.lag.map_or_else(unknown, |l| l.to_string())
        );
    }
    Ok(())
}

/// Prints how the live read models' log compares with the broker's (JSON); with `check`, an
/// error when they belong to another log. Binds nothing: that is the running projector's job.
pub async fn log_identity(config: &Config, check: bool) -> anyhow::Result<()> {
    let (_, live) = live_pool(config, Access::ReadOnly).await?;
    let public = eventline_runtime::db::pool(&config.database)?;
    let verdict = crate::log_check::check(&public, live, &config.kafka, false).await?;
    println!("{}", serde_json::json!({"version": live, "topic": config.kafka.topic, "log": verdict}));
    match verdict.refusal(&config.kafka.topic, live) {
        Some(refusal) if check => anyhow::bail!(refusal),
        _ => Ok(()),
    }
}

/// Runs `verify` of each of `projections` and prints its report; an error when the live read
/// models of one differ from the log.
pub async fn verify(
    config: &Config,
    projections: Vec<Projection>,
    progress: Progress,
    batch_size: usize,
    sample: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut differing = Vec::new();
    let mut reports = Vec::new();
    for projection in projections {
        let report =
            crate::operations::verify::verify(config, projection, progress.clone(), batch_size, sample)
                .await?;
        if !json {
            print_report(&report);
        }
        differing.extend(report.differing().into_iter().map(|table| format!("{projection}.{table}")));
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    if !differing.is_empty() {
        anyhow::bail!("the live read models differ from the log in: {}", differing.join(", "));
    }
    Ok(())
}

/// `rebuild`: each projection's switch, one JSON line each (the version now live, the events
/// applied, how many of them loaded in bulk, the seconds the catch-up took).
pub async fn rebuild(
    config: &Config,
    projections: &[Projection],
    progress: Progress,
    batch_size: usize,
) -> anyhow::Result<()> {
    for switched in crate::operations::rebuild::rebuild_set(config, projections, progress, batch_size).await?
    {
        println!("{}", serde_json::to_string(&switched)?);
    }
    Ok(())
}

fn print_report(report: &crate::operations::verify::Report) {
    {
        let positions: Vec<String> = report.positions.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        println!(
            "live {} against the log, both at positions {} ({:.1} s)",
            report.live,
            positions.join(","),
            report.seconds
        );
        println!(
            "{:<12}  {:>10}  {:>10}  {:<16}  {:<16}",
            "table", "live rows", "log rows", "live sum", "log sum"
        );
        for t in &report.tables {
            println!(
                "{:<12}  {:>10}  {:>10}  {:<16}  {:<16}  {}",
                t.table,
                t.live_rows,
                t.folded_rows,
                t.live_checksum,
                t.folded_checksum,
                if t.matches() { "ok" } else { "DIFFERS" }
            );
        }
        for t in report.tables.iter().filter(|t| !t.matches()) {
            println!();
            println!("{}: rows only in the live version (a sample)", t.table);
            t.only_live.iter().for_each(|row| println!("  {row}"));
            println!("{}: rows only in the fold of the log (a sample)", t.table);
            t.only_folded.iter().for_each(|row| println!("  {row}"));
        }
    }
}

pub async fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let access = match command {
        DlqCommand::List { .. } | DlqCommand::Show { .. } => Access::ReadOnly,
        _ => Access::Migrating,
    };
    let (pool, _) = live_pool(config, access).await?;
    let topic = &config.kafka.topic;
    match command {
        DlqCommand::List { json: true } => {
            let entries = dlq::list(&pool, topic).await?;
            let shown: Vec<_> = entries.iter().map(dlq::DeadLetter::shown).collect();
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        DlqCommand::List { json: false } => {
            for e in dlq::list(&pool, topic).await? {
                println!(
                    "{}\t{}\tpartition {} offset {}\tattempts {}\t{}: {}",
                    e.id,
                    e.dead_at.to_rfc3339(),
                    e.partition,
                    e.offset,
                    e.attempts,
                    e.error_code,
                    e.error
                );
            }
        }
        DlqCommand::Show { id } => {
            let entry = dlq::get(&pool, id).await?.with_context(|| format!("no dead letter {id}"))?;
            println!("{}", serde_json::to_string_pretty(&entry.shown())?);
        }
        DlqCommand::Redrive { id, all } => {
            let entries = match (id, all) {
                (_, true) => dlq::list(&pool, topic).await?,
                (Some(id), false) => {
                    vec![dlq::get(&pool, id).await?.with_context(|| format!("no dead letter {id}"))?]
                }
                (None, false) => anyhow::bail!("name an entry or pass --all"),
            };
            let mut failed = 0;
            for entry in &entries {
                let outcome = dlq::redrive(&pool, entry).await?;
                println!("{}", serde_json::to_string(&outcome)?);
                match outcome {
                    Redriven::Applied { .. } | Redriven::Parked { .. } => {}
                    Redriven::FailedAgain { .. } => failed += 1,
                    Redriven::NotLive { version, .. } => {
                        sync_mirror(config, &pool).await;
                        anyhow::bail!(
                            "read-model version {version} stopped being live during the redrive (a rebuild \
                             or rollback switched); the remaining entries are untouched: run it again"
                        );
                    }
                }
            }
            sync_mirror(config, &pool).await;
            anyhow::ensure!(failed == 0, "{failed} of {} entries failed again", entries.len());
        }
        DlqCommand::Purge { id } => {
            anyhow::ensure!(dlq::purge(&pool, id).await?, "no dead letter {id}");
            sync_mirror(config, &pool).await;
            println!("purged {id}");
        }
    }
    Ok(())
}

/// Works the keys parked in `projection` (each projection parks the keys whose events its own
/// tables refused).
pub async fn parked(config: &Config, projection: Projection, command: ParkedCommand) -> anyhow::Result<()> {
    let access = match command {
        ParkedCommand::List { .. } | ParkedCommand::Show { .. } => Access::ReadOnly,
        _ => Access::Migrating,
    };
    let (pool, live) = live_pool_of(config, projection, access).await?;
    let topic = &config.kafka.topic;
    match command {
        ParkedCommand::List { json } => {
            let groups = parked::groups(&pool, topic).await?;
            let keys = parked::list(&pool, topic, i64::MAX).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"groups": groups, "keys": keys}))?
                );
                return Ok(());
            }
            for g in &groups {
                println!(
                    "{} keys, {} events: SQLSTATE {}: {}",
                    g.keys,
                    g.events,
                    g.sqlstate.as_deref().unwrap_or("none"),
                    g.error
                );
            }
            for k in &keys {
                println!(
                    "{}\t{}\tpartition {} offset {}\t{} events\t{}\tattempts {}",
                    k.key,
                    k.parked_at.to_rfc3339(),
                    k.partition,
                    k.offset,
                    k.events,
                    k.event_type,
                    k.attempts
                );
            }
        }
        ParkedCommand::Show { key } => {
            let (found, events) = parked::get(&pool, topic, key.as_bytes())
                .await?
                .with_context(|| format!("key {key:?} is not parked"))?;
            let events: Vec<_> =
                events.iter().map(|e| serde_json::json!({"event": e, "payload": e.payload_text()})).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"key": found, "events": events}))?
            );
        }
        ParkedCommand::Redrive { key, confirm } => {
            let dry_run = confirm.is_none();
            anyhow::ensure!(
                confirm.as_deref().is_none_or(|typed| typed == key),
                "--confirm must repeat the key ({key:?})"
            );
            let outcome = parked::redrive(&pool, live, topic, key.as_bytes(), dry_run).await?;
            println!("{}", serde_json::to_string(&outcome)?);
            if !dry_run {
                let public = eventline_runtime::db::pool(&config.database)?;
                let succeeded = matches!(outcome, parked::Redriven::Applied { .. });
                let parameters = serde_json::json!({"key": key});
                crate::console::audit::record_cli(
                    &public,
                    "parked.redrive",
                    &parameters,
                    succeeded,
                    &serde_json::to_value(&outcome)?,
                )
                .await;
            }
            match outcome {
                parked::Redriven::Applied { dry_run: true, events, .. } => {
                    println!(
                        "dry run: {events} events would apply; run again with --confirm {key} to apply them"
                    )
                }
                parked::Redriven::Applied { .. } => {}
                parked::Redriven::FailedAgain { .. } => {
                    anyhow::bail!("the database still refuses the key's events")
                }
                parked::Redriven::NotParked => anyhow::bail!("key {key:?} is not parked"),
                parked::Redriven::NotLive { version } => anyhow::bail!(
                    "read-model version {version} stopped being live (a rebuild or rollback switched): run it again"
                ),
            }
        }
        ParkedCommand::Discard { key, reason, confirm } => {
            anyhow::ensure!(!reason.trim().is_empty(), "a discard needs a reason");
            anyhow::ensure!(
                confirm.as_deref() == Some(key.as_str()),
                "type the key again with --confirm {key}"
            );
            let discarded = parked::discard(&pool, topic, key.as_bytes()).await?;
            let public = eventline_runtime::db::pool(&config.database)?;
            let ids: Vec<String> = discarded
                .iter()
                .flatten()
                .map(|e| format!("{}:{} {}", e.partition, e.offset, e.event_id))
                .collect();
            let parameters = serde_json::json!({"key": key, "reason": reason});
            let result = serde_json::json!({"discarded": ids});
            crate::console::audit::record_cli(
                &public,
                "parked.discard",
                &parameters,
                discarded.is_some(),
                &result,
            )
            .await;
            let discarded = discarded.with_context(|| format!("key {key:?} is not parked"))?;
            println!("discarded {} events of {key}", discarded.len());
        }
    }
    Ok(())
}

/// Brings the Redis stream in line after a change; the projector would do it later otherwise.
async fn sync_mirror(config: &Config, pool: &PgPool) {
    let result = async {
        let mirror = Mirror::new(&config.redis, &config.kafka.topic)?;
        mirror.reconcile(pool, &config.kafka.topic).await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "The Redis mirror of the dead letters was not updated; the projector will do it");
    }
}
