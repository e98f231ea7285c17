//! The Kubernetes manifests (deploy/kubernetes), checked without a cluster: both overlays are
//! rendered with `kubectl kustomize`, every object is validated against the Kubernetes schemas
//! (kubernetes-validate, strict: no unknown fields), and the rendered objects are read as data
//! for what a schema cannot say: probes, limits and the security context on every container, an
//! autoscaler for the two APIs and none for the projector, whose replicas stay within the topic's
//! partitions, migrations before the services, and where the dependencies come from.
//!
//! Not verified here, because no cluster runs: that the pods schedule, start and become ready,
//! and that the network policies admit exactly the traffic they mean to.

use std::path::PathBuf;
use std::process::Command;

use crate::support::tools::{python_venv, repository, yaml_documents};
use serde_json::Value;

/// Kubernetes version the objects are validated against.
const KUBERNETES: &str = "1.35.0";

fn kubectl() -> PathBuf {
    std::env::var_os("EVENTLINE_KUBECTL").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/eventline/kubectl-v35-2.2.2/kubectl")
    })
}

/// `kubectl kustomize` of an overlay, as YAML.
fn render(overlay: &str) -> String {
    let dir = repository().join("deploy/kubernetes/overlays").join(overlay);
    let output = Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{} ({e}): `make test` installs kubectl", kubectl().display()));
    assert!(output.status.success(), "kustomize {overlay}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn validate(overlay: &str, yaml: &str) {
    let file = std::env::temp_dir().join(format!("eventline-k8s-{overlay}-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new(python_venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (make test installs it)");
    let printed =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::remove_file(&file).unwrap();
    assert!(output.status.success() && !printed.contains("ERROR"), "{overlay} does not validate:\n{printed}");
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn config(objects: &[Value], key: &str) -> String {
    let config = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    config["data"][key].as_str().unwrap().to_owned()
}

/// The checks every overlay must pass.
fn check(overlay: &str) -> Vec<Value> {
    let yaml = render(overlay);
    validate(overlay, &yaml);
    let objects = yaml_documents(&yaml);
    let pods: Vec<(&str, &Value)> = objects
        .iter()
        .filter(|o| ["Deployment", "StatefulSet", "Job"].contains(&o["kind"].as_str().unwrap()))
        .map(|o| (o["metadata"]["name"].as_str().unwrap(), &o["spec"]["template"]["spec"]))
        .collect();
    for (name, pod) in &pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}/{name} may run as root");
        let containers = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(pod["initContainers"].as_array().into_iter().flatten());
        for container in containers {
            let which = format!("{overlay}/{name}/{}", container["name"]);
            let limits = &container["resources"]["limits"];
            assert!(limits["cpu"].is_string() && limits["memory"].is_string(), "{which} has no limits");
            assert!(container["resources"]["requests"]["memory"].is_string(), "{which} requests nothing");
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{which}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{which}");
        }
    }
    for service in ["eventline-command", "eventline-query", "eventline-projector"] {
        let deployment =
            named(&objects, "Deployment", service).unwrap_or_else(|| panic!("{overlay}: no {service}"));
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{overlay}/{service}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{overlay}/{service}");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{overlay}/{service}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{overlay}/{service}");
        assert!(named(&objects, "PodDisruptionBudget", service).is_some(), "{overlay}: {service} has no PDB");
        assert!(named(&objects, "Service", service).is_some(), "{overlay}: {service} has no Service");
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{overlay}/{service} is not scraped");
        let autoscaled = named(&objects, "HorizontalPodAutoscaler", service).is_some();
        assert_eq!(autoscaled, service != "eventline-projector", "{overlay}/{service}: autoscaler");
        if service != "eventline-command" {
            // Started only once the migration job has done its work.
            let init = &pod["initContainers"][0]["command"];
            assert_eq!(
                init,
                &serde_json::json!(["eventline-projector", "migrate", "--wait", "--timeout-secs", "600"])
            );
        }
    }
    // The projector's replicas: one consumer per partition does work.
    let partitions: i64 = config(&objects, "EVENTLINE_TOPIC_PARTITIONS").parse().unwrap();
    let projectors =
        named(&objects, "Deployment", "eventline-projector").unwrap()["spec"]["replicas"].as_i64().unwrap();
    assert!(
        (1..=partitions).contains(&projectors),
        "{overlay}: {projectors} projectors for {partitions} partitions"
    );
    let migrate = named(&objects, "Job", "eventline-migrate").expect("the migration job");
    assert_eq!(
        migrate["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["eventline-projector", "migrate"])
    );
    // API tokens come from a Secret; nothing else holds them. Both APIs take them.
    for service in ["eventline-command", "eventline-query"] {
        let container =
            &named(&objects, "Deployment", service).unwrap()["spec"]["template"]["spec"]["containers"][0];
        let token = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "EVENTLINE_API_TOKENS")
            .unwrap();
        let secret = token["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap();
        assert!(secret.starts_with("eventline-api-tokens"), "{overlay}/{service}");
    }
    // Production clients sign in with the identity provider the overlay names.
    if overlay == "production" {
        assert!(config(&objects, "EVENTLINE_JWKS_URL").starts_with("https://"), "{overlay}: JWKS URL");
        assert!(!config(&objects, "EVENTLINE_JWT_ISSUER").is_empty(), "{overlay}: issuer");
        assert!(!config(&objects, "EVENTLINE_JWT_AUDIENCE").is_empty(), "{overlay}: audience");
    }
    assert!(!yaml.contains("EVENTLINE_ALLOW_UNAUTHENTICATED"), "{overlay} runs the API without tokens");
    assert!(
        objects.iter().filter(|o| o["kind"] == "NetworkPolicy").count() >= 4,
        "{overlay}: network policies"
    );
    assert!(config(&objects, "OTEL_EXPORTER_OTLP_ENDPOINT").is_empty() || overlay == "production");
    objects
}

#[test]
fn the_dev_overlay_renders_validates_and_runs_its_dependencies_in_the_cluster() {
    let objects = check("dev");
    for dependency in ["kafka", "postgres", "redis"] {
        assert!(named(&objects, "StatefulSet", dependency).is_some(), "dev has no in-cluster {dependency}");
    }
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        assert_eq!(deployment["spec"]["replicas"], 1, "dev runs single replicas");
    }
    assert!(objects.iter().any(|o| o["kind"] == "Secret"
        && o["metadata"]["name"].as_str().unwrap().starts_with("eventline-connections")));
}

#[test]
fn the_production_overlay_renders_validates_and_uses_external_dependencies() {
    let objects = check("production");
    assert!(
        !objects.iter().any(|o| o["kind"] == "StatefulSet"),
        "production runs no dependency in the cluster"
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "production Secrets are created apart, never committed"
    );
    assert_eq!(config(&objects, "EVENTLINE_MANAGE_TOPIC"), "false", "the topic is operator-managed");
    assert!(!config(&objects, "OTEL_EXPORTER_OTLP_ENDPOINT").is_empty(), "the OTLP endpoint is set");
    // Managed dependencies are reached over TLS with credentials; the CA files reach every
    // container that connects (init containers included) from the eventline-tls Secret.
    assert_eq!(config(&objects, "KAFKA_SECURITY_PROTOCOL"), "sasl_ssl");
    assert_eq!(config(&objects, "KAFKA_SASL_MECHANISM"), "SCRAM-SHA-512");
    for file in [config(&objects, "KAFKA_SSL_CA_LOCATION"), config(&objects, "REDIS_CA_CERT")] {
        assert!(file.starts_with("/etc/eventline/tls/"), "{file}");
    }
    for workload in objects.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job") {
        let spec = &workload["spec"]["template"]["spec"];
        let volumes = spec["volumes"].as_array().unwrap();
        assert!(
            volumes.iter().any(|v| v["secret"]["secretName"] == "eventline-tls"),
            "{}",
            workload["metadata"]["name"]
        );
        let containers = spec["containers"].as_array().unwrap().iter();
        for container in containers.chain(spec["initContainers"].as_array().into_iter().flatten()) {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert!(
                mounts.iter().any(|m| m["mountPath"] == "/etc/eventline/tls"),
                "{} has no CA files",
                container["name"]
            );
        }
    }
    let namespace = objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    // The Strimzi example keeps events forever and has the partitions the services are told.
    let topic =
        &objects_of(&repository().join("deploy/kubernetes/overlays/production/strimzi-kafkatopic.yaml"))[0];
    assert_eq!(topic["kind"], "KafkaTopic");
    assert_eq!(topic["spec"]["config"]["retention.ms"], -1);
    assert_eq!(topic["spec"]["config"]["cleanup.policy"], "delete");
    assert_eq!(
        topic["spec"]["partitions"].as_i64().unwrap().to_string(),
        config(&objects, "EVENTLINE_TOPIC_PARTITIONS")
    );
    assert_eq!(topic["metadata"]["name"], config(&objects, "EVENTLINE_TOPIC"));
}

fn objects_of(path: &std::path::Path) -> Vec<Value> {
    yaml_documents(&std::fs::read_to_string(path).unwrap())
}
