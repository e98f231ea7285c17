//! Wiring: migrations, the consumer, the runner and the admin API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::admin;
use crate::consumer::{self, Assignment};
use crate::dedup::FastPath;
use crate::runner::{Runner, RunnerStatus};
use tokio::sync::mpsc::UnboundedReceiver;

pub struct Application {
    listener: TcpListener,
    runner: Runner,
    assignments: UnboundedReceiver<Assignment>,
    pool: PgPool,
    config: Config,
}

impl Application {
    /// Migrates the database, ensures the topic, joins the consumer group and binds the admin
    /// listener (port 0 picks a free port; see `address`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = eventline_runtime::db::pool(&config.database)?;
        eventline_runtime::db::migrate(&pool).await?;
        eventline_runtime::kafka::ensure_topic(&config.kafka).await.context("preparing the event topic")?;
        let (consumer, assignments) =
            consumer::subscribe(&config.kafka, &config.group_id).context("creating the Kafka consumer")?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let projection_id: uuid::Uuid = sqlx::query_scalar("SELECT projection_id FROM projection_identity")
            .fetch_one(&pool)
            .await
            .context("reading the projection id")?;
        let fast_path =
            FastPath::new(&config.redis.url, projection_id).context("REDIS_URL is not a valid Redis URL")?;
        let runner = Runner {
            consumer,
            pool: pool.clone(),
            topic: config.kafka.topic.clone(),
            brokers: config.kafka.brokers.clone(),
            fast_path: Arc::new(fast_path),
            batch_size: config.batch_size.max(1),
            batch_max_wait: config.batch_max_wait(),
            status: Arc::new(RunnerStatus::default()),
        };
        Ok(Application { listener, runner, assignments, pool, config })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Projects until `shutdown` (or a fatal error, which is returned), serving the admin API
    /// alongside.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let admin_state = admin::AdminState {
            pool: self.pool.clone(),
            consumer: self.runner.consumer.clone(),
            topic: self.config.kafka.topic.clone(),
            status: self.runner.status.clone(),
            fast_path: self.runner.fast_path.clone(),
        };
        let admin_shutdown = shutdown.child_token();
        let admin = tokio::spawn(eventline_runtime::http::serve(
            self.listener,
            admin::router(admin_state),
            admin_shutdown.clone(),
        ));
        let result = self.runner.run(self.assignments, shutdown).await;
        admin_shutdown.cancel();
        let _ = admin.await;
        result.context("projection stopped")?;
        tracing::info!("Projector stopped");
        Ok(())
    }
}
