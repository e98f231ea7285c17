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
use crate::dlq::Mirror;
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
            consumer::subscribe(&config.kafka, &config.group_id, config.session_timeout_ms, pool.clone())
                .context("creating the Kafka consumer")?;
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
            mirror: Arc::new(
                Mirror::new(&config.redis.url, &config.kafka.topic)
                    .context("REDIS_URL is not a valid Redis URL")?,
            ),
            batch_size: config.batch_size.max(1),
            batch_max_wait: config.batch_max_wait(),
            // Reconcile the dead-letter mirror once at start: Redis may have lost it meanwhile.
            status: Arc::new(RunnerStatus { mirror_dirty: true.into(), ..RunnerStatus::default() }),
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
            brokers: self.config.kafka.brokers.clone(),
            status: self.runner.status.clone(),
            fast_path: self.runner.fast_path.clone(),
        };
        let admin_shutdown = shutdown.child_token();
        let admin = tokio::spawn(eventline_runtime::http::serve(
            self.listener,
            admin::router(admin_state),
            admin_shutdown.clone(),
        ));
        let observer = tokio::spawn(observe(
            self.pool.clone(),
            self.config.kafka.brokers.clone(),
            self.config.kafka.topic.clone(),
            self.runner.mirror.clone(),
            self.runner.status.clone(),
            admin_shutdown.clone(),
        ));
        let result = self.runner.run(self.assignments, shutdown).await;
        admin_shutdown.cancel();
        let _ = tokio::join!(admin, observer);
        result.context("projection stopped")?;
        tracing::info!("Projector stopped");
        Ok(())
    }
}

/// Every few seconds: publishes lag and DLQ depth as metrics, and reconciles the dead-letter
/// mirror in Redis when it may be behind.
async fn observe(
    pool: PgPool,
    brokers: String,
    topic: String,
    mirror: Arc<Mirror>,
    status: Arc<RunnerStatus>,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    loop {
        if let Ok(current) = crate::status::collect(&pool, &brokers, &topic).await {
            crate::status::record_metrics(&current);
            // Redis may have lost the stream (restart without persistence, FLUSHALL).
            if mirror.len().await.is_ok_and(|len| len != current.dead_letters) {
                status.mirror_dirty.store(true, Ordering::Relaxed);
            }
        }
        if status.mirror_dirty.load(Ordering::Relaxed) {
            match mirror.reconcile(&pool, &topic).await {
                Ok(()) => {
                    status.mirror_dirty.store(false, Ordering::Relaxed);
                    tracing::info!(stream = mirror.stream(), "Dead-letter mirror in Redis is up to date");
                }
                Err(error) => tracing::debug!(%error, "Dead-letter mirror not reconciled yet"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}
