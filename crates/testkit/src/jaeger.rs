//! A real Jaeger v2 of the test's own (in-memory storage, ports of its own), started through
//! `scripts/jaeger.sh` as `make up` starts the local one, and the traces it holds, read back
//! through its query API (`GET /api/v3/traces/{trace id}`, OTLP JSON) as a user would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::kafka::free_port;

/// OTLP span kinds, as Jaeger's API returns them.
pub mod kind {
    pub const INTERNAL: i64 = 1;
    pub const SERVER: i64 = 2;
    pub const CLIENT: i64 = 3;
    pub const PRODUCER: i64 = 4;
    pub const CONSUMER: i64 = 5;
}

/// OTLP status codes.
pub mod status {
    pub const UNSET: i64 = 0;
    pub const OK: i64 = 1;
    pub const ERROR: i64 = 2;
}

/// A span as Jaeger returns it, ids in lowercase hex as in `traceparent`.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// See [`kind`].
    pub kind: i64,
    /// See [`status`].
    pub status: i64,
    /// (trace id, span id) of each linked span.
    pub links: Vec<(String, String)>,
    /// Attribute values as strings (numbers and booleans written out).
    pub attributes: BTreeMap<String, String>,
}

/// The Jaeger process; killed when dropped.
pub struct Jaeger {
    child: Child,
    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: String,
    /// `http://127.0.0.1:<port>`: the query API.
    pub query_url: String,
    health_url: String,
    log: PathBuf,
}

/// How a start ended.
enum Ready {
    Serving,
    /// It exited: one of the ports picked for it was taken by the time it bound it.
    PortTaken,
}

/// The launcher: `scripts/jaeger.sh` of the repository (`crate::repository`).
fn launcher() -> PathBuf {
    crate::repository().join("scripts/jaeger.sh")
}

impl Jaeger {
    /// Starts Jaeger (building it first if the cache has none) and waits until it serves its
    /// query API and receives OTLP. A Jaeger that exits because one of its ports was taken
    /// meanwhile (the ports are picked before it binds them) is started again on other ports.
    pub async fn start() -> anyhow::Result<Jaeger> {
        for _ in 0..3 {
            let mut jaeger = Jaeger::spawn()?;
            match jaeger.ready().await? {
                Ready::Serving => return Ok(jaeger),
                Ready::PortTaken => eprintln!("A port picked for Jaeger was taken; starting it on others"),
            }
        }
        anyhow::bail!("Jaeger found one of its ports taken three times in a row")
    }

    fn spawn() -> anyhow::Result<Jaeger> {
        let log =
            std::env::temp_dir().join(format!("eventline-jaeger-{}.log", uuid::Uuid::new_v4().simple()));
        let ports = [
            ("JAEGER_OTLP_GRPC_PORT", free_port()?),
            ("JAEGER_OTLP_HTTP_PORT", free_port()?),
            ("JAEGER_QUERY_PORT", free_port()?),
            ("JAEGER_QUERY_GRPC_PORT", free_port()?),
            ("JAEGER_HEALTH_PORT", free_port()?),
        ];
        let file = std::fs::File::create(&log)?;
        let child = Command::new("bash")
            .arg(launcher())
            .arg("run")
            .envs(ports.iter().map(|(name, port)| (*name, port.to_string())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Jaeger {
            child,
            otlp_endpoint: format!("http://127.0.0.1:{}", ports[0].1),
            query_url: format!("http://127.0.0.1:{}", ports[2].1),
            health_url: format!("http://127.0.0.1:{}/status", ports[4].1),
            log,
        })
    }

    /// Waits until Jaeger serves, or has exited (never for longer than a first build takes).
    async fn ready(&mut self) -> anyhow::Result<Ready> {
        // The first start on a machine builds Jaeger (minutes); later ones take a second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1200);
        loop {
            let healthy =
                crate::http().get(&self.health_url).send().await.is_ok_and(|r| r.status().is_success());
            if healthy && tokio::net::TcpStream::connect(&self.otlp_endpoint[7..]).await.is_ok() {
                return Ok(Ready::Serving);
            }
            if let Some(status) = self.child.try_wait()? {
                let output = self.output();
                if output.contains("address already in use") {
                    return Ok(Ready::PortTaken);
                }
                anyhow::bail!("Jaeger exited ({status}) before serving; its log:\n{output}");
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "Jaeger did not start in 20 minutes; its log:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What Jaeger wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The spans of `trace_id` Jaeger holds now (none if it has no such trace).
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Vec<TraceSpan>> {
        let response =
            crate::http().get(format!("{}/api/v3/traces/{trace_id}", self.query_url)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        anyhow::ensure!(response.status().is_success(), "Jaeger answered {}", response.status());
        let body: Value = response.json().await?;
        Ok(parse_trace(&body))
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The spans of an OTLP JSON answer (`{"result": {"resourceSpans": [...]}}`).
pub fn parse_trace(body: &Value) -> Vec<TraceSpan> {
    let empty = Vec::new();
    let resources = body["result"]["resourceSpans"].as_array().unwrap_or(&empty);
    let mut spans = Vec::new();
    for resource in resources {
        let service =
            attributes(&resource["resource"]["attributes"]).remove("service.name").unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().unwrap_or(&empty) {
            for span in scope["spans"].as_array().unwrap_or(&empty) {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                spans.push(TraceSpan {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    kind: span["kind"].as_i64().unwrap_or_default(),
                    status: span["status"]["code"].as_i64().unwrap_or_default(),
                    links: span["links"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|link| {
                            let id = |key: &str| link[key].as_str().unwrap_or_default().to_owned();
                            (id("traceId"), id("spanId"))
                        })
                        .collect(),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    spans
}

/// OTLP JSON attributes (`[{"key": …, "value": {"stringValue": …}}]`) as strings.
fn attributes(list: &Value) -> BTreeMap<String, String> {
    let empty = Vec::new();
    list.as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|attribute| {
            let key = attribute["key"].as_str()?.to_owned();
            let value = attribute["value"].as_object()?.values().next()?;
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Some((key, value))
        })
        .collect()
}
