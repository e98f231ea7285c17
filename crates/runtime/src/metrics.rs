//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
