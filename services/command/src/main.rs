use eventline_command::config::{Cli, Command, StateAction};
use eventline_command::{Application, log::EventLog, startup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = eventline_runtime::telemetry::init("eventline-command");
    let cli: Cli = eventline_runtime::config::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = eventline_runtime::shutdown::on_signal();
            let app = Application::build(cli.config).await?;
            tracing::info!(address = %app.address(), "Command service listening");
            app.run_until(shutdown).await
        }
        Command::State { action } => {
            let config = cli.config;
            let log = EventLog::connect(&config.kafka, config.append_timeout_ms)?;
            let write_model = startup::write_model(&config, log.clone())?;
            let result = match action {
                StateAction::Rebuild => write_model.rebuild().await.map(|()| true),
                StateAction::Verify => write_model.verify().await.map(|differences| report(&differences)),
            };
            log.flush().await;
            if !result? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Prints what `state verify` found (its output is the report); whether the state is equal.
#[allow(clippy::print_stdout)]
fn report(differences: &eventline_command::state::Differences) -> bool {
    for line in differences.lines.iter().take(50) {
        println!("{line}");
    }
    if differences.is_empty() {
        println!("The decision state equals a fold of the log.");
    } else {
        println!("{} differences between the decision state and a fold of the log.", differences.lines.len());
    }
    differences.is_empty()
}
