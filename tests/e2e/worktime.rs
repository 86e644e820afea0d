//! Working-time limits: an offer that would run past a limit is withheld, an agent at a limit
//! is told why and until when, and the accounting survives sign-outs and replica changes (it is
//! in the agent's record, on the store's clock).

use dispatch_domain::Policy;
use dispatch_domain::policy::ChannelDurations;
use dispatch_domain::worktime::{WorkLimits, WorkingTimePolicy};
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;

const MIN: u64 = 60_000;

fn policy() -> Policy {
    Policy {
        working_time: WorkingTimePolicy {
            default: WorkLimits { max_per_day_ms: 60 * MIN, ..WorkLimits::default() },
            expected_handle_ms: ChannelDurations { voice: 10 * MIN, chat: 10 * MIN, email: 30 * MIN },
            ..WorkingTimePolicy::default()
        },
        // Long cases without replies in this test: no activity timer.
        activity_timeout_ms: ChannelDurations { voice: 0, chat: 0, email: 0 },
        ..Policy::default()
    }
}

/// Moves the clock by `ms` in steps shorter than the presence lease, letting the devices'
/// replica renew its leases after each (with two replicas, the other one's sweeper would
/// otherwise see a jump past a lease first).
async fn advance(s: &TestServer, ms: u64) {
    let mut left = ms;
    while left > 0 {
        let step = left.min(4 * MIN);
        s.advance(step);
        if let Some(d) = &s.devices {
            d.engine.sweep().await.expect("sweep");
        }
        left -= step;
    }
}

fn chat_and_email(id: &str) -> pb::AgentProfile {
    pb::AgentProfile {
        capacity: vec![
            pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 1 },
            pb::ChannelCapacity { channel: pb::Channel::Email as i32, capacity: 1 },
        ],
        ..profile(id, &[("en", 5)], &[], false)
    }
}

fn email(id: &str) -> pb::CaseSpec {
    pb::CaseSpec { channel: pb::Channel::Email as i32, ..case(id, "en", &[], pb::Tier::Standard) }
}

/// Works `id` (offered to `a` now) for `minutes` and completes it.
async fn work(s: &TestServer, a: &mut AgentConn, id: &str, minutes: u64) {
    let o = a.offer().await;
    assert_eq!(o.case.unwrap().case_id, id);
    assert_eq!(a.accept(&o.offer_id).await.code, 0);
    advance(s, minutes * MIN).await;
    assert_eq!(a.complete(id).await.code, 0);
    advance(s, 15_000).await; // past the wrap-up
}

async fn explain(s: &TestServer, case: &str, agent: &str) -> Vec<(String, String)> {
    let r = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: case.into(), agent_id: agent.into() })
        .await
        .unwrap()
        .into_inner();
    r.failed.into_iter().map(|f| (f.rule, f.detail)).collect()
}

async fn offers_that_would_cross_a_limit_are_withheld_and_an_agent_at_it_is_told_until_when(b: Backend) {
    let s = TestServer::start(b, policy()).await; // 1 h a day; chat 10 min, e-mail 30 min expected
    s.register(chat_and_email("w")).await;
    let mut w = s.available("w").await;
    s.submit(case("c1", "en", &[], pb::Tier::Standard)).await;
    work(&s, &mut w, "c1", 45).await; // 15 min of the day left
    let p = s.agent("w").await.presence.unwrap();
    assert_eq!((p.engaged_today_ms, p.capped_limit.as_str()), (45 * MIN, ""));
    // An e-mail (30 min expected) would run past the limit: withheld, and why in words.
    s.submit(email("e1")).await;
    assert!(w.offer_now().await.is_none(), "no offer that would cross the limit");
    assert_eq!(
        explain(&s, "e1", "w").await,
        [(
            "working_time".to_owned(),
            "15 min left before the day working-time limit; a email case is expected to take 30 min".to_owned()
        )]
    );
    // A chat (10 min expected) fits.
    s.submit(case("c2", "en", &[], pb::Tier::Standard)).await;
    work(&s, &mut w, "c2", 10).await; // 55 min: less than any case is expected to take
    let limit = w
        .next("a working-time notice", |e| match e {
            Event::WorkingTime(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(limit.limit, "day");
    let p = s.agent("w").await.presence.unwrap();
    assert_eq!(p.capped_limit, "day", "planners see who is capped");
    assert!(p.capped_remaining_ms > 0 && p.capped_remaining_ms <= limit.resume_in_ms);
    assert_eq!(p.activity(), pb::Activity::Busy);
    let why = explain(&s, "e1", "w").await;
    assert_eq!(why[0].0, "not_ready");
    assert!(why[0].1.starts_with("reached the day working-time limit; may take work again in "), "{why:?}");
    // Signing out and in again changes nothing: the count is in the agent's record.
    assert_eq!(w.command(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Offline as i32 })).await.code, 0);
    drop(w);
    let mut w = s.available("w").await;
    assert_eq!(s.agent("w").await.presence.unwrap().capped_limit, "day");
    assert!(w.offer_now().await.is_none());
    assert_eq!(w.command(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Offline as i32 })).await.code, 0);
    drop(w);
    // The next UTC day: the waiting e-mail reaches the agent.
    advance(&s, limit.resume_in_ms).await;
    let mut w = s.available("w").await;
    assert_eq!(w.offer().await.case.unwrap().case_id, "e1");
    assert_eq!(s.agent("w").await.presence.unwrap().engaged_today_ms, 0, "a new day");
}

/// A dispatcher restart on Redis loses no engaged time: the next one reads it from the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engaged_time_survives_a_dispatcher_restart() {
    let mut first = TestServer::start(Backend::Redis, policy()).await;
    // The agent's own (visa) limit: 50 min a day, under the market's hour.
    let visa = pb::WorkLimits { max_per_day_ms: 50 * MIN, ..pb::WorkLimits::default() };
    first.register(pb::AgentProfile { work_limits: Some(visa), ..chat_and_email("v") }).await;
    let mut v = first.available("v").await;
    first.submit(case("r1", "en", &[], pb::Tier::Standard)).await;
    work(&first, &mut v, "r1", 45).await;
    let before = first.agent("v").await.presence.unwrap();
    assert_eq!(before.capped_limit, "day", "45 of 50 min: no case fits");
    drop(v);
    first.shutdown().await;
    let second = TestServer::start_beside(&first, policy()).await;
    let after = second.agent("v").await.presence.unwrap();
    assert_eq!((after.engaged_today_ms, after.capped_limit.as_str()), (45 * MIN, "day"));
    let profile = second.agent("v").await.profile.unwrap();
    assert_eq!(profile.work_limits.unwrap().max_per_day_ms, 50 * MIN);
}

/// With available time counted, an agent who only waits reaches the limit without any
/// transition: the ready timer looks again when its room runs out, caps it and tells it.
async fn available_time_counted_caps_an_agent_that_only_waits(b: Backend) {
    let mut p = policy(); // an hour a day; a chat is expected to take 10 min
    p.working_time.count_available = true;
    let s = TestServer::start(b, p).await;
    s.register(profile("waits", &[("en", 5)], &[], false)).await;
    let mut w = s.available("waits").await;
    advance(&s, 50 * MIN).await;
    assert_eq!(s.agent("waits").await.presence.unwrap().capped_limit, "", "10 min left: a chat still fits");
    advance(&s, 1).await;
    let limit = w
        .next("a working-time notice", |e| match e {
            Event::WorkingTime(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(limit.limit, "day");
    let p = s.agent("waits").await.presence.unwrap();
    assert_eq!((p.capped_limit.as_str(), p.engaged_today_ms), ("day", 50 * MIN + 1), "counted up to the cap");
    s.submit(case("late", "en", &[], pb::Tier::Standard)).await;
    assert!(w.offer_now().await.is_none(), "capped: no offer");
}

on_every_backend!(
    offers_that_would_cross_a_limit_are_withheld_and_an_agent_at_it_is_told_until_when,
    available_time_counted_caps_an_agent_that_only_waits,
);
