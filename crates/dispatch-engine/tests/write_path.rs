//! The write path's economies, and that they keep its guarantees: a transition decided on the
//! index's records never overwrites a write it did not see; a commit disarms the timers its
//! case's new state makes moot; a burst of due timers larger than one batch fires in a single
//! sweep (several at a time).

use std::sync::Arc;
use std::time::Duration;

use dispatch_domain::limits::Limits;
use dispatch_domain::model::{CaseSpec, CaseSpecInput, Channel, Level};
use dispatch_domain::{AgentId, AgentStatus, CaseId, Millis, Policy, TimerKey};
use dispatch_engine::{AgentCommand, AgentNotice, Clock, Engine, EngineConfig, MemoryStore, Store};

mod common;
use common::profile;

const T0: Millis = 1_700_000_000_000;

fn spec(id: &str) -> CaseSpec {
    let input = CaseSpecInput {
        id,
        language: "en",
        tier: Some(dispatch_domain::model::Tier::Standard),
        channel: Some(Channel::Chat),
        ..Default::default()
    };
    CaseSpec::parse(input, Level::MIN, &Limits::default()).unwrap()
}

async fn start() -> (Engine, Arc<MemoryStore>, Clock) {
    let clock = Clock::manual(T0);
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let engine =
        Engine::start(Arc::clone(&store) as Arc<dyn Store>, clock.clone(), Policy::default(), EngineConfig::default())
            .await
            .unwrap();
    (engine, store, clock)
}

async fn case_timers(store: &MemoryStore, case: &CaseId) -> Vec<TimerKey> {
    let due = store.due_timers(Millis::MAX, 100_000).await.unwrap();
    due.into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            matches!(k, TimerKey::CaseReview(c) | TimerKey::OfferDeadline(c) | TimerKey::HandBack(c) | TimerKey::Purge(c) if c == case)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_disarms_the_offer_deadline_and_the_review_and_a_completion_the_hand_back() {
    let (engine, store, _clock) = start().await;
    let (case, _, _) = engine.submit(spec("c1"), None).await.unwrap();
    let id = case.id().clone();
    assert!(case_timers(&store, &id).await.contains(&TimerKey::CaseReview(id.clone())), "a waiting case is reviewed");

    let agent = AgentId::parse("agent_id", "a1").unwrap();
    engine.upsert_agent(profile("a1")).await.unwrap();
    let (mut notices, commands) = engine.connect(&agent).await.unwrap();
    commands.execute(AgentCommand::SetStatus(AgentStatus::Available)).await.unwrap();
    let offer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(AgentNotice::Offer { offer_id, .. }) = notices.next().await {
                return offer_id;
            }
        }
    })
    .await
    .expect("the case is offered");
    let offered = case_timers(&store, &id).await;
    assert_eq!(offered, vec![TimerKey::OfferDeadline(id.clone())], "the offer disarmed the review");

    commands.execute(AgentCommand::Accept(offer)).await.unwrap();
    let assigned = case_timers(&store, &id).await;
    assert!(!assigned.contains(&TimerKey::OfferDeadline(id.clone())), "{assigned:?}");
    assert!(!assigned.contains(&TimerKey::CaseReview(id.clone())), "{assigned:?}");

    commands.execute(AgentCommand::Complete(id.clone(), "resolved".into())).await.unwrap();
    assert_eq!(case_timers(&store, &id).await, vec![TimerKey::Purge(id.clone())], "only the purge is left");
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_due_timers_beyond_one_batch_fires_in_one_sweep() {
    let (engine, store, clock) = start().await;
    // 300 dropped sessions: 300 presence-grace timers, all due at once (the sweeper reads 256
    // at a time).
    let ids: Vec<AgentId> = (0..300).map(|i| AgentId::parse("agent_id", &format!("g-{i}")).unwrap()).collect();
    for id in &ids {
        engine.upsert_agent(profile(id.as_str())).await.unwrap();
        let (_notices, commands) = engine.connect(id).await.unwrap();
        engine.disconnect(id, commands.session_id()).await.unwrap();
    }
    let grace = |k: &TimerKey| matches!(k, TimerKey::PresenceGrace(_));
    let armed = store.due_timers(Millis::MAX, 100_000).await.unwrap();
    assert_eq!(armed.iter().filter(|(k, _)| grace(k)).count(), ids.len());
    clock.advance(Policy::default().presence_grace_ms + 1);
    engine.sweep().await.unwrap();
    // The sweeper task may have taken part of the burst; wait (bounded) for it to finish.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let left = store.due_timers(Millis::MAX, 100_000).await.unwrap();
            if !left.iter().any(|(k, _)| grace(k)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every grace timer fired and was cleared");
    for id in &ids {
        let (agent, _) = engine.get_agent(id).await.unwrap();
        assert_eq!(agent.status, AgentStatus::Offline, "{id} signed out when its grace ran out");
    }
    engine.stop();
}

/// A transition is decided first on the index's records. One the index has not seen yet (here
/// written to the store behind the engine's back, as another replica would) is never
/// overwritten: the commit's compare-and-set fails and the transition is decided again on the
/// store's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_decided_on_a_stale_index_never_overwrites_what_it_did_not_see() {
    let (engine, store, _clock) = start().await;
    let agent = AgentId::parse("agent_id", "a1").unwrap();
    engine.upsert_agent(profile("a1")).await.unwrap();
    let (_notices, commands) = engine.connect(&agent).await.unwrap();
    commands.execute(AgentCommand::SetStatus(AgentStatus::Available)).await.unwrap();
    let mut elsewhere = store.get_agent(&agent).await.unwrap().unwrap();
    "renamed elsewhere".clone_into(&mut elsewhere.profile.display_name);
    let commit = dispatch_engine::Commit { agent: Some(elsewhere), ..Default::default() };
    store.commit(commit).await.unwrap();

    commands.execute(AgentCommand::SetStatus(AgentStatus::Away)).await.unwrap();
    let stored = store.get_agent(&agent).await.unwrap().unwrap();
    assert_eq!(stored.status, AgentStatus::Away);
    assert_eq!(stored.profile.display_name, "renamed elsewhere", "the write the index had not seen stays");
    engine.stop();
}
