//! Which read-model versions this projector writes (see migrations/0004 and 0014): one per
//! projection for the live projector, the one being caught up for a rebuild. Each with its pool,
//! whose unqualified table names are that version's tables, its projection id (which scopes the
//! Redis dedup keys) and how far it has applied the log. Shared by the runner and the consumer's
//! rebalance callback, and replaced when a live version changes or a projection becomes live.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use eventline_read_models::{self as read_models, Version};
use eventline_runtime::config::DatabaseConfig;
use sqlx::PgPool;
use uuid::Uuid;

use crate::project::checkpoint;

pub struct Target {
    pub version: Version,
    pub pool: PgPool,
    pub projection_id: Uuid,
    /// Partition → next offset this version has to apply, as far as this process knows: records
    /// before it are not handed to it again (its own checkpoints, loaded on assignment and moved
    /// by each batch it commits).
    applied: Mutex<BTreeMap<i32, i64>>,
}

impl Target {
    pub async fn open(database: &DatabaseConfig, version: Version) -> anyhow::Result<Arc<Target>> {
        let pool = read_models::pool(database, version)?;
        let projection_id: Uuid = sqlx::query_scalar("SELECT projection_id FROM projection_identity")
            .fetch_one(&pool)
            .await
            .with_context(|| format!("reading the projection id of read-model version {version}"))?;
        Ok(Arc::new(Target { version, pool, projection_id, applied: Mutex::default() }))
    }

    /// Partition → next offset to apply, as far as this process knows.
    pub fn applied(&self) -> BTreeMap<i32, i64> {
        self.applied.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Records that the version applied up to `next` (partition → next offset); never backwards.
    pub fn advance(&self, next: &BTreeMap<i32, i64>) {
        if let Ok(mut applied) = self.applied.lock() {
            for (&partition, &offset) in next {
                let at = applied.entry(partition).or_insert(offset);
                *at = (*at).max(offset);
            }
        }
    }

    /// Forgets what it knew and takes its checkpoints as they are in the database.
    fn reset(&self, checkpoints: BTreeMap<i32, i64>) {
        if let Ok(mut applied) = self.applied.lock() {
            *applied = checkpoints;
        }
    }
}

/// The targets, replaceable while readers hold the ones they started with. The first is the
/// primary: the main projection's live version for the live projector (what the console, the
/// dead letters and `/readyz` look at), the version being caught up for a rebuild.
pub struct Writing(RwLock<Vec<Arc<Target>>>);

impl Writing {
    pub fn new(targets: Vec<Arc<Target>>) -> Arc<Writing> {
        Arc::new(Writing(RwLock::new(targets)))
    }

    /// The primary target.
    pub fn current(&self) -> Arc<Target> {
        self.all()[0].clone()
    }

    /// Every target, the primary first (never empty).
    pub fn all(&self) -> Vec<Arc<Target>> {
        match self.0.read() {
            Ok(targets) => targets.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the targets (`targets` must not be empty).
    pub fn set(&self, targets: Vec<Arc<Target>>) {
        if targets.is_empty() {
            return;
        }
        match self.0.write() {
            Ok(mut current) => *current = targets,
            Err(poisoned) => *poisoned.into_inner() = targets,
        }
    }

    /// Reads every target's checkpoints of `topic` and returns, per partition, the lowest: where
    /// reading the log must start for none of them to miss an event. Each target takes its own
    /// as what it has applied.
    pub async fn load_checkpoints(&self, topic: &str) -> sqlx::Result<BTreeMap<i32, i64>> {
        let targets = self.all();
        let mut each = Vec::with_capacity(targets.len());
        for target in &targets {
            each.push(checkpoint::load(&target.pool, topic).await?);
        }
        let lowest = lowest(&each);
        for (target, checkpoints) in targets.iter().zip(each) {
            target.reset(checkpoints);
        }
        Ok(lowest)
    }
}

/// Per partition, the lowest of the checkpoints: where reading must start for none of them to
/// miss an event. A partition one of them never applied starts from 0.
pub(super) fn lowest(each: &[BTreeMap<i32, i64>]) -> BTreeMap<i32, i64> {
    let mut lowest: BTreeMap<i32, i64> = BTreeMap::new();
    for checkpoints in each {
        for (&partition, &next) in checkpoints {
            let at = lowest.entry(partition).or_insert(next);
            *at = (*at).min(next);
        }
    }
    for checkpoints in each {
        for (partition, at) in lowest.iter_mut() {
            if !checkpoints.contains_key(partition) {
                *at = 0;
            }
        }
    }
    lowest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_starts_where_the_projection_furthest_behind_is() {
        let main = BTreeMap::from([(0, 10), (1, 7), (2, 3)]);
        let added = BTreeMap::from([(0, 4), (1, 9)]);
        assert_eq!(lowest(&[main.clone(), added]), BTreeMap::from([(0, 4), (1, 7), (2, 0)]));
        assert_eq!(lowest(std::slice::from_ref(&main)), main);
        assert_eq!(lowest(&[]), BTreeMap::new());
    }
}
