//! Where the machine's CPU goes during a run: the user and system time of every process of the
//! stack, read from `/proc/<pid>/stat` before and after, grouped by role (a service, the broker,
//! PostgreSQL's backends by the service they serve, Redis, this load generator). Divided by what
//! the run accepted, it says what one command costs each process.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgPool;

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI the
/// bench runs on).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds used so far by each process of the stack, by pid, with its role.
pub struct Snapshot(BTreeMap<u32, (&'static str, f64)>);

/// The processes to watch: the services by pid, and the database whose `pg_stat_activity` says
/// which service each backend serves (by the `application_name` the services set).
pub struct Stack {
    pub services: Vec<(&'static str, u32)>,
    pub database: PgPool,
}

impl Stack {
    /// Every process's CPU time now. A backend whose service cannot be told (the database is
    /// unreachable, or it serves none of ours) counts as "PostgreSQL: other".
    pub async fn snapshot(&self) -> Snapshot {
        let backends: HashMap<u32, &'static str> =
            sqlx::query_as::<_, (i32, Option<String>)>("SELECT pid, application_name FROM pg_stat_activity")
                .fetch_all(&self.database)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(pid, application)| {
                    Some((u32::try_from(pid).ok()?, backend_role(application?.as_str())))
                })
                .collect();
        snapshot(&self.services, &backends)
    }
}

fn backend_role(application: &str) -> &'static str {
    match application {
        "eventline-command" => "PostgreSQL: command service",
        "eventline-projector" => "PostgreSQL: projector",
        "eventline-query" => "PostgreSQL: query service",
        _ => "PostgreSQL: other",
    }
}

/// Reads every process now; `services` names the service processes by pid, `backends` the
/// database backends by the service they serve.
fn snapshot(services: &[(&'static str, u32)], backends: &HashMap<u32, &'static str>) -> Snapshot {
    let mut processes = BTreeMap::new();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Snapshot(processes) };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Some(role) = role(pid, me, services, backends) else { continue };
        if let Some(seconds) = cpu_seconds(pid) {
            processes.insert(pid, (role, seconds));
        }
    }
    Snapshot(processes)
}

impl Snapshot {
    /// CPU seconds each role used from `before` to this snapshot. A process that started in
    /// between counts from zero; one that ended in between is not seen (the services and the
    /// database's pooled backends live through a run).
    pub fn since(&self, before: &Snapshot) -> BTreeMap<&'static str, f64> {
        let mut used = BTreeMap::new();
        for (pid, (role, seconds)) in &self.0 {
            let earlier = before.0.get(pid).map_or(0.0, |(_, seconds)| *seconds);
            *used.entry(*role).or_insert(0.0) += (seconds - earlier).max(0.0);
        }
        used
    }
}

fn role(
    pid: u32,
    me: u32,
    services: &[(&'static str, u32)],
    backends: &HashMap<u32, &'static str>,
) -> Option<&'static str> {
    if let Some((name, _)) = services.iter().find(|(_, service)| *service == pid) {
        return Some(name);
    }
    if pid == me {
        return Some("load generator");
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    match comm.trim() {
        "postgres" => return Some(backends.get(&pid).copied().unwrap_or("PostgreSQL: other")),
        "redis-server" => return Some("Redis"),
        _ => {}
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline).contains("kafka.Kafka").then_some("broker")
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_the_load_generator_and_its_time_only_grows() {
        let before = snapshot(&[], &HashMap::new());
        let mut x = 0_u64;
        for i in 0..50_000_000_u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = snapshot(&[], &HashMap::new()).since(&before);
        assert!(used.get("load generator").is_some_and(|s| *s > 0.0), "{used:?}");
    }
}
