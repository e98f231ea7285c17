//! Partitions nobody consumes.
//!
//! A consumer group can be left with partitions that no live member owns: a broker that fails to
//! hand a dead member's partitions on (Tansu 0.6.0 did), a member stuck outside the group. Lag
//! then grows without end while every instance looks healthy from its own view. So the observer
//! asks the broker for the group's description — every member and its assignment — and flags
//! partitions that have events to apply but belong to no member. Past a bound, the instance stops
//! being ready, so an orchestrator or operator acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use crate::live::consumer::LogConsumer;

/// Since when each partition with lag has been owned by no member of the group.
#[derive(Debug)]
pub struct Coverage {
    since: Mutex<HashMap<i32, Instant>>,
    /// Which member owned each partition at the last stable description of the group.
    owners: Mutex<BTreeMap<i32, String>>,
    /// How long a partition may stay unconsumed before the instance reports not ready.
    bound: Duration,
}

impl Coverage {
    pub fn new(bound: Duration) -> Coverage {
        Coverage { since: Mutex::new(HashMap::new()), owners: Mutex::new(BTreeMap::new()), bound }
    }

    /// Partition → the member that owns it (its client id), as last described.
    pub fn owners(&self) -> BTreeMap<i32, String> {
        self.owners.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Partitions with lag that no group member owns now.
    pub fn unconsumed(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> =
            self.since.lock().map(|s| s.keys().copied().collect()).unwrap_or_default();
        partitions.sort_unstable();
        partitions
    }

    /// Partitions unconsumed for longer than the bound.
    pub fn stalled(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self
            .since
            .lock()
            .map(|s| s.iter().filter(|(_, t)| t.elapsed() > self.bound).map(|(p, _)| *p).collect())
            .unwrap_or_default();
        partitions.sort_unstable();
        partitions
    }

    /// Updates the picture from the group's description and the partitions' lag. A group that is
    /// rebalancing, or a description the broker does not give, changes nothing.
    pub async fn observe(&self, consumer: &Arc<LogConsumer>, group: &str, topic: &str, lag: &[(i32, i64)]) {
        let (consumer, group_name, topic_name) = (consumer.clone(), group.to_owned(), topic.to_owned());
        let owned =
            tokio::task::spawn_blocking(move || owned_partitions(&consumer, &group_name, &topic_name))
                .await
                .ok()
                .flatten();
        let Some(owned) = owned else { return };
        if let Ok(mut owners) = self.owners.lock() {
            owners.clone_from(&owned);
        }
        let Ok(mut since) = self.since.lock() else { return };
        let now = Instant::now();
        let unconsumed: BTreeSet<i32> =
            lag.iter().filter(|(p, lag)| *lag > 0 && !owned.contains_key(p)).map(|(p, _)| *p).collect();
        since.retain(|p, _| unconsumed.contains(p));
        for partition in unconsumed {
            since.entry(partition).or_insert_with(|| {
                tracing::warn!(
                    partition,
                    group,
                    "A partition with events to apply is consumed by no member of the group"
                );
                now
            });
        }
        crate::metrics::unconsumed_partitions(since.len());
    }
}

/// The partitions of `topic` assigned to the group's members, each with its member (its client id,
/// `eventline-projector@<host>/<pid>`), from the broker's description of the group; `None` while it rebalances or when the
/// broker does not describe it (blocking).
fn owned_partitions(consumer: &LogConsumer, group: &str, topic: &str) -> Option<BTreeMap<i32, String>> {
    let groups = consumer.fetch_group_list(Some(group), Duration::from_secs(3)).ok()?;
    let description = groups.groups().iter().find(|g| g.name() == group)?;
    if description.state() != "Stable" {
        return None;
    }
    let mut owned = BTreeMap::new();
    for member in description.members() {
        let who = member.client_id().to_owned();
        // A member given nothing (more members than partitions) may carry no assignment at all.
        for partition in assigned_partitions(member.assignment().unwrap_or_default(), topic)? {
            owned.insert(partition, who.clone());
        }
    }
    Some(owned)
}

/// Decodes a consumer-protocol assignment (version, then per topic its name and partitions) and
/// returns the partitions of `topic`; `None` if it is not one.
fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<i32>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut bytes = assignment;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (taken, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        bytes = rest;
        Some(taken)
    };
    let _version = take(2)?;
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(i16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
        let name = take(length)?.to_vec();
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..count.max(0) {
            let partition = i32::from_be_bytes(take(4)?.try_into().ok()?);
            if name == topic.as_bytes() {
                partitions.push(partition);
            }
        }
    }
    Some(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut bytes = vec![0, 1];
        bytes.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            bytes.extend_from_slice(&(name.len() as i16).to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                bytes.extend_from_slice(&p.to_be_bytes());
            }
        }
        bytes.extend_from_slice(&(-1_i32).to_be_bytes()); // no user data
        bytes
    }

    #[test]
    fn an_assignment_yields_the_partitions_of_our_topic_only() {
        let bytes = assignment(&[("other", &[0, 1]), ("events", &[2, 5])]);
        assert_eq!(assigned_partitions(&bytes, "events"), Some(vec![2, 5]));
        assert_eq!(assigned_partitions(&bytes, "missing"), Some(vec![]));
    }

    #[test]
    fn a_truncated_assignment_is_not_read_as_an_empty_one() {
        let bytes = assignment(&[("events", &[0, 1, 2])]);
        assert_eq!(assigned_partitions(&[], "events"), Some(vec![]), "no assignment owns nothing");
        for cut in 1..bytes.len() - 4 {
            assert_eq!(assigned_partitions(&bytes[..cut], "events"), None, "cut at {cut}");
        }
    }
}
