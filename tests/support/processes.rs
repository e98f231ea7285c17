//! The services as separate processes (the binaries `cargo test --workspace` builds), for tests of
//! what only a whole process shows: exporting traces, flushing them on exit, its log output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventline_testkit::TestEnv;

/// A service process, killed when dropped so a failing test leaves nothing running.
pub struct Process {
    child: Child,
    pub name: &'static str,
    pub base_url: String,
    pub log: PathBuf,
    /// Its environment, to start it again the same way.
    vars: Vec<(String, String)>,
}

impl Process {
    /// Starts `name` (`eventline-command`, …) listening on a free port, configured for `env` plus
    /// `extra` variables, writing its output to a file next to the test's temporary files.
    pub fn start(env: &TestEnv, name: &'static str, extra: &[(&str, &str)]) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let listen = match name {
            "eventline-command" => "EVENTLINE_COMMAND_ADDR",
            "eventline-query" => "EVENTLINE_QUERY_ADDR",
            _ => "EVENTLINE_PROJECTOR_ADDR",
        };
        let mut vars: Vec<(String, String)> = [
            ("KAFKA_BROKERS", env.kafka.brokers.clone()),
            ("EVENTLINE_TOPIC", env.kafka.topic.clone()),
            ("EVENTLINE_TOPIC_PARTITIONS", env.kafka.topic_partitions.to_string()),
            ("DATABASE_URL", env.database.url.clone()),
            ("REDIS_URL", env.redis.url.clone()),
            ("EVENTLINE_PROJECTOR_GROUP", format!("processes-{}", env.id)),
            // Unauthenticated local use, as `make up` runs, unless a test configures tokens.
            ("EVENTLINE_ALLOW_UNAUTHENTICATED", "true".to_owned()),
            (listen, address.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = std::env::temp_dir().join(format!("{}-{name}-{port}.log", env.id));
        let child = spawn(name, &vars, &log);
        Process { child, name, base_url: format!("http://{address}"), log, vars }
    }

    /// Kills the process (SIGKILL: no shutdown, no flush) and starts it again on the same address,
    /// with `changes` to its environment (empty value: unset).
    pub fn kill_and_restart(&mut self, changes: &[(&str, &str)]) {
        self.kill();
        for (name, value) in changes {
            self.vars.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.vars.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        self.child = spawn(self.name, &self.vars, &self.log);
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Resident memory of the process now, in bytes (Linux).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        let url = self.url("/readyz");
        eventline_testkit::eventually(Duration::from_secs(60), &format!("{} ready", self.name), || {
            let url = url.clone();
            async move {
                let response = eventline_testkit::http().get(url).send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// Sends SIGTERM and waits for the process to exit; asserts that it exited cleanly.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}; see {}", self.name, self.log.display());
    }

    /// Sends SIGTERM and waits up to `bound` for a clean exit; returns how long it took.
    pub async fn terminate_within(&mut self, bound: Duration) -> Duration {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = std::time::Instant::now();
        let status = eventline_testkit::eventually(bound, &format!("{} to exit", self.name), || {
            std::future::ready(self.child.try_wait().unwrap())
        })
        .await;
        assert!(status.success(), "{} exited with {status}; see {}", self.name, self.log.display());
        started.elapsed()
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, vars: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(binary(name))
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The service binary next to this test's executable (`target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (`cargo test --workspace`, or `cargo build --bins --features \
         eventline-command/fault-injection`)",
        path.display()
    );
    path
}
