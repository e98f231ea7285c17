//! The projector's command line: the service (`run`, the default) and the operator commands,
//! parsed here and handed to `operations::cli`, `operations::rebuild` or the wiring
//! (`Application`). `main.rs` only sets up the allocator and telemetry and calls [`run`].

use clap::{Parser, Subcommand};

use crate::cli::{self, DlqCommand, ParkedCommand};
use crate::progress::Progress;
use crate::rebuild;
use crate::{Application, Config};
use eventline_read_models::Projection;

#[derive(Parser)]
#[command(name = "eventline-projector", version, about = "eventline projector: event log → read models")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
pub enum Command {
    /// Project the event log into the read models until stopped (the default).
    Run,
    /// Partitions, checkpoints, high watermarks, lag and dead letters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Build a new version of the read models from the log next to the live one, then switch to
    /// it atomically (the live one keeps serving meanwhile; it is kept for `rollback`).
    Rebuild {
        /// Events per transaction while replaying.
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Rebuild only this projection (main, orders_by_status); all of them by default.
        #[arg(long)]
        projection: Option<Projection>,
    },
    /// Switch back to the previous read-model version (brought up to date with the log first).
    Rollback {
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Roll back only this projection; by default every projection that has a previous version.
        #[arg(long)]
        projection: Option<Projection>,
    },
    /// Compare the live read models with the log folded from the start into a scratch version:
    /// rows and a checksum per table, and a sample of the rows that differ. Exits 1 on a difference.
    Verify {
        #[arg(long)]
        json: bool,
        /// Differing rows shown per table and side.
        #[arg(long, default_value_t = 5)]
        sample: usize,
        #[arg(long, default_value_t = 5000)]
        batch_size: usize,
        /// Verify only this projection; all of them by default.
        #[arg(long)]
        projection: Option<Projection>,
    },
    /// Work the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Work the parked keys (events the database refused, with every later event of their key).
    Parked {
        /// The projection whose parked keys these are.
        #[arg(long, default_value = "main")]
        projection: Projection,
        #[command(subcommand)]
        command: ParkedCommand,
    },
    /// Which log the live read models were built from, and which the broker serves now. With
    /// --check, exits 1 when they differ (the read models belong to another log).
    LogIdentity {
        #[arg(long)]
        check: bool,
    },
    /// Create the database if missing, apply pending migrations and exit.
    Migrate {
        /// Apply nothing: wait until another process (a migration job) has applied every
        /// migration this binary knows, then exit 0; exit 1 after --timeout-secs. For init
        /// containers that must not start a service on an older schema.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Drop the read models (the whole database) and recreate them empty, for when the log they
    /// were built from is gone. Requires --yes.
    Reset {
        /// Confirm that the read models should be destroyed.
        #[arg(long)]
        yes: bool,
    },
}

/// The projection named, or all of them.
fn chosen(projection: Option<Projection>) -> Vec<Projection> {
    projection.map_or_else(|| Projection::ALL.to_vec(), |p| vec![p])
}

/// Runs what the command line asks for: the service (by default) or one operator command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = eventline_runtime::shutdown::on_signal();
            let app = Application::build(cli.config).await?;
            tracing::info!(address = %app.address(), "Projector admin API listening");
            app.run_until(shutdown).await
        }
        Command::Status { json } => cli::status(&cli.config, json).await,
        Command::Rebuild { batch_size, projection } => {
            cli::rebuild(&cli.config, &chosen(projection), Progress::detect(), batch_size).await
        }
        Command::Rollback { batch_size, projection } => {
            rebuild::rollback_chosen(&cli.config, projection, Progress::detect(), batch_size)
                .await
                .map(|_| ())
        }
        Command::Verify { json, sample, batch_size, projection } => {
            cli::verify(&cli.config, chosen(projection), Progress::detect(), batch_size, sample, json).await
        }
        Command::Dlq(command) => cli::dlq(&cli.config, command).await,
        Command::Parked { projection, command } => cli::parked(&cli.config, projection, command).await,
        Command::LogIdentity { check } => cli::log_identity(&cli.config, check).await,
        Command::Migrate { wait: false, .. } => migrate(&cli.config).await,
        Command::Migrate { wait: true, timeout_secs } => wait_for_migrations(&cli.config, timeout_secs).await,
        Command::Reset { yes: false } => {
            anyhow::bail!("reset destroys the read models; pass --yes to confirm")
        }
        Command::Reset { yes: true } => {
            eventline_runtime::db::drop_database(&cli.config.database.url).await?;
            tracing::warn!("Read models dropped");
            migrate(&cli.config).await
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    eventline_runtime::db::ensure_database(&config.database.url).await?;
    let pool = eventline_runtime::db::pool(&config.database)?;
    eventline_runtime::db::migrate(&pool).await?;
    tracing::info!("Database ready and migrated");
    Ok(())
}

async fn wait_for_migrations(config: &Config, timeout_secs: u64) -> anyhow::Result<()> {
    let pool = eventline_runtime::db::pool(&config.database)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        match eventline_runtime::db::pending_migrations(&pool).await {
            Ok(pending) if pending.is_empty() => {
                tracing::info!("The database is migrated");
                return Ok(());
            }
            Ok(pending) => tracing::info!(?pending, "Waiting for the migrations to be applied"),
            Err(error) => tracing::info!(error = %format!("{error:#}"), "Waiting for the database"),
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the database was not migrated within {timeout_secs} s (is the migration job running?)"
        );
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
