use clap::{Parser, Subcommand};
use eventline_projector::{Application, Config};

#[derive(Parser)]
#[command(name = "eventline-projector", version, about = "eventline projector: event log → read models")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Project the event log into the read models until stopped (the default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eventline_runtime::telemetry::init("eventline-projector");
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let pool = eventline_runtime::db::pool(&cli.config.database)?;
            eventline_runtime::db::migrate(&pool).await?;
            tracing::info!("Migrations applied");
            Ok(())
        }
        Command::Run => {
            let shutdown = eventline_runtime::shutdown::on_signal();
            let app = Application::build(cli.config).await?;
            tracing::info!(address = %app.address(), "Projector admin API listening");
            app.run_until(shutdown).await
        }
    }
}
