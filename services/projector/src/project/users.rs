//! The `users` read model.

use eventline_runtime::db;
use std::collections::HashMap;
use tracing::Instrument as _;

use eventline_events::{Envelope, UserCreated};
use sqlx::{Postgres, Transaction};

/// Upserts users from `UserCreated` events given in log order. A repeated `UserCreated` for the
/// same id (same partition, so same order on every replay) updates the profile; `created_at`
/// stays the earliest.
pub(super) async fn apply_created(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(&Envelope, &UserCreated)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // One row per user: an upsert may not touch the same row twice in one statement.
    let mut latest: HashMap<uuid::Uuid, (&Envelope, &UserCreated, chrono::DateTime<chrono::Utc>)> =
        HashMap::new();
    for (envelope, user) in events {
        latest
            .entry(user.user_id)
            .and_modify(|(env, u, first)| {
                *first = (*first).min(envelope.occurred_at);
                (*env, *u) = (*envelope, *user);
            })
            .or_insert((*envelope, *user, envelope.occurred_at));
    }
    let rows: Vec<_> = latest.into_values().collect();
    let ids: Vec<uuid::Uuid> = rows.iter().map(|(_, u, _)| u.user_id).collect();
    let emails: Vec<&str> = rows.iter().map(|(_, u, _)| u.email.as_str()).collect();
    let firsts: Vec<&str> = rows.iter().map(|(_, u, _)| u.first_name.as_str()).collect();
    let lasts: Vec<&str> = rows.iter().map(|(_, u, _)| u.last_name.as_str()).collect();
    let created: Vec<_> = rows.iter().map(|(_, _, first)| *first).collect();
    let updated: Vec<_> = rows.iter().map(|(e, _, _)| e.occurred_at).collect();
    let event_ids: Vec<uuid::Uuid> = rows.iter().map(|(e, _, _)| e.event_id).collect();
    sqlx::query(
        "INSERT INTO users (user_id, email, first_name, last_name, created_at, updated_at, last_event_id)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::uuid[])
         ON CONFLICT (user_id) DO UPDATE SET
             email = EXCLUDED.email,
             first_name = EXCLUDED.first_name,
             last_name = EXCLUDED.last_name,
             created_at = LEAST(users.created_at, EXCLUDED.created_at),
             updated_at = EXCLUDED.updated_at,
             last_event_id = EXCLUDED.last_event_id",
    )
    .bind(&ids)
    .bind(&emails)
    .bind(&firsts)
    .bind(&lasts)
    .bind(&created)
    .bind(&updated)
    .bind(&event_ids)
    .execute(&mut **tx)
    .instrument(db::span("INSERT", "users"))
    .await?;
    Ok(())
}
