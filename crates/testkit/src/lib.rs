//! Test harness: every test gets its own PostgreSQL database and Kafka topic on the real services
//! named by `DATABASE_URL`, `KAFKA_BROKERS` and `REDIS_URL` (defaults: the local stack of
//! `make up`), so tests never see each other's data and can run in parallel. With the
//! `testcontainers` feature, services not named in the environment run in containers instead.
//!
//! - [`env`]: a test's database, topic and Redis, and raw access to its topic;
//! - [`kafka`]: Kafka nodes and clusters of a test's or a tool's own (the launcher `make up` uses),
//!   and [`broker`], the async handle tests hold on one;
//! - [`proxy`]: a TCP proxy to cut a dependency away from one client;
//! - [`openapi`]: the committed documents and the rules they must carry;
//! - [`jaeger`]: spans read back from a real Jaeger;
//! - [`router`]: a service's routes sent requests without a listener, on a `#[sqlx::test]`
//!   database.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod broker;
#[cfg(feature = "testcontainers")]
mod containers;
pub mod env;
pub mod jaeger;
pub mod kafka;
pub mod openapi;
pub mod proxy;
pub mod router;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use broker::OwnBroker;
pub use env::{FIRST_VERSION, TEST_PARTITIONS, TestEnv};
pub use openapi::{assert_openapi_committed, assert_sku_patterns};
pub use proxy::TcpProxy;

/// Every file under `dir`, its subfolders included, whose extension is `extension`, sorted.
pub fn files_under(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The repository's root: `EVENTLINE_ROOT` when set (the scripts set it), else the workspace that
/// holds the running test's package (cargo names it in `CARGO_MANIFEST_DIR` when it runs a test),
/// else the checkout this kit was built in. Read when the test runs rather than baked in when it
/// compiles: a build directory shared by two checkouts (CI's clone and a working copy) reuses
/// binaries built in the other one.
pub fn repository() -> PathBuf {
    if let Some(root) = std::env::var_os("EVENTLINE_ROOT") {
        return PathBuf::from(root);
    }
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let workspace =
        running.as_deref().and_then(|dir| dir.ancestors().find(|d| d.join("Cargo.lock").exists()));
    workspace.map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), Path::to_path_buf)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}
