//! The audit: every action taken through the console, in `public.console_audit` (who, when,
//! what, with which parameters, and what came of it), written after the action whatever its
//! outcome, and shown in the console.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::access::{Caller, role_name};

/// One recorded action.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub audit_id: i64,
    pub at: DateTime<Utc>,
    /// The name of the token that acted.
    pub actor: String,
    pub role: String,
    /// e.g. `dead-letters.redrive`.
    pub action: String,
    #[schema(value_type = Object)]
    pub parameters: sqlx::types::Json<serde_json::Value>,
    pub succeeded: bool,
    #[schema(value_type = Object)]
    pub result: sqlx::types::Json<serde_json::Value>,
}

/// Records what `caller` did. The action has happened whatever becomes of its record, so a
/// failure to write it is logged here, not answered.
pub async fn record(
    public: &PgPool,
    caller: &Caller,
    action: &str,
    parameters: &serde_json::Value,
    succeeded: bool,
    result: &serde_json::Value,
) {
    let role = role_name(caller.principal.role);
    record_as(public, &caller.principal.name, role, action, parameters, succeeded, result).await;
}

/// Records what an operator did from the command line (`actor` names them; the role is `cli`),
/// in the same audit as the console's actions.
pub async fn record_cli(
    public: &PgPool,
    action: &str,
    parameters: &serde_json::Value,
    succeeded: bool,
    result: &serde_json::Value,
) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    record_as(public, &format!("cli:{user}"), "cli", action, parameters, succeeded, result).await;
}

async fn record_as(
    public: &PgPool,
    actor: &str,
    role: &str,
    action: &str,
    parameters: &serde_json::Value,
    succeeded: bool,
    result: &serde_json::Value,
) {
    let written = sqlx::query(
        "INSERT INTO public.console_audit (actor, role, action, parameters, succeeded, result)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(role)
    .bind(action)
    .bind(sqlx::types::Json(parameters))
    .bind(succeeded)
    .bind(sqlx::types::Json(result))
    .execute(public)
    .await;
    if let Err(error) = written {
        tracing::error!(%error, action, "Recording a console action in the audit failed");
    }
}

/// The newest `limit` entries, newest first.
pub async fn recent(public: &PgPool, limit: i64) -> sqlx::Result<Vec<AuditEntry>> {
    sqlx::query_as(
        "SELECT audit_id, at, actor, role, action, parameters, succeeded, result
         FROM public.console_audit ORDER BY audit_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(public)
    .await
}
