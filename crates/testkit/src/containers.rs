//! With the `testcontainers` feature: PostgreSQL, Redis and Kafka in containers, for developers
//! who have a Docker engine and no local services. Only services whose URL is not set in the
//! environment are started; the containers live as long as the test process.

use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
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

fn unset(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.is_empty())
}

/// Starts the missing services once per process and returns their URLs.
pub async fn urls() -> &'static Urls {
    let started = STARTED
        .get_or_init(|| async {
            let postgres = match unset("DATABASE_URL") {
                true => Some(
                    Postgres::default()
                        .start()
                        .await
                        .expect("starting a PostgreSQL container"),
                ),
                false => None,
            };
            let kafka = match unset("KAFKA_BROKERS") {
                true => Some(
                    Kafka::default()
                        .start()
                        .await
                        .expect("starting a Kafka container"),
                ),
                false => None,
            };
            let redis = match unset("REDIS_URL") {
                true => Some(
                    Redis::default()
                        .start()
                        .await
                        .expect("starting a Redis container"),
                ),
                false => None,
            };
            let database = match &postgres {
                Some(c) => Some(format!(
                    "postgres://postgres:postgres@127.0.0.1:{}/postgres",
                    c.get_host_port_ipv4(5432).await.expect("PostgreSQL port")
                )),
                None => None,
            };
            let brokers = match &kafka {
                Some(c) => Some(format!(
                    "127.0.0.1:{}",
                    c.get_host_port_ipv4(KAFKA_PORT).await.expect("Kafka port")
                )),
                None => None,
            };
            let redis_url = match &redis {
                Some(c) => Some(format!(
                    "redis://127.0.0.1:{}",
                    c.get_host_port_ipv4(REDIS_PORT).await.expect("Redis port")
                )),
                None => None,
            };
            Started {
                urls: Urls {
                    database,
                    brokers,
                    redis: redis_url,
                },
                _postgres: postgres,
                _kafka: kafka,
                _redis: redis,
            }
        })
        .await;
    &started.urls
}
