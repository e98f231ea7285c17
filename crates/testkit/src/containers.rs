//! With the `testcontainers` feature: PostgreSQL, Redis and Kafka in containers, for developers
//! who have a Docker engine and no local services. Only services whose URL is not set in the
//! environment are started; the containers live as long as the test process.

use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, Image};
use tokio::sync::OnceCell;

/// The URLs of the started containers (`None` where the environment names the service).
pub struct Urls {
    pub database: Option<String>,
    pub brokers: Option<String>,
    pub redis: Option<String>,
}

struct Started {
    urls: Urls,
    // Held so the containers keep running; never read.
    _postgres: Option<ContainerAsync<Postgres>>,
    _kafka: Option<ContainerAsync<Kafka>>,
    _redis: Option<ContainerAsync<Redis>>,
}

static STARTED: OnceCell<Started> = OnceCell::const_new();

/// Starts `image` unless the environment already names the service in `variable`.
async fn start_unless_set<I: Image>(variable: &str, image: I) -> Option<ContainerAsync<I>> {
    if std::env::var(variable).is_ok_and(|v| !v.is_empty()) {
        return None;
    }
    Some(image.start().await.unwrap_or_else(|e| panic!("starting a container for {variable}: {e}")))
}

/// `127.0.0.1:<host port>` of a started container's `port`.
async fn address<I: Image>(container: &Option<ContainerAsync<I>>, port: u16) -> Option<String> {
    let container = container.as_ref()?;
    let host_port = container.get_host_port_ipv4(port).await.expect("container port");
    Some(format!("127.0.0.1:{host_port}"))
}

/// Starts the missing services once per process and returns their URLs.
pub async fn urls() -> &'static Urls {
    let started = STARTED
        .get_or_init(|| async {
            let postgres = start_unless_set("DATABASE_URL", Postgres::default()).await;
            let kafka = start_unless_set("KAFKA_BROKERS", Kafka::default()).await;
            let redis = start_unless_set("REDIS_URL", Redis::default()).await;
            let urls = Urls {
                database: address(&postgres, 5432)
                    .await
                    .map(|a| format!("postgres://postgres:postgres@{a}/postgres")),
                brokers: address(&kafka, KAFKA_PORT.as_u16()).await,
                redis: address(&redis, REDIS_PORT).await.map(|a| format!("redis://{a}")),
            };
            Started { urls, _postgres: postgres, _kafka: kafka, _redis: redis }
        })
        .await;
    &started.urls
}
