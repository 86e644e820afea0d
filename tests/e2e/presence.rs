//! Presence: stream drops, grace, reconnects, replaced sessions.

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;

async fn a_dropped_stream_revokes_the_offer_and_re_offers_it(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("flaky", &[("en", 5)], &[], false)).await;
    s.register(profile("steady", &[("en", 3)], &[], false)).await;
    let mut flaky = s.available("flaky").await;
    let mut steady = s.available("steady").await;
    s.submit(case("d1", "en", &[], pb::Tier::Standard)).await;
    let offer = flaky.offer().await;
    drop(flaky); // the phone loses its connection
    assert_eq!(steady.offer().await.case.unwrap().case_id, "d1");
    let c = s.case("d1").await;
    assert_eq!(c.offers[0].offer_id, offer.offer_id);
    assert_eq!(c.offers[0].outcome, pb::OfferOutcome::Revoked as i32);
    assert_eq!(c.offers[0].reason, "disconnected");
    // Within the grace period the agent still counts as signed in, but is not connected.
    let p = s.agent("flaky").await.presence.unwrap();
    assert!(!p.connected);
    assert_eq!(p.status, pb::AgentStatus::Available as i32);
}

async fn reconnect_within_grace_resumes_and_keeps_assignments_then_grace_expiry_signs_out(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("mobile", &[("en", 5)], &[], false)).await;
    let mut a = s.available("mobile").await;
    s.submit(case("r1", "en", &[], pb::Tier::Standard)).await;
    let o = a.offer().await;
    assert_eq!(a.accept(&o.offer_id).await.code, 0);
    drop(a);
    eventually("the drop to be noticed", || async {
        (!s.agent("mobile").await.presence.unwrap().connected).then_some(())
    })
    .await;
    s.advance(29_000);
    let mut a = s.connect("mobile").await;
    let st = a.expect_status(pb::AgentStatus::Available).await;
    assert_eq!(st.reason, "session_resumed");
    assert_eq!(st.assigned_case_ids, vec!["r1".to_owned()]);
    assert_eq!(s.case("r1").await.current_agent_id, "mobile");
    assert_eq!(a.complete("r1").await.code, 0, "the resumed session can finish its case");
    // Drop again and stay away past the grace period: offline.
    drop(a);
    eventually("the drop to be noticed", || async {
        (!s.agent("mobile").await.presence.unwrap().connected).then_some(())
    })
    .await;
    s.advance(30_000);
    eventually("grace expiry", || async {
        (s.agent("mobile").await.presence.unwrap().status == pb::AgentStatus::Offline as i32).then_some(())
    })
    .await;
    let mut a = s.connect("mobile").await;
    assert_eq!(a.expect_status(pb::AgentStatus::Away).await.reason, "signed_in");
}

async fn an_agent_coming_online_receives_a_waiting_case(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("late", &[("pt-BR", 4)], &[("refunds", 2)], false)).await;
    s.submit(case("p1", "pt", &[("refunds", 2)], pb::Tier::Standard)).await;
    assert_eq!(s.case("p1").await.state, pb::CaseState::Queued as i32);
    let mut a = s.available("late").await;
    assert_eq!(a.offer().await.case.unwrap().case_id, "p1");
}

async fn a_second_device_replaces_the_first_and_sees_the_live_offer(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("two-phones", &[("en", 5)], &[], false)).await;
    let mut phone = s.available("two-phones").await;
    s.submit(case("x1", "en", &[], pb::Tier::Standard)).await;
    let offer = phone.offer().await;
    let mut desk = s.connect("two-phones").await;
    phone.expect_end().await;
    let again = desk.offer().await;
    assert_eq!(again.offer_id, offer.offer_id);
    assert!(again.remaining_ms <= offer.remaining_ms);
    assert_eq!(desk.accept(&offer.offer_id).await.code, 0);
}

async fn going_away_revokes_the_pending_offer(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("leaver", &[("en", 5)], &[], false)).await;
    s.register(profile("stayer", &[("en", 3)], &[], false)).await;
    let mut leaver = s.available("leaver").await;
    let mut stayer = s.available("stayer").await;
    s.submit(case("g1", "en", &[], pb::Tier::Standard)).await;
    leaver.offer().await;
    let r = leaver
        .command(pb::agent_message::Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Away as i32 }))
        .await;
    assert_eq!(r.code, 0);
    assert_eq!(leaver.revoked().await.reason, "agent_unavailable");
    assert_eq!(stayer.offer().await.case.unwrap().case_id, "g1");
}

on_every_backend!(
    a_dropped_stream_revokes_the_offer_and_re_offers_it,
    reconnect_within_grace_resumes_and_keeps_assignments_then_grace_expiry_signs_out,
    an_agent_coming_online_receives_a_waiting_case,
    a_second_device_replaces_the_first_and_sees_the_live_offer,
    going_away_revokes_the_pending_offer,
    signing_out_answers_the_command_and_tells_the_status_before_the_stream_ends,
    a_device_replaced_by_a_second_one_is_told_why,
    agents_in_their_grace_period_are_counted_apart,
);

async fn signing_out_answers_the_command_and_tells_the_status_before_the_stream_ends(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("fay", &[("en", 5)], &[], false)).await;
    let mut fay = s.available("fay").await;
    fay.expect_status(pb::AgentStatus::Available).await;
    let id = fay.send(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Offline as i32 })).await;
    // In this order: the new status, the command's result, then the end and why.
    let st = fay.next("the next message", |e| Some(e.clone())).await;
    assert!(
        matches!(&st, Event::Status(s) if s.status == pb::AgentStatus::Offline as i32 && s.reason == "requested"),
        "{st:?}"
    );
    let r = fay.next("the next message", |e| Some(e.clone())).await;
    assert!(matches!(&r, Event::Result(r) if r.request_id == id && r.code == 0), "{r:?}");
    assert_eq!(fay.ended().await, pb::SessionEndReason::SignedOut);
    fay.expect_end().await;
    assert_eq!(s.agent("fay").await.presence.unwrap().status, pb::AgentStatus::Offline as i32);
}

async fn a_device_replaced_by_a_second_one_is_told_why(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("gus", &[("en", 5)], &[], false)).await;
    let mut phone = s.available("gus").await;
    s.submit(case("g1", "en", &[], pb::Tier::Standard)).await;
    let offer = phone.offer().await;
    let mut desktop = s.connect("gus").await;
    assert_eq!(phone.ended().await, pb::SessionEndReason::Replaced);
    phone.expect_end().await;
    // The live offer moved with the session: the new device sees it and can take it.
    assert_eq!(desktop.offer().await.offer_id, offer.offer_id);
    assert_eq!(desktop.accept(&offer.offer_id).await.code, 0);
}

async fn agents_in_their_grace_period_are_counted_apart(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("hal", &[("en", 5)], &[], false)).await;
    s.register(profile("ivy", &[("en", 5)], &[], false)).await;
    let hal = s.available("hal").await;
    let _ivy = s.available("ivy").await;
    drop(hal);
    let counts = eventually("hal's drop to be noticed", || async {
        let r = s.planner().get_availability(pb::GetAvailabilityRequest::default()).await.unwrap().into_inner();
        r.report.unwrap().total.filter(|t| t.reconnecting == 1 && t.available == 1)
    })
    .await;
    assert_eq!((counts.available, counts.busy, counts.online, counts.reconnecting), (1, 0, 2, 1));
    assert_eq!(s.agent("hal").await.presence.unwrap().activity, pb::Activity::Reconnecting as i32);
}
