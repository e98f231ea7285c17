//! Wiring: build the event log client and the router, bind the listener, serve.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::http::{self, AppState};
use crate::idempotency::IdempotencyStore;
use crate::log::EventLog;
use crate::state::WriteModel;
use eventline_runtime::auth::Scope;
use eventline_runtime::rate_limit::RateLimiter;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Limits at the door and the drain bound.
    serving: eventline_runtime::server::ServeConfig,
    /// Which browser origins may call the API.
    cors: eventline_runtime::cors::CorsConfig,
}

impl Application {
    /// Ensures the topic exists, connects the producer and binds the listener (port 0 picks a
    /// free port; see `address`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        eventline_runtime::kafka::ensure_topic(&config.kafka).await.context("preparing the event topic")?;
        Self::over_topic(config).await
    }

    /// As `build`, for a topic that exists already: nothing here waits for the broker (the
    /// producer connects in the background), so a test can send the router commands that are
    /// refused before any append without one.
    pub async fn over_topic(config: Config) -> anyhow::Result<Self> {
        eventline_runtime::metrics::install(crate::metrics::describe);
        let guard = config.access.guard(Scope::Write).await?;
        let commands = RateLimiter::new(config.rate_limit(), "commands");
        let log = EventLog::connect(&config.kafka, config.append_timeout_ms)
            .context("creating the Kafka producer")?;
        let idempotency = IdempotencyStore::new(&config.redis, config.idempotency_ttl())
            .context("REDIS_URL is not a valid Redis URL")?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let write_model = write_model(&config, log.clone())?;
        eventline_runtime::db::check_access(write_model.pool()).await?;
        let topic = eventline_runtime::topic_guard::TopicGuard::watch(config.kafka.clone());
        let state = AppState { log, write_model, idempotency: Arc::new(idempotency), guard, commands, topic };
        Ok(Application { listener, state, serving: config.serving, cors: config.cors.clone() })
    }

    /// The HTTP API as it is served: for `run_until`, and for a test that sends it requests
    /// without a listener (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone(), &self.cors)
    }

    /// The decision state, for the `state` subcommands.
    pub fn write_model(&self) -> &WriteModel {
        &self.state.write_model
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown`, then flushes what the producer still holds.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let router = self.router();
        let guard = tokio::spawn(self.state.write_model.clone().guard(shutdown.clone()));
        eventline_runtime::server::serve(self.listener, router, shutdown, self.serving)
            .await
            .context("serving HTTP")?;
        guard.abort();
        self.state.log.flush().await;
        tracing::info!("Command service stopped");
        Ok(())
    }
}

/// The decision state's pool: every decider holds a connection for its group, and a lock wait
/// longer than the append timeout is answered 503 rather than queued for ever.
pub fn write_model(config: &Config, log: EventLog) -> anyhow::Result<WriteModel> {
    let lock_timeout = format!("SET lock_timeout = {}", config.append_timeout_ms.max(1000) * 2);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.database.max_connections.max(config.deciders as u32 + 2))
        .acquire_timeout(std::time::Duration::from_secs(3))
        // A broken connection fails its group's first statement; the decider retries on another.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            let statement = lock_timeout.clone();
            Box::pin(async move { sqlx::query(&statement).execute(conn).await.map(|_| ()) })
        })
        .connect_lazy_with(eventline_runtime::db::connect_options(&config.database)?);
    Ok(WriteModel::new(pool, log, config.kafka.clone(), config.deciders))
}
