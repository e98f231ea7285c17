//! The projection as the console shows it: per partition the checkpoint, the log's end, the lag in
//! events and in time, its owner, whether it is stalled, and an ETA from the recent drain rate;
//! plus an hour of lag and throughput, kept in memory.
//!
//! The observer already collects the projection's status every few seconds (checkpoints from
//! PostgreSQL, watermarks from Kafka, owners from the group's description); it hands each one to
//! [`Projection::record`], so a console with any number of viewers costs no query of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::live::status::ProjectionStatus;

/// How much history the trend keeps.
const TREND_SPAN: Duration = Duration::from_secs(3600);
/// The window the drain rate (and so the ETA) is measured over.
const DRAIN_WINDOW: Duration = Duration::from_secs(60);

/// The projection now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub at: DateTime<Utc>,
    pub topic: String,
    /// The group member serving this console.
    pub instance: String,
    pub partitions: Vec<PartitionView>,
    /// Sum of the partitions' lag, in events.
    pub lag: i64,
    /// Events applied per second since the previous observation.
    pub throughput: f64,
    /// Seconds until the slowest partition catches up at its recent drain rate; absent when
    /// nothing waits, or when a partition with lag is not draining.
    pub eta_seconds: Option<f64>,
    pub dead_letters: i64,
    /// Aggregate keys parked behind an event the database refused, and the events waiting.
    pub parked_keys: i64,
    pub parked_events: i64,
    /// The batch being retried now, if one is: an outage, an unclassed error, or the breaker open.
    pub failing_batch: Option<crate::live::runner::Failing>,
    pub alerts: Vec<Alert>,
    /// Whether the console refuses every action.
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    pub partition: i32,
    /// Next offset to apply.
    pub checkpoint: i64,
    /// The log's end (high watermark), when the broker answered.
    pub end: Option<i64>,
    pub lag: Option<i64>,
    /// Now minus when the newest applied event was appended, while events wait; 0 when caught up.
    pub lag_seconds: Option<f64>,
    /// The member that owns the partition (`eventline-projector@<host>/<pid>`).
    pub owner: Option<String>,
    /// Applied per second over the last minute.
    pub drain_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// How long the checkpoint has not moved while events wait.
    pub stalled_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub partition: i32,
    /// `stalled` (events wait and the checkpoint does not move) or `unowned` (no member consumes it).
    pub kind: String,
    pub message: String,
}

/// One point of the trend.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrendPoint {
    pub at: DateTime<Utc>,
    pub lag: i64,
    pub throughput: f64,
}

struct Sample {
    taken: Instant,
    checkpoints: BTreeMap<i32, i64>,
}

#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    trend: VecDeque<(Instant, TrendPoint)>,
    /// Per partition: the checkpoint last seen and since when it has not moved.
    unmoved: HashMap<i32, (i64, Instant)>,
}

/// The console's view of the projection, fed by the observer.
pub struct Projection {
    history: Mutex<History>,
    latest: watch::Sender<Option<Arc<Overview>>>,
    stall_after: Duration,
    instance: String,
    read_only: bool,
}

impl Projection {
    pub fn new(stall_after: Duration, instance: String, read_only: bool) -> Arc<Projection> {
        let (latest, _) = watch::channel(None);
        Arc::new(Projection {
            history: Mutex::new(History::default()),
            latest,
            stall_after,
            instance,
            read_only,
        })
    }

    /// The latest overview, as soon as there is one.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Overview>>> {
        self.latest.subscribe()
    }

    pub fn latest(&self) -> Option<Arc<Overview>> {
        self.latest.borrow().clone()
    }

    /// The trend of the last hour, oldest first.
    pub fn trend(&self) -> Vec<TrendPoint> {
        self.history.lock().map(|h| h.trend.iter().map(|(_, p)| p.clone()).collect()).unwrap_or_default()
    }

    fn observe(
        &self,
        history: &mut History,
        status: &ProjectionStatus,
        owners: &BTreeMap<i32, String>,
        unconsumed: &[i32],
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Overview {
        let checkpoints: BTreeMap<i32, i64> =
            status.partitions.iter().map(|p| (p.partition, p.next_offset)).collect();
        let previous = history.samples.back();
        let throughput = previous.map_or(0.0, |before| rate(before, &checkpoints, None, now));
        let window_start = history.samples.iter().find(|s| now.duration_since(s.taken) <= DRAIN_WINDOW);

        let mut partitions = Vec::new();
        let mut alerts = Vec::new();
        for p in &status.partitions {
            let waiting = p.lag.unwrap_or(0) > 0;
            let since = history.unmoved.entry(p.partition).or_insert((p.next_offset, now));
            if since.0 != p.next_offset || !waiting {
                *since = (p.next_offset, now);
            }
            let stalled_seconds = waiting.then(|| now.duration_since(since.1).as_secs_f64());
            let lag_seconds = match (waiting, p.last_appended_at) {
                (false, _) => Some(0.0),
                (true, Some(at)) => Some(((wall - at).num_milliseconds() as f64 / 1000.0).max(0.0)),
                (true, None) => None,
            };
            let drain = window_start.map(|start| rate(start, &checkpoints, Some(p.partition), now));
            let eta_seconds = match (p.lag, drain) {
                (Some(0), _) => Some(0.0),
                (Some(lag), Some(drain)) if drain > 0.0 => Some(lag as f64 / drain),
                _ => None,
            };
            if stalled_seconds.is_some_and(|s| s >= self.stall_after.as_secs_f64()) {
                alerts.push(Alert {
                    partition: p.partition,
                    kind: "stalled".into(),
                    message: format!(
                        "Partition {}: {} events wait and the checkpoint has not moved for {:.0} s.",
                        p.partition,
                        p.lag.unwrap_or(0),
                        stalled_seconds.unwrap_or(0.0)
                    ),
                });
            }
            if unconsumed.contains(&p.partition) {
                alerts.push(Alert {
                    partition: p.partition,
                    kind: "unowned".into(),
                    message: format!(
                        "Partition {} has events to apply and no member of the group consumes it.",
                        p.partition
                    ),
                });
            }
            partitions.push(PartitionView {
                partition: p.partition,
                checkpoint: p.next_offset,
                end: p.high_watermark,
                lag: p.lag,
                lag_seconds,
                owner: owners.get(&p.partition).cloned(),
                drain_per_second: drain,
                eta_seconds,
                stalled_seconds,
            });
        }
        // The slowest partition decides when the projection has caught up.
        let stuck = partitions.iter().any(|p| p.lag.unwrap_or(0) > 0 && p.eta_seconds.is_none());
        let eta_seconds = if status.lag == 0 || stuck {
            None
        } else {
            partitions.iter().filter_map(|p| p.eta_seconds).reduce(f64::max)
        };

        history.samples.push_back(Sample { taken: now, checkpoints });
        while history.samples.front().is_some_and(|s| now.duration_since(s.taken) > DRAIN_WINDOW * 2) {
            history.samples.pop_front();
        }
        history.trend.push_back((now, TrendPoint { at: wall, lag: status.lag, throughput }));
        while history.trend.front().is_some_and(|(t, _)| now.duration_since(*t) > TREND_SPAN) {
            history.trend.pop_front();
        }
        Overview {
            at: wall,
            topic: status.topic.clone(),
            instance: self.instance.clone(),
            partitions,
            lag: status.lag,
            throughput,
            eta_seconds,
            dead_letters: status.dead_letters,
            parked_keys: status.parked_keys,
            parked_events: status.parked_events,
            failing_batch: None,
            alerts,
            read_only: self.read_only,
        }
    }
}

/// Events applied per second between `before` and the checkpoints `now` (one partition, or all).
/// The observer's rounds, taken in: each one becomes the latest overview.
impl crate::live::observer::Observations for Projection {
    fn record(
        &self,
        status: &ProjectionStatus,
        owners: &BTreeMap<i32, String>,
        unconsumed: &[i32],
        failing: Option<crate::live::runner::Failing>,
    ) {
        let Ok(mut history) = self.history.lock() else { return };
        let mut overview = self.observe(&mut history, status, owners, unconsumed, Instant::now(), Utc::now());
        overview.failing_batch = failing;
        drop(history);
        self.latest.send_replace(Some(Arc::new(overview)));
    }
}

fn rate(before: &Sample, now_checkpoints: &BTreeMap<i32, i64>, partition: Option<i32>, now: Instant) -> f64 {
    let seconds = now.duration_since(before.taken).as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    let moved: i64 = now_checkpoints
        .iter()
        .filter(|(p, _)| partition.is_none_or(|only| only == **p))
        .map(|(p, next)| (next - before.checkpoints.get(p).copied().unwrap_or(*next)).max(0))
        .sum();
    moved as f64 / seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::status::PartitionStatus;

    fn status(partitions: &[(i32, i64, i64)]) -> ProjectionStatus {
        let partitions: Vec<PartitionStatus> = partitions
            .iter()
            .map(|&(partition, next_offset, end)| PartitionStatus {
                partition,
                next_offset,
                high_watermark: Some(end),
                lag: Some(end - next_offset),
                last_appended_at: Some(Utc::now() - chrono::Duration::seconds(7)),
            })
            .collect();
        let lag = partitions.iter().filter_map(|p| p.lag).sum();
        ProjectionStatus {
            topic: "events".into(),
            partitions,
            lag,
            dead_letters: 0,
            parked_keys: 0,
            parked_events: 0,
        }
    }

    #[test]
    fn lag_in_time_eta_from_the_drain_rate_and_stalls() {
        let projection = Projection::new(Duration::from_secs(20), "me".into(), false);
        let mut history = History::default();
        let start = Instant::now();
        let owners = BTreeMap::from([(0, "me".to_owned())]);
        let at = |s: u64| start + Duration::from_secs(s);
        // Partition 0 drains 10/s; partition 1 is stuck with 50 waiting.
        projection.observe(
            &mut history,
            &status(&[(0, 0, 1000), (1, 5, 55)]),
            &owners,
            &[],
            at(0),
            Utc::now(),
        );
        let overview = projection.observe(
            &mut history,
            &status(&[(0, 100, 1000), (1, 5, 55)]),
            &owners,
            &[1],
            at(10),
            Utc::now(),
        );
        let (p0, p1) = (&overview.partitions[0], &overview.partitions[1]);
        assert_eq!(overview.throughput, 10.0);
        assert_eq!(p0.drain_per_second, Some(10.0));
        assert_eq!(p0.eta_seconds, Some(90.0));
        assert!(p0.lag_seconds.is_some_and(|s| (6.0..9.0).contains(&s)), "{:?}", p0.lag_seconds);
        assert_eq!(p0.owner.as_deref(), Some("me"));
        assert_eq!(p1.stalled_seconds, Some(10.0));
        assert_eq!(overview.eta_seconds, None, "a partition that does not drain has no ETA");
        assert_eq!(overview.alerts.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(), ["unowned"]);

        let overview = projection.observe(
            &mut history,
            &status(&[(0, 1000, 1000), (1, 5, 55)]),
            &owners,
            &[],
            at(25),
            Utc::now(),
        );
        assert_eq!(overview.partitions[0].lag_seconds, Some(0.0), "caught up");
        assert_eq!(overview.alerts.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(), ["stalled"]);
        assert_eq!(
            projection.trend().len(),
            0,
            "record() keeps the trend; observe() alone is what is tested here"
        );
        assert_eq!(history.trend.len(), 3);
    }
}
