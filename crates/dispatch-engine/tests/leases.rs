//! Presence leases of the sessions a dispatcher holds: renewed by the sweeper once a third of
//! each has run, session by session (so renewals stay spread the way devices connected) and in
//! small batches, and never allowed to run out while the stream is open.

use std::sync::Arc;
use std::time::Duration;

use dispatch_domain::{AgentId, Millis, Policy, TimerKey};
use dispatch_engine::{AgentCommands, AgentNotices, Clock, Engine, EngineConfig, MemoryStore, Store};

mod common;
use common::profile;

const T0: Millis = 1_700_000_000_000;

/// When each agent's presence lease runs out, as the store holds it.
async fn leases(store: &MemoryStore) -> Vec<(AgentId, Millis)> {
    let due = store.due_timers(Millis::MAX, 100_000).await.unwrap();
    due.into_iter()
        .filter_map(|(k, at)| match k {
            TimerKey::PresenceLease(a) => Some((a, at)),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until every lease of `agents` in the store runs to at least `until`.
async fn leases_reach(store: &MemoryStore, agents: &[AgentId], until: Millis) {
    let wait = async {
        loop {
            let l = leases(store).await;
            let renewed = agents.iter().all(|a| l.iter().any(|(b, at)| a == b && *at >= until));
            if renewed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the sweeper renews the leases");
}

async fn connect(engine: &Engine, ids: &[AgentId]) -> Vec<(AgentNotices, AgentCommands)> {
    let mut sessions = Vec::new();
    for id in ids {
        engine.upsert_agent(profile(id.as_str())).await.unwrap();
        sessions.push(engine.connect(id).await.unwrap());
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_keep_their_leases_each_on_its_own_schedule() {
    let clock = Clock::manual(T0);
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let policy = Policy::default();
    let lease = policy.presence_lease_ms as i64;
    let engine = Engine::start(Arc::clone(&store) as Arc<dyn Store>, clock.clone(), policy, EngineConfig::default())
        .await
        .unwrap();
    // More agents than one renewal batch, in two groups that connect 3 s apart.
    let early: Vec<AgentId> = (0..300).map(|i| AgentId::parse("agent_id", &format!("early-{i}")).unwrap()).collect();
    let late: Vec<AgentId> = (0..50).map(|i| AgentId::parse("agent_id", &format!("late-{i}")).unwrap()).collect();
    let _early_sessions = connect(&engine, &early).await;
    clock.advance(3_000);
    let _late_sessions = connect(&engine, &late).await;
    let l = leases(&store).await;
    assert_eq!(l.len(), early.len() + late.len());
    assert!(l.iter().all(|(a, at)| *at == if early.contains(a) { T0 + lease } else { T0 + 3_000 + lease }));

    // At 6 s the early leases have run 40% (more than a third): renewed to 6 s + lease. The
    // late ones have run 20%: left alone, on their own schedule.
    clock.advance(3_000);
    leases_reach(&store, &early, T0 + 6_000 + lease).await;
    let l = leases(&store).await;
    assert!(l.iter().filter(|(a, _)| late.contains(a)).all(|(_, at)| *at == T0 + 3_000 + lease), "{l:?}");

    // Step through three whole lease lengths: no lease of an open stream runs out.
    for step in 1..=9 {
        clock.advance(5_000);
        let now = T0 + 6_000 + step * 5_000;
        leases_reach(&store, &early, now + lease - lease / 3).await;
        leases_reach(&store, &late, now + lease - lease / 3).await;
    }
    for id in early.iter().chain(&late) {
        let agent = engine.get_agent(id).await.unwrap();
        assert!(agent.0.session.is_some_and(|s| s.connected), "{id} stays connected");
    }
    engine.stop();
}
