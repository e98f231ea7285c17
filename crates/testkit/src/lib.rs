//! Test harness: every test gets its own PostgreSQL database and Kafka topic on the real services
//! named by `DATABASE_URL`, `KAFKA_BROKERS` and `REDIS_URL` (defaults: the local stack of
//! `make up`), so tests never see each other's data and can run in parallel. With the
//! `testcontainers` feature, services not named in the environment run in containers instead.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

#[cfg(feature = "testcontainers")]
mod containers;
pub mod jaeger;
pub mod kafka;

use std::future::Future;
use std::time::{Duration, Instant};

use eventline_events::{Envelope, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use eventline_runtime::config::{DatabaseConfig, KafkaConfig, RedisConfig};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use uuid::Uuid;

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
        let started = containers::urls().await;
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
pub const FIRST_VERSION: eventline_read_models::Version = eventline_read_models::Version(1);

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

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
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

/// An Apache Kafka broker of the test's own (a single KRaft node, through [`kafka::KafkaNode`]), on
/// free ports, with its log in a temporary directory removed when it drops: for tests that stop,
/// freeze, restart or replace the broker.
pub struct OwnBroker {
    node: kafka::KafkaNode,
    dir: std::path::PathBuf,
    pub address: String,
}

impl OwnBroker {
    pub async fn start() -> OwnBroker {
        OwnBroker::start_with(Vec::new()).await
    }

    /// A broker started with extra launcher options (`--add-scram …`, `-- key=value …`).
    pub async fn start_with(extra: Vec<String>) -> OwnBroker {
        let dir = std::env::temp_dir().join(format!("eventline-test-kafka-{}", Uuid::new_v4().simple()));
        let node = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || kafka::KafkaNode::start_single(&dir, extra)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("starting the test's Kafka broker (run the tests through `make test`): {e:#}")
        });
        OwnBroker { address: node.address(), node, dir }
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Kills the broker and starts it again on the same address and log.
    pub async fn restart(&mut self) {
        tokio::task::block_in_place(|| self.node.restart()).expect("restarting the test broker");
    }

    /// Kills the broker and starts one with an empty log and a new cluster id on the same address:
    /// another log, as a broker replaced without its disk.
    pub async fn replace_log(&mut self) {
        tokio::task::block_in_place(|| self.node.replace_log()).expect("replacing the test broker's log");
    }

    /// SIGSTOP: the broker keeps its connections open and answers nothing.
    pub fn freeze(&self) {
        self.node.freeze().expect("freezing the test broker");
    }

    /// SIGCONT after [`OwnBroker::freeze`].
    pub fn resume(&self) {
        self.node.resume().expect("resuming the test broker");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.node.resume();
        self.node.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a real service, which a test can cut and restore to make the service
/// "go away" for one client without disturbing other tests.
pub struct TcpProxy {
    pub address: std::net::SocketAddr,
    enabled: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (enabled, _) = tokio::sync::watch::channel(true);
        let enabled = std::sync::Arc::new(enabled);
        let (target, switch) = (target.to_owned(), enabled.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut on = switch.subscribe();
                if !*on.borrow() {
                    continue; // dropped: the connection is refused in effect
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = on.wait_for(|enabled| !enabled) => {}
                    }
                });
            }
        });
        TcpProxy { address, enabled }
    }

    /// Cuts every connection and refuses new ones (`false`), or lets them through again.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.send_replace(enabled);
    }
}

/// Checks a service's OpenAPI document against its committed copy (`docs/openapi/<name>.json`),
/// or rewrites the copy when `UPDATE_OPENAPI` is set.
pub fn assert_openapi_committed(document: &serde_json::Value, name: &str, package: &str) {
    let path = format!("{}/../../docs/openapi/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let generated = serde_json::to_string_pretty(document).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/{name}.json is out of date; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p {package} --test openapi` and review the diff"
    );
}

/// Asserts that every `sku` a client sends, as described by an OpenAPI document (a parameter of
/// that name, or a property of a schema), carries the events crate's pattern: utoipa's attributes
/// take only literals, so this keeps the copies honest. `answers` names the schemas that describe
/// answers: their skus come from the log, whose decoder is more lenient than the API (old or
/// foreign writers), so they promise no pattern. Returns how many skus were checked.
pub fn assert_sku_patterns(document: &serde_json::Value, answers: &[&str]) -> usize {
    fn walk(value: &serde_json::Value, found: &mut Vec<serde_json::Value>) {
        match value {
            serde_json::Value::Object(object) => {
                if let Some(sku) = object.get("properties").and_then(|p| p.get("sku")) {
                    found.push(sku.clone());
                }
                if object.get("name").and_then(|n| n.as_str()) == Some("sku") {
                    found.push(object.get("schema").cloned().unwrap_or_default());
                }
                object.values().for_each(|v| walk(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut document = document.clone();
    if let Some(schemas) = document.pointer_mut("/components/schemas").and_then(|s| s.as_object_mut()) {
        for answer in answers {
            assert!(schemas.remove(*answer).is_some(), "no schema {answer} in the document");
        }
    }
    let mut found = Vec::new();
    walk(&document, &mut found);
    for schema in &found {
        assert_eq!(schema["pattern"], eventline_events::SKU_PATTERN, "a sku schema: {schema}");
    }
    found.len()
}
