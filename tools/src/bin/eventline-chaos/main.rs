//! `make chaos`: faults injected while commands flow, then the read model compared with a fold of
//! the log written here, independently of the projector.
//!
//! The run starts PostgreSQL, Redis and an Apache Kafka broker of its own ([`Sandbox`]), so crashing,
//! flushing and freezing them touches neither the machine's services nor a `make up` stack. Each
//! scenario runs the command service and the projector as processes on a topic and database of its
//! own, drives inventory adjustments with random quantities (each with an `Idempotency-Key`,
//! retried with the same key when the answer is lost), injects its fault, stops the load and waits
//! for the projection to catch up. Then:
//! - every event acknowledged with 202 must be in the log (no 2xx for an event not in the log);
//! - per sku, the read model must equal the sum of the distinct events in the log (nothing lost,
//!   nothing doubled), and every event id must be applied once (`processed_events`);
//! - every poison message must be dead-lettered.
//!
//! `--short` runs each scenario briefly (the variant `make test` runs). Writes
//! `docs/reliability.md` (full runs only) and `target/chaos/results.json`.
#![allow(clippy::print_stdout)]

mod faults;
mod fold;
mod load;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventline_testkit::kafka::KafkaCluster;
use eventline_tools::sandbox::Sandbox;
use eventline_tools::stack::{self, Service, Setup};

use faults::{
    Fault, REFUSED_SKU, busiest_leader, freshness_probes, gauge_reaches_one, poison, postmaster_started,
    random_pause, refuse_one_key,
};
use fold::read_log;
use load::{Load, ORDERS, place_orders};
use report::{Report, kept_history, markdown, round_tenths};

const SKUS: usize = 16;
const COMMAND_PORT: u16 = 28081;
/// Two, for the scenario that runs two projector instances in one consumer group.
const PROJECTOR_PORTS: [u16; 2] = [28083, 28084];
/// How long the broker waits for a silent group member before dropping it from the group.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Fault injection under load (`make chaos`): every scenario, then docs/reliability.md.
#[derive(Debug, clap::Parser)]
#[command(name = "eventline-chaos")]
struct Args {
    /// The same scenarios, briefly (`make test` runs this).
    #[arg(long)]
    short: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let short = <Args as clap::Parser>::parse().short;
    let (root, out) = match stack::output_dir("chaos") {
        Ok(dirs) => dirs,
        Err(error) => return failed(&error),
    };
    match run(short, &root, &out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("The services' logs are in {}", out.display());
            failed(&error)
        }
    }
}

/// The cause chain on one line, printed last so the tail of a CI log names it (a backtrace, when
/// RUST_BACKTRACE asks for one, would otherwise bury it).
fn failed(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("{error:?}");
    eprintln!("\nThe chaos run failed: {error:#}");
    std::process::ExitCode::FAILURE
}

async fn run(short: bool, root: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let (run, kills) = if short { (Duration::from_secs(6), 3) } else { (Duration::from_secs(20), 10) };
    let id = stack::run_id();
    let mut sandbox = Sandbox::start(&id).context("starting the run's PostgreSQL, Redis and broker")?;
    let base = Setup {
        bin_dir: stack::bin_dir()?,
        brokers: sandbox.broker.address(),
        redis: sandbox.redis.url(),
        postgres: sandbox.postgres.server_url(),
        topic: String::new(),
        database: String::new(),
        log_dir: out.to_path_buf(),
        extra_env: Vec::new(),
    };
    let started = Instant::now();
    let mut reports = Vec::new();
    for (n, fault) in Fault::ALL.into_iter().enumerate() {
        let mut setup = Setup {
            topic: format!("eventline.chaos.{id}.{n}"),
            database: format!("eventline_chaos_{n}"),
            ..base.clone()
        };
        println!("\n{}. {}", n + 1, fault.name());
        // The cluster scenario runs on three brokers of its own, started for it alone.
        let mut cluster = None;
        if fault == Fault::ClusterLosesBrokers {
            let started = KafkaCluster::start(
                &sandbox.dir().join("cluster"),
                3,
                vec!["--".into(), "min.insync.replicas=2".into()],
            )
            .context("starting the three-broker cluster")?;
            setup.brokers = started.bootstrap();
            setup.extra_env = vec![("EVENTLINE_TOPIC_REPLICATION", "3".to_owned())];
            cluster = Some(started);
        }
        let report = scenario(&setup, &mut sandbox, cluster.as_mut(), fault, run, kills).await;
        drop(cluster);
        let report = report.with_context(|| format!("scenario {fault:?}"))?;
        println!("   {}", serde_json::to_string(&report)?);
        reports.push(report);
    }
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&reports)? + "\n")?;
    if !short {
        let path = root.join("docs/reliability.md");
        let kept = kept_history(&std::fs::read_to_string(&path).unwrap_or_default());
        std::fs::write(&path, markdown(&reports, started.elapsed()) + &kept)?;
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed).map(|r| r.scenario).collect();
    if !failed.is_empty() {
        bail!("lost, doubled or unlogged events in: {}", failed.join("; "));
    }
    println!("\nNothing lost, nothing doubled, in {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}

/// Projector processes: one normally, two while the rebalance scenario runs.
struct Projectors {
    setup: Setup,
    running: Vec<(Service, u16)>,
    /// The consumer group new instances join.
    group: String,
    /// Shorter than the projector's default, where the scenario waits for it to pass.
    session_timeout: Option<Duration>,
}

impl Projectors {
    fn start(setup: &Setup, session_timeout: Option<Duration>) -> anyhow::Result<Projectors> {
        let group = format!("{}.projector", setup.topic);
        let mut projectors = Projectors { setup: setup.clone(), running: Vec::new(), group, session_timeout };
        projectors.add()?;
        Ok(projectors)
    }

    /// Starts one more instance in the group, on a port none of the running ones has.
    fn add(&mut self) -> anyhow::Result<()> {
        let port = PROJECTOR_PORTS
            .into_iter()
            .find(|p| self.running.iter().all(|(_, used)| used != p))
            .context("no free projector port")?;
        let mut settings = vec![("EVENTLINE_PROJECTOR_GROUP", self.group.clone())];
        if let Some(timeout) = self.session_timeout {
            settings.push(("EVENTLINE_SESSION_TIMEOUT_MS", timeout.as_millis().to_string()));
        }
        self.running.push((self.setup.start_with("eventline-projector", port, &settings)?, port));
        Ok(())
    }

    /// SIGKILL to the instance at `index` (0 is the oldest).
    fn kill(&mut self, index: usize) {
        if index < self.running.len() {
            self.running.remove(index).0.kill();
        }
    }

    fn any(&self) -> anyhow::Result<&Service> {
        self.running.first().map(|(service, _)| service).context("no projector running")
    }

    fn stop(self) {
        for (service, _) in self.running {
            service.stop();
        }
    }
}

async fn scenario(
    setup: &Setup,
    sandbox: &mut Sandbox,
    cluster: Option<&mut KafkaCluster>,
    fault: Fault,
    run: Duration,
    kills: u32,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    setup.fresh_database().await?;
    let session_timeout = (fault == Fault::KillDuringRebalance).then_some(SESSION_TIMEOUT);
    let mut projectors = Projectors::start(setup, session_timeout)?;
    projectors.any()?.ready(&http).await?;
    let mut command = setup.start("eventline-command", COMMAND_PORT)?;
    command.ready(&http).await?;
    let orders = place_orders(&http, &command.base, ORDERS).await?;

    // The rebalance scenario's rounds each outlast a session timeout; the load runs through them.
    let rebalance_rounds = kills.div_ceil(2);
    let load_for = match fault {
        Fault::KillDuringRebalance => run + (SESSION_TIMEOUT + Duration::from_secs(4)) * rebalance_rounds,
        Fault::ClusterLosesBrokers => run + Duration::from_secs(60),
        _ => run,
    };
    let load = Load::start(&http, &command, load_for, orders);
    let mut faults = 0;
    let mut poison_sent = 0;
    // Evidence that the fault happened and was met, besides the counts the load keeps: what a
    // restarted dependency lost or changed, and what was accepted after it.
    let mut evidence = false;
    let mut recovery_after_fault_s = Vec::new();
    let mut accepted_below_min_isr = 0;
    let mut other_keys_freshness_ms = Vec::new();
    tokio::time::sleep(run / 4).await;
    match fault {
        Fault::KillProjector => {
            for _ in 0..kills {
                tokio::time::sleep(random_pause(200..1200)).await;
                projectors.kill(0);
                faults += 1;
                // The restarted instance rejoins the same group, as in production: the broker
                // must hand it the partitions the killed member held once that one's session ends.
                projectors.add()?;
            }
        }
        Fault::CrashPostgres => {
            let started = postmaster_started(&setup.database_url()).await?;
            sandbox.postgres.crash_and_restart()?;
            faults += 1;
            // A new server process (its start time moved), and commands decided on it.
            let accepted = load.accepted_so_far();
            evidence = postmaster_started(&setup.database_url()).await? > started
                && load.accepted_more_than(accepted, Duration::from_secs(30)).await;
        }
        Fault::RestartRedis => {
            let mut redis =
                redis::Client::open(sandbox.redis.url())?.get_multiplexed_async_connection().await?;
            let _: () =
                redis::cmd("SET").arg("eventline:chaos:marker").arg(1).query_async(&mut redis).await?;
            sandbox.redis.kill_and_restart()?;
            faults += 1;
            // Redis came back empty (the marker, like every idempotency key, is gone), and keyed
            // commands were accepted after it.
            let mut redis =
                redis::Client::open(sandbox.redis.url())?.get_multiplexed_async_connection().await?;
            let marker: Option<i64> =
                redis::cmd("GET").arg("eventline:chaos:marker").query_async(&mut redis).await?;
            let accepted = load.accepted_so_far();
            evidence = marker.is_none() && load.accepted_more_than(accepted, Duration::from_secs(30)).await;
        }
        Fault::FreezeBroker => {
            sandbox.broker.freeze()?;
            tokio::time::sleep(Duration::from_secs(6)).await;
            sandbox.broker.resume()?;
            faults += 1;
        }
        Fault::KillDuringRebalance => {
            for round in 0..rebalance_rounds {
                // A second instance joins and the group rebalances; one of the two dies in the
                // middle of it, the newcomer or the old hand in turn, giving no goodbye.
                projectors.add()?;
                tokio::time::sleep(random_pause(100..1500)).await;
                projectors.kill(usize::from(round % 2 == 0));
                faults += 1;
                // The broker drops the dead member after the session timeout and hands its
                // partitions to the survivor, which alone finishes the work after the last round.
                tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(3)).await;
            }
        }
        Fault::RestartBroker => {
            let accepted = load.accepted_so_far();
            sandbox.broker.restart()?;
            faults += 1;
            // The new broker process took appends (the command service did not need a restart).
            evidence = load.accepted_more_than(accepted, Duration::from_secs(30)).await;
        }
        Fault::PoisonStorm => {
            poison_sent = poison(&setup.brokers, &setup.topic, 500, run / 2).await?;
            faults += 1;
        }
        Fault::ClusterLosesBrokers => {
            let cluster = cluster.context("the cluster scenario needs its cluster")?;
            // The broker leading the most partitions of the topic goes first.
            let first = busiest_leader(setup, cluster).await?;
            let accepted = load.accepted_so_far();
            let killed = Instant::now();
            cluster.node_mut(first).context("the busiest leader")?.kill();
            faults += 1;
            // The survivors hold every partition in sync: new leaders, and commands accepted again.
            let back = load.accepted_more_than(accepted, Duration::from_secs(30)).await;
            recovery_after_fault_s.push(round_tenths(killed.elapsed()));
            // A second broker: one left, below min.insync.replicas=2. No command first sent from
            // now on may be accepted: each would need an append acknowledged by a single broker.
            // (A retry of an earlier command may still be answered 202 from its earlier append,
            // and an answer already on its way may arrive late on a loaded machine; neither is
            // counted.)
            let second =
                cluster.nodes.iter().find(|n| n.is_running()).map(|n| n.node_id).context("a survivor")?;
            cluster.node_mut(second).context("the second broker")?.kill();
            let below_min_isr = Instant::now();
            faults += 1;
            // The first 503 comes after the append timeout, later on a loaded machine (the
            // client waits up to 10 s); the stretch below the minimum lasts at least 9 s.
            let unavailable = load.unavailable_so_far();
            let refused_meanwhile = load.unavailable_more_than(unavailable, Duration::from_secs(25)).await;
            tokio::time::sleep(Duration::from_secs(9).saturating_sub(below_min_isr.elapsed())).await;
            accepted_below_min_isr = load.accepted_first_sent_after(below_min_isr) as u64;
            // Both come back: the quorum and the in-sync replicas return, and commands flow.
            let restarted = Instant::now();
            for node in [first, second] {
                cluster.node_mut(node).context("a killed broker")?.restart()?;
            }
            let accepted = load.accepted_so_far();
            let flowing = load.accepted_more_than(accepted, Duration::from_secs(60)).await;
            recovery_after_fault_s.push(round_tenths(restarted.elapsed()));
            evidence = back && refused_meanwhile && flowing;
        }
        Fault::RefuseOneKey => {
            let pool = sqlx::PgPool::connect(&setup.database_url()).await?;
            let live =
                eventline_read_models::live(&pool, eventline_read_models::Projection::Main).await?.schema();
            refuse_one_key(&pool, &live, true).await?;
            faults += 1;
            // While the key is parked, events of every other key are applied as they come.
            other_keys_freshness_ms = freshness_probes(&http, &command.base, &pool, &live, 10).await?;
            pool.close().await;
            // The projector says so in its metrics (the observer's round, every 5 s).
            let metrics = projectors.any()?.url("/metrics");
            evidence = gauge_reaches_one(
                &http,
                &metrics,
                "eventline_projector_parked_keys",
                Duration::from_secs(15),
            )
            .await;
        }
        Fault::KillCommand => {
            for _ in 0..kills {
                tokio::time::sleep(random_pause(200..1200)).await;
                command.kill();
                faults += 1;
                // Decisions cut off between their commit and their append are pending: the
                // restarted service appends them, and keyed retries get their 202.
                command = setup.start("eventline-command", COMMAND_PORT)?;
            }
        }
    }
    let fault_ended = Instant::now();
    let outcome = load.finish().await;
    let projector = projectors.any()?;
    projector.ready(&http).await?;
    projector.caught_up(&http).await?;
    let recover_s = fault_ended.elapsed().as_secs_f64();

    let log = read_log(&setup.brokers, &setup.topic)?;
    let pool = sqlx::PgPool::connect(&setup.database_url()).await?;
    let live_version = eventline_read_models::live(&pool, eventline_read_models::Projection::Main).await?;
    let live = live_version.schema();
    // The parking scenario: what was applied and what was parked make the log, then the cause
    // is fixed and the key redriven through the CLI's code, and the usual checks follow.
    let (mut parked, mut applied_plus_parked) = (0, None);
    if fault == Fault::RefuseOneKey {
        parked = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}.parked_events"))
            .fetch_one(&pool)
            .await?;
        let applied: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}.processed_events"))
            .fetch_one(&pool)
            .await?;
        applied_plus_parked = Some(applied + parked);
        refuse_one_key(&pool, &live, false).await?;
        let version_pool = eventline_read_models::pool(
            &eventline_runtime::config::DatabaseConfig { url: setup.database_url(), max_connections: 2 },
            live_version,
        )?;
        let redriven = eventline_projector::parked::redrive(
            &version_pool,
            live_version,
            &setup.topic,
            REFUSED_SKU.as_bytes(),
            false,
        )
        .await?;
        anyhow::ensure!(
            parked == 0 || matches!(redriven, eventline_projector::parked::Redriven::Applied { .. }),
            "the redrive of {REFUSED_SKU} did not apply: {redriven:?}"
        );
        version_pool.close().await;
    }
    let stock: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT sku, quantity FROM {live}.inventory")).fetch_all(&pool).await?;
    let stock: HashMap<String, i64> = stock.into_iter().collect();
    let paid_twice: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT order_id FROM {live}.payments GROUP BY order_id HAVING count(*) > 1) t"
    ))
    .fetch_one(&pool)
    .await?;
    let (mut lost, mut doubled) = (0, 0);
    for (sku, expected) in &log.stock {
        let actual = stock.get(sku).copied().unwrap_or(0);
        lost += (expected - actual).max(0);
        doubled += (actual - expected).max(0);
    }
    let applied: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {live}.processed_events")).fetch_one(&pool).await?;
    // Each projection against the fold: orders by status, row for row, and its events once each.
    let orders_by_status =
        eventline_read_models::live(&pool, eventline_read_models::Projection::OrdersByStatus).await?.schema();
    let listed: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT order_id::text, status FROM {orders_by_status}.orders_by_status WHERE placed_at IS NOT NULL"
    ))
    .fetch_all(&pool)
    .await?;
    let listed: BTreeMap<String, String> = listed.into_iter().collect();
    let expected = log.order_statuses();
    let orders_by_status_differing = expected
        .iter()
        .filter(|(order, status)| listed.get(*order).map(String::as_str) != Some(**status))
        .count()
        + listed.keys().filter(|order| !expected.contains_key(*order)).count();
    let orders_by_status_applied: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {orders_by_status}.processed_events"))
            .fetch_one(&pool)
            .await?;
    let orders_by_status_applied_twice_or_missing =
        (orders_by_status_applied - log.order_events as i64).abs();
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE topic = $1")
        .bind(&setup.topic)
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let acknowledged_not_in_log =
        outcome.accepted_ids.iter().filter(|id| !log.ids.contains(*id)).count() as u64;
    let events_in_log = log.ids.len() as u64;
    let applied_twice_or_missing = (applied - events_in_log as i64).abs();
    let orders_paid_twice = log.orders_paid_twice + u64::try_from(paid_twice)?;
    let fault_bit = match fault {
        // A service killed: requests to it found no one, or were cut.
        Fault::KillCommand => outcome.no_answer > 0,
        // Frozen beyond the append timeout: commands were answered 503.
        Fault::FreezeBroker => outcome.unavailable > 0,
        // Restarted: the new process is there (see above) and took work. These recover within
        // milliseconds, so 503s are not guaranteed and not required.
        Fault::CrashPostgres | Fault::RestartRedis | Fault::RestartBroker => evidence,
        // Commands accepted again after the leader's loss, 503s below the minimum in-sync
        // replicas, and accepted again once both brokers were back.
        Fault::ClusterLosesBrokers => evidence,
        Fault::PoisonStorm => dead_letters > 0,
        // The key was parked while the others were applied, and the projector's gauge said so.
        Fault::RefuseOneKey => parked > 0 && evidence,
        // Processes killed (the recovery is what the other columns judge).
        Fault::KillProjector | Fault::KillDuringRebalance => faults > 0,
    };
    let passed = fault_bit
        && accepted_below_min_isr == 0
        && outcome.other == 0
        && lost == 0
        && doubled == 0
        && orders_paid_twice == 0
        && log.negative_stock == 0
        && outcome.accepted_ids.len() as u64 > 0
        && acknowledged_not_in_log == 0
        && applied_twice_or_missing == 0
        && orders_by_status_differing == 0
        && orders_by_status_applied_twice_or_missing == 0
        && applied_plus_parked.is_none_or(|sum| sum == events_in_log as i64)
        && dead_letters == i64::try_from(poison_sent)?;
    command.stop();
    projectors.stop();
    Ok(Report {
        scenario: fault.name(),
        faults,
        accepted: outcome.accepted_ids.len() as u64,
        refused: outcome.refused,
        unavailable: outcome.unavailable,
        no_answer: outcome.no_answer,
        other_answers: outcome.other,
        fault_bit,
        payments: outcome.payments,
        orders_paid_twice,
        negative_stock: log.negative_stock,
        events_in_log,
        duplicate_copies_in_log: log.duplicates,
        acknowledged_not_in_log,
        lost,
        doubled,
        applied_twice_or_missing,
        orders_by_status_differing: orders_by_status_differing as u64,
        orders_by_status_applied_twice_or_missing,
        dead_letters,
        poison_sent,
        recover_s: (recover_s * 10.0).round() / 10.0,
        recovery_after_fault_s,
        accepted_below_min_isr,
        parked,
        applied_plus_parked,
        other_keys_freshness_ms,
        passed,
    })
}
