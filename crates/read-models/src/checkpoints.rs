//! Projection checkpoints as both the projector (which writes them) and the query service (which
//! waits for them, for read-your-writes) see them: per partition, the next offset to apply.

use std::collections::BTreeMap;

use sqlx::PgExecutor;

use crate::Version;

/// The PostgreSQL notification channel on which the projector announces, as its transaction
/// commits, where the checkpoints of a topic moved. The payload is `<schema> <topic> <p>:<next>,…`
/// (e.g. `read_model_v2 orders 0:15,3:7`): the read-model version's schema, the topic, and the
/// partitions the transaction advanced with their next offsets, so a reader can follow without
/// querying (see [`Advanced::parse`]).
pub const CHANNEL: &str = "eventline_checkpoints";

/// Where one projector transaction moved the checkpoints, as announced on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advanced {
    pub schema: String,
    pub topic: String,
    /// Partition → next offset to apply.
    pub checkpoints: BTreeMap<i32, i64>,
}

impl Advanced {
    /// Reads a payload of [`CHANNEL`]; `None` when it is not of that form (e.g. an older
    /// projector's, which sent only the topic): the reader then queries the checkpoints.
    pub fn parse(payload: &str) -> Option<Advanced> {
        let mut parts = payload.split(' ');
        let (schema, topic, positions) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let checkpoints = positions
            .split(',')
            .map(|position| {
                let (partition, next) = position.split_once(':')?;
                Some((partition.parse().ok()?, next.parse().ok()?))
            })
            .collect::<Option<BTreeMap<i32, i64>>>()?;
        Some(Advanced { schema: schema.to_owned(), topic: topic.to_owned(), checkpoints })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_reads_back_as_schema_topic_and_positions() {
        let advanced = Advanced::parse("read_model_v2 eventline.events 0:15,3:7").expect("parses");
        assert_eq!(advanced.schema, "read_model_v2");
        assert_eq!(advanced.topic, "eventline.events");
        assert_eq!(advanced.checkpoints, BTreeMap::from([(0, 15), (3, 7)]));
    }

    #[test]
    fn other_payloads_are_not_announcements() {
        for payload in ["eventline.events", "", "v t", "v t 0:x", "v t 0:1,", "v t 0:1 extra", "v t 01"] {
            assert_eq!(Advanced::parse(payload), None, "{payload:?}");
        }
    }
}
