//! Demand meets supply: every waiting case carries an estimated wait (at submission, in
//! GetCase and WatchCase, remade as it waits), and planners read each segment's live rates,
//! supply, waits and staffing advice, the same on every replica and after a restart.

use dispatch_domain::Policy;
use dispatch_domain::policy::ChannelDurations;
use dispatch_domain::worktime::WorkingTimePolicy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;

const MIN: u64 = 60_000;

/// Chats expected to take 10 minutes, no wrap-up, no activity timer: the estimates are round.
fn policy() -> Policy {
    Policy {
        working_time: WorkingTimePolicy {
            expected_handle_ms: ChannelDurations { voice: 10 * MIN, chat: 10 * MIN, email: 30 * MIN },
            ..WorkingTimePolicy::default()
        },
        wrap_up_ms: ChannelDurations { voice: 0, chat: 0, email: 0 },
        activity_timeout_ms: ChannelDurations { voice: 0, chat: 0, email: 0 },
        ..Policy::default()
    }
}

fn query(language: &str) -> pb::SegmentQuery {
    pb::SegmentQuery {
        language: language.into(),
        tier: pb::Tier::Standard as i32,
        channel: pb::Channel::Chat as i32,
        skills: vec![],
        exact_skills: true,
    }
}

async fn demand(s: &TestServer, q: pb::SegmentQuery) -> pb::GetSegmentDemandResponse {
    s.planner()
        .get_segment_demand(pb::GetSegmentDemandRequest { segment: Some(q) })
        .await
        .expect("segment demand")
        .into_inner()
}

/// The one segment `q` names fully.
async fn segment(s: &TestServer, q: pb::SegmentQuery) -> pb::SegmentDemand {
    let mut r = demand(s, q).await;
    assert_eq!(r.segments.len(), 1, "{r:?}");
    r.segments.remove(0)
}

fn estimate(c: &pb::Case) -> pb::WaitEstimate {
    c.estimate.clone().unwrap_or_else(|| panic!("case {:?} has no estimate", c.spec.as_ref().map(|s| &s.case_id)))
}

/// Two agents busy with a case each; returns their connections.
async fn two_busy_agents(s: &TestServer) -> Vec<AgentConn> {
    let mut agents = Vec::new();
    for (agent, case_id) in [("a1", "busy-1"), ("a2", "busy-2")] {
        s.register(profile(agent, &[("en", 5)], &[], false)).await;
        let mut conn = s.available(agent).await;
        s.submit(case(case_id, "en", &[], pb::Tier::Standard)).await;
        let offer = conn.offer().await;
        conn.accept(&offer.offer_id).await;
        agents.push(conn);
    }
    // The routers' replica has seen both agents take their cases (the agents busy, the cases
    // no longer waiting).
    eventually("the router's replica to see two busy agents", || async {
        let d = segment(s, query("en")).await;
        let supply = d.supply.unwrap();
        (supply.serving == 2 && supply.free == 0 && d.waiting == 0).then_some(())
    })
    .await;
    agents
}

/// The estimate is the position among competing cases over the agents' service rate, banded,
/// the same from either replica, and remade (WAIT_ESTIMATED) as the case waits.
async fn a_waiting_case_is_told_its_estimated_wait(b: Backend) {
    let s = TestServer::start(b, policy()).await;
    let _agents = two_busy_agents(&s).await;
    // Two agents, one chat each, 10 minutes a chat: a slot frees every 5 minutes.
    let mut got = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let c = s.submit(case(id, "en", &[], pb::Tier::Standard)).await;
        got.push(estimate(&c));
    }
    let waits: Vec<(bool, u64, pb::WaitBand)> = got.iter().map(|e| (e.known, e.wait_ms, e.band())).collect();
    assert_eq!(
        waits,
        vec![
            (true, 5 * MIN, pb::WaitBand::ThreeToTenMinutes),
            (true, 10 * MIN, pb::WaitBand::ThreeToTenMinutes),
            (true, 15 * MIN, pb::WaitBand::OverTenMinutes),
        ]
    );
    assert_eq!(got[2].band_text, "over 10 minutes");
    // Its place in line: the cases ahead, and the slots that must free (none is free).
    let places: Vec<(u32, u32)> = got.iter().map(|e| (e.cases_ahead, e.slots_to_free)).collect();
    assert_eq!(places, vec![(0, 1), (1, 2), (2, 3)]);
    // A case no signed-in agent could take: unknown, said so.
    let fr = s.submit(case("fr-1", "fr", &[], pb::Tier::Standard)).await;
    let e = estimate(&fr);
    assert_eq!((e.known, e.band()), (false, pb::WaitBand::Unknown), "{e:?}");

    // GetCase counts down from the stored estimate; both replicas say the same.
    s.advance(10_000);
    let here = estimate(&s.case("w2").await);
    assert_eq!((here.wait_ms, here.estimated_wait_ms, here.estimated_at_ms), (10 * MIN - 10_000, 10 * MIN, T0));
    if let Some(d) = &s.devices {
        let there = estimate(&d.case("w2").await);
        assert_eq!((there.wait_ms, there.estimated_at_ms), (here.wait_ms, here.estimated_at_ms));
        assert_eq!((there.cases_ahead, there.slots_to_free), (here.cases_ahead, here.slots_to_free));
    }

    // Thirty seconds on, the estimate is remade and watchers are told.
    let mut watch = s.watch("w1").await;
    let snap = bounded("the snapshot", watch.message()).await.unwrap().unwrap();
    assert_eq!(snap.estimate.as_ref().map(|e| e.estimated_at_ms), Some(T0));
    s.advance(20_000);
    if let Some(d) = &s.devices {
        d.engine.sweep().await.expect("sweep");
    }
    s.engine.sweep().await.expect("sweep");
    let ev = bounded("a new estimate", async {
        loop {
            let ev = watch.message().await.unwrap().unwrap();
            if ev.kind() == pb::CaseEventKind::WaitEstimated {
                return ev;
            }
        }
    })
    .await;
    let e = ev.estimate.unwrap();
    assert_eq!((e.estimated_at_ms, ev.at_ms, e.wait_ms), (T0 + 30_000, T0 + 30_000, 5 * MIN));
    let stored = estimate(&s.case("w1").await);
    assert_eq!(stored.estimated_at_ms, T0 + 30_000);
}

/// A segment's rates, supply, waiting cases and staffing advice, with the shortfall a number;
/// the same on the second replica.
async fn planners_see_a_segments_rates_supply_and_shortfall(b: Backend) {
    let s = TestServer::start(b, policy()).await;
    let _agents = two_busy_agents(&s).await;
    for i in 0..6 {
        s.submit(case(&format!("q{i}"), "en", &[], pb::Tier::Standard)).await;
    }
    s.advance(60_000);
    s.escalation()
        .cancel_case(pb::CancelCaseRequest { case_id: "q5".into(), reason: "customer left".into() })
        .await
        .expect("cancel");
    let d = segment(&s, query("en")).await;
    assert_eq!(d.segment.as_ref().unwrap().key, "en/standard/chat/-");
    let five = &d.rates[0];
    assert_eq!(five.window_ms, 5 * MIN as i64);
    assert_eq!((five.arrived, five.answered, five.abandoned, five.offers_made), (8, 2, 1, 2));
    assert_eq!(five.arrivals_per_hour, 8.0 * 12.0);
    // The one who gave up waited a minute; the two answered waited nothing.
    assert_eq!(five.patience_ms, 60_000.0);
    assert!((five.abandonment - 1.0 / 3.0).abs() < 1e-9, "{five:?}");
    let supply = d.supply.unwrap();
    assert_eq!((supply.serving, supply.free, supply.slots, supply.free_slots), (2, 0, 2, 0));
    assert_eq!((d.waiting, d.oldest_wait_ms), (5, 60_000));
    // A new case would be sixth in line: (5 + 1) slots at one per 5 minutes, were nobody to give
    // up (30 minutes); with j still ahead each leaving at 1 / 60 s, the line moves at
    // 1/300 + j/60 per second: the sum of 1 / (1/300 + j/60) over j = 0..=5, about 422 s.
    let expected: f64 = (0..=5).map(|j| 1.0 / (1.0 / 300_000.0 + f64::from(j) / 60_000.0)).sum();
    assert_eq!(d.estimate.as_ref().unwrap().wait_ms, expected.round() as u64);
    assert!(expected < (30 * MIN) as f64);
    let advice = d.advice.unwrap();
    assert_eq!((advice.target_answer_ms, advice.target_service_level), (120_000, 0.8));
    assert_eq!(advice.handle_ms, 10.0 * MIN as f64, "the configured handle time until 5 cases completed");
    // 8 arrivals in 15 minutes of 10-minute chats: 5.33 Erlangs.
    assert!((advice.erlangs - 8.0 / 900.0 * 600.0).abs() < 1e-9, "{advice:?}");
    let c = advice.erlang_c.unwrap();
    let a = advice.erlang_a.unwrap();
    assert!(c.reachable && c.agents_on_queue > 5 && c.service_level >= 0.8, "{c:?}");
    assert!(a.agents_on_queue <= c.agents_on_queue, "impatient customers need no more agents: {a:?} {c:?}");
    assert_eq!(advice.shortfall_erlang_c, c.agents_scheduled - 2);
    assert_eq!(advice.shortfall_erlang_a, a.agents_scheduled - 2);
    if let Some(dev) = &s.devices {
        let there = segment(dev, query("en")).await;
        assert_eq!(there.rates, d.rates, "the rates are the store's, not a replica's");
        assert_eq!(there.advice, d.advice);
    }
    // A wider query reports every segment of the language it saw.
    let all = demand(&s, pb::SegmentQuery { language: "en".into(), ..Default::default() }).await;
    assert_eq!(
        all.segments.iter().map(|d| d.segment.as_ref().unwrap().key.as_str()).collect::<Vec<_>>(),
        ["en/standard/chat/-"]
    );
}

on_every_backend!(a_waiting_case_is_told_its_estimated_wait, planners_see_a_segments_rates_supply_and_shortfall);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_segment_is_refused_naming_the_field() {
    let s = TestServer::start(Backend::Memory, policy()).await;
    let mut p = s.planner();
    let cases: Vec<(Option<pb::SegmentQuery>, &str)> = vec![
        (None, "segment"),
        (Some(pb::SegmentQuery::default()), "segment.language"),
        (Some(pb::SegmentQuery { language: "not a tag!".into(), ..Default::default() }), "segment.language"),
        (Some(pb::SegmentQuery { language: "de".into(), tier: 9, ..Default::default() }), "segment.tier"),
        (Some(pb::SegmentQuery { language: "de".into(), channel: 7, ..Default::default() }), "segment.channel"),
        (
            Some(pb::SegmentQuery { language: "de".into(), skills: vec!["No Such".into()], ..Default::default() }),
            "segment.skills[0]",
        ),
    ];
    for (segment, field) in cases {
        let err = p.get_segment_demand(pb::GetSegmentDemandRequest { segment }).await.unwrap_err();
        assert_field(&err, field);
    }
}

/// The rates are in Redis: a dispatcher started afresh on it reports what the first counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_survive_a_dispatcher_restart_on_redis() {
    let mut first = TestServer::start(Backend::Redis, policy()).await;
    for i in 0..3 {
        first.submit(case(&format!("r{i}"), "de", &[], pb::Tier::Standard)).await;
    }
    let q = pb::SegmentQuery { language: "de".into(), ..query("de") };
    let before = segment(&first, q.clone()).await;
    assert_eq!(before.rates[2].arrived, 3);
    let second = TestServer::start_beside(&first, policy()).await;
    first.shutdown().await;
    let after = segment(&second, q).await;
    assert_eq!(after.rates, before.rates);
    assert_eq!(after.waiting, 3);
}
