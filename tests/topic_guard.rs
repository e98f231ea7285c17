//! The log kept forever, really (issue 45): every topic setting that deletes or compacts history
//! is refused on an existing topic, whether or not the services manage it, and a topic altered
//! under running services turns their `/readyz` false with the setting named, until it is fixed.
//! (`remote.log.delete.on.disable` needs a broker with tiered storage; its rule is unit-tested in
//! `eventline_runtime::topic_guard`.)

use crate::support;

use std::time::Duration;

use eventline_runtime::kafka::{TopicError, client_config, ensure_topic};
use eventline_testkit::{TestEnv, eventually, http};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use serde_json::Value;

/// Sets the topic's settings, keeping history unless `setting` says otherwise (an AlterConfigs
/// request replaces every setting it does not name with the broker's default, and the broker's
/// default retention is seven days).
async fn alter(env: &TestEnv, setting: &str, value: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config(&env.kafka).create().unwrap();
    let mut config = AlterConfig::new(ResourceSpecifier::Topic(&env.kafka.topic));
    for (name, kept) in [("retention.ms", "-1"), ("retention.bytes", "-1"), ("cleanup.policy", "delete")] {
        config = config.set(name, if name == setting { value } else { kept });
    }
    if !["retention.ms", "retention.bytes", "cleanup.policy"].contains(&setting) {
        config = config.set(setting, value);
    }
    let results = admin.alter_configs([&config], &AdminOptions::new()).await.unwrap();
    for result in results {
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_that_deletes_history_is_refused_on_an_existing_topic_managed_or_not() {
    for (setting, value) in [
        ("retention.ms", "604800000"),
        ("retention.bytes", "1073741824"),
        ("cleanup.policy", "compact"),
        ("cleanup.policy", "compact,delete"),
    ] {
        let env = TestEnv::new().await;
        env.create_topic().await;
        alter(&env, setting, value).await;
        for manage_topic in [true, false] {
            let kafka = eventline_runtime::config::KafkaConfig { manage_topic, ..env.kafka.clone() };
            match ensure_topic(&kafka).await {
                Err(TopicError::NotForever { setting: named, .. }) => assert_eq!(named, setting),
                other => panic!("{setting}={value} (manage_topic {manage_topic}) was not refused: {other:?}"),
            }
        }
        // The services refuse to start on it, naming the setting.
        let refused = eventline_projector::Application::build(support::projector_config(&env, "guard")).await;
        let error = format!("{:#}", refused.err().expect("the projector refused the topic"));
        assert!(error.contains(setting), "{error}");
    }
}

async fn readyz(service: &support::Running) -> (u16, Value) {
    let response = http().get(service.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn reason(body: &Value) -> Option<String> {
    let checks = body["checks"].as_array()?;
    checks.iter().find(|c| c["name"] == "log kept forever")?["reason"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_altered_under_running_services_turns_readyz_false_until_it_is_fixed() {
    let env = TestEnv::new().await;
    env.create_topic().await;
    let mut projector_config = support::projector_config(&env, "guard");
    projector_config.kafka.topic_check_secs = 1;
    let mut command_config = support::command_config(&env);
    command_config.kafka.topic_check_secs = 1;
    let projector = support::projector_with(projector_config).await;
    let command = support::command_with(command_config).await;
    for service in [&projector, &command] {
        eventually(Duration::from_secs(30), "ready", || async {
            (readyz(service).await.0 == 200).then_some(())
        })
        .await;
    }

    alter(&env, "retention.ms", "3600000").await;
    for service in [&projector, &command] {
        let reason = eventually(Duration::from_secs(30), "/readyz to refuse the altered topic", || async {
            let (status, body) = readyz(service).await;
            (status == 503).then(|| reason(&body)).flatten()
        })
        .await;
        assert!(reason.contains("retention.ms=3600000"), "{reason}");
    }

    alter(&env, "retention.ms", "-1").await;
    for service in [&projector, &command] {
        eventually(Duration::from_secs(30), "ready again", || async {
            (readyz(service).await.0 == 200).then_some(())
        })
        .await;
    }
    projector.stop().await.unwrap();
    command.stop().await.unwrap();
}
