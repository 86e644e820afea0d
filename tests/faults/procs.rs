//! The real processes of a fault scenario: `dispatchd` replicas (started, killed, paused,
//! terminated) and a TCP proxy between the replicas and Redis that can reset every connection
//! or blackhole traffic.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dispatch_redis::testing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use dispatch_tests::free_port;

/// One `dispatchd` process on a fixed port (a restart comes back on the same address).
pub struct Replica {
    pub port: u16,
    redis_url: String,
    settings: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    pub fn new(index: usize, redis_url: &str, settings: &[String], log_dir: &std::path::Path) -> Self {
        Self {
            port: free_port(),
            redis_url: redis_url.to_owned(),
            settings: settings.to_vec(),
            child: None,
            log: log_dir.join(format!("replica-{index}.log")),
        }
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("replica log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatchd"));
        cmd.args(["--dev", "--listen", &format!("127.0.0.1:{}", self.port), "--redis-url", &self.redis_url]);
        // The consoles on a port of their own (`--dev` would put every replica's on 8080).
        cmd.args(["--set", "server.web.listen=\"127.0.0.1:0\""]);
        for s in &self.settings {
            cmd.args(["--set", s]);
        }
        let out = log.try_clone().expect("replica log");
        let child = cmd.stdout(out).stderr(log).spawn().expect("dispatchd starts");
        self.child = Some(child);
    }

    fn signal(&self, sig: &str) {
        testing::signal(self.child.as_ref(), sig);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        testing::kill(&mut self.child);
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM; waits for the exit (at most `bound`). Returns how long it took and whether it
    /// exited cleanly.
    pub fn terminate(&mut self, bound: Duration) -> (Duration, bool) {
        let started = Instant::now();
        self.signal("-TERM");
        let Some(mut c) = self.child.take() else { return (Duration::ZERO, false) };
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return (started.elapsed(), status.success());
            }
            if started.elapsed() > bound {
                let _ = c.kill();
                let _ = c.wait();
                return (started.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// This replica's whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of this replica's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A TCP proxy in front of Redis.
pub struct Proxy {
    pub port: u16,
    /// While true, bytes are held (both ways): a blackhole; they flow again when it ends.
    blackhole: watch::Sender<bool>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let blackhole = watch::channel(false).0;
        let resets = watch::channel(0u64).0;
        let connections = Arc::new(AtomicU64::new(0));
        let (bh, rs, count) = (blackhole.clone(), resets.clone(), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let mut reset = rs.subscribe();
                reset.borrow_and_update();
                let (bh1, bh2) = (bh.subscribe(), bh.subscribe());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = pump(&mut dr, &mut uw, bh1) => {}
                        _ = pump(&mut ur, &mut dw, bh2) => {}
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        Self { port, blackhole, resets, connections, task }
    }

    /// Closes every open connection at once.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    pub fn blackhole(&self, on: bool) {
        self.blackhole.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut blackhole: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if blackhole.wait_for(|b| !*b).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
