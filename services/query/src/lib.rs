//! The query service: reads the PostgreSQL read models the projector maintains and serves them
//! over HTTP. It never writes.

pub mod config;
pub mod consistency;
pub mod http;
pub mod live;
pub mod log_watch;
pub mod metrics;
pub mod problems;
mod startup;

pub use config::Config;
pub use startup::Application;
