//! What a run cost, per case: CPU time of each process (dispatcher and load generator from
//! `/proc/PID/stat`, Redis from `INFO cpu`), the dispatcher's store operations and
//! compare-and-set conflicts by transition (its `/metrics`), Redis commands and their time
//! (`INFO commandstats`), bytes sent to Redis, and Redis's persistence work (AOF rewrites,
//! forks). A snapshot is taken when submitting begins and another when the run has settled;
//! [`Snapshot::per_case`] divides the difference by the cases assigned in between.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Where to read the figures from; every source is optional.
pub struct Probe {
    /// The dispatcher's PID.
    pub dispatcher_pid: Option<u32>,
    /// The dispatcher's `/metrics` (`host:port`, plaintext HTTP).
    pub metrics_addr: Option<String>,
    /// The Redis the dispatcher writes to.
    pub redis: Option<redis::aio::MultiplexedConnection>,
}

/// The figures at one instant.
#[derive(Default, Clone)]
pub struct Snapshot {
    dispatcher_cpu_s: Option<f64>,
    loadgen_cpu_s: Option<f64>,
    /// `series{labels}` → value, for the dispatcher's counters read here.
    metrics: BTreeMap<String, f64>,
    /// Redis command → (calls, microseconds).
    commands: BTreeMap<String, (f64, f64)>,
    /// `INFO` fields (cpu, stats, persistence) → value.
    redis: BTreeMap<String, f64>,
}

/// Seconds of CPU (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// The series of the dispatcher's text exposition that a run's cost is read from.
const SERIES: [&str; 4] = [
    "dispatch_store_operation_seconds_count",
    "dispatch_commit_conflicts_total",
    "dispatch_case_events_total",
    "dispatch_change_log_lag_seconds",
];

async fn scrape(addr: &str) -> Option<BTreeMap<String, f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| SERIES.iter().any(|s| l.starts_with(s))) {
        if let Some((series, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.parse::<f64>()
        {
            out.insert(series.to_owned(), v);
        }
    }
    Some(out)
}

/// The INFO calls [`Probe::snapshot`] makes after it reads the command counts (cpu, stats,
/// persistence): counted in the next snapshot's figures.
const PROBE_INFO_CALLS: f64 = 3.0;

fn info_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| l.trim_end().split_once(':'))
}

impl Probe {
    /// Clears Redis's command statistics (so that the first snapshot starts near zero).
    pub async fn reset(&mut self) {
        if let Some(r) = self.redis.as_mut() {
            let _: Result<String, _> = redis::cmd("CONFIG").arg("RESETSTAT").query_async(r).await;
        }
    }

    /// The figures now.
    pub async fn snapshot(&mut self) -> Snapshot {
        let mut s = Snapshot {
            dispatcher_cpu_s: self.dispatcher_pid.and_then(|p| cpu_seconds(&p.to_string())),
            loadgen_cpu_s: cpu_seconds("self"),
            ..Snapshot::default()
        };
        if let Some(addr) = &self.metrics_addr {
            s.metrics = scrape(addr).await.unwrap_or_default();
        }
        if let Some(r) = self.redis.as_mut() {
            let stats: String = redis::cmd("INFO").arg("commandstats").query_async(r).await.unwrap_or_default();
            for (k, v) in info_fields(&stats) {
                let Some(cmd) = k.strip_prefix("cmdstat_") else { continue };
                let field = |name: &str| {
                    v.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<f64>().ok())
                };
                s.commands.insert(cmd.to_owned(), (field("calls").unwrap_or(0.0), field("usec").unwrap_or(0.0)));
            }
            for section in ["cpu", "stats", "persistence"] {
                let text: String = redis::cmd("INFO").arg(section).query_async(r).await.unwrap_or_default();
                for (k, v) in info_fields(&text) {
                    if let Ok(v) = v.parse::<f64>() {
                        s.redis.insert(k.to_owned(), v);
                    }
                }
            }
        }
        s
    }
}

fn per(v: f64, cases: f64) -> Value {
    json!((v / cases * 1000.0).round() / 1000.0)
}

impl Snapshot {
    /// What happened between `before` and `self`, per case of `cases`, as JSON.
    pub fn per_case(&self, before: &Snapshot, cases: u64) -> Value {
        let n = cases.max(1) as f64;
        let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => per((a - b) * 1000.0, n),
            _ => Value::Null,
        };
        let delta = |m: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, k: &str| {
            m.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0)
        };
        let redis = |k: &str| delta(&self.redis, &before.redis, k);
        // Store operations by kind (all outcomes) and conflicts by transition.
        let mut ops: BTreeMap<String, f64> = BTreeMap::new();
        let mut conflicts: BTreeMap<String, f64> = BTreeMap::new();
        for k in self.metrics.keys() {
            let d = delta(&self.metrics, &before.metrics, k);
            if d == 0.0 {
                continue;
            }
            let label = |name: &str| {
                k.split_once(&format!("{name}=\""))
                    .and_then(|(_, r)| r.split_once('"'))
                    .map(|(v, _)| v.to_owned())
                    .unwrap_or_default()
            };
            if k.starts_with("dispatch_store_operation_seconds_count") {
                *ops.entry(label("op")).or_default() += d;
            } else if k.starts_with("dispatch_commit_conflicts_total") {
                *conflicts.entry(label("transition")).or_default() += d;
            }
        }
        let mut commands = serde_json::Map::new();
        let (mut calls, mut usec) = (0.0, 0.0);
        for (cmd, (c, u)) in &self.commands {
            let (bc, bu) = before.commands.get(cmd).copied().unwrap_or((0.0, 0.0));
            // This probe's own INFO calls between the two command counts are not the
            // dispatcher's (its Functions' INFO calls are).
            let own = if cmd == "info" { PROBE_INFO_CALLS } else { 0.0 };
            let d = c - bc - own;
            if d <= 0.0 {
                continue;
            }
            calls += d;
            usec += u - bu;
            commands.insert(cmd.clone(), per(d, n));
        }
        let lag = self.metrics.get("dispatch_change_log_lag_seconds").copied();
        json!({
            "cases": cases,
            "cpu_ms": {
                "dispatcher": cpu(self.dispatcher_cpu_s, before.dispatcher_cpu_s),
                "loadgen": cpu(self.loadgen_cpu_s, before.loadgen_cpu_s),
                "redis": if self.redis.is_empty() { Value::Null } else {
                    per((redis("used_cpu_user") + redis("used_cpu_sys")) * 1000.0, n)
                },
            },
            "store_ops": ops.iter().map(|(k, v)| (k.clone(), per(*v, n))).collect::<serde_json::Map<_, _>>(),
            "store_ops_total": per(ops.values().sum(), n),
            "conflicts": conflicts.iter().map(|(k, v)| (k.clone(), per(*v, n))).collect::<serde_json::Map<_, _>>(),
            "redis_commands": commands,
            "redis_calls": per(calls, n),
            "redis_usec": per(usec, n),
            "redis_bytes_in": if self.redis.is_empty() { Value::Null } else { per(redis("total_net_input_bytes"), n) },
            "redis_persistence": if self.redis.is_empty() { Value::Null } else { json!({
                "aof_rewrites": redis("aof_rewrites"),
                "latest_fork_usec": self.redis.get("latest_fork_usec"),
                "aof_current_size": self.redis.get("aof_current_size"),
            }) },
            "change_log_lag_s": lag,
        })
    }
}
