//! An Apache Kafka broker of a test's own, for the async tests: what the shared broker must never
//! go through (killed, frozen, restarted, its log replaced).

use uuid::Uuid;

use crate::kafka;

/// An Apache Kafka broker of the test's own (a single KRaft node, through [`kafka::KafkaNode`]), on
/// free ports, with its log in a temporary directory removed when it drops: for tests that stop,
/// freeze, restart or replace the broker.
pub struct OwnBroker {
    node: kafka::KafkaNode,
    dir: std::path::PathBuf,
    pub address: String,
}

impl OwnBroker {
    pub async fn start() -> OwnBroker {
        OwnBroker::start_with(Vec::new()).await
    }

    /// A broker started with extra launcher options (`--add-scram …`, `-- key=value …`).
    pub async fn start_with(extra: Vec<String>) -> OwnBroker {
        let dir = std::env::temp_dir().join(format!("eventline-test-kafka-{}", Uuid::new_v4().simple()));
        let node = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || kafka::KafkaNode::start_single(&dir, extra)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("starting the test's Kafka broker (run the tests through `make test`): {e:#}")
        });
        OwnBroker { address: node.address(), node, dir }
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Kills the broker and starts it again on the same address and log.
    pub async fn restart(&mut self) {
        tokio::task::block_in_place(|| self.node.restart()).expect("restarting the test broker");
    }

    /// Kills the broker and starts one with an empty log and a new cluster id on the same address:
    /// another log, as a broker replaced without its disk.
    pub async fn replace_log(&mut self) {
        tokio::task::block_in_place(|| self.node.replace_log()).expect("replacing the test broker's log");
    }

    /// SIGSTOP: the broker keeps its connections open and answers nothing.
    pub fn freeze(&self) {
        self.node.freeze().expect("freezing the test broker");
    }

    /// SIGCONT after [`OwnBroker::freeze`].
    pub fn resume(&self) {
        self.node.resume().expect("resuming the test broker");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.node.resume();
        self.node.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
