//! The projector's consumer on librdkafka's mock cluster, where broker faults can be injected
//! exactly: the broker going down mid-stream and coming back, and fetch, offset and group requests
//! failing with transient errors. PostgreSQL and Redis are real. Whatever the fault, every event
//! must be applied exactly once.

use crate::support;

use std::time::Duration;

use eventline_events::{AdjustmentType, Envelope, Event, InventoryAdjusted};
use eventline_testkit::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const PARTITIONS: i32 = 3;
const SKUS: usize = 8;

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A mock cluster of one broker holding the test's topic, and a projector consuming from it. The
/// mock answers neither CreateTopics nor DescribeConfigs: the topic is managed here, as an operator
/// whose ACLs deny those to clients would.
async fn projector_on_mock_cluster(env: &TestEnv) -> (Cluster, support::Running) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(&env.kafka.topic, PARTITIONS, 1).unwrap();
    let mut config = support::projector_config(env, "mock");
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.manage_topic = false;
    let projector = support::projector_with(config).await;
    (cluster, projector)
}

fn producer(cluster: &Cluster) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

/// Appends `count` adjustments of one unit each, spread evenly over the skus (`count` is a
/// multiple of their number); returns once all are in.
async fn append(env: &TestEnv, producer: &FutureProducer, count: usize) {
    let sends = (0..count).map(|i| {
        let envelope = Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku: format!("MOCK-{}-{}", i % SKUS, env.id),
            quantity: 1,
            adjustment_type: AdjustmentType::Add,
            reason: "mock".into(),
        }));
        async move {
            let (key, payload) = (envelope.aggregate_id(), envelope.encode());
            let record = FutureRecord::to(&env.kafka.topic).key(&key).payload(&payload);
            producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e).unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

/// Waits until `expected` units are applied, then checks each event was applied once.
async fn everything_applied_once(env: &TestEnv, expected: i64) {
    let stock = || async {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(SUM(quantity), 0)::bigint FROM inventory")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    // Every event (one unit each) applied and the checkpoints past as many positions: a doubled
    // effect would show now.
    eventually(Duration::from_secs(90), &format!("{expected} events checkpointed"), || async {
        (env.checkpointed().await >= expected && stock().await >= expected).then_some(())
    })
    .await;
    assert_eq!(stock().await, expected, "nothing doubled");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(applied, expected, "every event applied once");
    let per_sku: Vec<i64> =
        sqlx::query_scalar("SELECT quantity FROM inventory ORDER BY sku").fetch_all(&env.pool).await.unwrap();
    assert_eq!(per_sku, vec![expected / SKUS as i64; SKUS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_down_mid_stream_and_returns_loses_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let (cluster, projector) = projector_on_mock_cluster(&env).await;
    let producer = producer(&cluster);
    append(&env, &producer, 200).await;
    everything_applied_once(&env, 200).await;

    cluster.broker_down(1).unwrap();
    // Appends made while it is down wait in the producer and arrive once it is back.
    tokio::join!(append(&env, &producer, 200), async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.broker_up(1).unwrap();
    });
    append(&env, &producer, 200).await;
    everything_applied_once(&env, 600).await;
    projector.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_fetch_offset_and_group_errors_are_retried_into_one_application() {
    let env = TestEnv::new().await;
    let (cluster, projector) = projector_on_mock_cluster(&env).await;
    let producer = producer(&cluster);
    append(&env, &producer, 96).await;
    everything_applied_once(&env, 96).await;

    use RDKafkaRespErr::*;
    let fetch = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    cluster.request_errors(RDKafkaApiKey::Fetch, &fetch.repeat(3));
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT].repeat(3),
    );
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS],
    );
    append(&env, &producer, 304).await;
    everything_applied_once(&env, 400).await;
    projector.stop().await.unwrap();
}
