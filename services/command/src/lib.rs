//! The command service: the only way events enter the log.
//!
//! A command is validated and turned into events by a pure function (`decide`), checked against
//! the state of its aggregates by the business rules (`state`), appended to Kafka, and answered
//! `202 Accepted` only once the broker has durably acknowledged the append.

pub mod config;
pub mod decide;
pub mod http;
pub mod idempotency;
pub mod log;
pub mod metrics;
pub mod problems;
pub mod startup;
pub mod state;

pub use config::Config;
pub use startup::Application;
