//! The store conformance suite, run against the embedded store and against a real
//! `redis-server` started by each test.

use std::sync::Arc;

use dispatch_engine::conformance::Fixture;
use dispatch_engine::{Clock, MemoryStore, Store};
use dispatch_redis::testing::RedisServer;
use dispatch_redis::{RedisConfig, RedisStore};

dispatch_engine::store_conformance_tests!(memory, async {
    let clock = Clock::manual(1_800_000_000_000);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    (store, clock, Box::new(()) as Box<dyn std::any::Any + Send>) as Fixture
});

dispatch_engine::store_conformance_tests!(redis, async {
    let server = RedisServer::start();
    let config = RedisConfig { url: server.url(), ..RedisConfig::default() };
    // Redis's own clock (TIME): the suite compares it with the system clock.
    let store: Arc<dyn Store> = Arc::new(RedisStore::open(&config, None).await.expect("open the redis store"));
    store.join_epoch(0).await.expect("join the epoch");
    (store, Clock::system(), Box::new(server) as Box<dyn std::any::Any + Send>) as Fixture
});
