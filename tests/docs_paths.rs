//! The docs name files: every path they name exists (a file moved leaves no stale pointer).
//! No service runs; this reads the Markdown only.

use std::path::{Path, PathBuf};

use eventline_testkit::repository;

/// Folders of the repository a path in the docs starts with.
const ROOTS: &[&str] = &[
    "services/",
    "crates/",
    "tools/",
    "tests/",
    "scripts/",
    "migrations/",
    "deploy/",
    "docs/",
    "clients/",
    ".ci/",
];

/// Files at the repository's top a doc may name alone.
const TOP_FILES: &[&str] = &["Makefile", "Dockerfile", "docker-compose.yml", "Cargo.toml", "README.md"];

/// The Markdown files that are docs: the README and everything under docs/.
fn documents() -> Vec<PathBuf> {
    let root = repository();
    let mut found = vec![root.join("README.md")];
    found.extend(eventline_testkit::files_under(&root.join("docs"), "md"));
    found
}

/// Repository paths named in `text`, in code spans (`services/…`) and as relative link targets
/// (resolved from `folder`, the document's), each with the line it is on.
fn named_paths(text: &str, folder: &Path) -> Vec<(usize, PathBuf)> {
    let root = repository();
    let mut named = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for span in line.split('`').skip(1).step_by(2) {
            if let Some(path) = repository_path(span) {
                named.push((n + 1, root.join(path)));
            }
        }
        for link in line.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            named.push((n + 1, folder.join(target)));
        }
    }
    named
}

/// `span` as a path in the repository, if it reads as one: under a known folder or a known top
/// file, without placeholders or globs, cut at a `:line` suffix.
fn repository_path(span: &str) -> Option<&str> {
    let span = span.trim().split(':').next()?.trim_end_matches(['.', ',']);
    if span.contains(['*', '<', '>', '{', '}', ' ', '$', '…']) {
        return None;
    }
    (ROOTS.iter().any(|root| span.starts_with(root)) || TOP_FILES.contains(&span)).then_some(span)
}

#[test]
fn every_path_the_docs_name_exists() {
    let mut missing = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let folder = document.parent().unwrap();
        for (line, path) in named_paths(&text, folder) {
            if !path.exists() {
                let shown = path.strip_prefix(repository()).unwrap_or(&path).display().to_string();
                let at = document.strip_prefix(repository()).unwrap_or(&document).display().to_string();
                missing.push(format!("{at}:{line} names {shown}"));
            }
        }
    }
    assert!(missing.is_empty(), "paths the docs name that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn a_path_is_read_from_code_spans_and_links() {
    let folder = repository().join("docs");
    let named = named_paths(
        "See `services/query/src/main.rs:12`, `make up`, [ops](operations.md#dlq) and [web](https://x.y/z).",
        &folder,
    );
    let paths: Vec<PathBuf> = named.into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, [repository().join("services/query/src/main.rs"), folder.join("operations.md")]);
}
