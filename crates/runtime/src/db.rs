//! PostgreSQL pool and the one migrator for the read models.

use std::time::Duration;

use std::str::FromStr;

use anyhow::Context;
use sqlx::migrate::MigrateDatabase as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Postgres};

use crate::config::DatabaseConfig;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A lazily connecting pool: services start even while the database is down and report it through
/// `/readyz` instead of crash-looping.
pub fn pool(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(connect_options(config)?))
}

/// `DATABASE_URL` as connection options. Each connection names its program (`eventline-command`,
/// …) as its `application_name` unless the URL names one, so `pg_stat_activity` and the
/// benchmark can tell the services' backends apart.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(&config.url)
        .with_context(|| format!("DATABASE_URL is not a valid PostgreSQL URL: {}", redact(&config.url)))?;
    if options.get_application_name().is_some() {
        return Ok(options);
    }
    let program = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()));
    Ok(match program {
        Some(program) => options.application_name(&program),
        None => options,
    })
}

/// Fails when the server refuses us for good: its certificate is not trusted (or TLS is required
/// and refused), or it rejects the credentials. A server that is down or slow passes: services
/// start without it and report it through `/readyz`. Without this check a lazy pool would retry
/// such a refusal for ever while the service looked merely unready.
pub async fn check_access(pool: &PgPool) -> anyhow::Result<()> {
    let refused = match pool.acquire().await {
        Ok(_) => return Ok(()),
        Err(error @ sqlx::Error::Tls(_)) => error,
        // rustls's verdict on the server's certificate reaches sqlx as an I/O error.
        Err(sqlx::Error::Io(error)) if error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            sqlx::Error::Io(error)
        }
        Err(sqlx::Error::Database(error)) if error.code().is_some_and(|code| code.starts_with("28")) => {
            sqlx::Error::Database(error)
        }
        Err(other) => {
            tracing::debug!(error = %other, kind = ?other, "PostgreSQL did not answer at start-up");
            return Ok(());
        }
    };
    Err(anyhow::anyhow!("PostgreSQL (DATABASE_URL) refused our connection: {refused}"))
}

/// Runs pending migrations (safe to run concurrently: sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("running database migrations")
}

/// The migrations not applied yet (none on a migrated database; all of them before the first run).
pub async fn pending_migrations(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .context("asking which migrations were applied")?;
    let applied: Vec<i64> = match table {
        Some(_) => sqlx::query_scalar("SELECT version FROM public._sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .context("reading the applied migrations")?,
        None => Vec::new(),
    };
    Ok(MIGRATOR.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect())
}

/// Creates the database named in `url` if it does not exist.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let exists = Postgres::database_exists(url)
        .await
        .with_context(|| format!("connecting to the PostgreSQL server of {}", redact(url)))?;
    if exists {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // A concurrent creator may win the race; that is fine.
        Err(error)
            if error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| c == "42P04" || c == "23505") =>
        {
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("creating the database of {}", redact(url))),
    }
}

/// Drops the database named in `url`, disconnecting its sessions, if it exists. Not sqlx's
/// `force_drop_database`: it terminates the sessions and drops in two statements, so a pool that
/// reconnects in between makes the drop fail; `DROP DATABASE … WITH (FORCE)` does both at once.
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options =
        PgConnectOptions::from_str(url).with_context(|| format!("invalid DATABASE_URL {}", redact(url)))?;
    let name = options.get_database().unwrap_or("postgres").replace('"', "\"\"");
    let mut server = PgConnection::connect_with(&options.database("postgres"))
        .await
        .with_context(|| format!("connecting to the PostgreSQL server of {}", redact(url)))?;
    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    sqlx::raw_sql(&drop).execute(&mut server).await.with_context(|| format!("dropping database {name}"))?;
    Ok(())
}

/// Whether the database answers.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// A URL with its password replaced, for log lines.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A client span for one PostgreSQL statement (OpenTelemetry database conventions), e.g.
/// `span("INSERT", "users")`; instrument the statement's future with it.
pub fn span(operation: &'static str, collection: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = collection,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
