//! The epoch fence's run-id check on a real `redis-server`: the Functions read the server's
//! run id once per process (not an `INFO` per call), and a restarted server is still caught on
//! the first write.

use dispatch_engine::conformance::sample_agent;
use dispatch_engine::store::{Commit, Store, StoreError};
use dispatch_redis::testing::RedisServer;
use dispatch_redis::{RedisConfig, RedisStore};

fn info_calls(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_info:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_reads_the_run_id_once_per_server_and_still_catches_a_restart() {
    let mut server = RedisServer::start();
    let config = RedisConfig { url: server.url(), ..RedisConfig::default() };
    let store = RedisStore::open(&config, None).await.expect("open the redis store");
    store.join_epoch(0).await.expect("join the epoch");
    let mut agent = store
        .commit(Commit { agent: Some(sample_agent("a1")), ..Commit::default() })
        .await
        .expect("first commit")
        .agent
        .expect("agent");
    server.cli(&["CONFIG", "RESETSTAT"]);
    for _ in 0..50 {
        agent = store.commit(Commit { agent: Some(agent), ..Commit::default() }).await.expect("commit").agent.unwrap();
    }
    // The INFO below is not counted in its own reply: what it shows is the Functions' reads.
    assert_eq!(info_calls(&server), 0, "50 fenced commits read the run id without INFO");
    assert_eq!(agent.version, 51);

    server.stop();
    server.restart();
    // The client's connection broke with the old server: it reconnects on a later call.
    let mut r = Err(StoreError::Unavailable(String::new()));
    for _ in 0..50 {
        r = store.commit(Commit { agent: Some(agent.clone()), ..Commit::default() }).await;
        if !matches!(r, Err(StoreError::Unavailable(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(matches!(r, Err(StoreError::Fenced(_))), "the first write after a restart is fenced: {r:?}");
    store.join_epoch(0).await.expect("join the new epoch");
    let before = agent.version;
    let after =
        store.commit(Commit { agent: Some(agent), ..Commit::default() }).await.expect("commit in the new epoch");
    assert!(after.agent.is_some_and(|a| a.version > before), "written in the new epoch");
}
