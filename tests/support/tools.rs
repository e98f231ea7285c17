//! The external programs some tests run: the generated clients of `make clients` and the Python
//! tools of `make test` (see scripts/clients.sh and scripts/common.sh).

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

/// The repository root (this crate is `tests/`).
pub fn repository() -> PathBuf {
    eventline_testkit::repository()
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

/// The documents of a YAML stream, as JSON values (PyYAML of the test virtualenv reads them).
pub fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    let python = python_venv().join("bin/python");
    let mut reader = std::process::Command::new(&python)
        .args(["-c", "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} ({e}): `make test` installs the Python tools", python.display()));
    std::io::Write::write_all(&mut reader.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success(), "not YAML:\n{yaml}");
    serde_json::from_slice(&output.stdout).unwrap()
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
