//! HTTP plumbing every service shares: the operational routes (`/healthz`, `/readyz`, `/metrics`),
//! problem+json fallbacks, and serving until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::problem;

/// The header in which the command API returns, and the query API accepts, the log positions a
/// read must reflect (read-your-writes).
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("consistency-token");

/// Whether a header field is empty (or only white space): the services read an empty optional
/// header as no header, as an empty list field holds nothing (RFC 9110, 5.6.1), and their
/// OpenAPI documents say so; `ApiQuery` does the same for query parameters.
pub fn is_empty_field(value: &header::HeaderValue) -> bool {
    value.as_bytes().iter().all(u8::is_ascii_whitespace)
}

/// Whether one dependency is reachable (or one part of the service works), and why not.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    pub fn new(name: &'static str, ok: bool) -> Check {
        Check { name, ok, reason: None }
    }

    /// A check that fails for `reason`, or passes when there is none.
    pub fn failing_because(name: &'static str, reason: Option<String>) -> Check {
        Check { name, ok: reason.is_none(), reason }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Vec<Check>> + Send>>;

/// Checks a service's dependencies for `/readyz`.
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> CheckFuture + Send + Sync>);

impl Readiness {
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Check>> + Send + 'static,
    {
        Readiness(Arc::new(move || Box::pin(check())))
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> Router {
    // Install the recorder now, so that what happens before the first scrape is counted.
    crate::metrics::handle();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    checks: Vec<Check>,
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let checks = (readiness.0)().await;
    crate::metrics::readiness(&checks);
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(ReadyBody { ready, checks })).into_response()
}

/// The metrics, with the readiness checks run first so a scrape also says whether the service
/// is ready (`eventline_ready`).
async fn metrics(State(readiness): State<Readiness>) -> Response {
    crate::metrics::readiness(&(readiness.0)().await);
    let body = crate::metrics::handle().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The HTML API reference (`GET /docs`): a self-contained page that renders the service's own
/// `/openapi.json` in the browser, with no external resources.
fn docs_router() -> Router {
    const PAGE: &str = include_str!("docs.html");
    Router::new()
        .route("/docs", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
}

/// An API service's whole router: its routes plus `/openapi.json` (the document describing them,
/// serialized once), the `/docs` reference, the operational routes, problem+json fallbacks, CORS
/// for the origins the operator allows (outside any token check, since preflights carry no token)
/// and request tracing.
pub fn api_service(
    api: Router,
    document: &impl serde::Serialize,
    readiness: Readiness,
    cors: Option<tower_http::cors::CorsLayer>,
) -> Router {
    let api = api.route("/openapi.json", json_document(document));
    let router = with_problem_fallbacks(api.merge(ops_router(readiness)).merge(docs_router()));
    traced(match cors {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

/// A `GET` route answering `document` as JSON, serialized once (an OpenAPI document).
pub fn json_document<S: Clone + Send + Sync + 'static>(
    document: &impl serde::Serialize,
) -> axum::routing::MethodRouter<S> {
    let document = axum::body::Bytes::from(serde_json::to_vec(document).unwrap_or_default());
    get(move || std::future::ready(([(header::CONTENT_TYPE, "application/json")], document.clone())))
}

/// Wraps every request of `router` in a server span (OpenTelemetry HTTP semantic conventions),
/// continuing the caller's trace from `traceparent`/`tracestate`, and tells the caller the trace
/// in a `traceresponse` header.
pub fn traced(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(trace_request))
}

/// Routes served without a span or a latency sample.
const OPERATIONAL_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

async fn trace_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    // Probes and scrapes every few seconds would bury the requests worth tracing.
    if route.as_deref().is_some_and(|route| OPERATIONAL_ROUTES.contains(&route)) {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %route.as_deref().map_or_else(|| method.clone(), |route| format!("{method} {route}")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_deref(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if crate::telemetry::exporting() {
        let headers = request.headers();
        let parent = crate::telemetry::extract(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        let _ = span.set_parent(parent);
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    crate::metrics::http_request(
        method,
        route.unwrap_or_else(|| "unmatched".to_owned()),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    span.in_scope(|| tracing::debug!(status = status.as_u16(), "Request served"));
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(value) =
        crate::telemetry::traceresponse(&span).and_then(|v| header::HeaderValue::try_from(v).ok())
    {
        response.headers_mut().insert("traceresponse", value);
    }
    response
}

/// Adds the problem+json fallbacks for unknown routes and wrong methods, and turns the plain-text
/// 4xx answers of the framework's own extractors (a path segment that is not UTF-8, say) into
/// problems, so every client error is problem+json.
pub fn with_problem_fallbacks(router: Router) -> Router {
    router
        .fallback(problem::route_not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn(plain_errors_as_problems))
}

async fn plain_errors_as_problems(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !status.is_client_error() || !is_plain {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>(),
        Err(_) => String::new(),
    };
    let kind = [
        problem::types::NOT_FOUND,
        problem::types::METHOD_NOT_ALLOWED,
        problem::types::PAYLOAD_TOO_LARGE,
        problem::types::UNSUPPORTED_MEDIA_TYPE,
    ]
    .into_iter()
    .find(|kind| kind.status == status)
    .unwrap_or(problem::types::BAD_REQUEST);
    let detail = if text.trim().is_empty() { kind.title.to_owned() } else { text };
    // Any other client error keeps its status, described as a bad request.
    problem::Problem { status: status.as_u16(), ..problem::Problem::new(kind, detail) }.into_response()
}
