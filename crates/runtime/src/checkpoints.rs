//! Projection checkpoints as both the projector (which writes them) and the query service (which
//! waits for them, for read-your-writes) see them: per partition, the next offset to apply.

use std::collections::BTreeMap;

use sqlx::PgExecutor;

use crate::read_models::Version;

/// The PostgreSQL notification channel on which the projector announces, as its transaction
/// commits, that the checkpoints of the topic named in the payload moved.
pub const CHANNEL: &str = "eventline_checkpoints";

/// The checkpoints of `topic` (partition → next offset) in the version the connection's search
/// path names. A partition never applied is absent.
pub async fn load<'e>(db: impl PgExecutor<'e>, topic: &str) -> sqlx::Result<BTreeMap<i32, i64>> {
    select(db, "projection_checkpoints", topic).await
}

/// The checkpoints of `topic` in read-model `version`, through any connection.
pub async fn load_version<'e>(
    db: impl PgExecutor<'e>,
    version: Version,
    topic: &str,
) -> sqlx::Result<BTreeMap<i32, i64>> {
    select(db, &format!("{}.projection_checkpoints", version.schema()), topic).await
}

async fn select<'e>(db: impl PgExecutor<'e>, table: &str, topic: &str) -> sqlx::Result<BTreeMap<i32, i64>> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as(&format!("SELECT partition, next_offset FROM {table} WHERE topic = $1"))
            .bind(topic)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}
