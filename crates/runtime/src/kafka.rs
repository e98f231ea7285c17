//! Kafka connection settings and the event topic's setup.
//!
//! The topic is the event log and is kept forever: it is created with `retention.ms=-1`,
//! `retention.bytes=-1` and `cleanup.policy=delete` (never compacted), and an existing topic
//! whose settings delete or compact history is refused (`topic_guard`), because events would
//! silently disappear from under the read models.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::topic_guard::Finding;

/// Settings every client of ours starts from: where the brokers are and how to reach them
/// securely (security protocol, SASL, TLS files, then the operator's extra properties).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    client_config_tuned(kafka, &[])
}

/// [`client_config`] with `tuning`: our defaults for settings that only trade speed or
/// reaction time (`linger.ms`, backoffs), set before the operator's extra properties so that
/// those override them. Settings a correctness rule depends on (`acks`, idempotence) are set by
/// the caller after this, and no file overrides them.
pub fn client_config_tuned(kafka: &KafkaConfig, tuning: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", "eventline")
        .set("socket.keepalive.enable", "true")
        // librdkafka logs through the `log` crate; keep its noise for real problems.
        .set("log_level", "4");
    for (key, value) in tuning {
        config.set(*key, *value);
    }
    let security = &kafka.security;
    config.set("security.protocol", security.protocol.as_str());
    if let Some(mechanism) = security.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(username) = &security.sasl_username {
        config.set("sasl.username", username);
    }
    if let Some(password) = &security.sasl_password {
        config.set("sasl.password", secrecy::ExposeSecret::expose_secret(password));
    }
    let files = [
        ("ssl.ca.location", &security.ssl_ca_location),
        ("ssl.certificate.location", &security.ssl_certificate_location),
        ("ssl.key.location", &security.ssl_key_location),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            config.set(key, path.to_string_lossy());
        }
    }
    if let Some(properties) = &security.client_properties {
        for (key, value) in &properties.0 {
            config.set(key, value);
        }
    }
    config
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Access(#[from] crate::log_identity::IdentityError),
    #[error("the broker at {brokers} is unreachable or failed a request: {source}")]
    Broker { brokers: String, source: KafkaError },
    #[error("creating topic {topic:?} failed: {code}")]
    Create { topic: String, code: RDKafkaErrorCode },
    #[error("{}", crate::topic_guard::refusal(topic, setting, value))]
    NotForever { topic: String, setting: &'static str, value: String },
    #[error("topic {topic:?} did not appear in the broker's metadata within {waited:?}")]
    NotVisible { topic: String, waited: Duration },
}

/// Creates the event topic if it is missing (when the services manage it), checks that it keeps
/// events forever (`topic_guard`: whatever setting would delete or compact history is refused,
/// also on a topic the operator manages), and returns its number of partitions.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<i32, TopicError> {
    crate::log_identity::check_access(&config.brokers, &config.security, &config.topic).await?;
    if config.manage_topic {
        create_if_missing(config).await?;
    }
    let partitions = wait_for_partitions(config).await?;
    match crate::topic_guard::check(config).await {
        Finding::Deletes { setting, value } => {
            return Err(TopicError::NotForever { topic: config.topic.clone(), setting, value });
        }
        Finding::Unverified(reason) => tracing::warn!(
            topic = %config.topic,
            reason,
            "Cannot check that the event topic keeps its history; /readyz says so while this lasts"
        ),
        Finding::KeptForever | Finding::Unchecked => {}
    }
    Ok(partitions)
}

async fn create_if_missing(config: &KafkaConfig) -> Result<(), TopicError> {
    let broker_err = |source| TopicError::Broker { brokers: config.brokers.clone(), source };
    let admin: AdminClient<DefaultClientContext> = client_config(config).create().map_err(broker_err)?;
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let topic = NewTopic::new(
        &config.topic,
        config.topic_partitions,
        TopicReplication::Fixed(config.topic_replication),
    )
    .set("retention.ms", "-1")
    .set("retention.bytes", "-1")
    .set("cleanup.policy", "delete");
    let results = admin.create_topics([&topic], &options).await.map_err(broker_err)?;
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = config.topic_partitions, "Created the event topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(TopicError::Create { topic: name, code }),
        }
    }
    Ok(())
}

/// Topic creation is asynchronous in Kafka: wait until the metadata shows the partitions.
async fn wait_for_partitions(config: &KafkaConfig) -> Result<i32, TopicError> {
    let consumer: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
        client_config(config)
            .create()
            .map_err(|source| TopicError::Broker { brokers: config.brokers.clone(), source })?,
    );
    let topic = config.topic.clone();
    let started = Instant::now();
    let limit = Duration::from_secs(30);
    loop {
        let (consumer, name) = (consumer.clone(), topic.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some(&name), Duration::from_secs(5)).ok().and_then(|m| {
                m.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len())
            })
        })
        .await
        .ok()
        .flatten();
        if let Some(n) = partitions.filter(|n| *n > 0) {
            return Ok(i32::try_from(n).unwrap_or(i32::MAX));
        }
        if started.elapsed() > limit {
            return Err(TopicError::NotVisible { topic, waited: limit });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
