//! Logs and traces.
//!
//! Logs: `RUST_LOG` filters; `LOG_FORMAT=json` writes JSON lines carrying the `trace_id` and
//! `span_id` of the span they were written in; otherwise human-readable lines.
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/gRPC (batched, in
//! the background) with the service's resource attributes, and W3C trace context
//! (`traceparent`/`tracestate`) links the services: HTTP requests in, Kafka headers out and in.
//! Without it no OpenTelemetry layer is installed at all: nothing is exported and nothing is paid.
//! The standard `OTEL_*` variables (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_SCHEDULE_DELAY`, …) apply.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::Injector;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether spans are exported (an OTLP endpoint is configured). Work done only for tracing, such
/// as a span per projected event, is skipped when they are not.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the trace exporter; dropping it (or `shutdown`) flushes the spans not yet sent.
#[must_use = "spans are flushed when this is dropped: keep it until the end of main"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "Flushing traces on exit failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber for `service_name` (`eventline-command`, …). Safe to call more
/// than once (later calls install nothing), which tests that start several services in one process
/// rely on. Call it inside the Tokio runtime: the gRPC exporter runs on it.
pub fn init(service_name: &'static str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rdkafka=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let provider = otlp_endpoint().and_then(|endpoint| match tracer_provider(service_name) {
        Ok(provider) => Some(provider),
        Err(error) => {
            // Logging is not up yet; this must not stop the service.
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: traces will not be exported: {error}");
            None
        }
    });
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name)));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let installed = tracing_subscriber::registry().with(filter).with(otel).with(fmt).try_init().is_ok();
    if !installed {
        return Telemetry { provider: None };
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service = service_name, "Exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn otlp_endpoint() -> Option<String> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()))
}

fn tracer_provider(service_name: &'static str) -> anyhow::Result<SdkTracerProvider> {
    // The endpoint and the rest come from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    // `OTEL_SERVICE_NAME` (read by the builder) wins over the default name.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty());
    let resource =
        if named { Resource::builder() } else { Resource::builder().with_service_name(service_name) };
    let resource = resource
        .with_attributes([
            KeyValue::new("service.namespace", "eventline"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id()),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .build();
    Ok(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build())
}

/// A random id for this process (128 random bits from the SDK's id generator).
fn instance_id() -> String {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    RandomIdGenerator::default().new_trace_id().to_string()
}

/// The W3C trace context of `span`, as header name/value pairs (empty when not tracing).
pub fn inject(span: &Span) -> Vec<(String, String)> {
    struct Pairs(Vec<(String, String)>);
    impl Injector for Pairs {
        fn set(&mut self, key: &str, value: String) {
            self.0.push((key.to_owned(), value));
        }
    }
    if !exporting() {
        return Vec::new();
    }
    let mut pairs = Pairs(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&span.context(), &mut pairs));
    pairs.0
}

/// The trace context carried by headers (`traceparent`, `tracestate`), looked up by `get`.
pub fn extract<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Context {
    let carrier: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| get(name).map(|value| (name.to_owned(), value.to_owned())))
        .collect();
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// The span context carried by headers, if valid (for links).
pub fn remote_span<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<SpanContext> {
    let context = extract(get);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The trace and span ids of `span`, if it is traced.
pub fn ids(span: &Span) -> Option<(String, String)> {
    span_context(span).map(|ids| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// The W3C `traceresponse` header value for `span` (`00-<trace id>-<span id>-<flags>`), telling a
/// client which trace its request became.
pub fn traceresponse(span: &Span) -> Option<String> {
    span_context(span)
        .map(|ids| format!("00-{}-{}-{:02x}", ids.trace_id(), ids.span_id(), ids.trace_flags().to_u8()))
}

/// JSON log lines with `trace_id` and `span_id` first, from the span the event was written in.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = ids(&Span::current()) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// Makes `remote`, the span context a message carried (see [`remote_span`]), the parent of
/// `span`, which must not have been entered yet.
pub fn continue_from(span: &Span, remote: SpanContext) {
    if exporting() {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to each span context carried by messages (e.g. the producer spans of a batch).
pub fn link(span: &Span, remote: impl IntoIterator<Item = SpanContext>) {
    for context in remote {
        span.add_link(context);
    }
}

/// The span context of `span`, if it is traced (for linking other spans to it).
pub fn span_context(span: &Span) -> Option<SpanContext> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}
