//! The container deployment, checked without a Docker engine: `docker-compose.yml` through a real
//! Compose parser (`docker-compose config`, which validates it against the Compose schema), the
//! files it mounts, and the `Dockerfile`'s stages and sources.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::tools::repository;

/// Runs `docker-compose` with `args` on the repository's compose file; returns stdout.
fn compose(args: &[&str]) -> String {
    let root = repository();
    let output = Command::new("docker-compose")
        .arg("--project-directory")
        .arg(&root)
        .arg("-f")
        .arg(root.join("docker-compose.yml"))
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("docker-compose is not installed ({error}); `make test` installs it (apt: docker-compose)")
        });
    assert!(
        output.status.success(),
        "docker-compose {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_compose_file_is_valid_with_and_without_the_monitoring_profile() {
    compose(&["config", "-q"]);
    compose(&["--profile", "monitoring", "config", "-q"]);
    let services: BTreeSet<String> =
        compose(&["--profile", "monitoring", "config", "--services"]).lines().map(str::to_owned).collect();
    let expected = [
        "command",
        "grafana",
        "jaeger",
        "kafka",
        "migrate",
        "postgres",
        "projector",
        "prometheus",
        "query",
        "redis",
    ];
    assert_eq!(services, expected.iter().map(|s| s.to_string()).collect());
    // Prometheus and Grafana only come with the profile.
    let file = std::fs::read_to_string(repository().join("docker-compose.yml")).unwrap();
    assert_eq!(file.matches("profiles: [\"monitoring\"]").count(), 2);
}

#[test]
fn the_compose_file_wires_health_ports_and_data_as_documented() {
    let resolved = compose(&["--profile", "monitoring", "config"]);
    // Ports of the runtime contract (DESIGN.md) and of Jaeger (UI, OTLP in).
    for port in ["8081", "8082", "8083", "9092", "5432", "6379", "16686", "4317", "4318", "9090", "3000"] {
        assert!(resolved.contains(&format!("published: {port}")), "port {port} is not published");
    }
    // Every long-running service has a health check; the one-shot migration does not need one.
    let blocks = service_blocks(&resolved);
    for (service, block) in &blocks {
        if service == "migrate" {
            continue;
        }
        assert!(block.contains("healthcheck:") && block.contains("test:"), "{service} has no health check");
    }
    // Migrations run once before the services that need the schema.
    for service in ["projector", "query"] {
        assert!(
            blocks[service].contains("service_completed_successfully"),
            "{service} does not wait for migrate"
        );
    }
    // Data lives in named volumes; Redis persists with its append-only file.
    for volume in ["kafka-data", "postgres-data", "redis-data"] {
        assert!(resolved.contains(&format!("- {volume}:")), "no named volume {volume}");
    }
    assert!(blocks["redis"].contains("appendonly"), "Redis runs without append-only persistence");
    assert!(resolved.contains("OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317"));
    // Whatever is bind-mounted from the repository exists.
    let root = repository();
    for line in std::fs::read_to_string(root.join("docker-compose.yml")).unwrap().lines() {
        if let Some(mount) = line.trim().strip_prefix("- ./") {
            let source = mount.split(':').next().unwrap();
            assert!(root.join(source).exists(), "docker-compose.yml mounts ./{source}, which does not exist");
        }
    }
}

/// Each service of a resolved compose file (2-space indented under `services:`) with its text.
fn service_blocks(resolved: &str) -> std::collections::BTreeMap<String, String> {
    let mut blocks = std::collections::BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    for line in resolved.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            current = Some(name.trim_end_matches(':').to_owned());
            blocks.insert(current.clone().unwrap(), String::new());
        } else if let Some(name) = &current {
            let block = blocks.get_mut(name).unwrap();
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

#[test]
fn the_dockerfile_copies_what_exists_and_runs_as_a_non_root_user() {
    let root = repository();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let mut stages = BTreeSet::new();
    for line in dockerfile.lines().map(str::trim) {
        if let Some(from) = line.strip_prefix("FROM ") {
            if let Some((_, stage)) = from.split_once(" AS ") {
                stages.insert(stage.trim().to_owned());
            }
        } else if let Some(copy) = line.strip_prefix("COPY ") {
            let words: Vec<&str> = copy.split_whitespace().collect();
            if let Some(stage) = words[0].strip_prefix("--from=") {
                assert!(stages.contains(stage), "COPY --from={stage} names no earlier stage");
            } else {
                for source in &words[..words.len() - 1] {
                    assert!(
                        Path::new(&root.join(source)).exists(),
                        "COPY {source}: no such file in the repository"
                    );
                }
            }
        }
    }
    assert!(dockerfile.contains("USER 10001"), "the runtime image must not run as root");
    assert!(dockerfile.contains("HEALTHCHECK"), "the image has no HEALTHCHECK");
    for binary in ["eventline-command", "eventline-projector", "eventline-query"] {
        assert!(dockerfile.contains(&format!("target/release/{binary}")), "{binary} is not in the image");
    }
    // The build context keeps what the build needs.
    let ignored = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    for needed in ["migrations", "Cargo.lock", "services", "crates"] {
        assert!(!ignored.lines().any(|l| l.trim_matches('/') == needed), ".dockerignore excludes {needed}");
    }
}
