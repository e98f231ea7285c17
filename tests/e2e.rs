//! The end-to-end tests: the three services together against real Kafka, PostgreSQL and Redis.
//!
//! One test binary with a module per area, so rdkafka, sqlx and OpenTelemetry are linked once and
//! `support` is compiled once. Run one area with `cargo test -p eventline-e2e --test e2e history::`.
//! Each test makes its own database, topic and consumer groups (`eventline_testkit::TestEnv`), so
//! the modules run side by side in one process.
#![allow(clippy::unwrap_used)]

mod support;

// The write path: commands, the decisions they are checked against, and the log they land in.
mod commands;
mod log_contract;
mod write_model;
mod write_model_processes;

// The projector and the read models it keeps.
mod bulk_rebuild;
mod migrations;
mod parking;
mod projections;
mod projector;
mod projector_faults;
mod read_models;
mod rebuild;

// The read path: queries, histories and live streams, the API documents and their clients.
mod api_reference;
mod conformance;
mod generated_clients;
mod history;
mod openapi;
mod problems;
mod queries;
mod walking_skeleton;

// Running it: faults, hostile input, security, telemetry, the console and the deployment files.
mod auth;
mod broker;
mod console;
mod cors;
mod deployment;
mod docs_paths;
mod door;
mod hostile;
mod kubernetes;
mod logs;
mod observability;
mod secure;
mod topic_guard;
