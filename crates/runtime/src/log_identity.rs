//! Which log this is: the broker cluster's id and the event topic's id (Kafka's topic UUID, new
//! for every topic ever created, even under a reused name).
//!
//! Read models and checkpoints are only meaningful against the log they were built from. Offsets
//! alone cannot tell two logs apart (a new broker with an empty log, a recreated topic, another
//! cluster on the same address), so the read models record this identity and every service
//! compares it with the log it is talking to.
//!
//! librdkafka exposes no topic ids through a safe API, so this module asks a broker directly with
//! one Kafka `Metadata` request (version 10, the first with topic ids: Kafka 2.8 and later) over
//! [`kafka_wire`], secured as the services' librdkafka clients are.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::config::KafkaSecurity;
use crate::kafka_wire::{Connection, WireError};

/// The identity of one event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The cluster id the broker reports (empty when it reports none).
    pub cluster_id: String,
    /// The topic's id; nil when the broker does not assign topic ids (then only the cluster id
    /// identifies the log).
    pub topic_id: Uuid,
}

/// What the broker says of a topic: the identity of its log, how many partitions it has, and
/// where each partition's leader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub identity: LogIdentity,
    pub partitions: u32,
    /// Partition → its leader's `host:port` (absent while a partition has no leader).
    pub leaders: BTreeMap<i32, String>,
}

impl fmt::Display for LogIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?}, topic id {}", self.cluster_id, self.topic_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the broker's answer could not be read: {0}")]
    Unreadable(String),
    #[error("no broker of {brokers:?} answered a metadata request: {last}")]
    Unreachable { brokers: String, last: String },
    #[error("the Kafka brokers {brokers:?} refused our connection: {reason}")]
    Refused { brokers: String, reason: String },
    #[error("the topic {0:?} does not exist")]
    NoSuchTopic(String),
    #[error("the Kafka security settings are incomplete: {0}")]
    Settings(String),
    #[error("the broker refused the metadata request for {topic:?}: {error}")]
    Rejected { topic: String, error: String },
}

const METADATA_VERSION: i16 = 10;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the brokers (`host:port,…`, first that answers) for the identity of `topic`'s log.
pub async fn fetch(
    brokers: &str,
    security: &KafkaSecurity,
    topic: &str,
) -> Result<LogIdentity, IdentityError> {
    describe(brokers, security, topic).await.map(|metadata| metadata.identity)
}

/// Asks the brokers (first that answers) for `topic`'s identity, partition count and leaders.
pub async fn describe(
    brokers: &str,
    security: &KafkaSecurity,
    topic: &str,
) -> Result<TopicMetadata, IdentityError> {
    let mut last = String::from("no broker address given");
    for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match tokio::time::timeout(TIMEOUT, ask(address, security, topic)).await {
            Ok(Ok(answer)) => return read_answer(answer, topic),
            // A refused login or an untrusted certificate is not a broker that is down: say so.
            Ok(Err(error @ (WireError::Authentication(_) | WireError::Tls(_)))) => {
                return Err(IdentityError::Refused {
                    brokers: brokers.to_owned(),
                    reason: format!("{address}: {error}"),
                });
            }
            Ok(Err(error)) => last = format!("{address}: {error}"),
            Err(_) => last = format!("{address}: no answer within {TIMEOUT:?}"),
        }
    }
    Err(IdentityError::Unreachable { brokers: brokers.to_owned(), last })
}

/// Fails when the security settings are incomplete or the brokers refuse our login or our trust
/// of their certificate; a broker that is down or a missing topic passes (services start without
/// them and wait). librdkafka retries a refused login until some request times out, with an error
/// that does not say why: start-up asks once itself, so a wrong password or an untrusted
/// certificate is a clear error within seconds.
pub async fn check_access(brokers: &str, security: &KafkaSecurity, topic: &str) -> Result<(), IdentityError> {
    security.check().map_err(IdentityError::Settings)?;
    match describe(brokers, security, topic).await {
        Err(error @ IdentityError::Refused { .. }) => Err(error),
        _ => Ok(()),
    }
}

async fn ask(address: &str, security: &KafkaSecurity, topic: &str) -> Result<MetadataResponse, WireError> {
    let mut connection = Connection::open(address, security).await?;
    connection.send(&metadata_request(topic), METADATA_VERSION).await
}

/// A Metadata request for one topic by name, creating nothing.
fn metadata_request(topic: &str) -> MetadataRequest {
    let topic =
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))));
    MetadataRequest::default().with_topics(Some(vec![topic])).with_allow_auto_topic_creation(false)
}

/// The cluster id, the topic's id, its partition count and their leaders out of an answer.
fn read_answer(answer: MetadataResponse, topic: &str) -> Result<TopicMetadata, IdentityError> {
    let brokers: BTreeMap<i32, String> =
        answer.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
    let cluster_id = answer.cluster_id.as_ref().map(|id| id.as_str().to_owned()).unwrap_or_default();
    let Some(described) = answer.topics.into_iter().next() else {
        return Err(IdentityError::Unreadable("no topic in the answer".into()));
    };
    let identity = LogIdentity { cluster_id, topic_id: described.topic_id };
    match ResponseError::try_from_code(described.error_code) {
        None => {
            let partitions = u32::try_from(described.partitions.len())
                .map_err(|_| IdentityError::Unreadable("partitions".into()))?;
            let leaders = described
                .partitions
                .iter()
                .filter_map(|p| {
                    brokers.get(&p.leader_id.0).map(|address| (p.partition_index, address.clone()))
                })
                .collect();
            Ok(TopicMetadata { identity, partitions, leaders })
        }
        Some(ResponseError::UnknownTopicOrPartition) => Err(IdentityError::NoSuchTopic(topic.to_owned())),
        Some(error) => Err(IdentityError::Rejected { topic: topic.to_owned(), error: format!("{error:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    use super::*;

    /// A Metadata answer as a broker writes it: one broker, one topic with `partitions` partitions
    /// led by it.
    fn answer(code: i16, topic_id: Uuid, partitions: i32) -> MetadataResponse {
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(9092);
        let partitions = (0..partitions)
            .map(|i| MetadataResponsePartition::default().with_partition_index(i).with_leader_id(BrokerId(1)))
            .collect();
        let topic = MetadataResponseTopic::default()
            .with_error_code(code)
            .with_topic_id(topic_id)
            .with_partitions(partitions);
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(Some(StrBytes::from_static_str("abcde")))
            .with_topics(vec![topic])
    }

    #[test]
    fn the_cluster_and_topic_id_are_read_from_an_answer() {
        let id = Uuid::new_v4();
        let metadata = read_answer(answer(0, id, 0), "t1").unwrap();
        assert_eq!(metadata.identity, LogIdentity { cluster_id: "abcde".into(), topic_id: id });
        assert_eq!(metadata.partitions, 0);
        let six = read_answer(answer(0, id, 6), "t1").unwrap();
        assert_eq!(six.partitions, 6);
        assert_eq!(six.leaders.len(), 6);
        assert_eq!(six.leaders[&5], "127.0.0.1:9092", "partitions are led by broker 1");
    }

    #[test]
    fn a_missing_topic_and_an_empty_answer_are_errors_not_identities() {
        let missing = read_answer(answer(3, Uuid::nil(), 0), "t1");
        assert!(matches!(missing, Err(IdentityError::NoSuchTopic(_))), "{missing:?}");
        let denied = read_answer(answer(29, Uuid::nil(), 0), "t1");
        assert!(matches!(denied, Err(IdentityError::Rejected { .. })), "{denied:?}");
        let empty = read_answer(MetadataResponse::default(), "t1");
        assert!(matches!(empty, Err(IdentityError::Unreadable(_))), "{empty:?}");
    }

    #[test]
    fn the_request_names_the_topic_and_creates_nothing() {
        let request = metadata_request("eventline.events");
        let topics = request.topics.unwrap();
        assert_eq!(topics[0].name.as_ref().unwrap().0.as_str(), "eventline.events");
        assert!(!request.allow_auto_topic_creation);
    }
}
