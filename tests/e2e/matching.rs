//! Who gets which case: tier order, language, skills, relaxation, both matching directions.

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;

async fn vip_case_goes_first_when_an_agent_comes_online(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("a1", &[("en", 5)], &[], true)).await;
    s.submit(case("std-1", "en", &[], pb::Tier::Standard)).await;
    s.advance(1_000); // the standard case is older
    s.submit(case("vip-1", "en", &[], pb::Tier::Vip)).await;
    let mut a = s.available("a1").await;
    let offer = a.offer().await;
    assert_eq!(offer.case.unwrap().case_id, "vip-1", "the VIP case must be offered first");
}

async fn an_old_standard_case_overtakes_a_new_vip_case(b: Backend) {
    // Aging: no tier starves. A standard case that waited longer than the VIP head start goes first.
    let policy = Policy { vip_head_start_ms: 60_000, ..Policy::default() };
    let s = TestServer::start(b, policy).await;
    s.register(profile("a1", &[("en", 5)], &[], true)).await;
    s.submit(case("std-old", "en", &[], pb::Tier::Standard)).await;
    s.advance(61_000);
    s.submit(case("vip-new", "en", &[], pb::Tier::Vip)).await;
    let mut a = s.available("a1").await;
    assert_eq!(a.offer().await.case.unwrap().case_id, "std-old");
}

async fn language_match_wins_and_others_are_filtered(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("en-only", &[("en", 5)], &[], false)).await;
    s.register(profile("de-ok", &[("de", 3)], &[], false)).await;
    s.register(profile("de-native", &[("de-CH", 5)], &[], false)).await;
    let mut conns = Vec::new();
    for id in ["en-only", "de-ok", "de-native"] {
        conns.push(s.available(id).await);
    }
    s.submit(case("c-de", "de", &[], pb::Tier::Standard)).await;
    let offer = conns[2].offer().await;
    assert_eq!(offer.case.as_ref().unwrap().case_id, "c-de");
    let c = s.case("c-de").await;
    assert_eq!(c.current_agent_id, "de-native");
    let why = c.offers[0].explanation.clone().unwrap();
    assert_eq!(why.eligible, 2, "the English-only agent is filtered out");
    assert_eq!(why.candidates[0].agent_id, "de-native");
    assert_eq!(why.candidates[1].agent_id, "de-ok");
    let lang = |i: usize| why.candidates[i].terms.iter().find(|t| t.name == "language").unwrap().value;
    assert!(lang(0) > lang(1), "the language term explains the choice");
}

async fn skill_levels_are_respected(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("level3", &[("en", 5)], &[("disputes", 3)], false)).await;
    let _a = s.available("level3").await;
    s.advance(100_000); // level3 has been idle much longer: it would win on fairness
    s.register(profile("level4", &[("en", 5)], &[("disputes", 4)], false)).await;
    let mut b = s.available("level4").await;
    s.submit(case("c-disp", "en", &[("disputes", 4)], pb::Tier::Standard)).await;
    assert_eq!(b.offer().await.case.unwrap().case_id, "c-disp");
    let why = s.case("c-disp").await.offers[0].explanation.clone().unwrap();
    assert_eq!(why.eligible, 1);
}

async fn vip_cases_only_reach_certified_agents(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("plain", &[("en", 5)], &[], false)).await;
    let _plain = s.available("plain").await;
    let c = s.submit(case("vip-2", "en", &[], pb::Tier::Vip)).await;
    assert_eq!(c.state, pb::CaseState::Queued as i32);
    s.register(profile("cert", &[("en", 3)], &[], true)).await;
    let mut cert = s.available("cert").await;
    assert_eq!(cert.offer().await.case.unwrap().case_id, "vip-2");
    let why = s.case("vip-2").await.offers[0].explanation.clone().unwrap();
    assert_eq!(why.candidates.len(), 1);
}

async fn preferred_skills_are_dropped_after_the_relaxation_step(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await; // default: drop preferred skills after 30 s
    s.register(profile("generalist", &[("en", 5)], &[], false)).await;
    let mut a = s.available("generalist").await;
    let mut spec = case("c-pref", "en", &[], pb::Tier::Standard);
    spec.preferred_skills = vec![pb::SkillLevel { skill: "crypto".into(), level: 2 }];
    s.submit(spec).await;
    assert_eq!(s.case("c-pref").await.state, pb::CaseState::Queued as i32);
    s.advance(30_000);
    let offer = a.offer().await;
    assert_eq!(offer.case.unwrap().case_id, "c-pref");
    let c = s.case("c-pref").await;
    let why = c.offers[0].explanation.clone().unwrap();
    assert!(why.relaxations.iter().any(|r| r.contains("preferred skills dropped")), "{:?}", why.relaxations);
    assert!(c.waited_ms >= 30_000, "the case keeps its original age");
}

async fn a_new_case_goes_to_the_longest_idle_agent_among_equals(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("early", &[("en", 4)], &[], false)).await;
    s.advance(60_000);
    s.register(profile("late", &[("en", 4)], &[], false)).await;
    let mut early = s.available("early").await;
    let _late = s.available("late").await;
    s.submit(case("c-fair", "en", &[], pb::Tier::Standard)).await;
    assert_eq!(early.offer().await.case.unwrap().case_id, "c-fair");
}

on_both_stores!(
    vip_case_goes_first_when_an_agent_comes_online,
    an_old_standard_case_overtakes_a_new_vip_case,
    language_match_wins_and_others_are_filtered,
    skill_levels_are_respected,
    vip_cases_only_reach_certified_agents,
    preferred_skills_are_dropped_after_the_relaxation_step,
    a_new_case_goes_to_the_longest_idle_agent_among_equals,
);
