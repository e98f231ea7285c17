//! The system under test: the release binaries as processes, on ports and a topic and database of
//! the benchmark's own, so a running `make up` stack is neither measured nor disturbed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::PgPool;

/// Where the benchmark's services run and what they use.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bin_dir: PathBuf,
    pub brokers: String,
    pub redis: String,
    /// The server's URL without a database (`postgres://user@host:port`).
    pub postgres: String,
    pub topic: String,
    pub database: String,
    pub log_dir: PathBuf,
    /// Further environment for every service (e.g. the topic's replication on a cluster).
    pub extra_env: Vec<(&'static str, String)>,
}

/// A Kafka client configuration for `brokers`, secured as the environment says
/// (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`, `KAFKA_CLIENT_PROPERTIES`), exactly as
/// the services read those variables: the bench and the demo reach the brokers the stack uses.
pub fn kafka_client(brokers: &str) -> anyhow::Result<rdkafka::ClientConfig> {
    #[derive(clap::Parser)]
    struct FromEnvironment {
        #[command(flatten)]
        kafka: eventline_runtime::config::KafkaConfig,
    }
    let parsed = <FromEnvironment as clap::Parser>::try_parse_from(["eventline-tool"])
        .context("the Kafka settings in the environment")?;
    let kafka = parsed.kafka.with_brokers(brokers);
    kafka.security.check().map_err(anyhow::Error::msg)?;
    Ok(eventline_runtime::kafka::client_config(&kafka))
}

impl Setup {
    /// The dependencies `make up` uses (`KAFKA_BROKERS`, `REDIS_URL`, the server of
    /// `DATABASE_URL`), the release binaries next to this tool, and `topic` and `database` of the
    /// tool's own. Logs go to `log_dir`.
    pub fn from_environment(topic: String, database: String, log_dir: PathBuf) -> anyhow::Result<Setup> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let database_url = var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/eventline");
        let postgres =
            database_url.rsplit_once('/').map_or(database_url.clone(), |(server, _)| server.to_owned());
        Ok(Setup {
            bin_dir: bin_dir()?,
            brokers: var("KAFKA_BROKERS", "127.0.0.1:9092"),
            redis: var("REDIS_URL", "redis://127.0.0.1:6379"),
            postgres,
            topic,
            database,
            log_dir,
            extra_env: Vec::new(),
        })
    }

    pub fn database_url(&self) -> String {
        format!("{}/{}", self.postgres, self.database)
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        let mut environment = vec![
            ("KAFKA_BROKERS", self.brokers.clone()),
            ("EVENTLINE_TOPIC", self.topic.clone()),
            ("DATABASE_URL", self.database_url()),
            ("REDIS_URL", self.redis.clone()),
            ("EVENTLINE_PROJECTOR_GROUP", format!("{}.projector", self.topic)),
            ("RUST_LOG", "warn".to_owned()),
            // One load generator is one client: no token, no per-client limit.
            ("EVENTLINE_ALLOW_UNAUTHENTICATED", "true".to_owned()),
            ("EVENTLINE_RATE_LIMIT_PER_S", "0".to_owned()),
            ("EVENTLINE_READ_RATE_LIMIT_PER_S", "0".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ];
        environment.extend(self.extra_env.iter().cloned());
        environment
    }

    /// Runs `eventline-projector <args>` to completion.
    pub fn projector_command(&self, args: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let log = self.log_dir.join(format!("projector-{}.log", args.join("-")));
        let status = Command::new(self.bin_dir.join("eventline-projector"))
            .args(args)
            .envs(self.environment())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .status()
            .with_context(|| format!("running eventline-projector {args:?}"))?;
        if !status.success() {
            bail!("eventline-projector {args:?} failed ({status}); see {}", log.display());
        }
        Ok(started.elapsed())
    }

    /// Starts a service (`eventline-command`, …) on `port`.
    pub fn start(&self, name: &'static str, port: u16) -> anyhow::Result<Service> {
        self.start_with(name, port, &[])
    }

    /// Starts a service with `extra` environment on top of the setup's.
    pub fn start_with(
        &self,
        name: &'static str,
        port: u16,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let listen = match name {
            "eventline-command" => "EVENTLINE_COMMAND_ADDR",
            "eventline-query" => "EVENTLINE_QUERY_ADDR",
            _ => "EVENTLINE_PROJECTOR_ADDR",
        };
        // Per port: two instances of one service (a consumer group of two) keep separate logs.
        let log = self.log_dir.join(format!("{name}-{port}.log"));
        let child = Command::new(self.bin_dir.join(name))
            .envs(self.environment())
            .env(listen, format!("127.0.0.1:{port}"))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} from {}", self.bin_dir.display()))?;
        Ok(Service { child: Some(child), name, base: format!("http://127.0.0.1:{port}") })
    }

    /// The benchmark database on the server, dropped first if a run left it.
    pub async fn fresh_database(&self) -> anyhow::Result<()> {
        drop_database(&self.postgres, &self.database).await?;
        self.projector_command(&["migrate"])?;
        Ok(())
    }
}

/// Drops a database of the server at `server`, disconnecting its sessions.
pub async fn drop_database(server: &str, database: &str) -> anyhow::Result<()> {
    eventline_runtime::db::drop_database(&format!("{server}/{database}")).await
}

/// Deletes `topic` (a tool's own, at the end of its run) from `brokers`.
pub async fn delete_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka_client(brokers)?.create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("deleting topic {topic}: {code}"))?;
    }
    Ok(())
}

/// A running service process; stopped (SIGTERM, then killed) when dropped.
pub struct Service {
    child: Option<Child>,
    pub name: &'static str,
    pub base: String,
}

impl Service {
    /// A process started otherwise, stopped like a service.
    pub fn spawned(child: Child, name: &'static str, base: String) -> Service {
        Service { child: Some(child), name, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http.get(self.url("/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not become ready within 60 s", self.name)
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no goodbye, nothing flushed.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until the projector (this service) reports no lag on any partition.
    pub async fn caught_up(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let status: Option<serde_json::Value> = match http.get(self.url("/projections")).send().await {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            // Every projection, not only the main one.
            let caught_up = |s: &serde_json::Value| {
                s["lag"] == 0
                    && s["projections"].as_array().is_some_and(|all| all.iter().all(|p| p["lag"] == 0))
            };
            if status.as_ref().is_some_and(caught_up) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the projector did not catch up within 600 s")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Where the tool writes: `<repository>/target/<name>` (the repository is `EVENTLINE_ROOT`, or the
/// working directory), created if missing; returns the repository and that directory.
pub fn output_dir(name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let repository =
        std::env::var("EVENTLINE_ROOT").map(PathBuf::from).or_else(|_| std::env::current_dir())?;
    let out = repository.join("target").join(name);
    std::fs::create_dir_all(&out)?;
    Ok((repository, out))
}

/// A short id for the topic and database names of one run.
pub fn run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

/// The directory holding the release binaries: next to this one.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(Path::to_path_buf).context("the benchmark's directory")?;
    for name in ["eventline-command", "eventline-projector", "eventline-query"] {
        if !dir.join(name).exists() {
            bail!("{name} is not built next to the benchmark in {} (run `make bench`)", dir.display());
        }
    }
    Ok(dir)
}

/// Sum of the live version's checkpoints (events applied) in the benchmark database.
pub async fn applied(pool: &PgPool, topic: &str) -> anyhow::Result<i64> {
    let live = eventline_read_models::live(pool, eventline_read_models::Projection::Main).await?.schema();
    let sum: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT sum(next_offset)::bigint FROM {live}.projection_checkpoints WHERE topic = $1"
    ))
    .bind(topic)
    .fetch_one(pool)
    .await?;
    Ok(sum.unwrap_or(0))
}
