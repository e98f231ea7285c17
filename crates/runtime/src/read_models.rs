//! Versions of the read models (migrations/0004): each lives in a PostgreSQL schema of its own,
//! `read_model_v<N>`, and exactly one is live. The query service reads the live one; the projector
//! writes it; a rebuild fills a new one next to it and switches.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgExecutor, PgPool};

use crate::config::DatabaseConfig;
use crate::db::redact;

/// The notification channel on which a switch of the live version is announced (payload: the
/// new live version), so readers and writers move without polling.
pub const CHANNEL: &str = "eventline_read_model_versions";

/// The tables of one version: the read models, and the dedup records, checkpoints and identity
/// that make it a projection of the log on its own.
pub const TABLES: [&str; 8] = [
    "users",
    "orders",
    "order_items",
    "payments",
    "inventory",
    "processed_events",
    "projection_checkpoints",
    "projection_identity",
];

/// A read-model version: the number of its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Version(pub i32);

impl Version {
    /// The PostgreSQL schema holding the version's tables (built from an integer, so it is always
    /// a safe identifier).
    pub fn schema(self) -> String {
        format!("read_model_v{}", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The live version.
pub async fn live<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Version> {
    in_state(db, "live").await?.ok_or(sqlx::Error::RowNotFound)
}

/// The version in `state` (`live`, `previous` and `building` are each held by one at most).
pub async fn in_state<'e>(db: impl PgExecutor<'e>, state: &str) -> sqlx::Result<Option<Version>> {
    sqlx::query_scalar("SELECT version FROM public.read_model_versions WHERE state = $1")
        .bind(state)
        .fetch_optional(db)
        .await
        .map(|version| version.map(Version))
}

/// A lazily connecting pool whose unqualified table names are `version`'s tables (and, after them,
/// `public`'s: the dead letters are shared by all versions). The schema is part of the connection
/// options, so it costs no statement per query.
pub fn pool(config: &DatabaseConfig, version: Version) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&config.url)
        .with_context(|| format!("DATABASE_URL is not a valid PostgreSQL URL: {}", redact(&config.url)))?
        .options([("search_path", format!("{},public", version.schema()))]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_their_schema() {
        assert_eq!(Version(3).schema(), "read_model_v3");
        assert_eq!(Version(3).to_string(), "v3");
    }
}
