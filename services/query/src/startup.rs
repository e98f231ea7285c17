//! Wiring: the database pool, the projection follower and the router.

use std::net::SocketAddr;

use anyhow::Context;
use eventline_runtime::auth::Scope;
use eventline_runtime::rate_limit::RateLimiter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::consistency::LiveReadModels;
use crate::http::{self, AppState, Live};
use crate::log_watch::LogWatch;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Stops the projection follower (and the other background tasks) when the service stops,
    /// or when it is dropped unserved (a test that sends its router requests).
    follower: tokio_util::sync::DropGuard,
    /// Limits at the door and the drain bound.
    serving: eventline_runtime::server::ServeConfig,
    /// Which browser origins may call the API.
    cors: eventline_runtime::cors::CorsConfig,
}

impl Application {
    /// Creates the pool (lazily connecting: a database outage shows in `/readyz`, not as a crash),
    /// starts following the live read-model version and its checkpoints, and binds the listener (port 0 picks a free
    /// port; see `address`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        eventline_runtime::metrics::install(crate::metrics::describe);
        let pool = eventline_runtime::db::pool(&config.database)?;
        eventline_runtime::db::check_access(&pool).await?;
        if !config.brokers.is_empty() {
            eventline_runtime::log_identity::check_access(
                &config.brokers,
                &config.kafka_security,
                &config.topic,
            )
            .await
            .context("Kafka (KAFKA_BROKERS)")?;
        }
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let follower = CancellationToken::new();
        let read_models = LiveReadModels::follow(
            config.database.clone(),
            pool.clone(),
            config.topic.clone(),
            follower.clone(),
        );
        let log = LogWatch::start(
            config.brokers.clone(),
            config.kafka_security.clone(),
            config.topic.clone(),
            pool.clone(),
            follower.clone(),
        );
        let changes = crate::live::Changes::new(config.live_buffer);
        tokio::spawn(crate::live::feed::run(read_models.clone(), changes.clone(), follower.clone()));
        let live = Live { changes, stopping: CancellationToken::new(), heartbeat: config.live_heartbeat() };
        let reads = RateLimiter::new(config.read_rate_limit(), "reads");
        let guard = config.access.guard(Scope::Read).await?;
        let state = AppState {
            pool,
            read_models,
            log,
            consistency_wait: config.consistency_wait(),
            live,
            guard,
            reads,
            read_timeout: config.read_timeout(),
            topic: config.topic.as_str().into(),
        };
        let follower = follower.drop_guard();
        Ok(Application { listener, state, follower, serving: config.serving, cors: config.cors.clone() })
    }

    /// The HTTP API as it is served: for `run_until`, and for a test that sends it requests
    /// without a listener (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone(), &self.cors)
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Live streams never end by themselves: they are ended as the shutdown begins, so that the
        // graceful shutdown (which waits for responses under way) can finish.
        let streams = self.state.live.stopping.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            streams.cancel();
        });
        let router = self.router();
        let served = eventline_runtime::server::serve(self.listener, router, shutdown, self.serving).await;
        drop(self.follower);
        served.context("serving HTTP")?;
        tracing::info!("Query service stopped");
        Ok(())
    }
}
