//! Calling in offline agents: a shortfall held past the hysteresis invites the right opted-in
//! agents (not the opted out, the quiet, or those who cannot take the cases), no more than the
//! shortfall needs, once each whichever replica runs the round; the notification service reads
//! them at least once and acknowledges them.

use dispatch_domain::Policy;
use dispatch_domain::callin::CallInPolicy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use tokio_stream::StreamExt;

const SEC: u64 = 1_000;

fn policy() -> Policy {
    Policy {
        call_in: CallInPolicy {
            hold_ms: 60 * SEC,
            round_ms: 15 * SEC,
            invitation_ttl_ms: 600 * SEC,
            ..CallInPolicy::default()
        },
        ..Policy::default()
    }
}

fn opted_in(id: &str, lang: &str, quiet: (u32, u32)) -> pb::AgentProfile {
    pb::AgentProfile {
        call_in: Some(pb::CallInPreferences {
            languages: vec![],
            max_per_day: 1,
            quiet_from_min: quiet.0,
            quiet_to_min: quiet.1,
            utc_offset_min: 0,
        }),
        ..profile(id, &[(lang, 5)], &[], false)
    }
}

/// Moves time in steps, sweeping every replica after each (each sweep waits for a round in
/// flight on its replica, so no round is left half done).
async fn advance(s: &TestServer, ms: u64) {
    let mut left = ms;
    while left > 0 {
        let step = left.min(15 * SEC);
        s.advance(step);
        if let Some(d) = &s.devices {
            d.engine.sweep().await.expect("sweep");
        }
        s.engine.sweep().await.expect("sweep");
        left -= step;
    }
}

async fn invitations(s: &TestServer, live_only: bool) -> Vec<pb::Invitation> {
    s.planner()
        .list_invitations(pb::ListInvitationsRequest { language: String::new(), live_only })
        .await
        .expect("list invitations")
        .into_inner()
        .invitations
}

fn agents_of(inv: &[pb::Invitation]) -> Vec<String> {
    let mut out: Vec<String> = inv.iter().map(|i| i.agent_id.clone()).collect();
    out.sort();
    out
}

async fn a_held_shortfall_calls_in_the_right_offline_agents(b: Backend) {
    let s = TestServer::start(b, policy()).await;
    for i in 1..=5 {
        s.register(opted_in(&format!("o{i}"), "de", (0, 0))).await;
    }
    s.register(profile("never", &[("de", 5)], &[], false)).await; // not opted in
    s.register(opted_in("asleep", "de", (7 * 60, 9 * 60))).await; // T0 is 08:00 UTC
    s.register(opted_in("french", "fr", (0, 0))).await; // cannot take German cases
    s.submit(case("c1", "de", &[], pb::Tier::Standard)).await;
    // A shortfall (a case waits, nobody could take it) first seen by the round at 15 s, but not
    // held for the minute yet.
    advance(&s, 60 * SEC).await;
    assert!(invitations(&s, false).await.is_empty(), "no invitation on a shortfall younger than the hold");
    advance(&s, 15 * SEC).await;
    // Shortfall 2 (one case in 15 minutes still needs two agents for 80 % within 2 minutes),
    // each newcomer answers with the prior 0.3: all five candidates do not cover it.
    let sent = eventually("five invitations", || async {
        let sent = invitations(&s, true).await;
        (sent.len() >= 5).then_some(sent)
    })
    .await;
    assert_eq!(agents_of(&sent), ["o1", "o2", "o3", "o4", "o5"], "{sent:?}");
    assert!(sent.iter().all(|i| i.segment == "de/standard/chat/-" && i.outcome() == pb::InvitationOutcome::Pending));
    let mut ids: Vec<&str> = sent.iter().map(|i| i.invitation_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    if let Some(d) = &s.devices {
        let there = eventually("the other replica to see them", || async {
            let there = invitations(d, true).await;
            (there.len() >= 5).then_some(there)
        })
        .await;
        assert_eq!(agents_of(&there), agents_of(&sent), "every replica sees the same");
    }
    // Pending invitations are not sent again, and nobody is invited twice.
    advance(&s, 30 * SEC).await;
    let all = invitations(&s, false).await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|i| sent.iter().any(|x| x.invitation_id == i.invitation_id)), "{all:?}");
    let d = &s
        .planner()
        .get_segment_demand(pb::GetSegmentDemandRequest {
            segment: Some(pb::SegmentQuery {
                language: "de".into(),
                tier: pb::Tier::Standard as i32,
                channel: pb::Channel::Chat as i32,
                skills: vec![],
                exact_skills: true,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .segments[0];
    assert_eq!((d.invitations_pending, d.rates[2].invited), (5, 5));

    // o1 signs in: it came online; goes available and gets the case.
    let mut o1 = s.connect("o1").await;
    let agent = eventually("o1's invitation to close", || async {
        let a = s.agent("o1").await;
        let inv = a.presence.clone()?.invitation?;
        (inv.outcome() == pb::InvitationOutcome::CameOnline).then_some(a)
    })
    .await;
    assert_eq!(agent.presence.unwrap().invitations_answered, 1);
    o1.go_available().await;
    let offer = o1.offer().await;
    assert_eq!(offer.case.unwrap().case_id, "c1");

    // The others lapse, ignored; the daily cap (1) keeps them from being invited again.
    advance(&s, 600 * SEC).await;
    let all = eventually("four lapsed invitations", || async {
        let all = invitations(&s, false).await;
        (all.iter().filter(|i| i.outcome() == pb::InvitationOutcome::Ignored).count() == 4).then_some(all)
    })
    .await;
    assert_eq!(agents_of(&all), ["o1", "o2", "o3", "o4", "o5"]);
    assert!(all.iter().all(|i| sent.iter().any(|x| x.invitation_id == i.invitation_id)), "no new invitation: {all:?}");
}

async fn the_notifier_gets_each_invitation_until_acknowledged(b: Backend) {
    let s = TestServer::start(b, policy()).await;
    for i in 1..=3 {
        s.register(opted_in(&format!("o{i}"), "de", (0, 0))).await;
    }
    s.submit(case("c1", "de", &[], pb::Tier::Standard)).await;
    advance(&s, 75 * SEC).await;
    eventually("three invitations", || async { (invitations(&s, true).await.len() == 3).then_some(()) }).await;
    if let Some(d) = &s.devices {
        eventually("three on the other replica", || async { (invitations(d, true).await.len() == 3).then_some(()) })
            .await;
    }
    let channel = s.devices.as_ref().map_or_else(|| s.channel(), |d| d.channel());
    let mut notifier = pb::notifier_service_client::NotifierServiceClient::new(channel.clone());
    let mut feed = notifier.stream_invitations(pb::StreamInvitationsRequest {}).await.unwrap().into_inner();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bounded("an invitation", feed.next()).await.unwrap().unwrap());
    }
    assert_eq!(agents_of(&got), ["o1", "o2", "o3"]);
    let by = |a: &str| got.iter().find(|i| i.agent_id == a).unwrap().clone();
    let ack = |agent: &str, declined: bool| pb::AckInvitationRequest {
        agent_id: agent.into(),
        invitation_id: by(agent).invitation_id,
        declined,
    };
    let r = notifier.ack_invitation(ack("o1", false)).await.unwrap().into_inner().invitation.unwrap();
    assert!(r.delivered_at_ms > 0 && r.outcome() == pb::InvitationOutcome::Pending);
    let again = notifier.ack_invitation(ack("o1", false)).await.unwrap().into_inner().invitation.unwrap();
    assert_eq!(again, r, "an acknowledgement is idempotent");
    let r = notifier.ack_invitation(ack("o2", true)).await.unwrap().into_inner().invitation.unwrap();
    assert_eq!(r.outcome(), pb::InvitationOutcome::Declined);
    // A new stream redelivers what was not acknowledged (o3), not the delivered or declined.
    drop(feed);
    let mut feed = notifier.stream_invitations(pb::StreamInvitationsRequest {}).await.unwrap().into_inner();
    let first = bounded("a redelivery", feed.next()).await.unwrap().unwrap();
    assert_eq!(first.agent_id, "o3");
    // Bad acknowledgements.
    let err = notifier
        .ack_invitation(pb::AckInvitationRequest {
            agent_id: "o3".into(),
            invitation_id: "inv-0-x".into(),
            declined: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = notifier
        .ack_invitation(pb::AckInvitationRequest {
            agent_id: "o3".into(),
            invitation_id: String::new(),
            declined: false,
        })
        .await
        .unwrap_err();
    assert_field(&err, "invitation_id");
}

on_every_backend!(
    a_held_shortfall_calls_in_the_right_offline_agents,
    the_notifier_gets_each_invitation_until_acknowledged
);

/// Invitations are on the agents' records in Redis: a dispatcher started afresh lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_redis_loses_no_invitation() {
    let mut first = TestServer::start(Backend::Redis, policy()).await;
    s_setup(&first).await;
    advance(&first, 75 * SEC).await;
    let before = invitations(&first, false).await;
    assert_eq!(before.len(), 2);
    let second = TestServer::start_beside(&first, policy()).await;
    first.shutdown().await;
    assert_eq!(invitations(&second, false).await, before);
}

async fn s_setup(s: &TestServer) {
    for i in 1..=2 {
        s.register(opted_in(&format!("o{i}"), "de", (0, 0))).await;
    }
    s.submit(case("c1", "de", &[], pb::Tier::Standard)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_opt_in_is_refused_naming_the_field() {
    let s = TestServer::start(Backend::Memory, policy()).await;
    let mut p = opted_in("x", "de", (0, 0));
    p.call_in.as_mut().unwrap().max_per_day = 0;
    let err = s.roster().upsert_agent(pb::UpsertAgentRequest { profile: Some(p) }).await.unwrap_err();
    assert_field(&err, "profile.call_in.max_per_day");
    let mut p = opted_in("x", "de", (0, 0));
    p.call_in.as_mut().unwrap().quiet_to_min = 1440;
    let err = s.roster().upsert_agent(pb::UpsertAgentRequest { profile: Some(p) }).await.unwrap_err();
    assert_field(&err, "profile.call_in.quiet_to_min");
}
