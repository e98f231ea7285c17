//! The HTTP server of every service: hyper's HTTP/1 connections, with the defences a service
//! facing the internet needs at the door, and a bounded drain when stopping.
//!
//! - **At most `max_connections` at once.** Past it, the server stops accepting; new connections
//!   wait in the kernel's backlog rather than taking memory and file descriptors.
//! - **Headers within `header_read_timeout`.** A connection that sends no request, or sends its
//!   headers slowly (slowloris), or sits idle between requests that long, is closed; an idle or
//!   slow flood thus costs little and never stops other clients from being answered.
//! - **The body within `body_read_timeout`** once the headers are in (`408 request-timeout`), for
//!   the routes that read one.
//! - **A bounded drain.** On shutdown the server stops accepting, lets requests under way finish
//!   for at most `drain_secs`, then stops without them (a client that never finishes its request
//!   must not hold a rolling update).
//!
//! `axum::serve` offers neither the header timeout nor the limit, hence this accept loop over
//! hyper's own connection builder and hyper-util's graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use clap::Args;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

/// How a service serves HTTP: the limits at the door and the drain bound.
#[derive(Debug, Clone, Copy, Args)]
pub struct ServeConfig {
    /// Seconds a stopping service (SIGTERM) waits for requests under way before it closes their
    /// connections: a client that never finishes its request, or a stream that never ends, must
    /// not hold a rolling update.
    #[arg(long = "drain-secs", env = "EVENTLINE_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,
    /// Connections served at once; past it, new ones wait to be accepted.
    #[arg(
        id = "http_max_connections",
        long = "max-connections",
        env = "EVENTLINE_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Seconds a connection has to send a request's headers (also the longest idle time between
    /// requests) before it is closed.
    #[arg(
        long = "header-read-timeout-secs",
        env = "EVENTLINE_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its headers are in; past it, `408`.
    #[arg(
        long = "body-read-timeout-secs",
        env = "EVENTLINE_BODY_READ_TIMEOUT_SECS",
        default_value_t = BodyReadTimeout::DEFAULT_SECS
    )]
    pub body_read_timeout_secs: u64,
}

/// How long the request's body may take to arrive, left in each request's extensions by the
/// server for the extractors that read bodies (`problem::JsonBody`).
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

impl BodyReadTimeout {
    /// The deadline unless configured, also where no server set one.
    pub const DEFAULT_SECS: u64 = 10;
}

impl Default for BodyReadTimeout {
    fn default() -> BodyReadTimeout {
        BodyReadTimeout(Duration::from_secs(BodyReadTimeout::DEFAULT_SECS))
    }
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            drain_secs: 10,
            max_connections: 10_000,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: BodyReadTimeout::DEFAULT_SECS,
        }
    }
}

impl ServeConfig {
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.max(1))
    }

    fn body_read_timeout(&self) -> BodyReadTimeout {
        BodyReadTimeout(Duration::from_secs(self.body_read_timeout_secs.max(1)))
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains (see the module doc).
/// Handlers may read the peer's address as `ConnectInfo<SocketAddr>` (per-client rate limits).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    config: ServeConfig,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout());
    let body_read_timeout = config.body_read_timeout();
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // back off a moment rather than spin, and go on serving.
                    tracing::warn!(%error, "Accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(body_read_timeout);
            let mut router = router.clone();
            async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|never| match never {})) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "Connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.drain()) => tracing::warn!(
            drain_secs = config.drain_secs,
            "Requests still under way after the drain bound; stopping without them"
        ),
    }
    Ok(())
}
