//! The projector's background watch, every few seconds, one concern per step: the projection's
//! status as metrics, for the console, and the partitions nobody consumes (PostgreSQL and Kafka watermarks, then the
//! group's description), the dead-letter mirror in Redis, and whether the broker still serves the
//! log the read models were built from.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dlq::Mirror;
use crate::live::consumer::LogConsumer;
use crate::live::coverage::Coverage;
use crate::live::runner::RunnerStatus;
use crate::live::target::Writing;
use crate::log_check;

/// What the observer watches.
pub(crate) struct Observer {
    pub writing: Arc<Writing>,
    pub public: PgPool,
    pub kafka: eventline_runtime::config::KafkaConfig,
    pub mirror: Arc<Mirror>,
    pub status: Arc<RunnerStatus>,
    /// Cancelled when the broker serves another log than the read models were built from.
    pub refuse: CancellationToken,
    pub consumer: Arc<LogConsumer>,
    pub group_id: String,
    pub coverage: Arc<Coverage>,
    /// Where every round's observation goes (the console's view of the projection).
    pub published: Arc<dyn Observations>,
}

/// What the observer publishes each round, to whoever the wiring gave it (the console): the
/// status, each partition's owner from the group's description, the partitions with lag that no
/// member consumes, and the batch failing now, if one is. The live part knows nothing of its
/// reader.
pub(crate) trait Observations: Send + Sync {
    fn record(
        &self,
        status: &crate::live::status::ProjectionStatus,
        owners: &std::collections::BTreeMap<i32, String>,
        unconsumed: &[i32],
        failing: Option<crate::live::runner::Failing>,
    );
}

/// Watches until `shutdown`, or until the broker turns out to serve another log (then `refuse`
/// is cancelled and the projection stops).
pub(crate) async fn run(observer: Observer, shutdown: CancellationToken) {
    loop {
        let pool = observer.writing.current().pool.clone();
        observer.publish_status(&pool).await;
        observer.reconcile_mirror(&pool).await;
        observer.notice_live_versions().await;
        if observer.refuse_another_log().await {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

impl Observer {
    /// Lag and DLQ depth as metrics; partitions with lag that no member of the group consumes;
    /// a dead-letter count that differs from the Redis stream's marks the mirror for
    /// reconciliation (Redis may have lost it: a restart without persistence, FLUSHALL).
    async fn publish_status(&self, pool: &PgPool) {
        let Ok(current) = crate::live::status::collect(pool, &self.kafka).await else {
            return;
        };
        crate::live::status::record_metrics(&current);
        if let Ok(lags) =
            crate::live::status::projection_lags(&self.public, &self.kafka.topic, &current.partitions).await
        {
            for lag in lags {
                crate::metrics::projection_lag(lag.projection, lag.lag);
            }
        }
        let lag: Vec<(i32, i64)> =
            current.partitions.iter().filter_map(|p| Some((p.partition, p.lag?))).collect();
        self.coverage.observe(&self.consumer, &self.group_id, &self.kafka.topic, &lag).await;
        let failing = self.status.failing.lock().ok().and_then(|f| f.clone());
        self.published.record(&current, &self.coverage.owners(), &self.coverage.unconsumed(), failing);
        if self.mirror.len().await.is_ok_and(|len| len != current.dead_letters) {
            self.status.mirror_dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Rebuilds the dead-letter stream in Redis from PostgreSQL when it may be behind.
    async fn reconcile_mirror(&self, pool: &PgPool) {
        if !self.status.mirror_dirty.load(Ordering::Relaxed) {
            return;
        }
        match self.mirror.reconcile(pool, &self.kafka.topic).await {
            Ok(()) => {
                self.status.mirror_dirty.store(false, Ordering::Relaxed);
                tracing::info!(stream = self.mirror.stream(), "Dead-letter mirror in Redis is up to date");
            }
            Err(error) => tracing::debug!(%error, "Dead-letter mirror not reconciled yet"),
        }
    }

    /// Another process may have made a projection live (its first catch-up) or switched one
    /// (a rebuild's switch the runner has not met yet, while idle): the runner moves to the live
    /// versions before its next batch.
    async fn notice_live_versions(&self) {
        let Ok(mut live) = eventline_read_models::live_versions(&self.public).await else { return };
        let mut written: Vec<_> = self.writing.all().iter().map(|t| t.version).collect();
        live.sort();
        written.sort();
        if live != written {
            self.status.live_versions_changed();
        }
    }

    /// A broker replaced under a running projector must not be projected into the read models:
    /// stops the projection (returns true) when it serves another log.
    async fn refuse_another_log(&self) -> bool {
        let version = self.writing.current().version;
        let Ok(verdict) = log_check::check(&self.public, version, &self.kafka, false).await else {
            return false;
        };
        let Some(refusal) = verdict.refusal(&self.kafka.topic, version) else { return false };
        tracing::error!(%refusal, "Stopping: the broker serves another log");
        if let Ok(mut fatal) = self.status.fatal.lock() {
            *fatal = Some(refusal);
        }
        self.refuse.cancel();
        true
    }
}
