//! A `redis-server` owned by a test: started on a free loopback port in a temporary directory,
//! with AOF on, and killed (directory removed) when dropped. A missing `redis-server` fails the
//! test with instructions; it never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (AOF files live here).
    pub dir: PathBuf,
    extra: Vec<String>,
}

/// A port no one listens on now (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("port").port()
}

/// A free port for a cluster node: a node also listens on its port + 10000 (the cluster bus),
/// so the port must be at most 55535 and that second port free too. (Ephemeral ports here run
/// to 60999: about one node in five would otherwise fail to start.)
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a server with AOF (`appendfsync everysec`) and no RDB snapshots.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--maxmemory-policy", "allkeys-lru"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        // A free port may be taken between choosing it and the server binding it (by another
        // test's server, or as a client connection's local port): the server then exits at
        // once, and another port is tried.
        for _ in 0..4 {
            if let Some(s) = Self::try_start_on(free_port(), extra) {
                return s;
            }
        }
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut s = Self::new_on(port, extra);
        s.spawn();
        s
    }

    fn new_on(port: u16, extra: &[&str]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("dispatch-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis test directory");
        Self { child: None, port, dir, extra: extra.iter().map(|s| (*s).to_owned()).collect() }
    }

    /// Starts a server on `port`; `None` if it exited before answering (the port was taken).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<Self> {
        let mut s = Self::new_on(port, extra);
        s.launch();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if s.ping() {
                return Some(s);
            }
            if s.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                s.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no"])
            .args(["--loglevel", "warning", "--protected-mode", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tests need it; install the Debian package \
                     redis-server (tests/run.sh does this)"
                )
            });
        self.child = Some(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers `PING` now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        signal(self.child.as_ref(), sig);
    }

    /// `kill -9`: the process dies at once (AOF keeps what was fsynced).
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// SIGTERM: Redis flushes the AOF and exits.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (AOF replayed).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// A copy of the AOF as it is now (every write so far has reached the file, though not
    /// necessarily the disk): to bring back later with [`RedisServer::crash_back_to`].
    pub fn copy_aof(&self) -> PathBuf {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let to = self.dir.join(format!("aof-copy-{n}"));
        copy_dir(&self.dir.join("appendonlydir"), &to);
        to
    }

    /// `kill -9`, then starts again from an older AOF copy: Redis comes back without the writes
    /// made after the copy (what a crash with `appendfsync everysec` does to the last second).
    pub fn crash_back_to(&mut self, copy: &std::path::Path) {
        self.kill();
        let aof = self.dir.join("appendonlydir");
        let _ = std::fs::remove_dir_all(&aof);
        copy_dir(copy, &aof);
        self.spawn();
    }

    /// `kill -9`, then starts again with no data at all: what a Redis without persistence, a
    /// pod rescheduled without its volume, or a new node does.
    pub fn crash_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        self.spawn();
    }

    /// Runs `redis-cli` against this server; its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (Debian package redis-tools)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGSTOP: the server hangs (connections stay open, nothing answers).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

/// Sends `sig` (e.g. `-STOP`) to the process, if it runs.
pub fn signal(child: Option<&Child>, sig: &str) {
    if let Some(c) = child {
        let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
    }
}

/// `kill -9` and reap the process, if it runs.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy directory");
    for entry in std::fs::read_dir(from).expect("read the AOF directory") {
        let entry = entry.expect("an AOF file");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy an AOF file");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three primaries (and optionally a replica each) on free loopback ports,
/// each node a [`RedisServer`] with AOF; stopped when dropped.
pub struct RedisCluster {
    /// The nodes: primaries first as `redis-cli --cluster create` assigns them.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three primaries and joins them with `redis-cli --cluster create`; returns once every
    /// node reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with(0, 5_000)
    }

    /// Three primaries with `replicas` replicas each and the given `cluster-node-timeout`;
    /// returns once every node reports `cluster_state:ok` and every replica is in sync.
    pub fn start_with(replicas: usize, node_timeout_ms: u64) -> Self {
        let timeout = node_timeout_ms.to_string();
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                RedisServer::start_on(
                    free_cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs (Debian package redis-tools)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let c = Self { nodes };
        c.wait_ok();
        c
    }

    /// Waits until every running node reports `cluster_state:ok` and every replica's link to its
    /// primary is up.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in self.nodes.iter().filter(|n| n.ping()) {
            loop {
                let ok = n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok");
                let role = n.cli(&["ROLE"]);
                let synced =
                    role.starts_with("master") || n.cli(&["INFO", "replication"]).contains("master_link_status:up");
                if ok && synced {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok on port {}", n.port);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The index of the node with `port`.
    fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster")
    }

    /// This node's cluster id.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i].cli(&["CLUSTER", "MYID"])
    }

    /// The index of the primary serving `key`'s slot.
    pub fn primary_of(&self, key: &str) -> usize {
        self.index_of(self.owner_of(key))
    }

    /// The index of a replica of primary `i`.
    pub fn replica_of(&self, i: usize) -> usize {
        let id = self.node_id(i);
        (0..self.nodes.len())
            .find(|j| {
                *j != i
                    && self.nodes[*j].ping()
                    && self.nodes[*j]
                        .cli(&["CLUSTER", "NODES"])
                        .lines()
                        .any(|l| l.contains("myself") && l.contains("slave") && l.contains(&id))
            })
            .expect("primary has a replica")
    }

    /// Waits (20 s at most) until node `i` is a primary.
    pub fn wait_primary(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.nodes[i].cli(&["ROLE"]).starts_with("master") {
            assert!(Instant::now() < deadline, "node {i} did not become a primary");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `key`'s slot to primary `to` (the way `redis-cli --cluster reshard` moves one):
    /// importing and migrating marks, every key moved with MIGRATE, then the slot assigned.
    pub fn migrate_slot_of(&self, key: &str, to: usize) {
        let slot = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]);
        let from = self.primary_of(key);
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        assert_eq!(self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]), "OK");
        assert_eq!(self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]), "OK");
        let port = self.nodes[to].port.to_string();
        loop {
            let keys = self.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "REPLACE", "KEYS"];
            args.extend(keys);
            let out = self.nodes[from].cli(&args);
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].ping() && self.nodes[i].cli(&["ROLE"]).starts_with("master") {
                self.nodes[i].cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            }
        }
    }

    /// The seed node URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The port of the primary serving `key`'s slot.
    pub fn owner_of(&self, key: &str) -> u16 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.nodes[0].port.to_string(), "CLUSTER", "KEYSLOT", key])
            .output()
            .expect("redis-cli runs");
        let slot: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a slot");
        // The node whose `CLUSTER NODES` line says `myself` and lists the slot's range.
        for n in &self.nodes {
            let out = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "CLUSTER", "NODES"])
                .output()
                .expect("redis-cli runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let mine = text.lines().find(|l| l.contains("myself")).unwrap_or("");
            let serves = mine.split_whitespace().skip(8).any(|r| match r.split_once('-') {
                Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                return n.port;
            }
        }
        panic!("no node serves slot {slot}")
    }
}
