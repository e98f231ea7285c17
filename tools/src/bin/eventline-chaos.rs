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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventline_testkit::kafka::KafkaCluster;
use eventline_tools::sandbox::Sandbox;
use eventline_tools::stack::{self, Service, Setup};
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

const SKUS: usize = 16;
const COMMAND_PORT: u16 = 28081;
/// Two, for the scenario that runs two projector instances in one consumer group.
const PROJECTOR_PORTS: [u16; 2] = [28083, 28084];
/// How long the broker waits for a silent group member before dropping it from the group.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillProjector,
    CrashPostgres,
    RestartRedis,
    FreezeBroker,
    KillDuringRebalance,
    RestartBroker,
    PoisonStorm,
    KillCommand,
    ClusterLosesBrokers,
}

impl Fault {
    const ALL: [Fault; 9] = [
        Fault::KillProjector,
        Fault::CrashPostgres,
        Fault::RestartRedis,
        Fault::FreezeBroker,
        Fault::KillDuringRebalance,
        Fault::RestartBroker,
        Fault::PoisonStorm,
        Fault::KillCommand,
        Fault::ClusterLosesBrokers,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KillProjector => {
                "projector killed with SIGKILL at random moments, restarted in the same group"
            }
            Fault::CrashPostgres => "PostgreSQL crashed (immediate stop) and restarted mid-load",
            Fault::RestartRedis => "Redis killed and restarted empty mid-load",
            Fault::FreezeBroker => "broker frozen (SIGSTOP) beyond the append timeout, then resumed",
            Fault::KillDuringRebalance => {
                "two projector instances, one killed during a rebalance; the survivor finishes"
            }
            Fault::RestartBroker => "broker killed (SIGKILL) and restarted mid-load; its log kept",
            Fault::PoisonStorm => "poison messages mixed into valid traffic",
            Fault::KillCommand => "command service killed with SIGKILL at random moments and restarted",
            Fault::ClusterLosesBrokers => {
                "three-broker cluster (RF 3, min.insync.replicas 2): the busiest leader SIGKILLed, \
                 then a second broker (below the minimum in-sync replicas), then both restarted"
            }
        }
    }
}

/// What one scenario found.
#[derive(Debug, Clone, Serialize)]
struct Report {
    scenario: &'static str,
    faults: u32,
    /// Commands answered 202; refused by a business rule (409/422, final); answered 503 (the
    /// client may retry).
    accepted: u64,
    refused: u64,
    unavailable: u64,
    /// Requests that got no answer (connection refused or cut: a killed service), and answers
    /// outside the protocol (429, a 422 or 5xx that is not a rule's refusal or a 503): counted,
    /// never silently dropped; the latter must be 0.
    no_answer: u64,
    other_answers: u64,
    /// The fault visibly bit: its scenario's evidence (503s or lost connections while a
    /// dependency was away, dead letters for poison, processes killed) was seen.
    fault_bit: bool,
    /// Payments among the accepted commands (and orders paid twice in the log, which must be 0).
    payments: u64,
    orders_paid_twice: u64,
    /// Times a sku's stock went below zero when the log is folded in order (must be 0).
    negative_stock: u64,
    /// Distinct events in the log, and copies of an event id (a producer retry that appended twice).
    events_in_log: u64,
    duplicate_copies_in_log: u64,
    /// Acknowledged with 202 but not in the log.
    acknowledged_not_in_log: u64,
    /// Units of stock the read model lacks (lost) or has in excess (doubled) against the log.
    lost: i64,
    doubled: i64,
    /// Event ids applied more than once, or not at all, by the projector.
    applied_twice_or_missing: i64,
    dead_letters: i64,
    poison_sent: u64,
    /// From the end of the last fault to the projection caught up.
    recover_s: f64,
    /// Per fault that takes something away, how long until commands were accepted again (the
    /// cluster scenario: after the leader's loss, and after both brokers came back).
    recovery_after_fault_s: Vec<f64>,
    /// Commands first sent while fewer brokers ran than the minimum in-sync replicas, and accepted
    /// before the brokers came back (must be 0).
    accepted_below_min_isr: u64,
    passed: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let short = std::env::args().any(|a| a == "--short");
    let (run, kills) = if short { (Duration::from_secs(6), 3) } else { (Duration::from_secs(20), 10) };
    let (root, out) = stack::output_dir("chaos")?;
    let id = stack::run_id();
    let mut sandbox = Sandbox::start(&id).context("starting the run's PostgreSQL, Redis and broker")?;
    let base = Setup {
        bin_dir: stack::bin_dir()?,
        brokers: sandbox.broker.address(),
        redis: sandbox.redis.url(),
        postgres: sandbox.postgres.server_url(),
        topic: String::new(),
        database: String::new(),
        log_dir: out.clone(),
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
        Fault::ClusterLosesBrokers => run + Duration::from_secs(40),
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
            let unavailable = load.unavailable_so_far();
            tokio::time::sleep(Duration::from_secs(9)).await;
            accepted_below_min_isr = load.accepted_first_sent_after(below_min_isr) as u64;
            let refused_meanwhile = load.unavailable_so_far() > unavailable;
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
    let live = eventline_read_models::live(&pool).await?.schema();
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
        dead_letters,
        poison_sent,
        recover_s: (recover_s * 10.0).round() / 10.0,
        recovery_after_fault_s,
        accepted_below_min_isr,
        passed,
    })
}

/// Where docs/reliability.md's hand-written history starts; a full run rewrites what is above it.
const HISTORY_MARKER: &str = "<!-- history: kept by make chaos -->";

/// The history section of the previous docs/reliability.md (from its marker on), if any.
fn kept_history(previous: &str) -> String {
    previous.find(HISTORY_MARKER).map(|at| format!("\n{}", &previous[at..])).unwrap_or_default()
}

fn round_tenths(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10.0).round() / 10.0
}

/// The id of the node that leads the most partitions of the setup's topic.
async fn busiest_leader(setup: &Setup, cluster: &KafkaCluster) -> anyhow::Result<u32> {
    let security = eventline_runtime::config::KafkaSecurity::default();
    let metadata = eventline_runtime::log_identity::describe(&setup.brokers, &security, &setup.topic).await?;
    let mut led: HashMap<u32, usize> = HashMap::new();
    for address in metadata.leaders.values() {
        if let Some(node) = cluster.nodes.iter().find(|n| n.address() == *address) {
            *led.entry(node.node_id).or_default() += 1;
        }
    }
    led.into_iter().max_by_key(|(_, count)| *count).map(|(node, _)| node).context("no partition has a leader")
}

/// When the PostgreSQL server at `url` started (a crash and restart moves it).
async fn postmaster_started(url: &str) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgPool::connect(url).await {
            Ok(pool) => {
                let started =
                    sqlx::query_scalar("SELECT extract(epoch FROM pg_postmaster_start_time())::float8")
                        .fetch_one(&pool)
                        .await;
                pool.close().await;
                if let Ok(started) = started {
                    return Ok(started);
                }
            }
            Err(error) if Instant::now() > deadline => return Err(error.into()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn random_pause(millis: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rand::rng().random_range(millis))
}

/// Orders placed before the load (one user's, 1 × 10.00 USD each), which the load pays.
const ORDERS: usize = 40;

async fn place_orders(http: &reqwest::Client, base: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let user = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"userId": user, "email": format!("{user}@chaos.example"), "firstName": "C", "lastName": "H"});
    let created = http.post(format!("{base}/users")).json(&body).send().await?;
    anyhow::ensure!(created.status() == 202, "creating the chaos user answered {}", created.status());
    let mut orders = Vec::with_capacity(count);
    for _ in 0..count {
        let order = uuid::Uuid::new_v4().to_string();
        let body = json!({"orderId": order, "userId": user, "currency": "USD",
                          "items": [{"sku": "CHAOS-ITEM", "quantity": 1, "price": "10.00"}]});
        let placed = http.post(format!("{base}/orders")).json(&body).send().await?;
        anyhow::ensure!(placed.status() == 202, "placing a chaos order answered {}", placed.status());
        orders.push(order);
    }
    Ok(orders)
}

/// One command of the load: an adjustment (add, remove or set) of a sku, or a payment of one of
/// the prepared orders (the second payment of an order must be refused).
fn next_command(orders: &[String]) -> (String, serde_json::Value) {
    let mut rng = rand::rng();
    let sku = rng.random_range(0..SKUS);
    let path = format!("/inventory/CHAOS-{sku}/adjustments");
    match rng.random_range(0..20) {
        0..=7 => {
            (path, json!({"adjustmentType": "add", "quantity": rng.random_range(1..=5), "reason": "chaos"}))
        }
        8..=15 => (
            path,
            json!({"adjustmentType": "remove", "quantity": rng.random_range(1..=5), "reason": "chaos"}),
        ),
        16..=17 => {
            (path, json!({"adjustmentType": "set", "quantity": rng.random_range(0..=10), "reason": "chaos"}))
        }
        _ => {
            let order = &orders[rng.random_range(0..orders.len())];
            (
                format!("/orders/{order}/payments"),
                json!({"amount": "10.00", "currency": "USD", "paymentMethod": "card"}),
            )
        }
    }
}

/// Whether a 409/422 answer is the refusal (final) of a rule the load can break: stock, and paying
/// an order twice.
fn is_rule(answer: &serde_json::Value) -> bool {
    use eventline_command::problems::{INSUFFICIENT_STOCK, ORDER_ALREADY_PAID, PAYMENT_EXISTS, STOCK_LIMIT};
    let rules = [INSUFFICIENT_STOCK, STOCK_LIMIT, ORDER_ALREADY_PAID, PAYMENT_EXISTS].map(|rule| rule.slug);
    answer["type"].as_str().and_then(|t| t.rsplit('/').next()).is_some_and(|slug| rules.contains(&slug))
}

/// Workers sending mixed commands until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Each accepted event id, with when its command was first sent (retries with the same
    /// idempotency key may be answered from an append made before a fault).
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    unavailable: Arc<AtomicU64>,
    no_answer: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    payments: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

struct LoadOutcome {
    accepted_ids: Vec<String>,
    unavailable: u64,
    no_answer: u64,
    other: u64,
    refused: u64,
    payments: u64,
}

impl Load {
    /// Commands accepted so far.
    fn accepted_so_far(&self) -> usize {
        self.accepted.lock().map(|ids| ids.len()).unwrap_or(0)
    }

    /// Commands accepted so far that were first sent after `moment`: each needed an append
    /// made after it.
    fn accepted_first_sent_after(&self, moment: Instant) -> usize {
        self.accepted.lock().map(|ids| ids.iter().filter(|(_, sent)| *sent > moment).count()).unwrap_or(0)
    }

    /// Answers `503` so far.
    fn unavailable_so_far(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Waits up to `within` for more than `before` commands to have been accepted.
    async fn accepted_more_than(&self, before: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.accepted_so_far() > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn start(http: &reqwest::Client, command: &Service, run: Duration, orders: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (unavailable, refused, payments) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (no_answer, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let orders = Arc::new(orders);
        let deadline = Instant::now() + run;
        let workers = (0..8)
            .map(|_| {
                let (http, stop, accepted, unavailable, refused, payments, orders) = (
                    http.clone(),
                    stop.clone(),
                    accepted.clone(),
                    unavailable.clone(),
                    refused.clone(),
                    payments.clone(),
                    orders.clone(),
                );
                let (no_answer, other) = (no_answer.clone(), other.clone());
                let base = command.base.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let (path, body) = next_command(&orders);
                        let key = uuid::Uuid::new_v4().to_string();
                        let first_sent = Instant::now();
                        // A lost or unconfirmed answer is asked again with the same key until it
                        // is definite: 202, or a rule's refusal.
                        loop {
                            let sent = http
                                .post(format!("{base}{path}"))
                                .header("idempotency-key", &key)
                                .json(&body)
                                .send()
                                .await;
                            let Ok(response) = sent else {
                                no_answer.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            };
                            let status = response.status().as_u16();
                            let answer: serde_json::Value = response.json().await.unwrap_or_default();
                            match status {
                                202 => {
                                    if let Some(id) = answer["eventId"].as_str()
                                        && let Ok(mut ids) = accepted.lock()
                                    {
                                        ids.push((id.to_owned(), first_sent));
                                    }
                                    if path.ends_with("/payments") {
                                        payments.fetch_add(1, Ordering::Relaxed);
                                    }
                                    break;
                                }
                                409 if answer["type"]
                                    .as_str()
                                    .is_some_and(|t| t.ends_with("/idempotency-in-progress")) =>
                                {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                409 | 422 if is_rule(&answer) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                                503 => {
                                    unavailable.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                _ => {
                                    eprintln!("chaos: unexpected answer {status} to {path}: {answer}");
                                    other.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                            if Instant::now() > deadline + Duration::from_secs(60) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, accepted, unavailable, no_answer, other, refused, payments, workers }
    }

    async fn finish(self) -> LoadOutcome {
        for worker in self.workers {
            let _ = worker.await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let accepted_ids = self
            .accepted
            .lock()
            .map(|ids| ids.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        LoadOutcome {
            accepted_ids,
            unavailable: self.unavailable.load(Ordering::Relaxed),
            no_answer: self.no_answer.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            payments: self.payments.load(Ordering::Relaxed),
        }
    }
}

/// The log folded independently of the projector, in log order per partition (a sku's and an
/// order's events share one): distinct event ids, stock per sku, and the rules' invariants.
struct Fold {
    ids: HashSet<String>,
    duplicates: u64,
    stock: BTreeMap<String, i64>,
    negative_stock: u64,
    paid: HashSet<String>,
    orders_paid_twice: u64,
}

fn read_log(brokers: &str, topic: &str) -> anyhow::Result<Fold> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.chaos-fold"))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> =
        metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > 0 {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut fold = Fold {
        ids: HashSet::new(),
        duplicates: 0,
        stock: BTreeMap::new(),
        negative_stock: 0,
        paid: HashSet::new(),
        orders_paid_twice: 0,
    };
    let mut done: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read until the log has been quiet a while after reaching the high watermarks.
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                quiet_since = Instant::now();
                if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
                    done.insert(message.partition());
                }
                // The raw JSON, read as docs/events.md describes it: this fold shares no decoder
                // with the projector, so a bug in one does not hide in both.
                let Ok(event) =
                    serde_json::from_slice::<serde_json::Value>(message.payload().unwrap_or_default())
                else {
                    continue;
                };
                let (Some(id), Some(kind)) = (event["eventId"].as_str(), event["eventType"].as_str()) else {
                    continue;
                };
                if !fold.ids.insert(id.to_owned()) {
                    fold.duplicates += 1;
                    continue;
                }
                let data = &event["data"];
                match kind {
                    "InventoryAdjusted" => {
                        let (Some(sku), Some(quantity)) = (data["sku"].as_str(), data["quantity"].as_i64())
                        else {
                            bail!("an InventoryAdjusted without sku or quantity: {event}")
                        };
                        let stock = fold.stock.entry(sku.to_owned()).or_default();
                        *stock = match data["adjustmentType"].as_str() {
                            Some("add") => *stock + quantity,
                            Some("remove") => *stock - quantity,
                            Some("set") => quantity,
                            other => bail!("an adjustment of unknown type {other:?}: {event}"),
                        };
                        fold.negative_stock += u64::from(*stock < 0);
                    }
                    "PaymentSettled" => {
                        let order = data["orderId"].as_str().unwrap_or_default().to_owned();
                        if !fold.paid.insert(order) {
                            fold.orders_paid_twice += 1;
                        }
                    }
                    _ => {}
                }
            }
            Some(Err(error)) => bail!("reading the log: {error}"),
            None if done.len() == ends.len() && quiet_since.elapsed() > Duration::from_secs(2) => {
                return Ok(fold);
            }
            None => {}
        }
    }
    bail!("the log could not be read to its end within 120 s")
}

/// Appends `count` undecodable messages, spread over `during`.
async fn poison(brokers: &str, topic: &str, count: u64, during: Duration) -> anyhow::Result<u64> {
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).set("acks", "all").create()?;
    let pause = during / u32::try_from(count).unwrap_or(1).max(1);
    for i in 0..count {
        let key = format!("poison-{i}");
        let payload = format!("{{\"poison\": {i}");
        producer
            .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)?;
        tokio::time::sleep(pause).await;
    }
    Ok(count)
}

fn markdown(reports: &[Report], took: Duration) -> String {
    let mut md = String::from("# Reliability\n\n");
    md.push_str(&format!(
        "Written by `make chaos` (`tools/src/bin/eventline-chaos.rs`) in {:.0} s on the two-core development \
         machine. The run starts a PostgreSQL cluster, a Redis server and an Apache Kafka 4.4 broker of its own \
         (one KRaft node, started by the launcher `make up` uses) and injects its faults into \
         those. Each scenario drives mixed commands through the command API (8 workers: inventory \
         `add`, `remove` and `set` on 16 skus, and payments of 40 orders placed first; an Idempotency-Key \
         on every command, a lost or unconfirmed answer asked again with the same key until it is a 202 or \
         a rule's refusal), injects its fault, stops the load, waits for the projection to catch up, and \
         compares the read model with a fold of the log written for the test, in log order: the stock may \
         never go below zero at any point and no order may be paid twice. `make test` runs the same \
         scenarios briefly (`--short`).\n\n",
        took.as_secs_f64()
    ));
    md.push_str("| scenario | faults | fault bit | accepted (202) | refused by a rule | payments | 503 answers | no answer | other answers | events in log | 202 not in log | stock < 0 | paid twice | lost | doubled | applied ≠ once | dead letters / poison | recover s | |\n");
    md.push_str(
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r.scenario,
            r.faults,
            if r.fault_bit { "yes" } else { "**no**" },
            r.accepted,
            r.refused,
            r.payments,
            r.unavailable,
            r.no_answer,
            r.other_answers,
            r.events_in_log,
            r.acknowledged_not_in_log,
            r.negative_stock,
            r.orders_paid_twice,
            r.lost,
            r.doubled,
            r.applied_twice_or_missing,
            r.dead_letters,
            r.poison_sent,
            r.recover_s,
            if r.passed { "pass" } else { "**FAIL**" }
        ));
    }
    md.push_str(
        "\nA scenario passes only if its fault visibly bit (`fault bit`: 503s from the frozen broker, lost \
         connections to the killed command service, dead letters for poison; for a restarted dependency, \
         the new process — PostgreSQL's start time moved, Redis came back without a marker key set before, \
         a new broker process — and commands accepted after it, since those recover within milliseconds \
         and need not produce a 503) and no answer \
         fell outside the protocol (`other answers`: a 429, a 5xx other than 503, or a 409/422 that is not \
         a rule's refusal). The fold reads the raw JSON of every message with its own code, not the \
         events crate's decoder the projector uses.\n\n`events in log` counts the 41 commands that prepare each scenario (a user and its orders) besides \
         the load's. A 503 answer means \"not confirmed\", not \"not recorded\": the decision may be pending \
         and is appended later; the load asks again with the same key, whose retry finds the decision and \
         gets its 202.\n",
    );
    for r in reports.iter().filter(|r| !r.recovery_after_fault_s.is_empty()) {
        md.push_str(&format!(
            "\nThree-broker cluster: commands were accepted again {} s after the busiest leader was \
             SIGKILLed (new leaders from the in-sync replicas) and {} s after both killed brokers were \
             restarted; of the commands first sent while one broker alone ran, below \
             `min.insync.replicas=2`, {} were accepted before the brokers came back (must be 0: each \
             got 503 and was asked again with its key).\n",
            r.recovery_after_fault_s.first().copied().unwrap_or_default(),
            r.recovery_after_fault_s.last().copied().unwrap_or_default(),
            r.accepted_below_min_isr,
        ));
    }
    md.push_str(
        "\n`lost`/`doubled` are units of stock the read model lacks or has in excess against the log; \
         `applied ≠ once` compares the projector's applied event ids with the distinct events in the log; \
         `recover s` runs from the end of the last fault until the projection has caught up (it includes \
         stopping the load and the backlog built meanwhile).\n\n\
         Projector killed: every restarted instance rejoins the same consumer group, as in production, \
         so the broker must hand it the killed member's partitions. Two projector instances: in each \
         round a second instance joins the group and one of the two, the newcomer or the old hand in \
         turn, is killed 0.1–1.5 s later, mid-rebalance; after the last round the survivor alone must \
         finish (the broker hands it the dead member's partitions after the session timeout, 6 s). \
         Broker restarted: SIGKILL mid-load and a new broker process on the same storage; every event \
         acknowledged before is still in the log (`202 not in log` = 0), and the command service and \
         projector carry on without a restart of their own. Command service killed: SIGKILL at random \
         moments under the mixed load and a new process on the same port; decisions cut off between their \
         commit and their append are appended by the new process, and no sku's stock goes below zero.\n\n\
         A broker that is down and comes back is also covered by the fault-path tests against \
         librdkafka's mock cluster: `services/command/src/log.rs` (`fault_paths`: a broker going down, \
         transient produce errors retried into one append, a message refused for good) and \
         `tests/projector_faults.rs` (the broker down mid-stream and back; transient fetch, offset \
         commit and heartbeat errors; every event applied once).\n",
    );
    md
}
