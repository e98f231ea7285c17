//! The faults a scenario injects, and what it needs to aim them: the busiest partition leader,
//! when PostgreSQL last started, random pauses, poison messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use eventline_testkit::kafka::KafkaCluster;
use eventline_tools::stack::Setup;
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    KillProjector,
    CrashPostgres,
    RestartRedis,
    FreezeBroker,
    KillDuringRebalance,
    RestartBroker,
    PoisonStorm,
    KillCommand,
    ClusterLosesBrokers,
    RefuseOneKey,
}

impl Fault {
    pub(crate) const ALL: [Fault; 10] = [
        Fault::KillProjector,
        Fault::CrashPostgres,
        Fault::RestartRedis,
        Fault::FreezeBroker,
        Fault::KillDuringRebalance,
        Fault::RestartBroker,
        Fault::PoisonStorm,
        Fault::KillCommand,
        Fault::ClusterLosesBrokers,
        Fault::RefuseOneKey,
    ];

    pub(crate) fn name(self) -> &'static str {
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
            Fault::RefuseOneKey => {
                "the database refuses one key's events under load (a trigger): the key parked, then redriven"
            }
            Fault::ClusterLosesBrokers => {
                "three-broker cluster (RF 3, min.insync.replicas 2): the busiest leader SIGKILLed, \
                 then a second broker (below the minimum in-sync replicas), then both restarted"
            }
        }
    }
}

/// The id of the node that leads the most partitions of the setup's topic.
pub(crate) async fn busiest_leader(setup: &Setup, cluster: &KafkaCluster) -> anyhow::Result<u32> {
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
pub(crate) async fn postmaster_started(url: &str) -> anyhow::Result<f64> {
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

/// The sku whose rows the database refuses in the parking scenario.
pub(crate) const REFUSED_SKU: &str = "CHAOS-0";

/// Makes the live read-model version's database refuse `REFUSED_SKU`'s stock (`refuse`), or take
/// it again, as a constraint added by hand or a bad trigger would.
pub(crate) async fn refuse_one_key(pool: &sqlx::PgPool, live: &str, refuse: bool) -> anyhow::Result<()> {
    let sql = if refuse {
        format!(
            "CREATE FUNCTION {live}.chaos_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'chaos: stock of % refused', NEW.sku; END $$;
             CREATE TRIGGER chaos_refuse BEFORE INSERT OR UPDATE ON {live}.inventory
                 FOR EACH ROW WHEN (NEW.sku = '{REFUSED_SKU}') EXECUTE FUNCTION {live}.chaos_refuse();"
        )
    } else {
        format!("DROP TRIGGER chaos_refuse ON {live}.inventory; DROP FUNCTION {live}.chaos_refuse();")
    };
    sqlx::raw_sql(&sql).execute(pool).await?;
    Ok(())
}

/// How long an event of another key took from its 202 to being applied, while a key is parked:
/// `probes` adjustments of other skus, each waited for in `processed_events`.
pub(crate) async fn freshness_probes(
    http: &reqwest::Client,
    command: &str,
    pool: &sqlx::PgPool,
    live: &str,
    probes: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut took = Vec::with_capacity(probes);
    for probe in 0..probes {
        let sku = format!("CHAOS-{}", 1 + probe % (crate::SKUS - 1));
        let started = Instant::now();
        let answer: serde_json::Value = http
            .post(format!("{command}/inventory/{sku}/adjustments"))
            .json(&serde_json::json!({"quantity": 1, "adjustmentType": "add", "reason": "freshness probe"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let event_id: uuid::Uuid =
            answer["eventId"].as_str().context("the answer names its event")?.parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let applied: Option<i32> =
                sqlx::query_scalar(&format!("SELECT 1 FROM {live}.processed_events WHERE event_id = $1"))
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?;
            if applied.is_some() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "probe {event_id} was not applied within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(took)
}

/// Whether the gauge `name` in the Prometheus text at `url` reads at least 1 within `within`.
pub(crate) async fn gauge_reaches_one(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(response) = http.get(url).send().await
            && let Ok(text) = response.text().await
        {
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
            if value.is_some_and(|v| v >= 1.0) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

pub(crate) fn random_pause(millis: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rand::rng().random_range(millis))
}

/// Appends `count` undecodable messages, spread over `during`.
pub(crate) async fn poison(brokers: &str, topic: &str, count: u64, during: Duration) -> anyhow::Result<u64> {
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
