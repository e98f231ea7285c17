//! Where the event log ends: each partition's high watermark (the offset the next event will
//! get), asked of the partitions' leaders with one Kafka `ListOffsets` request (version 1) each.
//!
//! The query service uses it to tell a Consistency-Token the log cannot have issued (a position at
//! or beyond the end) from one the read models have not reached yet: the command service answers
//! only after the log acknowledged, so every position it hands out is below the end.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kafka_wire::{self, Reader, WireError};
use crate::log_identity::{self, IdentityError};

const LIST_OFFSETS_API_KEY: i16 = 2;
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
    Unreachable { address: String, error: String },
    #[error("the broker's answer could not be read: {0}")]
    Wire(#[from] WireError),
    #[error("the broker refused the offsets of partition {partition} with error code {code}")]
    Refused { partition: i32, code: i16 },
}

/// Partition → high watermark of `topic`, for every partition, within `timeout`.
pub async fn end_offsets(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, EndError> {
    let ask = async {
        let metadata = log_identity::describe(brokers, topic).await?;
        let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for partition in 0..metadata.partitions as i32 {
            let leader = metadata.leaders.get(&partition).ok_or(EndError::NoLeader(partition))?;
            by_leader.entry(leader).or_default().push(partition);
        }
        let mut ends = BTreeMap::new();
        for (address, partitions) in by_leader {
            let body =
                kafka_wire::exchange(address, &list_offsets_request(topic, &partitions, 1)).await.map_err(
                    |error| EndError::Unreachable { address: address.to_owned(), error: error.to_string() },
                )?;
            ends.extend(parse_list_offsets_response(&body)?);
        }
        Ok(ends)
    };
    tokio::time::timeout(timeout, ask).await.unwrap_or_else(|_| {
        Err(EndError::Unreachable {
            address: brokers.to_owned(),
            error: format!("no answer within {timeout:?}"),
        })
    })
}

/// A ListOffsets v1 request for the latest offsets of `partitions` of `topic`, framed.
fn list_offsets_request(topic: &str, partitions: &[i32], correlation_id: i32) -> Vec<u8> {
    // Request header v1 (ListOffsets v1 is not a flexible version).
    let mut message =
        kafka_wire::request_header(LIST_OFFSETS_API_KEY, LIST_OFFSETS_VERSION, correlation_id, false);
    // Body: replica id -1 (a client), one topic with its partitions.
    message.extend_from_slice(&(-1_i32).to_be_bytes());
    message.extend_from_slice(&1_i32.to_be_bytes());
    message.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    message.extend_from_slice(topic.as_bytes());
    message.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
    for partition in partitions {
        message.extend_from_slice(&partition.to_be_bytes());
        message.extend_from_slice(&LATEST.to_be_bytes());
    }
    kafka_wire::framed(&message)
}

/// Partition → offset out of a ListOffsets v1 response (without its length).
fn parse_list_offsets_response(body: &[u8]) -> Result<BTreeMap<i32, i64>, EndError> {
    let mut r = Reader { bytes: body };
    r.i32()?; // correlation id
    let mut ends = BTreeMap::new();
    for _ in 0..r.array_len()? {
        r.string()?; // topic
        for _ in 0..r.array_len()? {
            let partition = r.i32()?;
            let code = r.i16()?;
            r.i64()?; // timestamp
            let offset = r.i64()?;
            if code != 0 {
                return Err(EndError::Refused { partition, code });
            }
            ends.insert(partition, offset);
        }
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_the_latest_offset_of_each_partition() {
        let request = list_offsets_request("t1", &[0, 2], 7);
        let length = i32::from_be_bytes(request[..4].try_into().unwrap()) as usize;
        assert_eq!(length, request.len() - 4);
        assert_eq!(&request[4..8], &[0, 2, 0, 1], "ListOffsets v1");
        let tail = &request[request.len() - 12..];
        assert_eq!(i32::from_be_bytes(tail[..4].try_into().unwrap()), 2);
        assert_eq!(i64::from_be_bytes(tail[4..].try_into().unwrap()), LATEST);
    }

    #[test]
    fn offsets_are_read_from_an_answer_and_refusals_are_errors() {
        let answer = |code: i16| {
            let mut b = Vec::new();
            b.extend_from_slice(&7_i32.to_be_bytes());
            b.extend_from_slice(&1_i32.to_be_bytes()); // one topic
            b.extend_from_slice(&2_i16.to_be_bytes());
            b.extend_from_slice(b"t1");
            b.extend_from_slice(&2_i32.to_be_bytes()); // two partitions
            for (partition, offset) in [(0_i32, 15_i64), (1, 1 << 40)] {
                b.extend_from_slice(&partition.to_be_bytes());
                b.extend_from_slice(&code.to_be_bytes());
                b.extend_from_slice(&(-1_i64).to_be_bytes());
                b.extend_from_slice(&offset.to_be_bytes());
            }
            b
        };
        let ends = parse_list_offsets_response(&answer(0)).unwrap();
        assert_eq!(ends, BTreeMap::from([(0, 15), (1, 1 << 40)]));
        assert!(matches!(
            parse_list_offsets_response(&answer(6)),
            Err(EndError::Refused { partition: 0, code: 6 })
        ));
        let whole = answer(0);
        for cut in 0..whole.len() {
            assert!(parse_list_offsets_response(&whole[..cut]).is_err(), "cut at {cut}");
        }
    }
}
