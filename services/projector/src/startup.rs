//! Wiring: migrations, the consumer, the runner and the admin API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use eventline_runtime::auth::{Authenticator, Scopes, Unconfigured};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::admin;
use crate::console::ConsoleState;
use crate::console::access::Access;
use crate::console::projection::Projection;
use crate::live::consumer::{self, Assignment};
use crate::live::coverage::Coverage;
use crate::live::observer::{self, Observer};
use crate::live::prepare;
use crate::live::runner::{Role, Runner, RunnerStatus, open_live_targets};
use crate::log_check::{self, LogFinding};
use crate::operations::progress::Progress;
use crate::operations::rebuild;
use eventline_read_models::{self as read_models, State, Version};
use tokio::sync::mpsc::UnboundedReceiver;

pub struct Application {
    listener: TcpListener,
    access: Arc<Access>,
    runner: Runner,
    assignments: UnboundedReceiver<Assignment>,
    config: Config,
}

impl Application {
    /// Migrates the database, ensures the topic, joins the consumer group and binds the admin
    /// listener (port 0 picks a free port; see `address`). Projects into the live read-model
    /// version, and follows it when a rebuild or rollback switches.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        eventline_runtime::metrics::install(crate::metrics::describe);
        let authenticator = Authenticator::new(
            &config.console_tokens,
            "EVENTLINE_CONSOLE_TOKENS",
            Scopes::NONE,
            &config.jwt,
            Unconfigured::Closed,
        )
        .await?;
        let access = Access::new(authenticator, config.console_read_only);
        if !access.configured() {
            tracing::info!("No console tokens (EVENTLINE_CONSOLE_TOKENS): the console refuses everyone");
        }
        let public = prepare(&config).await?;
        // A projection never live that nothing is ahead of (a fresh database) is live at once, and
        // applied from the start with the others; any other is caught up beside them (`run_until`).
        adopt_new_projections(&public, &config).await?;
        let targets = open_live_targets(&public, &config.database)
            .await
            .context("finding the live read-model versions")?;
        // Never project one log into read models built from another.
        for target in &targets {
            check_log(&public, target.version, &config).await?;
        }
        let (runner, assignments) =
            Runner::new(&config, public, targets, Role::Live, &config.group_id, config.batch_size)?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        Ok(Application { listener, access: Arc::new(access), runner, assignments, config })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Projects until `shutdown` (or a fatal error, which is returned), serving the admin API
    /// alongside.
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let coverage =
            Arc::new(Coverage::new(std::time::Duration::from_secs(self.config.unconsumed_partition_secs)));
        let projection = Projection::new(
            std::time::Duration::from_secs(self.config.stall_secs),
            consumer::instance_name(),
            self.config.console_read_only,
        );
        let console = ConsoleState {
            access: self.access.clone(),
            projection: projection.clone(),
            writing: self.runner.writing.clone(),
            public: self.runner.public.clone(),
            kafka: self.config.kafka.clone(),
            status: self.runner.status.clone(),
            jaeger_url: self.config.jaeger_url.clone(),
            config: Arc::new(self.config.clone()),
            jobs: Arc::default(),
        };
        let admin_state = admin::AdminState {
            coverage: coverage.clone(),
            writing: self.runner.writing.clone(),
            consumer: self.runner.consumer.clone(),
            kafka: self.config.kafka.clone(),
            status: self.runner.status.clone(),
            fast_path: self.runner.fast_path.clone(),
            stall: std::time::Duration::from_secs(self.config.stall_secs),
            topic: eventline_runtime::topic_guard::TopicGuard::watch(self.config.kafka.clone()),
        };
        let admin_shutdown = shutdown.child_token();
        let admin = tokio::spawn(eventline_runtime::server::serve(
            self.listener,
            admin::router(admin_state, console),
            admin_shutdown.clone(),
            self.config.serving,
        ));
        // Stopped by a shutdown, or by the observer when the broker turns out to serve another log.
        let stop = shutdown.child_token();
        let observer = tokio::spawn(observer::run(
            Observer {
                writing: self.runner.writing.clone(),
                public: self.runner.public.clone(),
                kafka: self.config.kafka.clone(),
                mirror: self.runner.mirror.clone(),
                status: self.runner.status.clone(),
                refuse: stop.clone(),
                consumer: self.runner.consumer.clone(),
                group_id: self.config.group_id.clone(),
                coverage,
                published: projection,
            },
            admin_shutdown.clone(),
        ));
        // Projections never live yet (added by a deploy) are caught up beside the live ones.
        let first_catch_up = tokio::spawn(catch_up_new_projections(
            self.config.clone(),
            self.runner.public.clone(),
            self.runner.status.clone(),
            stop.clone(),
        ));
        let status = self.runner.status.clone();
        let result = self.runner.run(self.assignments, stop).await;
        admin_shutdown.cancel();
        first_catch_up.abort();
        let _ = tokio::join!(admin, observer);
        result.context("projection stopped")?;
        if let Some(fatal) = status.fatal.lock().ok().and_then(|f| f.clone()) {
            anyhow::bail!("projection stopped: {fatal}");
        }
        tracing::info!("Projector stopped");
        Ok(())
    }
}

/// Refuses to project into `version` if it was built from another log than the broker serves.
pub(crate) async fn check_log(public: &PgPool, version: Version, config: &Config) -> anyhow::Result<()> {
    match log_check::check(public, version, &config.kafka, true).await? {
        LogFinding::Unknown { reason } => {
            tracing::warn!(%reason, "Cannot tell which log the broker serves; not checking the read models against it")
        }
        verdict => {
            if let Some(refusal) = verdict.refusal(&config.kafka.topic, version) {
                anyhow::bail!(refusal);
            }
        }
    }
    Ok(())
}

/// Makes live every projection never live that is not behind the main projection.
async fn adopt_new_projections(public: &PgPool, config: &Config) -> anyhow::Result<()> {
    for version in never_live(public).await? {
        take_new(public, version, config).await?;
    }
    Ok(())
}

/// The first version of each projection never live (a migration created it `building`).
async fn never_live(public: &PgPool) -> anyhow::Result<Vec<Version>> {
    let live: Vec<read_models::Projection> =
        read_models::live_versions(public).await?.iter().map(|v| v.projection).collect();
    let mut versions = Vec::new();
    for projection in read_models::Projection::ALL.into_iter().filter(|p| !live.contains(p)) {
        match read_models::in_state(public, projection, State::Building).await? {
            Some(version) => versions.push(version),
            None => {
                tracing::warn!(%projection, "The projection has neither a live nor a building version; run a rebuild of it")
            }
        }
    }
    Ok(versions)
}

/// Takes the rebuild lock of `version` (a projection never live), checks its log and makes it
/// live if nothing is ahead of it: the lock and whether it is live now, or `None` while another
/// process holds the lock.
async fn take_new(
    public: &PgPool,
    version: Version,
    config: &Config,
) -> anyhow::Result<Option<(sqlx::PgConnection, bool)>> {
    let Some(exclusive) = rebuild::try_exclusive(&config.database.url, version.projection).await? else {
        return Ok(None);
    };
    check_log(public, version, config).await?;
    let adopted = rebuild::adopt_if_not_behind(public, version, &config.kafka.topic).await?;
    Ok(Some((exclusive, adopted)))
}

/// Catches up, one after the other, the projections that have no live version yet (a projection
/// added to the code, whose first version a migration created `building`), each from the log's
/// first offset with a consumer of its own, and switches each live once it reached the log's end:
/// the live runner then applies it beside the others. One process does it at a time (the
/// projection's rebuild lock); the others wait and look again. Errors are logged and retried.
async fn catch_up_new_projections(
    config: Config,
    public: PgPool,
    status: Arc<RunnerStatus>,
    stop: CancellationToken,
) {
    loop {
        match catch_up_one_new_projection(&config, &public).await {
            Ok(true) => {
                status.live_versions_changed();
                continue;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "Catching up a new projection failed; trying again"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

/// Catches up one projection never live, if there is one this process may take; `true` when one
/// became live.
async fn catch_up_one_new_projection(config: &Config, public: &PgPool) -> anyhow::Result<bool> {
    for version in never_live(public).await? {
        // Another process catches it up while it holds the lock.
        let Some((_exclusive, adopted)) = take_new(public, version, config).await? else { continue };
        if adopted {
            return Ok(true);
        }
        tracing::info!(%version, "Catching up a projection that was never live, from the log's start");
        crate::operations::bulk::load(config, public, &[version], State::Building, Progress::Log).await?;
        let switched = rebuild::catch_up_and_switch(
            config,
            public,
            version,
            State::Building,
            Progress::Log,
            config.batch_size.max(1000),
        )
        .await?;
        tracing::info!(version = %switched.live, events = switched.events, seconds = switched.seconds, "The projection is live");
        return Ok(true);
    }
    Ok(false)
}
