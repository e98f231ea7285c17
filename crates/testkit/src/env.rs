//! One test's private slice of the real services: its own PostgreSQL database (migrated) and Kafka
//! topic on the shared broker and Redis, and the helpers that put exact bytes into its topic and
//! read them back.

use std::time::{Duration, Instant};

use eventline_events::{Envelope, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use eventline_runtime::config::{DatabaseConfig, KafkaConfig, RedisConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use uuid::Uuid;

use crate::eventually;

/// Partitions of every test topic: more than one, so cross-partition interleavings happen.
pub const TEST_PARTITIONS: i32 = 3;

/// One test's private slice of the real services.
pub struct TestEnv {
    pub kafka: KafkaConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    /// A pool on the test's database, already migrated.
    pub pool: PgPool,
    /// A short unique id, also used in names (topic, group, database).
    pub id: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/eventline";
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where the services are: the environment, else containers (with the `testcontainers` feature),
/// else the local stack of `make up`. Returns (database URL, brokers, Redis URL).
async fn service_urls() -> (String, String, String) {
    #[cfg(feature = "testcontainers")]
    {
        let started = crate::containers::urls().await;
        let pick = |started: &Option<String>, name: &str, default: &str| {
            started.clone().unwrap_or_else(|| env_or(name, default))
        };
        (
            pick(&started.database, "DATABASE_URL", DEFAULT_DATABASE_URL),
            pick(&started.brokers, "KAFKA_BROKERS", DEFAULT_BROKERS),
            pick(&started.redis, "REDIS_URL", DEFAULT_REDIS_URL),
        )
    }
    #[cfg(not(feature = "testcontainers"))]
    (
        env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
        env_or("KAFKA_BROKERS", DEFAULT_BROKERS),
        env_or("REDIS_URL", DEFAULT_REDIS_URL),
    )
}

/// The read-model version a new database starts with.
pub const FIRST_VERSION: eventline_read_models::Version = eventline_read_models::Version::main(1);

impl TestEnv {
    /// Creates a fresh database (migrated) and a fresh topic name. The topic itself is created by
    /// the first service that starts, exactly as in production.
    pub async fn new() -> TestEnv {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let (server, brokers, redis_url) = service_urls().await;
        let base = server.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(server.clone());
        let database = DatabaseConfig { url: format!("{base}/eventline_test_{id}"), max_connections: 8 };
        eventline_runtime::db::ensure_database(&database.url).await.expect("creating the test database");
        let public = eventline_runtime::db::pool(&database).unwrap();
        eventline_runtime::db::migrate(&public).await.expect("migrating the test database");
        public.close().await;
        let pool = eventline_read_models::pool(&database, FIRST_VERSION).unwrap();
        let kafka = KafkaConfig {
            brokers,
            topic: format!("eventline.test.{id}"),
            topic_partitions: TEST_PARTITIONS,
            topic_replication: 1,
            manage_topic: true,
            topic_check_secs: 30,
            security: Default::default(),
        };
        let redis = RedisConfig::at(redis_url);
        TestEnv { kafka, database, redis, pool, id }
    }

    /// How many events of the test topic the projection's checkpoints cover (the sum of the next
    /// offsets of version 1); 0 when none is recorded or the database does not answer.
    pub async fn checkpointed(&self) -> i64 {
        eventline_read_models::checkpoints::load(&self.pool, &self.kafka.topic)
            .await
            .map(|checkpoints| checkpoints.values().sum())
            .unwrap_or(0)
    }

    /// Waits up to `timeout` until the checkpoints cover `events` events of the test topic.
    pub async fn wait_for_checkpoints(&self, events: i64, timeout: Duration) {
        eventually(timeout, &format!("checkpoints covering {events} events"), || async {
            (self.checkpointed().await >= events).then_some(())
        })
        .await
    }

    /// Creates the topic now (for tests that produce before any service starts).
    pub async fn create_topic(&self) {
        eventline_runtime::kafka::ensure_topic(&self.kafka).await.expect("creating the test topic");
    }

    /// A raw producer on the test topic, for putting exactly chosen bytes into the log.
    pub fn producer(&self) -> FutureProducer {
        eventline_runtime::kafka::client_config(&self.kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap()
    }

    /// Appends an event with its headers, as the command service would; returns (partition, offset).
    pub async fn produce_event(&self, producer: &FutureProducer, envelope: &Envelope) -> (i32, i64) {
        let id = envelope.event_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: HEADER_EVENT_TYPE, value: Some(envelope.event_type().as_str()) })
            .insert(Header { key: HEADER_EVENT_ID, value: Some(id.as_str()) });
        self.produce_raw(producer, &envelope.aggregate_id(), &envelope.encode(), Some(headers)).await
    }

    /// Appends arbitrary bytes under `key`.
    pub async fn produce_raw(
        &self,
        producer: &FutureProducer,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> (i32, i64) {
        let mut record = FutureRecord::to(&self.kafka.topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let delivery =
            producer.send(record, Duration::from_secs(5)).await.map_err(|(e, _)| e).expect("producing");
        (delivery.partition, delivery.offset)
    }
}

impl TestEnv {
    /// Every message of the test topic: read from the start of each partition at least up to the
    /// high watermarks, then until nothing new arrives for a second.
    pub async fn read_topic(&self) -> Vec<rdkafka::message::OwnedMessage> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Message, Offset, TopicPartitionList};
        let kafka = self.kafka.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = eventline_runtime::kafka::client_config(&kafka)
                .set("group.id", "eventline-test-reader")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            let mut at_least = 0;
            for partition in 0..kafka.topic_partitions {
                let (_, high) =
                    consumer.fetch_watermarks(&kafka.topic, partition, Duration::from_secs(5)).unwrap();
                at_least += high as usize;
                assignment.add_partition_offset(&kafka.topic, partition, Offset::Beginning).unwrap();
            }
            consumer.assign(&assignment).unwrap();
            let mut messages = Vec::new();
            let started = Instant::now();
            let mut last_news = Instant::now();
            while messages.len() < at_least || last_news.elapsed() < Duration::from_secs(1) {
                assert!(started.elapsed() < Duration::from_secs(30), "reading the topic timed out");
                if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                    messages.push(message.unwrap().detach());
                    last_news = Instant::now();
                }
            }
            messages.sort_by_key(|m| (m.partition(), m.offset()));
            messages
        })
        .await
        .unwrap()
    }
}
