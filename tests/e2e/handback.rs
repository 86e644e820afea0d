//! Work never sticks with a vanished or quiet agent: hand-backs after the presence grace
//! period, after a sign-out, and after the activity timer, seen alike on every replica.

use dispatch_domain::Policy;
use dispatch_engine::Clock;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;

/// `who` accepts case `id` (the only case waiting) and holds it.
async fn take(conn: &mut AgentConn, id: &str) {
    let o = conn.offer().await;
    assert_eq!(o.case.as_ref().unwrap().case_id, id);
    assert_eq!(conn.accept(&o.offer_id).await.code, 0);
}

async fn a_vanished_agents_case_is_handed_back_with_its_age_and_taken_by_another(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("gone", &[("en", 5)], &[], false)).await;
    s.register(profile("there", &[("en", 3)], &[], false)).await;
    let mut gone = s.available("gone").await;
    s.submit(case("hb1", "en", &[], pb::Tier::Standard)).await;
    take(&mut gone, "hb1").await;
    let created = s.case("hb1").await.created_at_ms;
    let mut watch = s.watch("hb1").await;
    let mut there = s.available("there").await;
    drop(gone); // the phone dies and never comes back
    eventually("the drop to be noticed", || async {
        (!s.agent("gone").await.presence.unwrap().connected).then_some(())
    })
    .await;
    assert_eq!(s.case("hb1").await.current_agent_id, "gone", "within the grace period the case stays");
    s.advance(30_000); // the grace period ends
    let o = there.offer().await;
    assert_eq!(o.case.unwrap().case_id, "hb1", "handed back and offered to the agent who is there");
    let events = watch_until(&mut watch, pb::CaseEventKind::Offered, 1).await;
    let hb = events.iter().find(|e| e.kind() == pb::CaseEventKind::HandedBack).expect("a HANDED_BACK event");
    assert_eq!(
        (hb.agent_id.as_str(), hb.reason.as_str(), hb.state()),
        ("gone", "presence_lost", pb::CaseState::Queued)
    );
    let c = s.case("hb1").await;
    assert_eq!(c.created_at_ms, created, "its age is kept");
    assert!(c.offers[0].handed_back_at_ms > 0 && c.offers[0].outcome() == pb::OfferOutcome::Accepted);
    assert_eq!(c.offers[0].reason, "presence_lost");
    assert_eq!(there.accept(&o.offer_id).await.code, 0);
    assert_eq!(s.case("hb1").await.current_agent_id, "there");
    let p = s.agent("gone").await.presence.unwrap();
    assert_eq!((p.hand_backs, p.assigned_case_ids.len()), (1, 0), "planners count it per agent");
    let stats = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.handed_back_total, 1);
    // The vanished agent signs in later: the case is no longer theirs.
    let mut back = s.connect("gone").await;
    assert!(back.expect_status(pb::AgentStatus::Away).await.assigned_case_ids.is_empty());
    let r = back.complete("hb1").await;
    assert_ne!(r.code, 0, "{r:?}");
}

async fn a_sign_out_holding_a_case_hands_it_back_after_the_grace_period(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("leaver", &[("en", 5)], &[], false)).await;
    s.register(profile("stayer", &[("en", 3)], &[], false)).await;
    let mut leaver = s.available("leaver").await;
    s.submit(case("so1", "en", &[], pb::Tier::Standard)).await;
    take(&mut leaver, "so1").await;
    let mut stayer = s.available("stayer").await;
    let r = leaver.command(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Offline as i32 })).await;
    assert_eq!(r.code, 0);
    s.advance(29_000);
    assert!(stayer.offer_now().await.is_none(), "within the grace period a sign-in would keep it");
    s.advance(1_000);
    let o = stayer.offer().await;
    assert_eq!(o.case.unwrap().case_id, "so1");
    assert_eq!(s.case("so1").await.offers[0].reason, "signed_out");
}

async fn no_activity_warns_then_hands_back_and_reported_activity_keeps_the_case(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await; // chat: 3 minutes, warned 1 minute before
    s.register(profile("quiet", &[("en", 5)], &[], false)).await;
    let mut quiet = s.available("quiet").await;
    s.submit(case("ac1", "en", &[], pb::Tier::Standard)).await;
    take(&mut quiet, "ac1").await;
    s.advance(120_000);
    let w = warning(&mut quiet).await;
    assert_eq!((w.case_id.as_str(), w.remaining_ms), ("ac1", 60_000));
    let r = quiet.command(Command::ReportActivity(pb::ReportActivity { case_id: "ac1".into() })).await;
    assert_eq!(r.code, 0, "{r:?}");
    s.advance(119_000);
    assert_eq!(s.case("ac1").await.current_agent_id, "quiet", "activity restarted the timer");
    s.advance(1_000);
    assert_eq!(warning(&mut quiet).await.remaining_ms, 60_000);
    s.advance(60_000);
    let h = quiet
        .next("a hand-back", |e| match e {
            Event::HandedBack(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert_eq!((h.case_id.as_str(), h.reason.as_str()), ("ac1", "no_activity"));
    let r = quiet.complete("ac1").await;
    assert_eq!((r.code, r.reason.as_str()), (tonic::Code::FailedPrecondition as i32, "CASE_NOT_ASSIGNED"));
    // Bad input: activity on a case that is not the agent's names the field or the state.
    let r = quiet.command(Command::ReportActivity(pb::ReportActivity { case_id: "a b".into() })).await;
    assert_eq!((r.code, r.field.as_str()), (tonic::Code::InvalidArgument as i32, "report_activity.case_id"));
    let r = quiet.command(Command::ReportActivity(pb::ReportActivity { case_id: "nope".into() })).await;
    assert_eq!(r.code, tonic::Code::NotFound as i32);
}

async fn warning(conn: &mut AgentConn) -> pb::ActivityWarning {
    conn.next("an activity warning", |e| match e {
        Event::ActivityWarning(w) => Some(w.clone()),
        _ => None,
    })
    .await
}

/// Reads `watch` until the `n`-th event of `kind`; every event read.
async fn watch_until(
    watch: &mut tonic::Streaming<pb::CaseEvent>,
    kind: pb::CaseEventKind,
    n: usize,
) -> Vec<pb::CaseEvent> {
    let mut seen = Vec::new();
    bounded("watch events", async {
        while seen.iter().filter(|e: &&pb::CaseEvent| e.kind() == kind).count() < n {
            seen.push(watch.message().await.expect("watch").expect("an event"));
        }
    })
    .await;
    seen
}

on_every_backend!(
    a_vanished_agents_case_is_handed_back_with_its_age_and_taken_by_another,
    a_sign_out_holding_a_case_hands_it_back_after_the_grace_period,
    no_activity_warns_then_hands_back_and_reported_activity_keeps_the_case,
);

/// The hand-back decided on one replica (only its clock passes the grace period) is told alike
/// on the other: its watch sees HANDED_BACK, its device gets the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_back_decided_on_one_replica_is_seen_on_the_other() {
    let policy = Policy { presence_lease_ms: 600_000, ..Policy::default() };
    let b = TestServer::start(Backend::Redis, policy.clone()).await;
    let a = TestServer::start_beside_on(&b, policy, Clock::manual(T0)).await;
    b.register(profile("vanisher", &[("en", 5)], &[], false)).await;
    b.register(profile("helper", &[("en", 3)], &[], false)).await;
    let mut vanisher = a.available("vanisher").await;
    b.submit(case("rh1", "en", &[], pb::Tier::Standard)).await;
    take(&mut vanisher, "rh1").await;
    let mut watch_a = a.watch("rh1").await;
    let mut watch_b = b.watch("rh1").await;
    let mut helper = a.available("helper").await;
    drop(vanisher);
    eventually("the drop to be stored", || async {
        (!b.agent("vanisher").await.presence.unwrap().connected).then_some(())
    })
    .await;
    b.advance(30_000); // only B's sweeper sees the grace period end
    assert_eq!(helper.offer().await.case.unwrap().case_id, "rh1", "the device on A gets the case");
    let seen_a = watch_until(&mut watch_a, pb::CaseEventKind::Offered, 1).await;
    let seen_b = watch_until(&mut watch_b, pb::CaseEventKind::Offered, 1).await;
    let story = |evs: &[pb::CaseEvent]| -> Vec<(i32, String, String, i64)> {
        evs.iter().skip(1).map(|e| (e.kind, e.agent_id.clone(), e.reason.clone(), e.at_ms)).collect()
    };
    assert!(seen_a.iter().any(|e| e.kind() == pb::CaseEventKind::HandedBack));
    assert_eq!(story(&seen_a), story(&seen_b), "both replicas tell the same story");
}

/// An activity warning and a working-time cap decided by one replica's sweeper (only its clock
/// moves) reach the device held by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_caps_decided_on_one_replica_reach_the_device_on_the_other() {
    use dispatch_domain::policy::ChannelDurations;
    use dispatch_domain::worktime::{WorkLimits, WorkingTimePolicy};
    let mut policy = Policy { presence_lease_ms: 600_000, ..Policy::default() };
    policy.working_time = WorkingTimePolicy {
        count_available: true,
        default: WorkLimits { max_per_day_ms: 300_000, ..WorkLimits::default() },
        expected_handle_ms: ChannelDurations { voice: 60_000, chat: 60_000, email: 60_000 },
        ..WorkingTimePolicy::default()
    };
    let b = TestServer::start(Backend::Redis, policy.clone()).await;
    let a = TestServer::start_beside_on(&b, policy, Clock::manual(T0)).await;
    b.register(profile("quiet", &[("en", 5)], &[], false)).await;
    b.register(profile("waiter", &[("en", 5)], &[], false)).await;
    let mut quiet = a.available("quiet").await;
    b.submit(case("rw1", "en", &[], pb::Tier::Standard)).await;
    take(&mut quiet, "rw1").await;
    let mut waiter = a.available("waiter").await;
    b.advance(120_000); // B's sweeper: the activity warning, then (4 min + 1 ms) the cap
    let w = quiet
        .next("an activity warning", |e| match e {
            Event::ActivityWarning(w) => Some(w.clone()),
            _ => None,
        })
        .await;
    // Told by A, decided by B: the time left is measured on A's clock (the store's clock in a
    // deployment, the same for both; here A's stands still at the accept).
    assert_eq!((w.case_id.as_str(), w.remaining_ms), ("rw1", 180_000));
    b.advance(120_001);
    let t = waiter
        .next("a working-time notice", |e| match e {
            Event::WorkingTime(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(t.limit, "day");
    assert_eq!(a.agent("waiter").await.presence.unwrap().capped_limit, "day");
}
