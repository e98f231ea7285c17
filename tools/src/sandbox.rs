//! Dependencies a run owns: a PostgreSQL cluster, a Redis server and an Apache Kafka broker started for it
//! on free loopback ports, in a directory of its own, and removed afterwards. Faults can then be
//! injected into them (crash and restart, flush, freeze) without touching the machine's services or
//! a running `make up` stack, which is what lets the chaos suite run inside `make test`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use eventline_testkit::kafka::KafkaNode;

/// The three dependencies, each on its own port, under one directory.
pub struct Sandbox {
    pub postgres: Postgres,
    pub redis: Redis,
    pub broker: KafkaNode,
    dir: PathBuf,
}

impl Sandbox {
    /// Starts all three. Needs PostgreSQL's server binaries (`initdb`, `pg_ctl`; found under
    /// `/usr/lib/postgresql/*/bin` or in `EVENTLINE_PG_BINDIR`), `redis-server` on the PATH, and
    /// Java with the broker's classpath, which the launcher (`scripts/kafka.sh`) resolves once.
    pub fn start(id: &str) -> anyhow::Result<Sandbox> {
        let dir = std::env::temp_dir().join(format!("eventline-sandbox-{id}"));
        std::fs::create_dir_all(&dir)?;
        let postgres = Postgres::start(&dir.join("postgres"))?;
        let redis = Redis::start(&dir.join("redis"))?;
        let broker = KafkaNode::start_single(&dir.join("broker"), Vec::new())?;
        Ok(Sandbox { postgres, redis, broker, dir })
    }
}

impl Sandbox {
    /// The directory everything of the run lives under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.broker.resume();
        self.broker.kill();
        self.redis.stop();
        self.postgres.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the run's own (trust authentication on loopback).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// The server's output. pg_ctl must be told it on every start: the server would otherwise
    /// keep pg_ctl's own output open, and reading that would never end.
    log: PathBuf,
    pub port: u16,
    /// PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user.
    run_as: Option<&'static str>,
}

impl Postgres {
    fn start(dir: &Path) -> anyhow::Result<Postgres> {
        Postgres::start_with(dir, "", None)
    }

    /// A cluster started with further server options (`-c name=value …`) and, if given, this
    /// `pg_hba.conf` instead of initdb's (trust on loopback). Files the options name (TLS keys)
    /// must be readable by the server's user: as root they are given to `postgres`.
    pub fn start_with(dir: &Path, options: &str, hba: Option<&str>) -> anyhow::Result<Postgres> {
        let bin = postgres_bindir()?;
        std::fs::create_dir_all(dir)?;
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            run(Command::new("chown").args(["-R", user]).arg(dir))?;
        }
        let (data, log) = (dir.join("data"), dir.join("server.log"));
        let postgres = Postgres { bin, data, log, port: eventline_testkit::kafka::free_port()?, run_as };
        let mut initdb = postgres.command("initdb");
        initdb.args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync", "-D"]);
        run(initdb.arg(&postgres.data))?;
        if let Some(hba) = hba {
            std::fs::write(postgres.data.join("pg_hba.conf"), hba)?;
        }
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200 {options}",
            postgres.port,
            dir.display()
        );
        let mut start = postgres.command("pg_ctl");
        start.args(["-w", "-t", "60", "-o", &options, "-l"]).arg(&postgres.log);
        run(start.arg("-D").arg(&postgres.data).arg("start"))?;
        Ok(postgres)
    }

    /// `postgres://postgres@127.0.0.1:<port>`, without a database.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Stops the server the way a crash would (immediate: no checkpoint, every connection cut;
    /// recovery replays the WAL) and starts it again.
    pub fn crash_and_restart(&self) -> anyhow::Result<()> {
        let mut restart = self.command("pg_ctl");
        restart.args(["-w", "-t", "60", "-m", "immediate", "-l"]).arg(&self.log);
        run(restart.arg("-D").arg(&self.data).arg("restart"))
    }

    fn stop(&self) {
        let mut stop = self.command("pg_ctl");
        let _ = run(stop.args(["-w", "-m", "immediate", "-D"]).arg(&self.data).arg("stop"));
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.stdin(Stdio::null());
        command
    }
}

/// A Redis server of the run's own, keeping nothing on disk: a restart is also a flush.
pub struct Redis {
    dir: PathBuf,
    pub port: u16,
    /// Certificate and key when it accepts TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl Redis {
    fn start(dir: &Path) -> anyhow::Result<Redis> {
        Redis::start_with(dir, None)
    }

    /// A server that accepts only TLS connections (`rediss://`) with this certificate and key.
    pub fn start_tls(dir: &Path, certificate: &Path, key: &Path) -> anyhow::Result<Redis> {
        Redis::start_with(dir, Some((certificate.to_owned(), key.to_owned())))
    }

    fn start_with(dir: &Path, tls: Option<(PathBuf, PathBuf)>) -> anyhow::Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let port = eventline_testkit::kafka::free_port()?;
        let mut redis = Redis { dir: dir.to_owned(), port, tls, child: None };
        redis.spawn()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// SIGKILL and start again, empty.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut redis = Command::new("redis-server");
        match &self.tls {
            None => redis.args(["--port", &port]),
            Some((certificate, key)) => redis
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(certificate)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = redis
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::fs::File::create(self.dir.join("server.log"))?)
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        self.child = Some(child);
        wait_for_port(self.port, "redis-server")
    }

    fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest PostgreSQL server binaries: `EVENTLINE_PG_BINDIR`, else `/usr/lib/postgresql/<v>/bin`.
fn postgres_bindir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("EVENTLINE_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("/usr/lib/postgresql: PostgreSQL's server binaries (set EVENTLINE_PG_BINDIR)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within 30 s")
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
