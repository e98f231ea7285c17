//! Which read-model version this projector writes (see migrations/0004): its pool, whose
//! unqualified table names are that version's tables, and its projection id (which scopes the
//! Redis dedup keys). Shared by the runner and the consumer's rebalance callback, and replaced
//! when the live version changes.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use eventline_read_models::{self as read_models, Version};
use eventline_runtime::config::DatabaseConfig;
use sqlx::PgPool;
use uuid::Uuid;

pub struct Target {
    pub version: Version,
    pub pool: PgPool,
    pub projection_id: Uuid,
}

impl Target {
    pub async fn open(database: &DatabaseConfig, version: Version) -> anyhow::Result<Arc<Target>> {
        let pool = read_models::pool(database, version)?;
        let projection_id: Uuid = sqlx::query_scalar("SELECT projection_id FROM projection_identity")
            .fetch_one(&pool)
            .await
            .with_context(|| format!("reading the projection id of read-model version {version}"))?;
        Ok(Arc::new(Target { version, pool, projection_id }))
    }
}

/// The target, replaceable while readers hold the one they started with.
pub struct Writing(RwLock<Arc<Target>>);

impl Writing {
    pub fn new(target: Arc<Target>) -> Arc<Writing> {
        Arc::new(Writing(RwLock::new(target)))
    }

    pub fn current(&self) -> Arc<Target> {
        match self.0.read() {
            Ok(target) => target.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, target: Arc<Target>) {
        match self.0.write() {
            Ok(mut current) => *current = target,
            Err(poisoned) => *poisoned.into_inner() = target,
        }
    }
}
