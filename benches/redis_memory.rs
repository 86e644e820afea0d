//! Redis memory per registered agent (profile + presence): starts its own `redis-server`,
//! reads `INFO memory` `used_memory`, registers N agents through the store exactly as the
//! engine does (profile, sign-in with a live session and status available, presence lease
//! timer, change-log entries), reads `used_memory` again and prints the difference per agent.
//!
//! `cargo bench -p dispatch-benches --bench redis_memory` (N = 100000; `-- --agents 10000` to change).

use std::sync::Arc;

use dispatch_domain::model::{AgentProfile, AgentProfileInput};
use dispatch_domain::{Agent, AgentStatus, Channel, Policy, SessionId, transition};
use dispatch_engine::{Commit, Store};
use dispatch_redis::testing::RedisServer;
use dispatch_redis::{RedisConfig, RedisStore};

const LANGS: [&str; 8] = ["en", "es", "de", "fr", "pt", "it", "nl", "pl"];

async fn used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--agents")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = RedisServer::start();
    // A realistic change log: trimmed to the default length.
    let config = RedisConfig { url: server.url(), ..RedisConfig::default() };
    let store = Arc::new(RedisStore::open(&config, None).await.unwrap());
    store.join_epoch(0).await.unwrap();
    let policy = Policy::default();
    let before = used_memory(&server.url()).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = Arc::clone(&store);
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let id = format!("agent-{i:07}");
                let name = format!("Agent Number {i}");
                let skills = [("disputes", 3), ("refunds", 2), ("billing", 4)];
                let profile = AgentProfile::parse(
                    AgentProfileInput {
                        id: &id,
                        display_name: &name,
                        languages: vec![(LANGS[i % LANGS.len()], 5), ("en", 3)].into_iter().fold(
                            Vec::new(),
                            |mut v, l| {
                                if !v.iter().any(|x: &(&str, u32)| x.0 == l.0) {
                                    v.push(l);
                                }
                                v
                            },
                        ),
                        skills: skills[..1 + i % 3].to_vec(),
                        vip_certified: i % 12 == 0,
                        capacity: vec![(Some(Channel::Chat), 3), (Some(Channel::Voice), 1)],
                        rating: 4.2,
                        ..Default::default()
                    },
                    &dispatch_domain::limits::Limits::default(),
                )
                .unwrap();
                let now = store.now().await.unwrap();
                let a = store
                    .commit(Commit { agent: Some(Agent::new(profile, now)), ..Commit::default() })
                    .await
                    .unwrap()
                    .agent
                    .unwrap();
                let sid = SessionId::parse("s", &format!("ss-{i:016x}")).unwrap();
                let ch = transition::connect(&a, sid.clone(), now, &policy);
                let a = store
                    .commit(Commit { agent: ch.agent, timers: ch.timers, ..Commit::default() })
                    .await
                    .unwrap()
                    .agent
                    .unwrap();
                let ch = transition::set_status(&a, None, &sid, AgentStatus::Available, now, &policy).unwrap();
                store.commit(Commit { agent: ch.agent, timers: ch.timers, ..Commit::default() }).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = used_memory(&server.url()).await;
    let per = (after - before) as f64 / n as f64;
    println!(
        "agents={n} used_memory_before={before} used_memory_after={after} delta={} bytes_per_agent={per:.0}",
        after - before
    );
    println!(
        "(3 commits per agent: register, sign in, go available; {:.0} commits/s over 16 tasks)",
        (3 * n) as f64 / elapsed.as_secs_f64()
    );
    // The change log is bounded (trimmed to about 100k entries) whatever the pool size: without
    // it, what remains is what each agent costs.
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("XTRIM").arg(&store.keys().log).arg("MAXLEN").arg(0).query_async(&mut c).await.unwrap();
    let trimmed = used_memory(&server.url()).await;
    println!(
        "without the change log: delta={} bytes_per_agent={:.0} (agent record + agents zset entry + lease timer)",
        trimmed - before,
        (trimmed - before) as f64 / n as f64
    );
}
