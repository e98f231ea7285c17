use eventline_command::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = eventline_runtime::telemetry::init("eventline-command");
    let config: Config = eventline_runtime::config::parse();
    let shutdown = eventline_runtime::shutdown::on_signal();
    let app = Application::build(config).await?;
    tracing::info!(address = %app.address(), "Command service listening");
    app.run_until(shutdown).await
}
