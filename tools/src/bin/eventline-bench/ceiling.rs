//! The HTTP ceiling of the query runs: a process of its own (this binary, run with
//! `--serve-constant PORT USER_FILE ORDER_FILE`) answering `GET /users/{id}` and
//! `GET /orders/{id}` with a constant document as large as the query service's, through axum on
//! tokio's multi-threaded runtime as the services run, but with no database, tracing or metrics:
//! what HTTP alone costs on this machine, measured by the same load generator.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use eventline_tools::stack::Service;

/// Serves the two documents until killed.
pub async fn serve(port: u16, user: &Path, order: &Path) -> anyhow::Result<()> {
    let (user, order) = (Bytes::from(std::fs::read(user)?), Bytes::from(std::fs::read(order)?));
    let app = Router::new()
        .route("/users/{id}", get(move || constant(user.clone())))
        .route("/orders/{id}", get(move || constant(order.clone())))
        .route("/readyz", get(|| async { "ready" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn constant(body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json"), (header::ETAG, "\"1\"")], body)
}

/// Starts the ceiling process serving `user` and `order` (bodies) on `port`.
pub fn start(port: u16, dir: &Path, user: &[u8], order: &[u8]) -> anyhow::Result<Service> {
    let files: [PathBuf; 2] = [dir.join("ceiling-user.json"), dir.join("ceiling-order.json")];
    std::fs::write(&files[0], user)?;
    std::fs::write(&files[1], order)?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-constant")
        .arg(port.to_string())
        .args(&files)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the HTTP ceiling")?;
    Ok(Service::spawned(child, "http-ceiling", format!("http://127.0.0.1:{port}")))
}
