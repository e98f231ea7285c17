//! Which log this is: the broker cluster's id and the event topic's id (Kafka's topic UUID, new
//! for every topic ever created, even under a reused name).
//!
//! Read models and checkpoints are only meaningful against the log they were built from. Offsets
//! alone cannot tell two logs apart (a new broker with an empty log, a recreated topic, another
//! cluster on the same address), so the read models record this identity and every service
//! compares it with the log it is talking to.
//!
//! librdkafka does not expose topic ids, so this module asks a broker directly with one Kafka
//! `Metadata` request (version 10, the first with topic ids; Kafka 2.8 and later, and the local
//! nisshi broker). It speaks only the few fields it needs and plaintext, as the services do.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::kafka_wire::{self, Reader, WireError, put_unsigned_varint};

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
    Wire(#[from] WireError),
    #[error("no broker of {brokers:?} answered a metadata request: {last}")]
    Unreachable { brokers: String, last: String },
    #[error("the topic {0:?} does not exist")]
    NoSuchTopic(String),
    #[error("the broker refused the metadata request for {topic:?} with error code {code}")]
    Refused { topic: String, code: i16 },
}

const METADATA_API_KEY: i16 = 3;
const METADATA_VERSION: i16 = 10;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the brokers (`host:port,…`, first that answers) for the identity of `topic`'s log.
pub async fn fetch(brokers: &str, topic: &str) -> Result<LogIdentity, IdentityError> {
    describe(brokers, topic).await.map(|metadata| metadata.identity)
}

/// Asks the brokers (first that answers) for `topic`'s identity and partition count.
pub async fn describe(brokers: &str, topic: &str) -> Result<TopicMetadata, IdentityError> {
    let mut last = String::from("no broker address given");
    for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match tokio::time::timeout(TIMEOUT, ask(address, topic)).await {
            Ok(Ok(answer)) => return answer,
            Ok(Err(error)) => last = format!("{address}: {error}"),
            Err(_) => last = format!("{address}: no answer within {TIMEOUT:?}"),
        }
    }
    Err(IdentityError::Unreachable { brokers: brokers.to_owned(), last })
}

async fn ask(address: &str, topic: &str) -> std::io::Result<Result<TopicMetadata, IdentityError>> {
    let body = kafka_wire::exchange(address, &metadata_request(topic, 1)).await?;
    Ok(parse_metadata_response(&body, topic))
}

/// A Metadata v10 request for one topic by name, framed with its length.
fn metadata_request(topic: &str, correlation_id: i32) -> Vec<u8> {
    // Request header v2 (Metadata v10 is a flexible version).
    let mut message = kafka_wire::request_header(METADATA_API_KEY, METADATA_VERSION, correlation_id, true);
    // Body: topics (compact array of one: nil topic id, name, no tags), allow auto-creation
    // false, no authorised operations, no tags.
    put_unsigned_varint(&mut message, 2);
    message.extend_from_slice(&[0; 16]);
    put_unsigned_varint(&mut message, topic.len() as u64 + 1);
    message.extend_from_slice(topic.as_bytes());
    message.push(0);
    message.extend_from_slice(&[0, 0, 0, 0]);
    kafka_wire::framed(&message)
}

/// Reads the cluster id, the topic's id and its partition count out of a Metadata v10 response
/// (without its length).
fn parse_metadata_response(body: &[u8], topic: &str) -> Result<TopicMetadata, IdentityError> {
    let mut r = Reader { bytes: body };
    r.take(4)?; // correlation id
    r.skip_tags()?;
    r.take(4)?; // throttle time
    let mut brokers = BTreeMap::new();
    for _ in 0..r.compact_len()? {
        let node = r.i32()?;
        let host = r.compact_string()?.unwrap_or_default();
        let port = r.i32()?;
        r.compact_string()?; // rack
        r.skip_tags()?;
        brokers.insert(node, format!("{host}:{port}"));
    }
    let cluster_id = r.compact_string()?.unwrap_or_default();
    r.take(4)?; // controller id
    if r.compact_len()? == 0 {
        return Err(WireError("no topic in the answer").into());
    }
    let code = r.i16()?;
    let _name = r.compact_string()?;
    let topic_id = Uuid::from_slice(r.take(16)?).map_err(|_| WireError("topic id"))?;
    let identity = LogIdentity { cluster_id, topic_id };
    match code {
        0 => {
            r.byte()?; // is internal
            let count = r.compact_len()?;
            let partitions = u32::try_from(count).map_err(|_| WireError("partitions"))?;
            let mut leaders = BTreeMap::new();
            for _ in 0..count {
                r.i16()?; // error code
                let partition = r.i32()?;
                let leader = r.i32()?;
                r.i32()?; // leader epoch
                for _ in 0..3 {
                    // replicas, in-sync replicas, offline replicas
                    let nodes = r.compact_len()?;
                    r.take(nodes.checked_mul(4).ok_or(WireError("replicas"))?)?;
                }
                r.skip_tags()?;
                if let Some(address) = brokers.get(&leader) {
                    leaders.insert(partition, address.clone());
                }
            }
            Ok(TopicMetadata { identity, partitions, leaders })
        }
        UNKNOWN_TOPIC_OR_PARTITION => Err(IdentityError::NoSuchTopic(topic.to_owned())),
        code => Err(IdentityError::Refused { topic: topic.to_owned(), code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata v10 answer as a broker writes it: one broker, one topic.
    fn answer(code: i16, topic_id: Uuid) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&7_i32.to_be_bytes()); // correlation id
        b.push(0); // header tags
        b.extend_from_slice(&0_i32.to_be_bytes()); // throttle
        put_unsigned_varint(&mut b, 2); // one broker
        b.extend_from_slice(&1_i32.to_be_bytes());
        put_unsigned_varint(&mut b, 10);
        b.extend_from_slice(b"127.0.0.1");
        b.extend_from_slice(&9092_i32.to_be_bytes());
        b.push(0); // rack: null
        b.extend_from_slice(&[1, 0, 1, 0xaa]); // one tagged field: tag 0, one byte
        put_unsigned_varint(&mut b, 6);
        b.extend_from_slice(b"abcde"); // cluster id
        b.extend_from_slice(&1_i32.to_be_bytes()); // controller
        put_unsigned_varint(&mut b, 2); // one topic
        b.extend_from_slice(&code.to_be_bytes());
        put_unsigned_varint(&mut b, 3);
        b.extend_from_slice(b"t1");
        b.extend_from_slice(topic_id.as_bytes());
        b.push(0); // is internal
        put_unsigned_varint(&mut b, 1); // no partitions
        b.extend_from_slice(&0_i32.to_be_bytes());
        b.push(0);
        b.extend_from_slice(&0_i32.to_be_bytes());
        b.push(0);
        b
    }

    /// The same answer with `partitions` partitions (leader 1, no replicas listed).
    fn answer_with_partitions(topic_id: Uuid, partitions: u32) -> Vec<u8> {
        let mut b = answer(0, topic_id);
        b.truncate(b.len() - 11); // from the partitions array on
        put_unsigned_varint(&mut b, u64::from(partitions) + 1);
        for partition in 0..partitions {
            b.extend_from_slice(&0_i16.to_be_bytes()); // error code
            b.extend_from_slice(&(partition as i32).to_be_bytes());
            b.extend_from_slice(&1_i32.to_be_bytes()); // leader
            b.extend_from_slice(&0_i32.to_be_bytes()); // leader epoch
            b.extend_from_slice(&[1, 1, 1]); // replicas, isr, offline: empty
            b.push(0); // tags
        }
        b.extend_from_slice(&0_i32.to_be_bytes()); // authorized operations
        b.push(0);
        b.extend_from_slice(&0_i32.to_be_bytes());
        b.push(0);
        b
    }

    #[test]
    fn the_cluster_and_topic_id_are_read_from_an_answer() {
        let id = Uuid::new_v4();
        let metadata = parse_metadata_response(&answer(0, id), "t1").unwrap();
        assert_eq!(metadata.identity, LogIdentity { cluster_id: "abcde".into(), topic_id: id });
        assert_eq!(metadata.partitions, 0);
        let six = parse_metadata_response(&answer_with_partitions(id, 6), "t1").unwrap();
        assert_eq!(six.partitions, 6);
        assert_eq!(six.leaders.len(), 6);
        assert_eq!(six.leaders[&5], "127.0.0.1:9092", "partitions are led by broker 1");
    }

    #[test]
    fn a_missing_topic_and_a_cut_answer_are_errors_not_identities() {
        let missing = parse_metadata_response(&answer(UNKNOWN_TOPIC_OR_PARTITION, Uuid::nil()), "t1");
        assert!(matches!(missing, Err(IdentityError::NoSuchTopic(_))), "{missing:?}");
        let whole = answer(0, Uuid::new_v4());
        for cut in 0..whole.len() - 12 {
            assert!(parse_metadata_response(&whole[..cut], "t1").is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_request_is_framed_with_its_length_and_names_the_topic() {
        let request = metadata_request("eventline.events", 1);
        let length = i32::from_be_bytes(request[..4].try_into().unwrap()) as usize;
        assert_eq!(length, request.len() - 4);
        assert_eq!(&request[4..8], &[0, 3, 0, 10]);
        assert!(request.windows(16).any(|w| w == b"eventline.events"));
    }
}
