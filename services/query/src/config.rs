//! The query service's configuration, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;
use eventline_runtime::config::DatabaseConfig;

#[derive(Debug, Clone, Parser)]
#[command(name = "eventline-query", version, about = "eventline query service")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "EVENTLINE_QUERY_ADDR", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseConfig,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
