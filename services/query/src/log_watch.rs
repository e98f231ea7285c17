//! Whether the live read models belong to the log the broker serves.
//!
//! The read models record the identity of the log they were built from (cluster and topic id).
//! Pointed at another log (a new broker with an empty log, a recreated topic), their positions
//! mean nothing: a Consistency-Token from the new log could look "reached" and stale data would be
//! served as current. So the service checks every few seconds and, while the logs differ, is not
//! ready and answers reads with `503 read-models-from-another-log`. A broker that does not answer
//! changes nothing: the read models stay a consistent snapshot of their log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventline_events::ConsistencyToken;
use eventline_read_models::{self as read_models, LogMatch};
use eventline_runtime::config::KafkaSecurity;
use eventline_runtime::log_end;
use eventline_runtime::log_identity::{self, IdentityError};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The latest verdict: `Some(explanation)` while the read models belong to another log; and the
/// topic's partition count, once the broker has told it (a token naming a partition beyond it
/// was not issued by this log).
#[derive(Clone)]
pub struct LogWatch {
    other: watch::Receiver<Option<String>>,
    partitions: watch::Receiver<Option<u32>>,
    ends: Arc<LogEnds>,
}

/// The log's end offsets as last asked (partition → high watermark), and when that ask was sent:
/// ends asked after a request arrived cover every position issued before it.
struct LogEnds {
    brokers: String,
    security: KafkaSecurity,
    topic: String,
    latest: tokio::sync::Mutex<Option<(Instant, BTreeMap<i32, i64>)>>,
}

impl LogWatch {
    /// How often the broker is asked.
    const PERIOD: Duration = Duration::from_secs(5);

    /// Starts checking `topic` on `brokers` (empty: never checks) against the live version.
    pub fn start(
        brokers: String,
        security: KafkaSecurity,
        topic: String,
        public: PgPool,
        shutdown: CancellationToken,
    ) -> LogWatch {
        let (tx, rx) = watch::channel(None);
        let (partitions_tx, partitions) = watch::channel(None);
        if !brokers.is_empty() {
            let (brokers, security, topic) = (brokers.clone(), security.clone(), topic.clone());
            tokio::spawn(async move {
                loop {
                    let (verdict, count) = check(&brokers, &security, &topic, &public).await;
                    if let Some(count) = count {
                        partitions_tx.send_if_modified(|current| {
                            let changed = *current != Some(count);
                            *current = Some(count);
                            changed
                        });
                    }
                    if let Some(verdict) = verdict {
                        tx.send_if_modified(|current| {
                            let changed = *current != verdict;
                            if changed {
                                match &verdict {
                                    Some(other) => tracing::error!(%other, "Not serving: the read models belong to another log"),
                                    None => tracing::info!("The read models belong to the log the broker serves"),
                                }
                                *current = verdict;
                            }
                            changed
                        });
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Self::PERIOD) => {}
                    }
                }
            });
        }
        let ends = Arc::new(LogEnds { brokers, security, topic, latest: tokio::sync::Mutex::new(None) });
        LogWatch { other: rx, partitions, ends }
    }

    /// How many partitions the topic has, if the broker has said.
    pub fn partitions(&self) -> Option<u32> {
        *self.partitions.borrow()
    }

    /// The first position of `token` at or beyond the end of the log, which the log never issued:
    /// the command service hands out a position only once the log has acknowledged it. Checked
    /// against the ends last asked, and asked anew (one request at a time; requests waiting meanwhile
    /// share its answer) before anything is called beyond them. `None` also when the broker does
    /// not answer within `bound`: then nothing can be ruled out.
    pub async fn beyond_end(&self, token: &ConsistencyToken, bound: Duration) -> Option<(i32, i64, i64)> {
        if self.ends.brokers.is_empty() {
            return None;
        }
        let asked = Instant::now();
        let mut latest = self.ends.latest.lock().await;
        if let Some((when, ends)) = latest.as_ref() {
            let beyond = first_beyond(token, ends);
            if beyond.is_none() || *when >= asked {
                return beyond;
            }
        }
        // The time the ask is sent, not answered: an ask sent before this request's token was
        // issued may not cover it, however late its answer comes.
        let sent = Instant::now();
        match log_end::end_offsets(&self.ends.brokers, &self.ends.security, &self.ends.topic, bound).await {
            Ok(ends) => {
                let beyond = first_beyond(token, &ends);
                *latest = Some((sent, ends));
                beyond
            }
            Err(error) => {
                tracing::debug!(%error, "Could not ask the broker where the log ends");
                None
            }
        }
    }

    /// Why the read models cannot be served as current, if they belong to another log.
    pub fn other_log(&self) -> Option<String> {
        self.other.borrow().clone()
    }
}

/// The verdict — `Some(Some(why))`: another log; `Some(None)`: the same log or nothing to compare;
/// `None`: the broker or the database did not answer, keep the last verdict — and the topic's
/// partition count when the broker answered.
async fn check(
    brokers: &str,
    security: &KafkaSecurity,
    topic: &str,
    public: &PgPool,
) -> (Option<Option<String>>, Option<u32>) {
    let described = log_identity::describe(brokers, security, topic).await;
    let partitions = described.as_ref().ok().map(|metadata| metadata.partitions);
    let Some(recorded) = recorded(public).await else { return (None, partitions) };
    let current = match described {
        Ok(metadata) => metadata.identity,
        Err(IdentityError::NoSuchTopic(_)) => {
            let why = recorded.map(|recorded| {
                format!("the read models were built from {recorded}, but topic {topic:?} no longer exists")
            });
            return (Some(why), None);
        }
        Err(error) => {
            tracing::debug!(%error, "Could not ask the broker which log it serves");
            return (None, None);
        }
    };
    let verdict = match read_models::compare_log(recorded, &current) {
        LogMatch::Other { recorded, current } => Some(format!(
            "the read models were built from {recorded}, but the broker serves {current} for topic {topic:?}"
        )),
        LogMatch::Same | LogMatch::Unbound => None,
    };
    (Some(verdict), partitions)
}

/// The log the live version records, if the database answers (`Some(None)`: none recorded).
async fn recorded(public: &PgPool) -> Option<Option<eventline_runtime::log_identity::LogIdentity>> {
    let live = read_models::live(public, read_models::Projection::Main).await.ok()?;
    read_models::recorded_log(public, live).await.ok()
}

/// The first position of `token` at or beyond its partition's end: (partition, offset, end).
/// Partitions the ends do not name are left to the partition-count check.
fn first_beyond(token: &ConsistencyToken, ends: &BTreeMap<i32, i64>) -> Option<(i32, i64, i64)> {
    token.positions().find_map(|p| {
        let end = *ends.get(&p.partition)?;
        (p.offset >= end).then_some((p.partition, p.offset, end))
    })
}
