//! Black-box tests of what users run: the `dispatchd` binary (configuration, serving, health,
//! SIGTERM) and the `dispatchctl` tour commands against it.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use dispatch_tests::free_port;

const BOUND: Duration = Duration::from_secs(20);

struct Dispatchd {
    child: Child,
    addr: String,
}

impl Dispatchd {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
            .args(["--dev", "--listen", &format!("127.0.0.1:{port}"), "--set", "log.filter=\"warn\""])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dispatchd starts");
        Self { child, addr: format!("http://127.0.0.1:{port}") }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
            .arg("--addr")
            .arg(&self.addr)
            .args(args)
            .output()
            .expect("dispatchctl runs")
    }

    /// Waits for health SERVING on a runtime of its own, dropped afterwards so that no client
    /// connection outlives the check (a lingering one would hold the server's graceful drain).
    fn wait_serving(&self) {
        wait_serving_at(&self.addr);
    }
}

/// Waits for health SERVING at `addr` (see [`Dispatchd::wait_serving`]).
fn wait_serving_at(addr: &str) {
    {
        let addr = addr.to_owned();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            tokio::time::timeout(BOUND, async move {
                loop {
                    if let Ok(ch) = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await {
                        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
                        if let Ok(r) =
                            health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await
                            && r.into_inner().status
                                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                        {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        })
        .expect("dispatchd serving within the bound");
    }
}

impl Drop for Dispatchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn print_config_shows_every_layer() {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["--dev", "--print-config", "--set", "policy.max_consecutive_misses=5"])
        .env("DISPATCH__POLICY__OFFER_TIMEOUT_MS", "15000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("listen = \"127.0.0.1:50051\""), "{s}");
    assert!(s.contains("offer_timeout_ms = 15000"), "{s}");
    assert!(s.contains("max_consecutive_misses = 5"), "{s}");
    let bad = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["--dev", "--print-config", "--set", "policy.offer_timeout_ms=1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("offer_timeout_ms"), "{}", text(&bad));
    // Secure by default: without --dev, no TLS certificate means no start.
    let insecure = Command::new(env!("CARGO_BIN_EXE_dispatchd")).args(["--print-config"]).output().unwrap();
    assert!(!insecure.status.success());
    assert!(text(&insecure).contains("server.tls.cert"), "{}", text(&insecure));
}

#[test]
fn the_tour_works_and_sigterm_stops_the_server() {
    let mut d = Dispatchd::start();
    d.wait_serving();
    let o = d.ctl(&[
        "agent",
        "upsert",
        "--id",
        "ana",
        "--lang",
        "de:5",
        "--skill",
        "disputes:4",
        "--vip",
        "--capacity",
        "chat:2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("registered"), "{}", text(&o));
    let o = d.ctl(&[
        "submit",
        "--id",
        "case-1",
        "--lang",
        "de",
        "--skill",
        "disputes:3",
        "--tier",
        "vip",
        "--summary",
        "refund",
    ]);
    assert!(text(&o).contains("queued"), "{}", text(&o));
    assert!(text(&o).contains("queued; estimated wait: no agent for this case is signed in yet"), "{}", text(&o));
    let o = d.ctl(&["demand", "--lang", "de", "--tier", "vip", "--channel", "chat", "--skill", "disputes", "--exact"]);
    let s = text(&o);
    assert!(s.contains("de/vip/chat/disputes") && s.contains("waiting 1") && s.contains("1 arrived"), "{s}");
    let o = d.ctl(&["connect", "--as", "ana", "--available", "--auto-accept", "--exit-after", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ASSIGNED case=case-1"), "{}", text(&o));
    let o = d.ctl(&["--json", "case", "get", "case-1"]);
    let s = text(&o);
    assert!(s.contains("\"current_agent_id\":\"ana\""), "{s}");
    let o = d.ctl(&["queue"]);
    assert!(text(&o).contains("accepted=1"), "{}", text(&o));
    let o = d.ctl(&["submit", "--id", "bad", "--lang", "deutsch"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("InvalidArgument: spec.language"), "{}", text(&o));

    let pid = d.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Below the binary's 10 s hard drain bound: the server must drain by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "dispatchd exits cleanly on SIGTERM: {status}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "dispatchd did not exit within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_secure_run_serves_tls_and_tokens_only() {
    let pki = std::env::temp_dir().join(format!("dispatchd-pki-{}", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/dev-certs.sh");
    assert!(Command::new("bash").arg(script).arg(&pki).status().unwrap().success());
    let f = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let port = free_port();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/dispatchd.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["--config", config, "--listen", &format!("127.0.0.1:{port}"), "--set", "log.filter=\"warn\""])
        .args([
            "--set",
            &format!("server.tls.cert=\"{}\"", f("server.pem")),
            "--set",
            &format!("server.tls.key=\"{}\"", f("server.key")),
        ])
        .args(["--set", &format!("server.tls.client_ca=\"{}\"", f("ca.pem"))])
        .args([
            "--set",
            &format!("auth.keys=[{{kid=\"dev\", algorithm=\"HS256\", secret_file=\"{}\"}}]", f("jwt.secret")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
            .args(["--addr", &format!("https://localhost:{port}"), "--ca-cert", &f("ca.pem")])
            .args(args)
            .output()
            .unwrap()
    };
    let token = |role: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
            .args(["dev-token", "--secret-file", &f("jwt.secret"), "--role", role, "--sub", "ops"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let admin = token("admin");
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let o = ctl(&["--token", &admin, "queue"]);
        if o.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the secure server did not answer: {}", text(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = ctl(&["agent", "list"]);
    assert!(text(&o).contains("Unauthenticated"), "no token: {}", text(&o));
    let o = ctl(&["--token", &token("planner"), "agent", "upsert", "--id", "x", "--lang", "en:5"]);
    assert!(text(&o).contains("PermissionDenied"), "a planner cannot write the roster: {}", text(&o));
    let o = ctl(&["--token", &admin, "agent", "upsert", "--id", "x", "--lang", "en:5"]);
    assert!(o.status.success(), "{}", text(&o));
    let plain = Command::new(env!("CARGO_BIN_EXE_dispatchctl"))
        .args(["--addr", &format!("http://127.0.0.1:{port}"), "--token", &admin, "queue"])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plaintext is refused on the TLS port");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&pki);
}

/// Kubernetes probes speak plaintext gRPC health: `server.health_listen` serves that and nothing
/// else.
#[test]
fn the_probe_port_serves_health_and_nothing_else() {
    let probe_port = free_port();
    let d = Dispatchd::start_with(&["--set", &format!("server.health_listen=\"127.0.0.1:{probe_port}\"")]);
    d.wait_serving();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{probe_port}"))
            .unwrap()
            .connect()
            .await
            .expect("the probe port accepts plaintext");
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(r.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        let mut esc = dispatch_proto::v1::escalation_service_client::EscalationServiceClient::new(ch);
        let err = esc.get_case(dispatch_proto::v1::GetCaseRequest { case_id: "x".into() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{}", err.message());
    });
}

/// The resident memory of a process, in KiB (`VmRSS` from `/proc`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Routers polling finished cases with `WatchCase` do not grow the process: a watch of a case
/// that is over gets its snapshot and ends, and leaves nothing behind. (Before, each such watch
/// left a 64-slot broadcast channel for good: about 13 KB per distinct case.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_under_watches_of_finished_cases() {
    use dispatch_proto::v1 as pb;
    use tokio_stream::StreamExt;
    let d = Dispatchd::start();
    let addr = d.addr.clone();
    tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || wait_serving_at(&addr)
    })
    .await
    .unwrap();
    let ch = dispatch_grpc::client::channel(&addr).await.expect("connect");
    let mut esc = pb::escalation_service_client::EscalationServiceClient::new(ch);
    const CASES: usize = 3_000;
    for i in 0..CASES {
        let spec = dispatch_tests::case(&format!("soak-{i}"), "zz", &[], pb::Tier::Standard);
        esc.submit_case(pb::SubmitCaseRequest { spec: Some(spec) }).await.expect("submit");
        let cancel = pb::CancelCaseRequest { case_id: format!("soak-{i}"), reason: "done".into() };
        esc.cancel_case(cancel).await.expect("cancel");
    }
    let watch_all = |from: usize, to: usize| {
        let mut esc = esc.clone();
        async move {
            for i in from..to {
                let req = pb::WatchCaseRequest { case_id: format!("soak-{i}") };
                let mut w = esc.watch_case(req).await.expect("watch").into_inner();
                let first = w.next().await.expect("a snapshot").expect("ok");
                assert_eq!(first.kind(), pb::CaseEventKind::Snapshot);
                assert!(w.next().await.is_none(), "a watch of a finished case ends after its snapshot");
            }
        }
    };
    watch_all(0, 500).await; // warm-up: allocator pools, connection buffers
    let before = rss_kib(d.child.id());
    watch_all(500, CASES).await;
    watch_all(0, CASES).await;
    let after = rss_kib(d.child.id());
    let growth = after.saturating_sub(before);
    println!("watches=5500 distinct_finished_cases={CASES} rss_before_kib={before} rss_after_kib={after}");
    // The old leak: 13 KB × 2,500 new distinct cases ≈ 32 MB.
    assert!(growth < 6 * 1024, "RSS grew by {growth} KiB over 5,000 watches of finished cases");
}
