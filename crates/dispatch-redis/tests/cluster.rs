//! Redis Cluster mode, against a local three-primary cluster the test starts
//! (`redis-server --cluster-enabled yes` on free ports, `redis-cli --cluster create`): the store
//! conformance suite passes with every pool in one slot, pools spread across shards, and the
//! engine dispatches on it.

use std::sync::Arc;
use std::time::Duration;

use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::{AgentId, AgentStatus, CaseState, Channel, Level, Policy, Tier};
use dispatch_engine::conformance as suite;
use dispatch_engine::{AgentCommand, AgentNotice, Clock, Engine, EngineConfig, Store};
use dispatch_redis::keys::Keys;
use dispatch_redis::testing::RedisCluster;
use dispatch_redis::{RedisConfig, RedisStore};

async fn store(cluster: &RedisCluster, pool: &str) -> RedisStore {
    let config = RedisConfig { cluster_nodes: cluster.urls(), pool: pool.to_owned(), ..RedisConfig::default() };
    let s = RedisStore::open(&config, None).await.expect("open the store on the cluster");
    s.join_epoch(0).await.expect("join the epoch");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_conformance_suite_passes_on_a_cluster() {
    let cluster = RedisCluster::start();
    // One pool per check, so each starts empty; the pools land on different shards.
    let s = store(&cluster, "c1").await;
    suite::records_round_trip_with_versions(&s).await;
    suite::a_conflict_writes_nothing(&store(&cluster, "c2").await).await;
    suite::create_requires_absence(&store(&cluster, "c3").await).await;
    suite::timers_are_ordered_movable_and_cleared_by_due_time(&store(&cluster, "c4").await).await;
    suite::offers_lead_to_their_case(&store(&cluster, "c5").await).await;
    suite::agents_page_in_id_order(&store(&cluster, "c6").await).await;
    suite::agent_removal_is_fenced(&store(&cluster, "c7").await).await;
    suite::snapshot_and_purge_see_only_what_they_should(&store(&cluster, "c8").await).await;
    suite::counters_add_up(&store(&cluster, "c9").await).await;
    suite::racing_commits_have_exactly_one_winner(Arc::new(store(&cluster, "c10").await)).await;
    suite::read_reports_the_store_time(&store(&cluster, "c11").await, &Clock::system()).await;
    suite::restore_keeps_the_newest_version(&store(&cluster, "c12").await).await;
    suite::a_commit_disarms_timers(&store(&cluster, "c13").await).await;
    let owners: std::collections::BTreeSet<u16> =
        (1..=12).map(|i| cluster.owner_of(&Keys::new(&format!("c{i}")).log)).collect();
    assert!(owners.len() > 1, "the twelve pools are spread over several shards: {owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pool_lives_on_one_shard_and_the_engine_dispatches_there() {
    let cluster = RedisCluster::start();
    // Two pools on different primaries.
    let first = Keys::new("p0");
    let other =
        (1..100).map(|i| format!("p{i}")).find(|p| cluster.owner_of(&Keys::new(p).log) != cluster.owner_of(&first.log));
    let other = other.expect("a pool on another shard");
    let (a, b) = (store(&cluster, "p0").await, store(&cluster, &other).await);

    let engine = Engine::start(Arc::new(a), Clock::system(), Policy::default(), EngineConfig::default())
        .await
        .expect("the engine starts on the cluster");
    let limits = dispatch_domain::limits::Limits::default();
    let profile = AgentProfile::parse(
        AgentProfileInput {
            id: "ana",
            display_name: "Ana",
            languages: vec![("de", 5)],
            skills: vec![],
            vip_certified: true,
            capacity: vec![(Some(Channel::Chat), 1)],
            rating: 4.5,
            ..Default::default()
        },
        &limits,
    )
    .unwrap();
    engine.upsert_agent(profile).await.unwrap();
    let ana = AgentId::parse("a", "ana").unwrap();
    let (mut notices, session) = engine.connect(&ana).await.unwrap();
    session.execute(AgentCommand::SetStatus(AgentStatus::Available)).await.unwrap();
    let spec = CaseSpec::parse(
        CaseSpecInput {
            id: "case-1",
            language: "de",
            tier: Some(Tier::Vip),
            channel: Some(Channel::Chat),
            ..Default::default()
        },
        Level::MIN,
        &limits,
    )
    .unwrap();
    engine.submit(spec, None).await.unwrap();
    let offer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match notices.next().await.expect("session open") {
                AgentNotice::Offer { offer_id, .. } => return offer_id,
                _ => continue,
            }
        }
    })
    .await
    .expect("an offer within 10 s");
    session.execute(AgentCommand::Accept(offer)).await.unwrap();
    let (case, _) = engine.get_case(&dispatch_domain::CaseId::parse("c", "case-1").unwrap(), None).await.unwrap();
    assert!(matches!(case.state, CaseState::Assigned { .. }));

    // The records are on p0's shard; the other pool, on its own shard, does not see them.
    let owner = cluster.owner_of(&first.log);
    let key = first.case("case-1");
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &owner.to_string(), "EXISTS", &key])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{key} on the primary at {owner}");
    assert!(b.get_case(&dispatch_domain::CaseId::parse("c", "case-1").unwrap()).await.unwrap().is_none());
    engine.stop();
}
