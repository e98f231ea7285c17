//! The results: `target/bench/results-<label>.json` (the keys of the benchmark issue, plus the ceilings and
//! details they were compared with) and `docs/benchmarks.md` (the same as tables, with the machine
//! and a reading). The hand-written analysis between the markers of `docs/benchmarks.md` is kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::Measured;
use eventline_tools::stack::Setup;

const ANALYSIS_START: &str = "<!-- analysis: kept by make bench -->";
const ANALYSIS_END: &str = "<!-- /analysis -->";

/// A goal of the issue: at least or at most a value, or only reported.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    Report,
}

/// The headline keys, in the order, with their goals and units.
const KEYS: [(&str, Goal, &str, &str); 21] = [
    (
        "command_single_per_s",
        Goal::AtLeast(10_000.0),
        "commands/s",
        "max sustained single-command POSTs (durable ack), 64 connections",
    ),
    ("command_p99_ms_at_70", Goal::Report, "ms", "p99 latency at 70 % of that rate (open loop)"),
    (
        "command_contended_per_s",
        Goal::Report,
        "decisions/s",
        "100 clients adding or removing 1 on 10 skus (202 or 409, both decided against the state)",
    ),
    (
        "command_vs_broker_ceiling",
        Goal::Report,
        "×",
        "that rate ÷ raw rdkafka produce rate, same broker and settings",
    ),
    (
        "command_batch_events_per_s",
        Goal::AtLeast(50_000.0),
        "events/s",
        "through POST /commands/batch (1000 per request, 4 connections)",
    ),
    (
        "projector_events_per_s",
        Goal::AtLeast(50_000.0),
        "events/s",
        "prefilled log projected into empty read models",
    ),
    (
        "projector_vs_consume_ceiling",
        Goal::AtLeast(0.3),
        "×",
        "÷ the same consumer reading and decoding, no writes",
    ),
    (
        "projector_vs_naive",
        Goal::AtLeast(10.0),
        "×",
        "÷ one transaction and one Redis round trip per event (sample)",
    ),
    (
        "rebuild_1m_s",
        Goal::AtMost(30.0),
        "s per 1M",
        "eventline-projector rebuild of every projection (one read of the log loads them all in bulk, then each catches up and switches), scaled to 1M events",
    ),
    (
        "rebuild_vs_consume_ceiling",
        Goal::AtLeast(0.5),
        "×",
        "the rebuild's events/s ÷ the consumer reading and decoding, no writes",
    ),
    (
        "event_index_projector_cost",
        Goal::Report,
        "×",
        "the projector's rate lost to writing the event index (1 − with ÷ without, same log and run)",
    ),
    (
        "event_index_bytes_per_event",
        Goal::Report,
        "bytes",
        "the event index (histories, as-of reads, live streams) per event, its indexes and TOAST included",
    ),
    ("query_max_rps", Goal::AtLeast(8_000.0), "GETs/s", "mixed /users/{id} and /orders/{id}, 32 connections"),
    ("query_p99_ms_at_half", Goal::AtMost(3.0), "ms", "p99 at half that rate (open loop)"),
    ("query_vs_ceiling", Goal::AtLeast(0.4), "×", "÷ raw primary-key SELECTs on the same database"),
    (
        "query_vs_http_ceiling",
        Goal::AtLeast(0.5),
        "×",
        "÷ an axum handler answering constant documents of the same size (no database), same load",
    ),
    (
        "freshness_p50_ms_at_100_per_s",
        Goal::AtMost(15.0),
        "ms",
        "command accepted → visible through GET with its token, 100 commands/s",
    ),
    ("freshness_p99_ms_at_100_per_s", Goal::AtMost(40.0), "ms", "the same, p99"),
    ("freshness_p50_ms", Goal::AtMost(50.0), "ms", "the same at half the max single-command rate"),
    ("freshness_p99_ms", Goal::AtMost(250.0), "ms", "the same, p99"),
    (
        "freshness_dropped",
        Goal::AtMost(0.0),
        "requests",
        "of that run, failed or dropped at the load generator's cap (2,000 in flight)",
    ),
];

pub struct Results {
    quick: bool,
    broker: String,
    /// The run's name (`results-<label>.json`).
    label: String,
    keys: BTreeMap<&'static str, f64>,
    context: BTreeMap<&'static str, f64>,
    /// Where the time of some keys went (e.g. freshness per stage), in ms.
    profiled: BTreeMap<String, f64>,
    details: BTreeMap<&'static str, Measured>,
    /// Per command run, each process's CPU microseconds per accepted command.
    cpu: BTreeMap<&'static str, BTreeMap<&'static str, f64>>,
    machine: BTreeMap<&'static str, Value>,
    seconds: f64,
}

impl Results {
    pub fn new(quick: bool, broker: &str, label: &str) -> Results {
        Results {
            quick,
            broker: broker.to_owned(),
            label: label.to_owned(),
            keys: BTreeMap::new(),
            context: BTreeMap::new(),
            profiled: BTreeMap::new(),
            details: BTreeMap::new(),
            cpu: BTreeMap::new(),
            machine: BTreeMap::new(),
            seconds: 0.0,
        }
    }

    pub fn key(&mut self, key: &'static str, value: f64) {
        self.keys.insert(key, value);
    }

    /// A measured stage of a key (where its time went), reported with the ceilings.
    pub fn profile(&mut self, key: String, value: f64) {
        self.profiled.insert(key, value);
    }

    /// A ceiling or baseline a key is compared with.
    pub fn context(&mut self, key: &'static str, value: f64) {
        self.context.insert(key, value);
    }

    pub fn detail(&mut self, key: &'static str, measured: &Measured) {
        self.details.insert(key, measured.clone());
    }

    /// The CPU seconds each process used during `run`, as microseconds per accepted command.
    pub fn cpu(&mut self, run: &'static str, used: &BTreeMap<&'static str, f64>, accepted: u64) {
        if accepted == 0 {
            return;
        }
        let per_command = |seconds: f64| seconds * 1e6 / accepted as f64;
        let mut row: BTreeMap<&'static str, f64> =
            used.iter().map(|(role, s)| (*role, per_command(*s))).collect();
        row.insert("all processes", per_command(used.values().sum()));
        self.cpu.insert(run, row);
    }

    pub fn set_seconds(&mut self, seconds: f64) {
        self.seconds = seconds;
    }

    /// What the figures depend on: CPU, cores, memory, PostgreSQL and its commit rate, the broker.
    pub async fn machine(&mut self, setup: &Setup) -> anyhow::Result<()> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']));
        let memory = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned()));
        self.machine.insert("cpu", json!(cpu.unwrap_or("unknown")));
        self.machine
            .insert("cores", json!(std::thread::available_parallelism().map(usize::from).unwrap_or(0)));
        self.machine.insert("memory", json!(memory));
        self.machine.insert("broker", json!(self.broker));
        let pool = sqlx::PgPool::connect(&setup.database_url()).await?;
        for setting in ["server_version", "fsync", "synchronous_commit", "wal_sync_method"] {
            let value: String = sqlx::query_scalar(&format!("SHOW {setting}")).fetch_one(&pool).await?;
            self.machine.insert(setting, json!(value));
        }
        // Commits per second of one connection: each waits for its WAL flush (the fsync rate).
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_commits (i bigint)").execute(&pool).await?;
        let started = Instant::now();
        let mut commits = 0_u64;
        while started.elapsed() < Duration::from_secs(2) {
            sqlx::query("INSERT INTO bench_commits VALUES (1)").execute(&pool).await?;
            commits += 1;
        }
        sqlx::query("DROP TABLE bench_commits").execute(&pool).await?;
        self.machine.insert(
            "postgres_commits_per_s",
            json!((commits as f64 / started.elapsed().as_secs_f64()).round()),
        );
        Ok(())
    }

    pub fn write_json(&self, json_path: &Path) -> anyhow::Result<()> {
        let document = json!({
            "label": self.label,
            "mode": if self.quick { "quick" } else { "full" },
            "seconds": self.seconds.round(),
            "machine": self.machine,
            "results": self.keys,
            "ceilings_and_baselines": self.context,
            "profile_ms": self.profiled,
            "cpu_us_per_accepted_command": self.cpu,
            "details": self.details,
        });
        std::fs::write(json_path, serde_json::to_string_pretty(&document)? + "\n")?;
        Ok(())
    }

    /// docs/benchmarks.md, keeping its hand-written analysis.
    pub fn write_markdown(&self, markdown_path: &Path) -> anyhow::Result<()> {
        let kept = std::fs::read_to_string(markdown_path)
            .ok()
            .and_then(|old| {
                let start = old.find(ANALYSIS_START)?;
                let end = old.find(ANALYSIS_END)?;
                Some(old[start..end + ANALYSIS_END.len()].to_owned())
            })
            .unwrap_or_else(|| format!("{ANALYSIS_START}\n(No analysis written yet.)\n{ANALYSIS_END}"));
        std::fs::write(markdown_path, self.markdown(&kept))?;
        Ok(())
    }

    /// Where each command run's CPU went: microseconds per accepted command (an event of a
    /// batch), per process, from /proc.
    fn cpu_table(&self, md: &mut String) {
        if self.cpu.is_empty() {
            return;
        }
        let runs: Vec<&str> = self.cpu.keys().copied().collect();
        let mut roles: Vec<&str> = self.cpu.values().flat_map(|row| row.keys().copied()).collect();
        roles.sort_unstable();
        roles.dedup();
        roles.retain(|role| *role != "all processes");
        roles.push("all processes");
        let _ = writeln!(
            md,
            "\n## CPU per accepted command (same run)\n\nMicroseconds of CPU (user + system, from `/proc`) each \
             process spent per command the run accepted (per event for the batch run). PostgreSQL's backends are \
             split by the service they serve (its `application_name`); `other` is the rest (background \
             writers, WAL, this tool). The contended run counts decisions (202 or 409).\n\n| process | {} |\n|---|{}",
            runs.join(" | "),
            "---:|".repeat(runs.len())
        );
        for role in roles {
            let cells: Vec<String> = runs
                .iter()
                .map(|run| self.cpu[run].get(role).map_or_else(|| "–".to_owned(), |v| format!("{v:.0}")))
                .collect();
            let _ = writeln!(md, "| {role} | {} |", cells.join(" | "));
        }
    }

    fn markdown(&self, analysis: &str) -> String {
        let mut md = String::new();
        let mode = if self.quick {
            "**quick** (`make bench QUICK=1`: a scaled-down smoke run, not a speed claim)"
        } else {
            "**full** (`make bench`)"
        };
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `make bench` (`tools/src/bin/eventline-bench`); the raw figures are in \
             `target/bench/results-{}.json`. Latest run: {mode}, {:.0} s. Every figure sits next to the ceiling or \
             baseline it is compared with, measured in the same run: on a shared two-core machine absolute numbers \
             drift, ratios much less. Load generator, services, broker and database share the same cores.\n",
            self.label, self.seconds
        );
        let _ = writeln!(md, "## Machine\n\n| | |\n|---|---|");
        for (key, value) in &self.machine {
            let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            let _ = writeln!(md, "| {key} | {shown} |");
        }
        let _ = writeln!(
            md,
            "\nDurable defaults throughout: acks=all with the idempotent producer, PostgreSQL synchronous_commit as shown.\n"
        );
        let _ = writeln!(md, "## Results\n\n| key | value | goal | | what |\n|---|---:|---|---|---|");
        let (mut holding, mut missing) = (Vec::new(), Vec::new());
        for (key, goal, unit, what) in KEYS {
            let Some(&value) = self.keys.get(key) else { continue };
            let (goal_text, verdict) = match goal {
                Goal::AtLeast(g) if value >= g => (format!("≥ {}", number(g)), "holds"),
                Goal::AtLeast(g) => (format!("≥ {}", number(g)), "**misses**"),
                Goal::AtMost(g) if value <= g => (format!("≤ {}", number(g)), "holds"),
                Goal::AtMost(g) => (format!("≤ {}", number(g)), "**misses**"),
                Goal::Report => ("report".to_owned(), ""),
            };
            match verdict {
                "holds" => holding.push(key),
                "**misses**" => missing.push(key),
                _ => {}
            }
            let _ = writeln!(md, "| `{key}` | {} {unit} | {goal_text} | {verdict} | {what} |", number(value));
        }
        let _ = writeln!(md, "\n## Ceilings and baselines (same run)\n\n| | value |\n|---|---:|");
        for (key, value) in &self.context {
            let _ = writeln!(md, "| `{key}` | {} |", number(*value));
        }
        let _ = writeln!(
            md,
            "\n## Where the time goes (same run)\n\nMean milliseconds per stage, from the services' histograms \
             during a run. `freshness_…`: `log` appended → read by the projector (the broker's fetch), `queued` read → \
             its batch starts (the batch before it committing), `apply` the batch's transaction, `query_wait` the \
             GET waiting for its token; the rest of a request's freshness is the notification, the GET's own work \
             and HTTP. `group_…`: per decided group of commands (`eventline_command_group_stage_seconds`), `queue` \
             its oldest command's wait for a decider, then `connection`, `lock_read` (the locks and the reads, one \
             statement), `decide`, `save` (the state and the pending decisions written and committed, one \
             statement), `append` (acks=all), `positions` (recording where the events landed) and `release`.\n\n| stage | ms |\n|---|---:|"
        );
        for (key, value) in &self.profiled {
            let _ = writeln!(md, "| `{key}` | {} |", number(*value));
        }
        self.cpu_table(&mut md);
        let _ = writeln!(
            md,
            "\n## Load runs\n\n| run | ok | errors | per s | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (key, m) in &self.details {
            let _ = writeln!(
                md,
                "| {key} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                m.ok,
                m.errors,
                number(m.per_s),
                m.p50_ms,
                m.p99_ms,
                m.max_ms
            );
        }
        let _ = writeln!(md, "\n## Reading\n");
        let _ = writeln!(md, "Goals that hold: {}.\n", list(&holding));
        let _ = writeln!(md, "Goals missed: {}.\n", list(&missing));
        let _ = writeln!(md, "{analysis}");
        md
    }
}

fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    }
}

/// A figure with sensible precision.
fn number(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    if value >= 100.0 {
        let rounded = value.round() as i64;
        let digits = rounded.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) && c != '-' {
                grouped.push(',');
            }
            grouped.push(c);
        }
        grouped
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
