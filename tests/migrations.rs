//! Migrations reach every read-model version. They run with `public` on the search path while the
//! read models live in one schema per version, and several versions can exist when a migration
//! runs (live, previous, building). So for every point in the migration history at which versions
//! exist, this test makes a second version there, runs the rest, and requires both versions to end
//! with the same tables and columns. A new migration that alters only one version fails here; the
//! pattern to follow is in docs/architecture.md ("Add a read model or change its schema").

use std::path::PathBuf;

use eventline_runtime::config::DatabaseConfig;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

/// The first migration after which read-model versions exist (0004_read_model_versions).
const VERSIONS_FROM: usize = 4;

fn migration_files() -> Vec<PathBuf> {
    let dir = eventline_testkit::repository().join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// Tables and columns of a schema: `(table, column, type, nullable, default)`.
async fn shape(pool: &PgPool, schema: &str) -> Vec<(String, String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text
         FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A second version made the way `rebuild` makes one: the live version's tables copied.
async fn second_version(pool: &PgPool) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'read_model_v1'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    sqlx::query("CREATE SCHEMA read_model_v2").execute(pool).await.unwrap();
    for table in tables {
        sqlx::query(&format!(
            "CREATE TABLE read_model_v2.{table} (LIKE read_model_v1.{table} INCLUDING ALL)"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO read_model_versions (version, state) VALUES (2, 'previous')")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_migration_reaches_every_read_model_version() {
    let files = migration_files();
    assert!(files.len() > VERSIONS_FROM, "no migration after the versions came");
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/eventline".to_owned());
    let base = server.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    for upto in VERSIONS_FROM..files.len() {
        // The history up to `upto`, as a migrator of its own.
        let dir = std::env::temp_dir().join(format!("eventline-migrations-{id}-{upto}"));
        std::fs::create_dir_all(&dir).unwrap();
        for file in &files[..upto] {
            std::fs::copy(file, dir.join(file.file_name().unwrap())).unwrap();
        }
        let database =
            DatabaseConfig { url: format!("{base}/eventline_test_{id}_m{upto}"), max_connections: 2 };
        eventline_runtime::db::ensure_database(&database.url).await.unwrap();
        let pool = eventline_runtime::db::pool(&database).unwrap();
        Migrator::new(dir.as_path()).await.unwrap().run(&pool).await.unwrap();
        second_version(&pool).await;
        eventline_runtime::db::migrate(&pool).await.unwrap();
        let (first, second) = (shape(&pool, "read_model_v1").await, shape(&pool, "read_model_v2").await);
        assert!(!first.is_empty());
        let later: Vec<String> =
            files[upto..].iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        let only_live: Vec<_> = first.iter().filter(|c| !second.contains(c)).collect();
        let only_older: Vec<_> = second.iter().filter(|c| !first.contains(c)).collect();
        assert!(
            only_live.is_empty() && only_older.is_empty(),
            "a version that existed before {later:?} differs from the live one after them: \
             only in the live one {only_live:?}, only in the older one {only_older:?}"
        );
        pool.close().await;
        eventline_runtime::db::drop_database(&database.url).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
