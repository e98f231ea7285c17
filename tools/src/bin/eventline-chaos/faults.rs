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
}

impl Fault {
    pub(crate) const ALL: [Fault; 9] = [
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
