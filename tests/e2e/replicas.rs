//! Two dispatchers on one Redis, with the router, the agent's device and the deciding replica
//! on different ones: every observer sees what it would see on the replica that decided.

use dispatch_domain::Policy;
use dispatch_engine::Clock;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use tokio_stream::StreamExt;

/// What a watcher learns of an event, whichever replica it watches on (the version at which a
/// replica learns of an event depends on the versions it saw).
fn story(events: &[pb::CaseEvent]) -> Vec<(pb::CaseEventKind, String, String, i64, pb::CaseState)> {
    events.iter().map(|e| (e.kind(), e.agent_id.clone(), e.offer_id.clone(), e.at_ms, e.state())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_sees_what_another_decided() {
    let a = TestServer::start(Backend::Redis, Policy::default()).await;
    let b = TestServer::start_beside(&a, Policy::default()).await;
    a.register(profile("ana", &[("en", 5)], &[], false)).await;
    // The agent's stream is on B; the router submits and watches on A.
    let mut ana = b.available("ana").await;
    a.submit(case("x1", "en", &[], pb::Tier::Standard)).await;
    let mut on_a = a.watch("x1").await;
    let mut on_b = b.watch("x1").await;
    let offer = ana.offer().await;
    assert_eq!(ana.accept(&offer.offer_id).await.code, 0, "accepted through B");
    assert_eq!(ana.complete("x1").await.code, 0, "completed through B");
    let seen_a = watch_to_end(&mut on_a).await;
    let seen_b = watch_to_end(&mut on_b).await;
    let kinds: Vec<pb::CaseEventKind> = seen_a.iter().map(|e| e.kind()).collect();
    use pb::CaseEventKind as K;
    // The snapshot may already show the offer, if it was made before the watch opened.
    let tail = if kinds[1] == K::Offered { &kinds[1..] } else { &kinds[..] };
    assert!(
        tail == [K::Offered, K::Assigned, K::Completed] || kinds == [K::Snapshot, K::Assigned, K::Completed],
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&K::Completed), "the watch on A ends at the completion decided on B");
    let done = seen_a.last().unwrap();
    assert_eq!((done.agent_id.as_str(), done.state()), ("ana", pb::CaseState::Completed));
    // Both replicas tell the same story after the snapshot.
    assert_eq!(story(&seen_a[1..]), story(&seen_b[1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_one_replica_is_told_it_was_set_away_by_misses_decided_on_another() {
    // A long presence lease: A renews it on its own (standing) clock.
    let policy = Policy { max_consecutive_misses: 1, presence_lease_ms: 600_000, ..Policy::default() };
    let b = TestServer::start(Backend::Redis, policy.clone()).await;
    // A's clock stands still: only B's sweeper sees the offer's deadline pass.
    let a = TestServer::start_beside_on(&b, policy, Clock::manual(T0)).await;
    b.register(profile("ben", &[("en", 5)], &[], false)).await;
    let mut ben = a.available("ben").await;
    b.submit(case("m1", "en", &[], pb::Tier::Standard)).await;
    let offer = ben.offer().await;
    b.advance(25_000); // past the chat offer timeout, on B's clock only
    let r = ben.revoked().await;
    assert_eq!((r.offer_id.as_str(), r.reason.as_str()), (offer.offer_id.as_str(), "timed_out"));
    let st = ben.expect_status(pb::AgentStatus::Away).await;
    assert_eq!(st.reason, "missed_offers", "the device on A hears why it was set away");
    assert_eq!(a.agent("ben").await.presence.unwrap().status, pb::AgentStatus::Away as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_replica_revokes_the_offer_on_a_device_on_another() {
    let a = TestServer::start(Backend::Redis, Policy::default()).await;
    let b = TestServer::start_beside(&a, Policy::default()).await;
    a.register(profile("cy", &[("en", 5)], &[], false)).await;
    let mut cy = a.available("cy").await;
    a.submit(case("k1", "en", &[], pb::Tier::Standard)).await;
    let offer = cy.offer().await;
    let cancelled = b
        .escalation()
        .cancel_case(pb::CancelCaseRequest { case_id: "k1".into(), reason: "customer left".into() })
        .await
        .expect("cancel on B");
    assert_eq!(cancelled.into_inner().case.unwrap().state, pb::CaseState::Cancelled as i32);
    let r = cy.revoked().await;
    assert_eq!((r.offer_id.as_str(), r.reason.as_str()), (offer.offer_id.as_str(), "cancelled"));
    // And an assignment cancelled on B is taken back from the device on A.
    a.submit(case("k2", "en", &[], pb::Tier::Standard)).await;
    let offer = cy.offer().await;
    assert_eq!(cy.accept(&offer.offer_id).await.code, 0);
    b.escalation().cancel_case(pb::CancelCaseRequest { case_id: "k2".into(), reason: String::new() }).await.unwrap();
    let r = cy.revoked().await;
    assert_eq!((r.case_id.as_str(), r.reason.as_str()), ("k2", "cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_stream_on_one_replica_sees_a_status_change_made_on_another() {
    let a = TestServer::start(Backend::Redis, Policy::default()).await;
    let b = TestServer::start_beside(&a, Policy::default()).await;
    a.register(profile("di", &[("de", 5)], &[], false)).await;
    let mut reports = a
        .planner()
        .watch_availability(pb::WatchAvailabilityRequest { filter: None, group_by: vec![], interval_ms: 250 })
        .await
        .unwrap()
        .into_inner();
    let first = bounded("a first report", reports.next()).await.unwrap().unwrap();
    assert_eq!(first.total.unwrap().available, 0);
    let _di = b.available("di").await;
    bounded("A's planner stream to show the agent available on B", async {
        loop {
            let r = reports.next().await.expect("stream open").expect("report");
            if r.total.unwrap().available == 1 {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_replaced_by_one_on_another_replica_is_told_why() {
    let a = TestServer::start(Backend::Redis, Policy::default()).await;
    let b = TestServer::start_beside(&a, Policy::default()).await;
    a.register(profile("ed", &[("en", 5)], &[], false)).await;
    let mut phone = a.available("ed").await;
    let mut desktop = b.connect("ed").await;
    assert_eq!(desktop.expect_status(pb::AgentStatus::Available).await.reason, "session_resumed");
    assert_eq!(phone.ended().await, pb::SessionEndReason::Replaced);
    phone.expect_end().await;
}
