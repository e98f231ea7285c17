//! Where the event log ends: each partition's high watermark (the offset the next event will
//! get), asked of the partitions' leaders with one Kafka `ListOffsets` request (version 1) each,
//! over [`kafka_wire`] (the query service links no librdkafka).
//!
//! The query service uses it to tell a Consistency-Token the log cannot have issued (a position at
//! or beyond the end) from one the read models have not reached yet: the command service answers
//! only after the log acknowledged, so every position it hands out is below the end.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::config::KafkaSecurity;
use crate::kafka_wire::{Connection, WireError};
use crate::log_identity::{self, IdentityError};

const LIST_OFFSETS_VERSION: i16 = 1;
/// The timestamp that asks for the latest offset (the high watermark).
const LATEST: i64 = -1;

#[derive(Debug, thiserror::Error)]
pub enum EndError {
    #[error(transparent)]
    Metadata(#[from] IdentityError),
    #[error("partition {0} has no leader")]
    NoLeader(i32),
    #[error("{address} did not answer: {error}")]
    Unreachable { address: String, error: WireError },
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the broker refused the offsets of partition {partition}: {error}")]
    Refused { partition: i32, error: String },
}

/// Partition → high watermark of `topic`, for every partition, within `timeout`.
pub async fn end_offsets(
    brokers: &str,
    security: &KafkaSecurity,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, EndError> {
    let ask = async {
        let metadata = log_identity::describe(brokers, security, topic).await?;
        let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for partition in 0..metadata.partitions as i32 {
            let leader = metadata.leaders.get(&partition).ok_or(EndError::NoLeader(partition))?;
            by_leader.entry(leader).or_default().push(partition);
        }
        let mut ends = BTreeMap::new();
        for (address, partitions) in by_leader {
            let unreachable = |error| EndError::Unreachable { address: address.to_owned(), error };
            let mut connection = Connection::open(address, security).await.map_err(unreachable)?;
            let request = list_offsets_request(topic, &partitions);
            let answer = connection.send(&request, LIST_OFFSETS_VERSION).await.map_err(unreachable)?;
            ends.extend(read_answer(answer)?);
        }
        Ok(ends)
    };
    tokio::time::timeout(timeout, ask).await.unwrap_or(Err(EndError::TimedOut(timeout)))
}

/// A ListOffsets request for the latest offsets of `partitions` of `topic`, as a client.
fn list_offsets_request(topic: &str, partitions: &[i32]) -> ListOffsetsRequest {
    let partitions = partitions
        .iter()
        .map(|&partition| {
            ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(LATEST)
        })
        .collect();
    let topic = ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
        .with_partitions(partitions);
    ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![topic])
}

/// Partition → offset out of an answer; a partition the broker refused is an error.
fn read_answer(answer: ListOffsetsResponse) -> Result<BTreeMap<i32, i64>, EndError> {
    let mut ends = BTreeMap::new();
    for partition in answer.topics.iter().flat_map(|topic| &topic.partitions) {
        if let Some(error) = ResponseError::try_from_code(partition.error_code) {
            return Err(EndError::Refused {
                partition: partition.partition_index,
                error: format!("{error:?}"),
            });
        }
        ends.insert(partition.partition_index, partition.offset);
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };

    use super::*;

    #[test]
    fn the_request_asks_for_the_latest_offset_of_each_partition_as_a_client() {
        let request = list_offsets_request("t1", &[0, 2]);
        assert_eq!(request.replica_id, BrokerId(-1));
        let partitions = &request.topics[0].partitions;
        assert_eq!(partitions.iter().map(|p| p.partition_index).collect::<Vec<_>>(), [0, 2]);
        assert!(partitions.iter().all(|p| p.timestamp == LATEST));
    }

    #[test]
    fn offsets_are_read_from_an_answer_and_refusals_are_errors() {
        let answer = |code: i16| {
            let partitions = [(0, 15), (1, 1_i64 << 40)]
                .into_iter()
                .map(|(partition, offset)| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(partition)
                        .with_error_code(code)
                        .with_offset(offset)
                })
                .collect();
            let topic = ListOffsetsTopicResponse::default().with_partitions(partitions);
            ListOffsetsResponse::default().with_topics(vec![topic])
        };
        assert_eq!(read_answer(answer(0)).unwrap(), BTreeMap::from([(0, 15), (1, 1 << 40)]));
        assert!(matches!(read_answer(answer(6)), Err(EndError::Refused { partition: 0, .. })));
    }
}
