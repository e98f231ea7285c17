//! The external programs some tests run: the generated clients of `make clients` and the Python
//! tools of `make test` (see scripts/clients.sh and scripts/common.sh).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

/// The repository root (this crate is `tests/`).
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where `make clients` generated the clients.
pub fn clients_dir() -> PathBuf {
    std::env::var_os("EVENTLINE_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join("target/clients"))
}

/// The virtualenv holding the pinned Python tools.
pub fn python_venv() -> PathBuf {
    std::env::var_os("EVENTLINE_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/eventline/venv"))
}

/// Runs `program` to completion, failing the test with a hint when it is not installed.
pub async fn run(mut program: Command, what: &str) -> Output {
    program.kill_on_drop(true).output().await.unwrap_or_else(|e| {
        panic!("running {what} ({e}); run the tests through `make test`, which installs and generates it")
    })
}

/// The combined stdout and stderr of a finished program, for assertion messages.
pub fn printed(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
