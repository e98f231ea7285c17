//! The event log is kept forever: which topic settings would delete or compact its history, and
//! which would let the broker lose writes it acknowledged, read from the broker at start-up and
//! again while the service runs (a topic altered under a running service turns `/readyz` false).
//!
//! Kafka 4.4's topic settings that delete history, each refused:
//! - `retention.ms` other than `-1` (segments older than it are deleted);
//! - `retention.bytes` other than `-1` (the oldest segments are deleted past the size);
//! - `cleanup.policy` with `compact` (only the latest record per key is kept);
//! - `remote.log.delete.on.disable=true` on a tiered topic (turning tiering off deletes the
//!   remote copy, which is the only one once local retention has passed).
//!
//! Tiered storage is fine when history is kept remotely: `local.retention.*` only says how long a
//! segment stays on the broker's disk once copied, and with `remote.log.copy.disable=true` Kafka
//! falls back on `retention.*` (KIP-950), which is checked. Settings that only matter with
//! compaction (`delete.retention.ms`, `min/max.compaction.lag.ms`) follow from `cleanup.policy`.
//!
//! Warned, with the setting named: `unclean.leader.election.enable=true` (a replica that missed
//! acknowledged writes may lead) and `min.insync.replicas=1` with more than one replica (`acks=all`
//! is then satisfied by one broker, whose loss loses the write).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::kafka::client_config;

/// A topic's settings as the broker describes them (name → value).
pub type Settings = BTreeMap<String, String>;

/// The first setting of `settings` that deletes or compacts history, with its value.
pub fn deletes_history(settings: &Settings) -> Option<(&'static str, String)> {
    let value = |name: &str| settings.get(name).map(|v| v.trim().to_owned());
    for name in ["retention.ms", "retention.bytes"] {
        if let Some(v) = value(name).filter(|v| v != "-1") {
            return Some((name, v));
        }
    }
    if let Some(policy) = value("cleanup.policy").filter(|v| v.split(',').any(|p| p.trim() == "compact")) {
        return Some(("cleanup.policy", policy));
    }
    let tiered = value("remote.storage.enable").as_deref() == Some("true");
    if let Some(v) = value("remote.log.delete.on.disable").filter(|v| tiered && v == "true") {
        return Some(("remote.log.delete.on.disable", v));
    }
    None
}

/// Settings that let the broker lose writes it acknowledged, each as a sentence naming it.
pub fn write_loss_risks(settings: &Settings, replicas: usize) -> Vec<String> {
    let mut risks = Vec::new();
    if settings.get("unclean.leader.election.enable").is_some_and(|v| v == "true") {
        risks.push(
            "unclean.leader.election.enable=true: a replica that missed acknowledged writes may become leader"
                .to_owned(),
        );
    }
    if replicas > 1 && settings.get("min.insync.replicas").is_some_and(|v| v.trim() == "1") {
        risks.push(format!(
            "min.insync.replicas=1 with {replicas} replicas: acks=all is satisfied by one broker, whose loss loses the write"
        ));
    }
    risks
}

/// What the guard found last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Not checked yet.
    Unchecked,
    /// The topic keeps its history.
    KeptForever,
    /// A setting deletes or compacts history: the service refuses to serve.
    Deletes { setting: &'static str, value: String },
    /// The broker does not let us read the topic's settings (ACLs without DescribeConfigs), or
    /// does not answer: we cannot say, and say so.
    Unverified(String),
}

/// Why a topic is refused, as the error and `/readyz` say it.
pub fn refusal(topic: &str, setting: &str, value: &str) -> String {
    format!(
        "topic {topic:?} has {setting}={value}, which deletes or compacts history, but the event log must be kept \
         forever; fix the topic's configuration or use another topic"
    )
}

/// Reads the topic's settings and the number of replicas of its first partition.
pub async fn describe(config: &KafkaConfig) -> Result<(Settings, usize), String> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(config).create().map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(&config.topic)], &options)
        .await
        .map_err(|e| format!("the broker did not describe the topic's configuration: {e}"))?;
    let resource = match results.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(
            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed,
        )) => {
            return Err(
                "not allowed to read the topic's configuration (the DescribeConfigs ACL is missing)".into()
            );
        }
        Some(Err(code)) => {
            return Err(format!("the broker refused to describe the topic's configuration: {code}"));
        }
        None => return Err("the broker described no configuration".into()),
    };
    let settings: Settings =
        resource.entries.into_iter().filter_map(|entry| Some((entry.name, entry.value?))).collect();
    let consumer: BaseConsumer =
        client_config(config).create().map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let topic = config.topic.clone();
    let replicas = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .ok()
            .and_then(|metadata| metadata.topics().first()?.partitions().first().map(|p| p.replicas().len()))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(1);
    Ok((settings, replicas))
}

/// Checks the topic once: what it found, logging write-loss risks as warnings.
pub async fn check(config: &KafkaConfig) -> Finding {
    match describe(config).await {
        Ok((settings, replicas)) => {
            for risk in write_loss_risks(&settings, replicas) {
                tracing::warn!(topic = %config.topic, risk, "The topic may lose acknowledged writes");
            }
            match deletes_history(&settings) {
                Some((setting, value)) => Finding::Deletes { setting, value },
                None => Finding::KeptForever,
            }
        }
        Err(reason) => Finding::Unverified(reason),
    }
}

/// The topic's settings watched while a service runs: what `/readyz` says about them.
#[derive(Debug, Clone)]
pub struct TopicGuard {
    topic: String,
    found: Arc<Mutex<Finding>>,
}

impl TopicGuard {
    /// A guard that checks `config`'s topic now and every `topic_check_secs` after, for as long
    /// as the guard (or a clone) lives.
    pub fn watch(config: KafkaConfig) -> TopicGuard {
        let guard =
            TopicGuard { topic: config.topic.clone(), found: Arc::new(Mutex::new(Finding::Unchecked)) };
        let found = Arc::downgrade(&guard.found);
        let every = Duration::from_secs(config.topic_check_secs.max(1));
        tokio::spawn(async move {
            loop {
                let finding = check(&config).await;
                let Some(found) = found.upgrade() else { return };
                record(&config.topic, &found, finding);
                drop(found);
                tokio::time::sleep(every).await;
            }
        });
        guard
    }

    /// Why the service must not serve (the topic deletes history), for `/readyz`.
    pub fn refusal(&self) -> Option<String> {
        match self.found.lock().ok()?.clone() {
            Finding::Deletes { setting, value } => Some(refusal(&self.topic, setting, &value)),
            _ => None,
        }
    }

    /// What `/readyz` says: not ready while the topic deletes history; ready, with the reason,
    /// when the settings cannot be read.
    pub fn readiness(&self) -> crate::http::Check {
        let found = self.found.lock().map(|f| f.clone()).unwrap_or(Finding::Unchecked);
        match found {
            Finding::Deletes { setting, value } => crate::http::Check::failing_because(
                "log kept forever",
                Some(refusal(&self.topic, setting, &value)),
            ),
            Finding::Unverified(reason) => crate::http::Check {
                name: "log kept forever",
                ok: true,
                reason: Some(format!("unverified: {reason}")),
            },
            Finding::KeptForever | Finding::Unchecked => crate::http::Check::new("log kept forever", true),
        }
    }
}

/// Keeps the latest finding, saying so when it changes.
fn record(topic: &str, found: &Mutex<Finding>, finding: Finding) {
    let Ok(mut current) = found.lock() else { return };
    if *current != finding {
        match &finding {
            Finding::Deletes { setting, value } => tracing::error!(
                topic,
                setting,
                value,
                "The event topic now deletes or compacts history; not ready until it is fixed"
            ),
            Finding::Unverified(reason) => {
                tracing::warn!(topic, reason, "Cannot check that the event topic keeps its history")
            }
            Finding::KeptForever | Finding::Unchecked => {
                tracing::info!(topic, "The event topic keeps its history")
            }
        }
    }
    *current = finding;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_setting_that_deletes_history_is_named() {
        let kept = [("retention.ms", "-1"), ("retention.bytes", "-1"), ("cleanup.policy", "delete")];
        assert_eq!(deletes_history(&settings(&kept)), None);
        for (setting, value) in [
            ("retention.ms", "604800000"),
            ("retention.bytes", "1073741824"),
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "delete,compact"),
        ] {
            let mut altered = settings(&kept);
            altered.insert(setting.into(), value.into());
            assert_eq!(deletes_history(&altered), Some((setting, value.to_owned())), "{setting}={value}");
        }
        // Tiered storage keeping history remotely is fine; deleting it when tiering is turned off is not.
        let mut tiered = settings(&kept);
        tiered.extend(settings(&[("remote.storage.enable", "true"), ("local.retention.ms", "3600000")]));
        assert_eq!(deletes_history(&tiered), None);
        tiered.insert("remote.log.delete.on.disable".into(), "true".into());
        assert_eq!(deletes_history(&tiered), Some(("remote.log.delete.on.disable", "true".into())));
    }

    #[test]
    fn settings_that_can_lose_acknowledged_writes_are_warned_about() {
        assert!(write_loss_risks(&settings(&[("min.insync.replicas", "1")]), 1).is_empty());
        assert_eq!(write_loss_risks(&settings(&[("min.insync.replicas", "1")]), 3).len(), 1);
        assert_eq!(write_loss_risks(&settings(&[("unclean.leader.election.enable", "true")]), 1).len(), 1);
        assert!(write_loss_risks(&settings(&[("min.insync.replicas", "2")]), 3).is_empty());
    }
}
