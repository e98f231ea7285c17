//! Apache Kafka nodes of a test's or a tool's own, for what must not happen to the shared broker:
//! a stop, a freeze, a restart, a wiped log, a cluster losing nodes. Every node is started
//! through the one launcher the scripts use (`scripts/kafka.sh run`), so a test's broker is
//! configured exactly as `make up`'s; the launcher execs Java, so the child process *is* the
//! broker and signals reach it directly.
//!
//! The API is blocking (the chaos tool is synchronous); async tests go through [`crate::OwnBroker`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take from its start to listening for clients (a JVM start, and in a
/// cluster the quorum's election).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The launcher: `scripts/kafka.sh` of the repository (`crate::repository`).
fn launcher() -> PathBuf {
    crate::repository().join("scripts/kafka.sh")
}

/// A loopback port nothing listens on now, below the ephemeral range (32768 and up on Linux):
/// a port the kernel handed out with bind(0) may be given to an outgoing connection before the
/// process meant to listen on it binds it. Also clear of the fixed ports of `make up`, the bench
/// (18081-18083) and the chaos tool (28081-28084).
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng as _;
    for _ in 0..1000 {
        let port = rand::rng().random_range(20_000..28_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port between 20000 and 28000"))
}

/// A random Kafka cluster id (16 random bytes, URL-safe base64 without padding). Never one that
/// starts with '-': `kafka-storage format --cluster-id -x…` takes it for an option (Kafka's own
/// `Uuid.randomUuid` skips those too).
fn new_cluster_id() -> String {
    use base64::Engine as _;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// One KRaft node (broker and controller combined) with its data under a directory of its own.
pub struct KafkaNode {
    pub node_id: u32,
    /// The client listener, on 127.0.0.1.
    pub port: u16,
    pub controller_port: u16,
    dir: PathBuf,
    voters: String,
    cluster_id: String,
    heap: &'static str,
    /// Launcher options beyond the node's place in its cluster (`--add-scram …`, `-- key=value …`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl KafkaNode {
    /// A single-node cluster under `dir`, started and listening. `extra` is passed to the
    /// launcher after the node's own options (`--add-scram …`, then `--` and broker settings).
    /// A node that exits before listening (a port taken meanwhile by another test's process) is
    /// started again on other ports, up to three times.
    pub fn start_single(dir: &Path, extra: Vec<String>) -> anyhow::Result<KafkaNode> {
        let mut attempt = 1;
        loop {
            let (port, controller_port) = (free_port()?, free_port()?);
            let mut node = KafkaNode {
                node_id: 1,
                port,
                controller_port,
                dir: dir.to_owned(),
                voters: format!("1@127.0.0.1:{controller_port}"),
                cluster_id: new_cluster_id(),
                heap: "384m",
                extra: extra.clone(),
                child: None,
            };
            node.spawn()?;
            match node.wait_listening() {
                Ok(()) => return Ok(node),
                Err(error) if attempt < 3 => {
                    eprintln!("Kafka node did not start (attempt {attempt}): {error:#}; trying other ports");
                    drop(node);
                    let _ = std::fs::remove_dir_all(dir.join("data"));
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `host:port` of the client listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's own log (`server.log`), for a failure message.
    pub fn server_log(&self) -> PathBuf {
        self.dir.join("logs/server.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let output =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("launcher.log"))?;
        let child = Command::new("bash")
            .arg(launcher())
            .arg("run")
            .arg(&self.dir)
            .args(["--node-id", &self.node_id.to_string(), "--port", &self.port.to_string()])
            .args(["--controller-port", &self.controller_port.to_string(), "--voters", &self.voters])
            .args(["--cluster-id", &self.cluster_id, "--heap", self.heap])
            .args(&self.extra)
            // The broker's JVM exports nothing over OTLP; keep the variable from confusing it.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} (is bash there?): {e}", launcher().display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the client listener accepts connections (the broker opens it last).
    pub fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "Kafka node {} exited ({status}) before listening; the end of its logs:\n{}",
                    self.node_id,
                    self.last_log_lines()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!(
            "Kafka node {} did not listen on {} within {START_TIMEOUT:?}; see {}",
            self.node_id,
            self.address(),
            self.server_log().display()
        )
    }

    /// The last lines of the launcher's output and the broker's log, for an error message (the
    /// directory may be gone by the time anyone reads the files).
    fn last_log_lines(&self) -> String {
        let tail = |path: PathBuf| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("rror") || l.contains("xception"))
                .collect();
            format!("{}: {}", path.display(), lines[lines.len().saturating_sub(5)..].join("\n"))
        };
        format!("{}\n{}", tail(self.dir.join("launcher.log")), tail(self.server_log()))
    }

    /// SIGKILL: the process dies at once; what it acknowledged is in the page cache and survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, then the same node again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_listening()
    }

    /// SIGKILL, then a node with an empty log and a new cluster id on the same ports: another log
    /// under the same address, as a broker replaced without its disk would be.
    pub fn replace_log(&mut self) -> anyhow::Result<()> {
        self.kill();
        let data = self.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        self.cluster_id = new_cluster_id();
        self.spawn()?;
        self.wait_listening()
    }

    /// SIGSTOP: the broker keeps its connections open and answers nothing.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT after [`KafkaNode::freeze`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(child) = &self.child else { return Ok(()) };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", child.id());
        Ok(())
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        let _ = self.resume();
        self.kill();
    }
}

/// Several nodes forming one KRaft quorum (every node a voter), on loopback ports.
pub struct KafkaCluster {
    pub nodes: Vec<KafkaNode>,
}

impl KafkaCluster {
    /// Starts `count` nodes under `dir` (one directory each) and waits until all listen. `extra`
    /// is given to every node's launcher (e.g. `--`, `min.insync.replicas=2`).
    pub fn start(dir: &Path, count: u32, extra: Vec<String>) -> anyhow::Result<KafkaCluster> {
        let cluster_id = new_cluster_id();
        let ports: Vec<(u16, u16)> =
            (0..count).map(|_| Ok((free_port()?, free_port()?))).collect::<std::io::Result<_>>()?;
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (port, controller_port)) in ports.into_iter().enumerate() {
            let node_id = i as u32 + 1;
            let mut node = KafkaNode {
                node_id,
                port,
                controller_port,
                dir: dir.join(format!("node-{node_id}")),
                voters: voters.clone(),
                cluster_id: cluster_id.clone(),
                heap: "384m",
                extra: extra.clone(),
                child: None,
            };
            node.spawn()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_listening()?;
        }
        Ok(KafkaCluster { nodes })
    }

    /// Every node's client listener, comma-separated (a bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(KafkaNode::address).collect::<Vec<_>>().join(",")
    }

    /// The node with this id.
    pub fn node_mut(&mut self, node_id: u32) -> Option<&mut KafkaNode> {
        self.nodes.iter_mut().find(|node| node.node_id == node_id)
    }
}
