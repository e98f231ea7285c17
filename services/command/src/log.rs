//! The event log as the command side sees it: append an event, get back where it landed once the
//! broker has durably acknowledged it (`acks=all`, idempotent producer).

use std::sync::Arc;
use std::time::Duration;

use eventline_events::{
    Envelope, HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION,
    JSON_CONTENT_TYPE, LogPosition,
};
use eventline_runtime::config::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// Why an append did not happen. Either way the event is not in the log and the command must not
/// be answered 2xx.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The broker did not acknowledge in time or is unreachable: retrying later may work.
    #[error("the event log is unavailable: {0}")]
    Unavailable(KafkaError),
    /// The broker refused this message for good (too large, not authorised, ...).
    #[error("the event log refused the event: {0}")]
    Refused(KafkaError),
}

impl AppendError {
    fn classify(error: KafkaError) -> Self {
        use RDKafkaErrorCode as C;
        let permanent = matches!(
            error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidRecord
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidMessage
            )
        );
        if permanent {
            AppendError::Refused(error)
        } else {
            AppendError::Unavailable(error)
        }
    }
}

/// A handle on the event topic; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    producer: FutureProducer,
    topic: Arc<str>,
}

impl EventLog {
    pub fn connect(config: &KafkaConfig, append_timeout_ms: u64) -> Result<Self, KafkaError> {
        let producer: FutureProducer = eventline_runtime::kafka::client_config(&config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", append_timeout_ms.to_string())
            .set("linger.ms", "2")
            .create()?;
        Ok(EventLog {
            producer,
            topic: config.topic.as_str().into(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends one event keyed by its aggregate id and waits for the durable acknowledgement.
    pub async fn append(&self, envelope: &Envelope) -> Result<LogPosition, AppendError> {
        let payload = envelope.encode();
        let key = envelope.aggregate_id();
        let event_id = envelope.event_id.to_string();
        let event_type = envelope.event_type();
        let version = event_type.current_version().to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some(event_type.as_str()),
            })
            .insert(Header {
                key: HEADER_EVENT_ID,
                value: Some(event_id.as_str()),
            })
            .insert(Header {
                key: HEADER_SCHEMA_VERSION,
                value: Some(version.as_str()),
            })
            .insert(Header {
                key: HEADER_CONTENT_TYPE,
                value: Some(JSON_CONTENT_TYPE),
            });
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        // Waiting for queue space counts against the same budget as the delivery itself.
        match self
            .producer
            .send(record, Timeout::After(Duration::from_secs(1)))
            .await
        {
            Ok(delivery) => Ok(LogPosition {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((error, _message)) => Err(AppendError::classify(error)),
        }
    }

    /// Whether a broker answers a metadata request for the topic.
    pub async fn is_reachable(&self) -> bool {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits (bounded) until everything queued has been delivered or has failed.
    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "Producer flush did not complete");
        }
    }
}
