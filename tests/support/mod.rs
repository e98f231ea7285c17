//! Helpers the end-to-end tests share: starting the services in-process, each on a free port,
//! against one `TestEnv`.

pub mod browser;
pub mod log;
pub mod openapi;
pub mod processes;
pub mod sse;
pub mod tools;

use std::future::Future;
use std::net::SocketAddr;

use eventline_testkit::TestEnv;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running service: its address, and how to stop it and learn how it ended.
pub struct Running {
    pub address: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops the service gracefully and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.unwrap()
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Runs a built application in the background.
fn spawn<F>(address: SocketAddr, run: impl FnOnce(CancellationToken) -> F) -> Running
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(shutdown.clone()));
    Running { address, shutdown, handle }
}

pub fn command_config(env: &TestEnv) -> eventline_command::Config {
    eventline_command::Config {
        listen: any_port(),
        kafka: env.kafka.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        deciders: 2,
        append_timeout_ms: 4000,
        idempotency_ttl_secs: 3600,
        access: open_access(),
        rate_limit_per_s: 0.0,
        rate_limit_burst: 1.0,
        serving: Default::default(),
        cors: Default::default(),
    }
}

/// Starts the command service and waits until it is ready (`/readyz`: the broker answers and the
/// decision state is folded from the log), as a load balancer would before sending it traffic.
pub async fn command_with(config: eventline_command::Config) -> Running {
    let app = eventline_command::Application::build(config).await.unwrap();
    let running = spawn(app.address(), |shutdown| app.run_until(shutdown));
    let url = running.url("/readyz");
    eventline_testkit::eventually(std::time::Duration::from_secs(60), "the command service ready", || {
        let url = url.clone();
        async move { eventline_testkit::http().get(url).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await;
    running
}

pub async fn command(env: &TestEnv) -> Running {
    command_with(command_config(env)).await
}

/// The console tokens every test projector accepts: an operator and a viewer.
pub const CONSOLE_TOKENS: &str = "olga:operator:operator-token-0123456789,vic:viewer:viewer-token-0123456789";

pub fn projector_config(env: &TestEnv, group: &str) -> eventline_projector::Config {
    eventline_projector::Config {
        listen: any_port(),
        group_id: format!("{group}-{}", env.id),
        session_timeout_ms: 6000,
        batch_size: 500,
        unconsumed_partition_secs: 30,
        fetch_wait_ms: 500,
        console_tokens: CONSOLE_TOKENS.parse().unwrap(),
        console_read_only: false,
        jwt: Default::default(),
        stall_secs: 30,
        park_max_keys: 100,
        rebuild_bulk_max_keys: 20_000_000,
        jaeger_url: "http://127.0.0.1:16686".into(),
        kafka: env.kafka.clone(),
        database: env.database.clone(),
        redis: env.redis.clone(),
        serving: Default::default(),
    }
}

pub async fn projector_with(config: eventline_projector::Config) -> Running {
    let app = eventline_projector::Application::build(config).await.unwrap();
    spawn(app.address(), |shutdown| app.run_until(shutdown))
}

pub async fn projector(env: &TestEnv) -> Running {
    projector_with(projector_config(env, "projector")).await
}

pub fn query_config(env: &TestEnv) -> eventline_query::Config {
    eventline_query::Config {
        listen: any_port(),
        database: env.database.clone(),
        topic: env.kafka.topic.clone(),
        brokers: env.kafka.brokers.clone(),
        kafka_security: env.kafka.security.clone(),
        consistency_wait_ms: 2000,
        live_buffer: 1024,
        live_heartbeat_secs: 15,
        serving: Default::default(),
        cors: Default::default(),
        read_timeout_secs: 10,
        read_rate_limit_per_s: 5000.0,
        read_rate_limit_burst: 10000.0,
        access: open_access(),
    }
}

/// Static `tokens` required, nothing else let in.
pub fn token_access(tokens: &str) -> eventline_runtime::auth::ApiAccess {
    eventline_runtime::auth::ApiAccess { api_tokens: tokens.parse().unwrap(), ..Default::default() }
}

/// Unauthenticated local use, as `make up` runs: the tests of authentication set their own.
pub fn open_access() -> eventline_runtime::auth::ApiAccess {
    eventline_runtime::auth::ApiAccess { allow_unauthenticated: true, ..Default::default() }
}

pub async fn query_with(config: eventline_query::Config) -> Running {
    let app = eventline_query::Application::build(config).await.unwrap();
    spawn(app.address(), |shutdown| app.run_until(shutdown))
}

pub async fn query(env: &TestEnv) -> Running {
    query_with(query_config(env)).await
}

/// `projection`'s read-model versions and their states, oldest first.
pub async fn version_states(
    env: &TestEnv,
    projection: eventline_read_models::Projection,
) -> Vec<(i32, eventline_read_models::State)> {
    sqlx::query_as(
        "SELECT version, state FROM public.read_model_versions WHERE projection = $1 ORDER BY version",
    )
    .bind(projection)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}
