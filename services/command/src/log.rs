//! The event log as the command side sees it: append an event, get back where it landed once the
//! broker has durably acknowledged it (`acks=all`, idempotent producer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use eventline_events::{
    Envelope, HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION,
    JSON_CONTENT_TYPE, LogPosition,
};
use eventline_runtime::config::KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tracing::Instrument as _;

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
    /// A decided event whose append is not confirmed; it stays pending and will be appended.
    #[error("the append is not confirmed: {0}")]
    NotConfirmed(String),
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
        if permanent { AppendError::Refused(error) } else { AppendError::Unavailable(error) }
    }
}

/// An event on its way to the log: its envelope and the bytes it is encoded as (encoded once; a
/// decision's bytes are the ones stored while it was pending).
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub envelope: &'a Envelope,
    pub payload: &'a [u8],
}

/// A failed `append_all`: the error, and per event the position it got if it was acknowledged.
#[derive(Debug)]
pub struct PartialAppend {
    pub error: AppendError,
    pub positions: Vec<Option<LogPosition>>,
}

/// A handle on the event topic; cheap to clone.
///
/// librdkafka's idempotent producer can be left unable to append for good: after a fatal error
/// (fenced, sequence desynchronisation: seen when a broker froze past the append timeout), or with
/// a producer id the broker no longer knows (a broker that lost its state: it bumps the epoch and
/// retries for ever). The handle then replaces its producer. Appends that were in flight on the old
/// producer fail (`503`, not confirmed); the next ones go through the new producer.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    kafka: KafkaConfig,
    append_timeout_ms: u64,
    topic: Arc<str>,
    queue_timeout: Duration,
    current: RwLock<Current>,
    /// A diagnosis of a failed append is under way; failures meanwhile start none of their own.
    diagnosing: AtomicBool,
}

/// The producer in use, and how many were replaced before it.
#[derive(Clone)]
struct Current {
    producer: FutureProducer,
    generation: u64,
}

impl EventLog {
    pub fn connect(config: &KafkaConfig, append_timeout_ms: u64) -> Result<Self, KafkaError> {
        let producer = new_producer(config, append_timeout_ms)?;
        // Waiting for room in the local queue is part of the same budget, so the whole append
        // stays within `append_timeout_ms` plus this small share.
        let queue_timeout = Duration::from_millis(append_timeout_ms.min(1000) / 4);
        Ok(EventLog {
            inner: Arc::new(Inner {
                kafka: config.clone(),
                append_timeout_ms,
                topic: config.topic.as_str().into(),
                queue_timeout,
                current: RwLock::new(Current { producer, generation: 0 }),
                diagnosing: AtomicBool::new(false),
            }),
        })
    }

    /// The producer to use: the current one, replaced first if it has hit a fatal error.
    fn producer(&self) -> Current {
        let current = self.current();
        if current.producer.client().fatal_error().is_none() {
            return current;
        }
        self.replace(current.generation);
        self.current()
    }

    fn current(&self) -> Current {
        match self.inner.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a producer that just failed an append cannot recover by itself: it hit a fatal
    /// error, or its append timed out while the broker answers. The second is a producer id the
    /// broker no longer knows (a broker that lost its state, a recreated topic): librdkafka then
    /// bumps the epoch and retries for ever, refused each time.
    async fn is_stuck(&self, current: &Current, error: &KafkaError) -> bool {
        if current.producer.client().fatal_error().is_some() {
            return true;
        }
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::MessageTimedOut) {
            return false;
        }
        let (producer, topic) = (current.producer.clone(), self.inner.topic.clone());
        let answers = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), Duration::from_secs(1)).is_ok()
        })
        .await
        .unwrap_or(false);
        if answers {
            tracing::warn!(generation = current.generation, "An append timed out while the broker answers");
        }
        answers
    }

    /// Replaces producer `generation` (once, whoever notices first). Whether it worked shows in
    /// the next `producer()`: a failed creation leaves the old one in place.
    fn replace(&self, generation: u64) {
        let mut current = match self.inner.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.generation != generation {
            return; // someone else already replaced it
        }
        let fatal = current.producer.client().fatal_error();
        match new_producer(&self.inner.kafka, self.inner.append_timeout_ms) {
            Ok(producer) => {
                *current = Current { producer, generation: generation + 1 };
                crate::metrics::producer_replaced();
                tracing::warn!(
                    fatal = ?fatal,
                    generation = generation + 1,
                    "Replaced the Kafka producer, which could not append any more; appends in flight on it failed"
                );
            }
            Err(error) => tracing::error!(%error, "Replacing the Kafka producer after a fatal error failed"),
        }
    }

    /// Appends events, each keyed by its aggregate id, and waits for every durable
    /// acknowledgement. They are handed to the producer one after the other, in order (so events of
    /// one aggregate land in the order given), and travel in few requests. On failure the positions
    /// of those that were acknowledged are returned with the error.
    pub async fn append_all(&self, envelopes: &[Envelope]) -> Result<Vec<LogPosition>, PartialAppend> {
        let parents = vec![tracing::Span::current(); envelopes.len()];
        let payloads: Vec<Vec<u8>> = envelopes.iter().map(Envelope::encode).collect();
        let outgoing: Vec<Outgoing<'_>> = envelopes
            .iter()
            .zip(&payloads)
            .map(|(envelope, payload)| Outgoing { envelope, payload })
            .collect();
        self.append_traced(&outgoing, &parents).await
    }

    /// `append_all`, each event's producer span a child of its own `parents` entry (the request
    /// that decided it, when several requests' events are appended together).
    pub async fn append_traced(
        &self,
        events: &[Outgoing<'_>],
        parents: &[tracing::Span],
    ) -> Result<Vec<LogPosition>, PartialAppend> {
        let current = self.producer();
        let mut queued = Vec::with_capacity(events.len());
        for (i, envelope) in events.iter().enumerate() {
            let parent = parents.get(i).cloned().unwrap_or_else(tracing::Span::current);
            queued.push(self.enqueue(&current, envelope, &parent).await);
        }
        let deliveries = futures::future::join_all(queued.into_iter().map(|queued| async move {
            let (delivery, span) = queued?;
            let delivered = match delivery.instrument(span.clone()).await {
                Ok(Ok(delivery)) => {
                    Ok(LogPosition { partition: delivery.partition, offset: delivery.offset })
                }
                Ok(Err((error, _message))) => Err(error),
                Err(_canceled) => Err(KafkaError::Canceled),
            };
            match &delivered {
                Ok(position) => {
                    span.record("messaging.destination.partition.id", position.partition.to_string());
                    span.record("messaging.kafka.offset", position.offset);
                }
                Err(_) => {
                    span.record("otel.status_code", "ERROR");
                }
            }
            delivered
        }))
        .await;
        let mut first_error = None;
        let positions: Vec<Option<LogPosition>> = deliveries
            .into_iter()
            .map(|delivery| delivery.map_err(|e| first_error.get_or_insert(e).clone()).ok())
            .collect();
        match first_error {
            None => Ok(positions.into_iter().flatten().collect()),
            Some(error) => {
                self.diagnose(current, error.clone());
                Err(PartialAppend { error: AppendError::classify(error), positions })
            }
        }
    }

    /// Hands one event to the producer in a producer span whose trace context travels in the
    /// event's headers, so the projector's work on it joins the request's trace. A full local
    /// queue is waited out (within the queue timeout) before the next event is handed over.
    async fn enqueue(
        &self,
        current: &Current,
        outgoing: &Outgoing<'_>,
        parent: &tracing::Span,
    ) -> Result<(DeliveryFuture, tracing::Span), KafkaError> {
        let Outgoing { envelope, payload } = *outgoing;
        let key = envelope.aggregate_id();
        let event_id = envelope.event_id.to_string();
        let event_type = envelope.event_type();
        let version = event_type.current_version().to_string();
        let span = tracing::info_span!(
            parent: parent,
            "publish",
            otel.name = %format!("{} publish", self.inner.topic),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = %self.inner.topic,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.kafka.offset = tracing::field::Empty,
            messaging.kafka.message.key = %key,
            messaging.message.id = %event_id,
            eventline.event.type = event_type.as_str(),
        );
        let trace_context = eventline_runtime::telemetry::inject(&span);
        let mut headers = OwnedHeaders::new_with_capacity(4 + trace_context.len())
            .insert(Header { key: HEADER_EVENT_TYPE, value: Some(event_type.as_str()) })
            .insert(Header { key: HEADER_EVENT_ID, value: Some(event_id.as_str()) })
            .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(version.as_str()) })
            .insert(Header { key: HEADER_CONTENT_TYPE, value: Some(JSON_CONTENT_TYPE) });
        for (name, value) in &trace_context {
            headers = headers.insert(Header { key: name.as_str(), value: Some(value.as_str()) });
        }
        let mut record = FutureRecord::to(&self.inner.topic).key(&key).payload(payload).headers(headers);
        let deadline = tokio::time::Instant::now() + self.inner.queue_timeout;
        loop {
            match current.producer.send_result(record) {
                Ok(delivery) => return Ok((delivery, span)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => {
                    span.record("otel.status_code", "ERROR");
                    return Err(error);
                }
            }
        }
    }

    /// Off the request's path: the client gets its 503 without waiting for the diagnosis. One at
    /// a time: during an outage every append fails, and each diagnosis may block a thread for a
    /// metadata request.
    fn diagnose(&self, current: Current, error: KafkaError) {
        if self.inner.diagnosing.swap(true, Ordering::AcqRel) {
            return;
        }
        let log = self.clone();
        tokio::spawn(async move {
            if log.is_stuck(&current, &error).await {
                log.replace(current.generation);
            }
            log.inner.diagnosing.store(false, Ordering::Release);
        });
    }

    /// Whether appends can work: the producer is usable (replaced if it had hit a fatal error) and
    /// a broker answers a metadata request for the topic.
    pub async fn is_reachable(&self) -> bool {
        let producer = self.producer().producer;
        if producer.client().fatal_error().is_some() {
            return false;
        }
        let topic = self.inner.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits (bounded) until everything queued has been delivered or has failed.
    pub async fn flush(&self) {
        let producer = self.current().producer;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "Producer flush did not complete");
        }
    }
}

/// An idempotent producer that waits for every in-sync replica (`acks=all`). `linger.ms` and the
/// reconnect backoff are tuning (`KAFKA_CLIENT_PROPERTIES` may change them); durability and the
/// append timeout are not.
fn new_producer(kafka: &KafkaConfig, append_timeout_ms: u64) -> Result<FutureProducer, KafkaError> {
    let tuning = [
        // A group's events leave together; waiting a little longer only adds latency.
        ("linger.ms", "2"),
        // librdkafka notices message timeouts when the broker thread wakes, and while the broker
        // is down it sleeps for the reconnect backoff (up to 10 s by default): keep that short so
        // a dead broker is reported within the append timeout.
        ("reconnect.backoff.max.ms", "500"),
    ];
    eventline_runtime::kafka::client_config_tuned(kafka, &tuning)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", append_timeout_ms.to_string())
        .create()
}

/// The producer's fault paths against librdkafka's in-process mock cluster: a broker that goes
/// down, produce requests that fail transiently or for good.
#[cfg(test)]
mod fault_paths {
    use std::time::{Duration, Instant};

    use eventline_events::{AdjustmentType, Envelope, Event, InventoryAdjusted};
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;

    const TOPIC: &str = "eventline.mock";

    fn envelope() -> Envelope {
        Envelope::new(Event::InventoryAdjusted(InventoryAdjusted {
            sku: "SKU-1".into(),
            quantity: 1,
            adjustment_type: AdjustmentType::Add,
            reason: "mock".into(),
        }))
    }

    fn log_on(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> EventLog {
        let config = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            topic: TOPIC.into(),
            topic_partitions: 1,
            topic_replication: 1,
            manage_topic: true,
            topic_check_secs: 30,
            security: Default::default(),
        };
        EventLog::connect(&config, 1500).expect("a producer on the mock cluster")
    }

    /// Event ids in the mock topic's one partition.
    fn event_ids_in_log(bootstrap: &str) -> Vec<uuid::Uuid> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "mock-reader")
            .create()
            .expect("a consumer on the mock cluster");
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(TOPIC, 0, Offset::Beginning).expect("a partition");
        consumer.assign(&assignment).expect("assigned");
        let mut ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
                && let Ok(envelope) = Envelope::decode(message.payload().unwrap_or_default())
            {
                ids.push(envelope.event_id);
            }
        }
        ids
    }

    fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        cluster.create_topic(TOPIC, 1, 1).expect("the topic");
        cluster
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_that_goes_down_means_unavailable_within_the_timeout_never_success() {
        let cluster = cluster();
        let log = log_on(&cluster);
        assert!(log.append_all(&[envelope()]).await.is_ok());
        cluster.broker_down(1).expect("broker down");
        let started = Instant::now();
        let failed = log.append_all(&[envelope()]).await;
        assert!(
            matches!(failed, Err(PartialAppend { error: AppendError::Unavailable(_), .. })),
            "{failed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
        cluster.broker_up(1).expect("broker up");
        let again = envelope();
        assert!(log.append_all(std::slice::from_ref(&again)).await.is_ok(), "appends resume");
        assert!(event_ids_in_log(&cluster.bootstrap_servers()).contains(&again.event_id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_produce_errors_are_retried_and_the_event_is_appended_once() {
        let cluster = cluster();
        let log = log_on(&cluster);
        let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3];
        cluster.request_errors(RDKafkaApiKey::Produce, &errors);
        let event = envelope();
        let positions = log.append_all(std::slice::from_ref(&event)).await.expect("appended after retries");
        assert_eq!(positions.len(), 1);
        let ids = event_ids_in_log(&cluster.bootstrap_servers());
        assert_eq!(ids.iter().filter(|id| **id == event.event_id).count(), 1, "{ids:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_fatal_producer_error_the_log_replaces_its_producer_and_appends_again() {
        let cluster = cluster();
        let log = log_on(&cluster);
        // A sequence desynchronisation on the first request is fatal for an idempotent producer:
        // librdkafka refuses every later message on it.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        let failed = log.append_all(&[envelope()]).await;
        assert!(failed.is_err(), "{failed:?}");
        assert!(log.is_reachable().await, "ready again without a restart");
        assert_eq!(log.current().generation, 1, "the fatal producer was replaced, once");
        let again = envelope();
        let positions =
            log.append_all(std::slice::from_ref(&again)).await.expect("appends through the new producer");
        assert_eq!(positions.len(), 1);
        assert!(event_ids_in_log(&cluster.bootstrap_servers()).contains(&again.event_id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_the_broker_refuses_for_good_is_reported_as_refused() {
        let cluster = cluster();
        let log = log_on(&cluster);
        cluster
            .request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
        let refused = log.append_all(&[envelope()]).await;
        assert!(matches!(refused, Err(PartialAppend { error: AppendError::Refused(_), .. })), "{refused:?}");
    }
}
