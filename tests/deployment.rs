//! The container deployment, checked without a Docker engine, by real parsers:
//!
//! - `docker-compose.yml` through Compose itself (`docker-compose config`, which validates it
//!   against the Compose schema and resolves it), and the resolved file read as data (YAML → JSON)
//!   for the checks below: ports, health checks, start order, volumes, mounts;
//! - the `Dockerfile` through hadolint (its Dockerfile parser and lint rules, with the exceptions in
//!   `.hadolint.yaml`), plus its stages and `COPY` sources.
//!
//! Also: the README's configuration table against each binary's `--help` (every setting listed,
//! with the default the binary has).
//!
//! Not verified here, because no Docker engine runs: that the image builds, that the containers
//! start and become healthy, and that the stack works end to end in containers. `make up` runs the
//! same binaries natively, and `.ci/run` walks one user through that.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::support::tools::{python_venv, repository, yaml_documents};
use serde_json::Value;

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

/// The compose file with every profile, as Compose resolved it, read as data.
fn resolved() -> Value {
    let mut documents = yaml_documents(&compose(&["--profile", "monitoring", "config"]));
    assert_eq!(documents.len(), 1, "the resolved compose file is one document");
    documents.remove(0)
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
    // Prometheus and Grafana only come with the profile; everything else always.
    let resolved = resolved();
    for (name, service) in resolved["services"].as_object().unwrap() {
        let profiles = service["profiles"].clone();
        if ["grafana", "prometheus"].contains(&name.as_str()) {
            assert_eq!(profiles, serde_json::json!(["monitoring"]), "{name}");
        } else {
            assert!(profiles.is_null(), "{name} is in a profile: {profiles}");
        }
    }
}

#[test]
fn the_compose_file_wires_health_ports_and_data_as_documented() {
    let resolved = resolved();
    let services = resolved["services"].as_object().unwrap();
    // Ports of the runtime contract (DESIGN.md) and of Jaeger (UI, OTLP in), Prometheus, Grafana.
    let published: BTreeSet<u64> = services
        .values()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["published"].as_u64().or_else(|| p["published"].as_str()?.parse().ok()))
        .collect();
    for port in [8081, 8082, 8083, 9092, 5432, 6379, 16686, 4317, 4318, 9090, 3000] {
        assert!(published.contains(&port), "port {port} is not published: {published:?}");
    }
    // Every long-running service has a health check; the one-shot migration does not need one.
    for (name, service) in services {
        if name != "migrate" {
            assert!(service["healthcheck"]["test"].is_array(), "{name} has no health check");
        }
    }
    // Migrations run once before the services that need the schema; the services wait for what
    // they need to be healthy.
    for name in ["projector", "query"] {
        assert_eq!(
            services[name]["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{name} does not wait for migrate"
        );
    }
    for (name, dependency) in
        [("command", "kafka"), ("command", "redis"), ("projector", "kafka"), ("migrate", "postgres")]
    {
        assert_eq!(
            services[name]["depends_on"][dependency]["condition"], "service_healthy",
            "{name} does not wait for a healthy {dependency}"
        );
    }
    // Data lives in named volumes; Redis persists with its append-only file. (Compose 1.x
    // resolves mounts to `source:target:mode`, the source an absolute path for a bind mount.)
    let mounts = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect()
    };
    for (service, volume) in [("kafka", "kafka-data"), ("postgres", "postgres-data"), ("redis", "redis-data")]
    {
        assert!(
            mounts(service).iter().any(|m| m.split(':').next() == Some(volume)),
            "{service} keeps no data in the named volume {volume}: {:?}",
            mounts(service)
        );
        assert!(
            resolved["volumes"].as_object().unwrap().contains_key(volume),
            "volume {volume} is not declared"
        );
    }
    let redis_command = services["redis"]["command"].to_string();
    assert!(redis_command.contains("appendonly"), "Redis runs without append-only persistence");
    for name in ["command", "projector", "query"] {
        assert_eq!(services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4317");
    }
    // Whatever is bind-mounted from the repository exists.
    for name in services.keys() {
        for source in mounts(name).iter().filter_map(|m| m.split(':').next().filter(|s| s.starts_with('/'))) {
            assert!(Path::new(source).exists(), "docker-compose.yml mounts {source}, which does not exist");
        }
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let root = repository();
    let hadolint = python_venv().join("bin/hadolint");
    let output = Command::new(&hadolint)
        .arg("--config")
        .arg(root.join(".hadolint.yaml"))
        .args(["--format", "json"])
        .arg(root.join("Dockerfile"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} ({e}): `make test` installs hadolint (clients/python/requirements.txt)",
                hadolint.display()
            )
        });
    let findings: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!("hadolint could not parse the Dockerfile: {}", String::from_utf8_lossy(&output.stderr))
    });
    assert_eq!(findings, Value::Array(vec![]), "hadolint findings");
    assert!(output.status.success());
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

/// Every `[env: …]` setting of `binary`'s `--help` (and its subcommands') with its `[default: …]`,
/// read from the help the binary prints with an empty environment (so no value of ours shows).
fn help_settings(binary: &str, path: &mut Vec<String>, found: &mut BTreeMap<String, Option<String>>) {
    let output = Command::new(support::processes::binary(binary))
        .args(path.iter())
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let between = |text: &str, open: &str| -> Option<String> {
        let start = text.find(open)? + open.len();
        let rest = &text[start..];
        Some(rest[..rest.find(']')?].to_owned())
    };
    // An option's block runs from its `--flag` line to the next one.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let flag = line.trim_start().starts_with('-') && line.len() - line.trim_start().len() <= 6;
        if flag || blocks.is_empty() {
            blocks.push(String::new());
        }
        blocks.last_mut().unwrap().push_str(line);
        blocks.last_mut().unwrap().push(' ');
    }
    for block in &blocks {
        if let Some(env) = between(block, "[env: ") {
            let name = env.split('=').next().unwrap().to_owned();
            // A switch (no `<VALUE>`) is off unless given; clap prints an empty default as `""`.
            let switch = !block.split("  ").find(|s| !s.trim().is_empty()).unwrap_or_default().contains('<');
            let default = between(block, "[default: ").filter(|d| d != "\"\"");
            found.insert(name, if switch { Some("false".to_owned()) } else { default });
        }
    }
    let commands = help.split("Commands:").nth(1).map(|s| s.split("\n\n").next().unwrap_or_default());
    for line in commands.unwrap_or_default().lines() {
        let Some(command) = line.split_whitespace().next().filter(|c| *c != "help") else { continue };
        path.push(command.to_owned());
        help_settings(binary, path, found);
        path.pop();
    }
}

/// The code spans (`…`) of a Markdown table cell, in order.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn the_readme_configuration_table_is_what_the_binaries_say() {
    let mut settings = BTreeMap::new();
    for binary in ["eventline-command", "eventline-projector", "eventline-query"] {
        help_settings(binary, &mut Vec::new(), &mut settings);
    }
    assert!(settings.len() > 30, "{settings:?}");
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let table = readme.split("## Configuration").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut documented = BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, default) = (code_spans(cells[1]), cells[2]);
        let defaults = code_spans(default);
        for (i, name) in names.iter().enumerate() {
            // `A` / `B` with `1` / `2`: one default each; a shared description otherwise.
            let value =
                if names.len() > 1 && default.contains(" / ") { defaults.get(i) } else { defaults.first() };
            let unset = default.starts_with("unset") || defaults.is_empty();
            documented.insert(name.clone(), if unset { None } else { value.cloned() });
        }
    }
    let mut wrong = Vec::new();
    for (name, default) in &settings {
        let default = default.clone().filter(|d| !d.is_empty());
        match documented.get(name) {
            None => wrong.push(format!("{name}: not in the README's table")),
            Some(said) if *said != default => {
                wrong.push(format!("{name}: the README says {said:?}, --help says {default:?}"))
            }
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "README.md's configuration table:\n{}", wrong.join("\n"));
}
