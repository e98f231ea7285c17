//! The command service: the only way events enter the log.
//!
//! A command is validated, turned into events by a pure decision function (`decide`), appended to
//! Kafka, and answered `202 Accepted` only once the broker has durably acknowledged the append.

pub mod access;
pub mod config;
pub mod decide;
pub mod http;
pub mod idempotency;
pub mod log;
mod startup;

pub use config::Config;
pub use startup::Application;
