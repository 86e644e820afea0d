//! CI keeps the load generator working: a short run against an in-process dispatcher
//! (development mode) must assign cases and print its JSON summary.

use std::sync::Arc;

use dispatch_domain::Policy;
use dispatch_engine::{Clock, Engine, EngineConfig, MemoryStore};
use dispatch_grpc::ServerConfig;
use dispatch_grpc::auth::Authenticator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_assigns_cases() {
    let clock = Clock::system();
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let policy = Policy {
        wrap_up_ms: dispatch_domain::policy::ChannelDurations { voice: 0, chat: 0, email: 0 },
        ..Policy::default()
    };
    let engine = Engine::start(store, clock, policy, EngineConfig::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig { plaintext: true, ..ServerConfig::default() };
    tokio::spawn(dispatch_grpc::serve(
        listener,
        engine,
        config,
        Arc::new(Authenticator::dev()),
        std::future::pending(),
    ));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "run",
                "--addr",
                &addr,
                "--agents",
                "60",
                "--rate",
                "40",
                "--duration",
                "1",
                "--handle-ms",
                "0",
                "--simple-cases",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).expect("a JSON summary line");
    assert!(summary["assigned"].as_u64().unwrap() > 0, "{stdout}");
    assert!(summary["submit_to_offer"]["p50_ms"].as_f64().unwrap() > 0.0, "{stdout}");
}
