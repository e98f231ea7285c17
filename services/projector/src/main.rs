//! The projector's binary: the allocator, telemetry, and the command line
//! (`eventline_projector::command_line`).

/// mimalloc rather than glibc's malloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use eventline_projector::command_line::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = eventline_runtime::telemetry::init("eventline-projector");
    let cli: Cli = eventline_runtime::config::parse();
    command_line::run(cli).await
}
