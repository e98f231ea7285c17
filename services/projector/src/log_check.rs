//! Whether the read models belong to the log the broker serves now.
//!
//! A read-model version records the identity of the log it was built from (cluster id and topic
//! id, see `eventline_runtime::log_identity`). The projector binds an unbound version to the log
//! on start, refuses to project a version built from another log, and keeps checking while it
//! runs; `eventline-projector log-identity` shows both sides for operators and `make up`.

use eventline_read_models::{self as read_models, LogMatch, Version};
use eventline_runtime::config::KafkaConfig;
use eventline_runtime::log_identity::{self, IdentityError};
use serde::Serialize;
use sqlx::PgPool;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum LogFinding {
    /// The version was built from this log (or was just bound to it).
    Same { log: String },
    /// The version was built from another log, or its log's topic is gone.
    Other { recorded: String, current: String },
    /// The version records no log yet, and binding was not asked for.
    Unbound,
    /// The broker did not say which log it serves; nothing can be concluded.
    Unknown { reason: String },
}

impl LogFinding {
    /// The operator's way out, for error messages.
    pub fn refusal(&self, topic: &str, version: Version) -> Option<String> {
        let LogFinding::Other { recorded, current } = self else { return None };
        Some(format!(
            "the read models ({version}) were built from another log ({recorded}) than the broker serves \
             for topic {topic:?} now ({current}); their positions mean nothing in this log. Reset them \
             (`eventline-projector reset --yes`) to project this log from the start, or point \
             KAFKA_BROKERS/EVENTLINE_TOPIC back at the log they came from"
        ))
    }
}

/// Compares `version` with the log `kafka` names; with `bind`, records the log on an unbound
/// version.
pub async fn check(
    public: &PgPool,
    version: Version,
    kafka: &KafkaConfig,
    bind: bool,
) -> anyhow::Result<LogFinding> {
    let current = match log_identity::fetch(&kafka.brokers, &kafka.security, &kafka.topic).await {
        Ok(current) => current,
        Err(IdentityError::NoSuchTopic(_)) => return topic_missing(public, version, &kafka.topic).await,
        Err(error) => return Ok(LogFinding::Unknown { reason: error.to_string() }),
    };
    let recorded = read_models::recorded_log(public, version).await?;
    Ok(match read_models::compare_log(recorded, &current) {
        LogMatch::Same => LogFinding::Same { log: current.to_string() },
        LogMatch::Other { recorded, current } => {
            LogFinding::Other { recorded: recorded.to_string(), current: current.to_string() }
        }
        LogMatch::Unbound => {
            // Read models from before log identities were recorded: their positions must at
            // least lie within this log.
            if let Some(past) = positions_past_the_end(public, version, kafka).await? {
                LogFinding::Other {
                    recorded: format!("an unrecorded log ({past})"),
                    current: current.to_string(),
                }
            } else if bind {
                read_models::bind_log(public, version, &current).await?;
                tracing::info!(%version, log = %current, "Read models bound to the log they are projected from");
                LogFinding::Same { log: current.to_string() }
            } else {
                LogFinding::Unbound
            }
        }
    })
}

/// The topic does not exist: a version that records a log, or has applied anything, has lost its
/// log (a new broker, a deleted topic); an empty one has nothing to lose.
async fn topic_missing(public: &PgPool, version: Version, topic: &str) -> anyhow::Result<LogFinding> {
    let current = "no such topic".to_owned();
    if let Some(recorded) = read_models::recorded_log(public, version).await? {
        return Ok(LogFinding::Other { recorded: recorded.to_string(), current });
    }
    let checkpoints = eventline_read_models::checkpoints::load_version(public, version, topic).await?;
    Ok(match checkpoints.values().any(|&next| next > 0) {
        true => LogFinding::Other { recorded: "an unrecorded log".to_owned(), current },
        false => LogFinding::Unbound,
    })
}

/// For a version that records no log: a partition whose checkpoint lies past the end of the log,
/// which then cannot be the one the version was built from.
async fn positions_past_the_end(
    public: &PgPool,
    version: Version,
    kafka: &KafkaConfig,
) -> anyhow::Result<Option<String>> {
    let checkpoints = eventline_read_models::checkpoints::load_version(public, version, &kafka.topic).await?;
    if checkpoints.values().all(|&next| next == 0) {
        return Ok(None);
    }
    let ends = crate::live::status::high_watermarks(kafka).await?;
    Ok(checkpoints.iter().find_map(|(&partition, &next)| {
        let end = ends.iter().find(|(p, _)| *p == partition).and_then(|(_, end)| *end);
        match end {
            Some(end) if next > end => {
                Some(format!("partition {partition} applied up to offset {next}, the log ends at {end}"))
            }
            _ => None,
        }
    }))
}
