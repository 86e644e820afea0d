//! Eligibility gates: market, data region, clearance and certifications with expiry; the
//! excluded counts of an offer's explanation; "why not" for one case and one agent.

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;

fn gated(id: &str, markets: &[&str], certs: &[(&str, i64)]) -> pb::AgentProfile {
    pb::AgentProfile {
        markets: markets.iter().map(|m| (*m).to_owned()).collect(),
        data_regions: vec!["eu".into()],
        clearance: 2,
        certifications: certs
            .iter()
            .map(|(n, e)| pb::Certification { name: (*n).into(), expires_at_ms: *e, valid: false })
            .collect(),
        ..profile(id, &[("de", 5)], &[], false)
    }
}

fn de_case(id: &str, tier: pb::Tier) -> pb::CaseSpec {
    pb::CaseSpec {
        market: "de".into(),
        data_region: "eu".into(),
        required_clearance: 2,
        required_certifications: vec!["pci".into()],
        ..case(id, "de", &[], tier)
    }
}

async fn a_case_goes_only_to_agents_its_gates_admit_and_the_offer_counts_the_others(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let far = T0 + 86_400_000;
    // Better scored on idle time and proficiency, but not contracted for Germany.
    s.register(gated("fr", &["FR"], &[("pci", far)])).await;
    s.register(gated("nopci", &["DE"], &[])).await;
    s.register(pb::AgentProfile { clearance: 1, ..gated("low", &["DE"], &[("pci", far)]) }).await;
    s.register(gated("de", &["DE", "AT"], &[("pci", far)])).await;
    let mut conns = Vec::new();
    for id in ["fr", "nopci", "low"] {
        conns.push(s.available(id).await);
    }
    let mut de = s.available("de").await;
    // Every replica that may decide sees the four available first (the explanation counts what
    // the deciding replica examined).
    for server in [Some(&s), s.devices.as_deref()].into_iter().flatten() {
        eventually("four agents available", || async {
            let r =
                server.planner().get_availability(pb::GetAvailabilityRequest::default()).await.unwrap().into_inner();
            (r.report.unwrap().total.unwrap().available == 4).then_some(())
        })
        .await;
    }
    s.submit(de_case("g1", pb::Tier::Standard)).await;
    let o = de.offer().await;
    assert_eq!(o.case.as_ref().unwrap().market, "DE", "the agent sees the market");
    for c in &mut conns {
        assert!(c.offer_now().await.is_none(), "no offer to an agent the gates exclude");
    }
    let why = s.case("g1").await.offers[0].explanation.clone().unwrap();
    let excluded: Vec<(String, u32)> = why.excluded.iter().map(|e| (e.rule.clone(), e.agents)).collect();
    // The agent of another market is not even examined: the index files agents by market.
    let want = [("certification", 1), ("clearance", 1)];
    assert_eq!(excluded, want.map(|(r, n)| (r.to_owned(), n)), "counted per rule");
}

async fn an_expired_certification_excludes_from_its_instant_without_a_restart(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let expiry = T0 + 60_000;
    s.register(gated("vip", &["DE"], &[("pci", 0), ("vip", expiry)])).await;
    assert!(s.agent("vip").await.profile.unwrap().vip_certified);
    let mut a = s.available("vip").await;
    s.submit(de_case("e1", pb::Tier::Vip)).await;
    let o = a.offer().await;
    assert_eq!(a.accept(&o.offer_id).await.code, 0);
    assert_eq!(a.complete("e1").await.code, 0);
    s.advance(60_000); // the VIP certification runs out
    let p = s.agent("vip").await.profile.unwrap();
    assert!(!p.vip_certified && p.certifications.iter().any(|c| c.name == "vip" && !c.valid));
    s.submit(de_case("e2", pb::Tier::Vip)).await;
    assert!(a.offer_now().await.is_none(), "no VIP offer after the expiry");
    let e = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: "e2".into(), agent_id: "vip".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!e.eligible);
    let rules: Vec<(&str, &str)> = e.failed.iter().map(|f| (f.rule.as_str(), f.detail.as_str())).collect();
    assert_eq!(rules, [("vip_certification", "certification vip expired 0 s ago")]);
    // A standard case still reaches the agent.
    s.submit(de_case("e3", pb::Tier::Standard)).await;
    assert_eq!(a.offer().await.case.unwrap().case_id, "e3");
}

async fn why_not_answers_planners_and_the_agent_itself(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(gated("ana", &["FR"], &[])).await;
    s.submit(de_case("w1", pb::Tier::Standard)).await;
    let e = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: "w1".into(), agent_id: "ana".into() })
        .await
        .unwrap()
        .into_inner();
    let rules: Vec<&str> = e.failed.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["not_ready", "market", "certification"]);
    assert_eq!(e.failed[1].detail, "not contracted for market DE (serves: FR)");
    assert_eq!(e.case_state(), pb::CaseState::Queued);
    // The agent asks over its stream: the answer, then the result.
    let mut ana = s.connect("ana").await;
    let id = ana.send(Command::ExplainCase(pb::ExplainCase { case_id: "w1".into() })).await;
    let x = ana
        .next("an explanation", |e| match e {
            Event::Explanation(x) => Some(x.clone()),
            _ => None,
        })
        .await;
    assert_eq!(x.case_id, "w1");
    let got: Vec<String> = x.explanation.unwrap().failed.iter().map(|f| f.rule.clone()).collect();
    assert_eq!(got, ["not_ready", "market", "certification"], "away after sign-in, not contracted, no pci");
    assert_eq!(ana.result(&id).await.code, 0);
    // Eligible: the score instead.
    s.register(gated("ben", &["DE"], &[("pci", 0)])).await;
    let _ben = s.available("ben").await;
    let e = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: "w1".into(), agent_id: "ben".into() })
        .await
        .unwrap()
        .into_inner();
    // Ben got the offer at once: holding it he has no room for another, but he passes every
    // gate of the case.
    assert!(e.failed.iter().all(|f| f.rule == "not_ready" || f.rule == "no_capacity"), "{:?}", e.failed);
    // Unknown ids, bad ids.
    let err = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: "nope".into(), agent_id: "ana".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = s
        .planner()
        .explain_match(pb::ExplainMatchRequest { case_id: "w1".into(), agent_id: "a b".into() })
        .await
        .unwrap_err();
    assert_field(&err, "agent_id");
}

async fn bad_gates_are_refused_naming_the_field(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let bad = |p: pb::AgentProfile| pb::UpsertAgentRequest { profile: Some(p) };
    let mut roster = s.roster();
    let cases = [
        (gated("x", &["DE", "XX"], &[]), "profile.markets[1]"),
        (pb::AgentProfile { clearance: 6, ..gated("x", &[], &[]) }, "profile.clearance"),
        (gated("x", &[], &[("P C I", 0)]), "profile.certifications[0].name"),
        (gated("x", &[], &[("pci", T0 - 1)]), "profile.certifications"),
    ];
    for (p, field) in cases {
        let err = roster.upsert_agent(bad(p)).await.unwrap_err();
        assert_field(&err, field);
    }
    let err = s.roster().get_agent(pb::GetAgentRequest { agent_id: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "nothing was stored");
    let mut esc = s.escalation();
    for (spec, field) in [
        (pb::CaseSpec { market: "Germany".into(), ..case("b1", "de", &[], pb::Tier::Standard) }, "spec.market"),
        (
            pb::CaseSpec { required_clearance: 9, ..case("b1", "de", &[], pb::Tier::Standard) },
            "spec.required_clearance",
        ),
        (
            pb::CaseSpec {
                required_certifications: vec!["pci".into(), "PCI".into()],
                ..case("b1", "de", &[], pb::Tier::Standard)
            },
            "spec.required_certifications[1]",
        ),
    ] {
        let err = esc.submit_case(pb::SubmitCaseRequest { spec: Some(spec) }).await.unwrap_err();
        assert_field(&err, field);
    }
}

on_every_backend!(
    a_case_goes_only_to_agents_its_gates_admit_and_the_offer_counts_the_others,
    an_expired_certification_excludes_from_its_instant_without_a_restart,
    why_not_answers_planners_and_the_agent_itself,
    bad_gates_are_refused_naming_the_field,
);
