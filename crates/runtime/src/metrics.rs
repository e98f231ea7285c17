//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`, and the metrics
//! every service exports (HTTP requests, readiness).
//!
//! Each service names its own metrics in one module (`eventline_command::metrics`, …) and passes
//! its `describe` to [`install`], so every exported name has its unit and help text, and
//! dashboards, alerting rules and docs can be checked against what is exported
//! (`tests/observability.rs`).

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency of every HTTP request but probes and scrapes, by method, route and status.
pub const HTTP_REQUEST_SECONDS: &str = "eventline_http_request_seconds";
/// Whether the service is ready (1) or not (0), as `/readyz` says; set at every scrape.
pub const READY: &str = "eventline_ready";
/// Each readiness check's result (1 passes, 0 fails), by check; set at every scrape.
pub const READY_CHECK: &str = "eventline_ready_check";

/// Requests refused by the access model, by reason (`missing`, `invalid_token`,
/// `insufficient_scope`, `keys_unavailable`).
pub const AUTH_REFUSALS_TOTAL: &str = "eventline_auth_refusals_total";
/// Loads of the identity provider's keys (JWKS), by outcome (`ok`, `failed`).
pub const JWKS_LOADS_TOTAL: &str = "eventline_jwks_loads_total";

/// Buckets of every `…_seconds` histogram (100 µs to 10 s), so latencies aggregate across
/// instances (`histogram_quantile`); other histograms are summaries.
const SECONDS_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn recorder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    builder
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use and returns the handle that renders it.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| match recorder().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "Could not install the metrics recorder; /metrics will be empty");
                None
            }
        })
        .clone()
}

/// Installs the recorder and describes the shared metrics and the service's own (`describe`).
/// Call it at start-up, before anything is recorded: a description given before the recorder
/// exists is lost.
pub fn install(describe: fn()) {
    if handle().is_none() {
        return;
    }
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request (probes and scrapes excluded), by method, route and status"
    );
    describe_gauge!(
        READY,
        "Whether the service is ready (1) or not (0), as /readyz answers; set at every scrape"
    );
    describe_gauge!(
        READY_CHECK,
        "Each readiness check's result (1 passes, 0 fails), by check; set at every scrape"
    );
    describe_counter!(
        AUTH_REFUSALS_TOTAL,
        Unit::Count,
        "Requests refused by the access model, by reason (missing, invalid_token, insufficient_scope, keys_unavailable)"
    );
    describe_counter!(
        JWKS_LOADS_TOTAL,
        Unit::Count,
        "Loads of the identity provider's keys (JWKS), by outcome (ok, failed); failures keep the keys held"
    );
    // Exported from the start, so that a rate over them is 0 rather than no data.
    for reason in ["missing", "invalid_token", "insufficient_scope", "keys_unavailable"] {
        counter!(AUTH_REFUSALS_TOTAL, "reason" => reason).absolute(0);
    }
    for outcome in ["ok", "failed"] {
        counter!(JWKS_LOADS_TOTAL, "outcome" => outcome).absolute(0);
    }
    describe();
}

/// Records a refusal of the access model.
pub fn auth_refusal(reason: &'static str) {
    counter!(AUTH_REFUSALS_TOTAL, "reason" => reason).increment(1);
}

/// Records a load of the identity provider's keys.
pub fn jwks_load(ok: bool) {
    counter!(JWKS_LOADS_TOTAL, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Records one answered HTTP request.
pub fn http_request(method: String, route: String, status: u16, seconds: f64) {
    histogram!(HTTP_REQUEST_SECONDS, "method" => method, "route" => route, "status" => status.to_string())
        .record(seconds);
}

/// Records the result of the readiness checks.
pub fn readiness(checks: &[crate::http::Check]) {
    for check in checks {
        gauge!(READY_CHECK, "check" => check.name).set(f64::from(u8::from(check.ok)));
    }
    gauge!(READY).set(f64::from(u8::from(checks.iter().all(|check| check.ok))));
}
