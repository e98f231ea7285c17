//! Wiring: the database pool and the router.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::http::{self, AppState};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Creates the pool (lazily connecting: a database outage shows in `/readyz`, not as a crash)
    /// and binds the listener (port 0 picks a free port; see `address`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = eventline_runtime::db::pool(&config.database)?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        Ok(Application { listener, state: AppState { pool } })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        eventline_runtime::http::serve(self.listener, http::router(self.state), shutdown)
            .await
            .context("serving HTTP")?;
        tracing::info!("Query service stopped");
        Ok(())
    }
}
