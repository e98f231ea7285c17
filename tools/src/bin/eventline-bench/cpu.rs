//! Where the machine's CPU goes during a run: the user and system time of every process of the
//! stack, read from `/proc/<pid>/stat` before and after, grouped by role (a service, the broker,
//! PostgreSQL with all its backends, Redis, this load generator). Divided by what the run
//! accepted, it says what one command costs each process.

use std::collections::BTreeMap;

/// Kernel clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI the
/// bench runs on).
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds used so far by each process of the stack, by pid, with its role.
pub struct Snapshot(BTreeMap<u32, (&'static str, f64)>);

/// Reads every process now; `services` names the service processes by pid.
pub fn snapshot(services: &[(&'static str, u32)]) -> Snapshot {
    let mut processes = BTreeMap::new();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Snapshot(processes) };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Some(role) = role(pid, me, services) else { continue };
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

fn role(pid: u32, me: u32, services: &[(&'static str, u32)]) -> Option<&'static str> {
    if let Some((name, _)) = services.iter().find(|(_, service)| *service == pid) {
        return Some(name);
    }
    if pid == me {
        return Some("load generator");
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    match comm.trim() {
        "postgres" => return Some("PostgreSQL"),
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
        let before = snapshot(&[]);
        let mut x = 0_u64;
        for i in 0..50_000_000_u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = snapshot(&[]).since(&before);
        assert!(used.get("load generator").is_some_and(|s| *s > 0.0), "{used:?}");
    }
}
