//! The dispatch rules, with time driven by hand: filters, scoring, ordering, relaxation, and the
//! case / offer / agent state machines, plus a property test of the invariants over random
//! sequences of operations.

use std::collections::BTreeMap;

use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::policy::RelaxationStep;
use dispatch_domain::scoring::{self, Ineligible};
use dispatch_domain::state::{Explanation, OfferOutcome};
use dispatch_domain::transition::{self, RevokeReason};
use dispatch_domain::{
    Agent, AgentId, AgentStatus, Case, CaseId, CaseState, Change, Channel, Counter, Event, Level, Millis, OfferId,
    Policy, Rejection, SessionId, Tier, TimerKey,
};
use proptest::prelude::*;

const T0: Millis = 1_000_000;

fn profile(id: &str, langs: &[(&str, u32)], skills: &[(&str, u32)], vip: bool) -> AgentProfile {
    AgentProfile::parse(
        AgentProfileInput {
            id,
            display_name: id,
            languages: langs.to_vec(),
            skills: skills.to_vec(),
            vip_certified: vip,
            capacity: vec![(Some(Channel::Chat), 1)],
            rating: 4.0,
            ..Default::default()
        },
        &dispatch_domain::limits::Limits::default(),
    )
    .unwrap()
}

fn session(n: u32) -> SessionId {
    SessionId::parse("s", &format!("ss-{n}")).unwrap()
}

/// A registered agent, signed in and available at `T0`.
fn ready(id: &str, langs: &[(&str, u32)], skills: &[(&str, u32)], vip: bool) -> Agent {
    let p = Policy::default();
    let a = Agent::new(profile(id, langs, skills, vip), T0);
    let a = transition::connect(&a, session(1), T0, &p).agent.unwrap();
    transition::set_status(&a, None, &session(1), AgentStatus::Available, T0, &p).unwrap().agent.unwrap()
}

fn spec(id: &str, lang: &str, skills: &[(&str, u32)], tier: Tier) -> CaseSpec {
    CaseSpec::parse(
        CaseSpecInput {
            id,
            language: lang,
            required_skills: skills.to_vec(),
            tier: Some(tier),
            channel: Some(Channel::Chat),
            ..Default::default()
        },
        Level::parse("", 3).unwrap(),
        &dispatch_domain::limits::Limits::default(),
    )
    .unwrap()
}

fn new_case(id: &str, lang: &str, skills: &[(&str, u32)], tier: Tier, at: Millis) -> Case {
    transition::submit(spec(id, lang, skills, tier), None, at, &Policy::default()).case.unwrap()
}

fn oid(n: u32) -> OfferId {
    OfferId::parse("o", &format!("of-{n}")).unwrap()
}

/// Applies a change as a store would (versions bumped) and returns the new records.
fn apply(case: &Case, agent: &Agent, ch: &Change) -> (Case, Agent) {
    let bump_c = |c: &Case| Case { version: c.version + 1, ..c.clone() };
    let bump_a = |a: &Agent| Agent { version: a.version + 1, ..a.clone() };
    (ch.case.as_ref().map_or_else(|| case.clone(), bump_c), ch.agent.as_ref().map_or_else(|| agent.clone(), bump_a))
}

fn offered(case: &Case, agent: &Agent, n: u32, at: Millis) -> (Case, Agent) {
    let ch = transition::offer(case, agent, oid(n), Explanation::default(), at, &Policy::default()).unwrap();
    apply(case, agent, &ch)
}

// ---------------------------------------------------------------------------------------------
// Filters and scoring
// ---------------------------------------------------------------------------------------------

#[test]
fn hard_filters_each_say_why() {
    let p = Policy::default();
    let c = new_case("c", "de", &[("disputes", 3)], Tier::Vip, T0);
    let ok = ready("ok", &[("de-AT", 4)], &[("disputes", 3)], true);
    assert_eq!(scoring::eligibility(&c, &ok, T0, &p), Ok(()));
    let cases = [
        (ready("lang", &[("en", 5)], &[("disputes", 5)], true), Ineligible::Language),
        (ready("weak", &[("de", 2)], &[("disputes", 5)], true), Ineligible::Language),
        (ready("skill", &[("de", 5)], &[("disputes", 2)], true), Ineligible::Skill),
        (ready("noskill", &[("de", 5)], &[], true), Ineligible::Skill),
        (ready("novip", &[("de", 5)], &[("disputes", 5)], false), Ineligible::NotVipCertified),
    ];
    for (agent, want) in cases {
        assert_eq!(scoring::eligibility(&c, &agent, T0, &p), Err(want), "{}", agent.id());
    }
    let away = transition::set_status(&ok, None, &session(1), AgentStatus::Away, T0, &p).unwrap().agent.unwrap();
    assert!(matches!(scoring::eligibility(&c, &away, T0, &p), Err(Ineligible::NotReady(_))));
    let mut cooling = ok.clone();
    cooling.cool_down_until = T0 + 1;
    assert!(matches!(scoring::eligibility(&c, &cooling, T0, &p), Err(Ineligible::NotReady("cooling down"))));
    assert_eq!(scoring::eligibility(&c, &cooling, T0 + 1, &p), Ok(()));
    let mut full = ok.clone();
    full.assignments.insert(CaseId::parse("x", "other").unwrap(), Channel::Chat);
    assert_eq!(scoring::eligibility(&c, &full, T0, &p), Err(Ineligible::NoCapacity));
    let mut excluded = c.clone();
    excluded.excluded.insert(ok.id().clone(), T0 + 10);
    assert_eq!(scoring::eligibility(&excluded, &ok, T0, &p), Err(Ineligible::Excluded));
    assert_eq!(scoring::eligibility(&excluded, &ok, T0 + 10, &p), Ok(()), "exclusions end");
}

#[test]
fn ranking_prefers_better_language_deeper_skills_longer_idle_and_affinity() {
    let p = Policy::default();
    let c = new_case("c", "en", &[("billing", 2)], Tier::Standard, T0);
    let native = ready("native", &[("en", 5)], &[("billing", 2)], false);
    let fluent = ready("fluent", &[("en", 3)], &[("billing", 2)], false);
    let r = scoring::rank(&c, [&fluent, &native], T0, &p);
    assert_eq!(r.eligible, 2);
    assert_eq!(r.candidates[0].agent_id.as_str(), "native");
    let expert = ready("expert", &[("en", 3)], &[("billing", 5)], false);
    let r = scoring::rank(&c, [&fluent, &expert], T0, &p);
    assert_eq!(r.candidates[0].agent_id.as_str(), "expert");
    let mut idle = fluent.clone();
    idle.profile.id = AgentId::parse("a", "idle").unwrap();
    idle.idle_since = T0 - 600_000;
    let r = scoring::rank(&c, [&fluent, &idle], T0, &p);
    assert_eq!(r.candidates[0].agent_id.as_str(), "idle");
    let mut sticky = c.clone();
    sticky.spec.previous_agent = Some(fluent.id().clone());
    let r = scoring::rank(&sticky, [&native, &fluent], T0, &p);
    assert_eq!(r.candidates[0].agent_id.as_str(), "fluent", "affinity to the previous agent");
    for cand in &r.candidates {
        assert_eq!(cand.terms.len(), 6);
        assert!(cand.terms.iter().all(|t| (0.0..=1.0).contains(&t.value)));
        let sum: f64 = cand.terms.iter().map(|t| t.contribution()).sum();
        assert!((sum - cand.total).abs() < 1e-9);
    }
}

#[test]
fn ties_break_on_agent_id_and_top_k_is_bounded() {
    let p = Policy { explain_top: 2, ..Policy::default() };
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    let agents: Vec<Agent> = ["d", "b", "a", "c"].iter().map(|id| ready(id, &[("en", 4)], &[], false)).collect();
    let r = scoring::rank(&c, agents.iter(), T0, &p);
    assert_eq!(r.eligible, 4);
    let ids: Vec<&str> = r.candidates.iter().map(|c| c.agent_id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
}

// ---------------------------------------------------------------------------------------------
// Ordering and relaxation
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_order_is_tier_then_priority_then_age() {
    let p = Policy::default();
    let std_old = new_case("s", "en", &[], Tier::Standard, T0);
    let vip_new = new_case("v", "en", &[], Tier::Vip, T0 + 1_000);
    assert!(vip_new.queue_rank(&p) < std_old.queue_rank(&p), "vip first");
    let mut urgent = new_case("u", "en", &[], Tier::Standard, T0 + 1_000);
    urgent.spec.priority = 5;
    assert!(urgent.queue_rank(&p) < std_old.queue_rank(&p), "priority beats a little age");
    let ancient = new_case("a", "en", &[], Tier::Standard, T0 - p.vip_head_start_ms as i64 - 1);
    let vip_now = new_case("v2", "en", &[], Tier::Vip, T0);
    assert!(ancient.queue_rank(&p) < vip_now.queue_rank(&p), "aging: no tier starves");
}

proptest! {
    /// Every case ages at the same rate, so two cases' relative order is fixed while they wait,
    /// and a case waiting longer than its rival's head start always goes first.
    #[test]
    fn aging_is_monotone(a_at in 0i64..10_000_000, b_at in 0i64..10_000_000, vip_a: bool, vip_b: bool, pa in 0u8..=10, pb in 0u8..=10) {
        let p = Policy::default();
        let tier = |v| if v { Tier::Vip } else { Tier::Standard };
        let mut a = new_case("a", "en", &[], tier(vip_a), a_at);
        let mut b = new_case("b", "en", &[], tier(vip_b), b_at);
        a.spec.priority = pa;
        b.spec.priority = pb;
        let head = |c: &Case| (if c.spec.tier == Tier::Vip { p.vip_head_start_ms } else { 0 }) as i64 + i64::from(c.spec.priority) * p.priority_head_start_ms as i64;
        let a_first = a.queue_rank(&p) < b.queue_rank(&p);
        let a_effective_wait_lead = (b.created_at - a.created_at) + head(&a) - head(&b);
        prop_assert_eq!(a_first, a_effective_wait_lead > 0);
    }

    /// Relaxation only ever widens: an agent eligible at some wait stays eligible later.
    #[test]
    fn relaxation_only_widens(wait1 in 0u64..300_000, extra in 0u64..300_000, prof in 1u32..=5, lvl in 1u32..=5, vip: bool) {
        let p = Policy {
            relaxation: vec![
                RelaxationStep { after_ms: 30_000, drop_preferred_skills: true, ..Default::default() },
                RelaxationStep { after_ms: 60_000, lower_skill_levels_by: 1, ..Default::default() },
                RelaxationStep { after_ms: 120_000, lower_min_proficiency_by: 1, allow_uncertified_for_vip: true, ..Default::default() },
            ],
            ..Policy::default()
        };
        let mut c = new_case("c", "en", &[("billing", 4)], Tier::Vip, T0);
        c.spec.preferred_skills = vec![dispatch_domain::model::SkillLevel { skill: dispatch_domain::Skill::parse("s", "crypto").unwrap(), level: Level::MIN }];
        let a = ready("a", &[("en", prof)], &[("billing", lvl)], vip);
        let at = |w: u64| scoring::matches_requirements(&c, &a, p.relaxed(w), T0).is_ok();
        prop_assert!(!at(wait1) || at(wait1 + extra));
    }
}

#[test]
fn relaxation_steps_and_reviews() {
    let p = Policy::default();
    assert!(!p.relaxed(29_999).drop_preferred_skills);
    assert!(p.relaxed(30_000).drop_preferred_skills);
    assert_eq!(p.relaxed(120_000).lower_min_proficiency_by, 1);
    let mut c = new_case("c", "en", &[], Tier::Standard, T0);
    assert_eq!(c.next_review_at(&p, T0), Some(T0 + 30_000));
    c.spec.ttl_ms = Some(10_000);
    assert_eq!(c.next_review_at(&p, T0), Some(T0 + 10_000));
    let ch = transition::review_case(&c, T0 + 10_000, &p);
    assert_eq!(ch.case.unwrap().state, CaseState::Expired);
    assert_eq!(ch.events, vec![Event::Expired { case_id: c.id().clone() }]);
    let not_yet = transition::review_case(&c, T0 + 9_999, &p);
    assert!(not_yet.is_noop());
    assert_eq!(not_yet.timers, vec![(TimerKey::CaseReview(c.id().clone()), T0 + 10_000)]);
}

// ---------------------------------------------------------------------------------------------
// State machines
// ---------------------------------------------------------------------------------------------

#[test]
fn offer_then_accept_then_complete() {
    let p = Policy::default();
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let ch = transition::offer(&c, &a, oid(1), Explanation::default(), T0, &p).unwrap();
    assert_eq!(ch.timers, vec![(TimerKey::OfferDeadline(c.id().clone()), T0 + 20_000)]);
    let (c, a) = apply(&c, &a, &ch);
    assert!(matches!(c.state, CaseState::Offered { .. }));
    assert!(transition::offer(&c, &a, oid(2), Explanation::default(), T0, &p).is_err(), "one live offer per case");
    let ch = transition::accept(&c, &a, &oid(1), T0 + 1_500, &p).unwrap();
    assert_eq!(
        ch.events,
        vec![Event::Assigned {
            case_id: c.id().clone(),
            offer_id: oid(1),
            agent_id: a.id().clone(),
            time_to_accept_ms: 1_500,
            tier: Tier::Standard,
            waited_ms: 1_500,
        }]
    );
    let (c, a) = apply(&c, &a, &ch);
    assert!(transition::accept(&c, &a, &oid(1), T0 + 1_600, &p).unwrap().is_noop(), "accept is idempotent");
    assert_eq!(a.assignments.len(), 1);
    let ch = transition::complete(&c, &a, "refunded", T0 + 60_000, &p).unwrap();
    let (c, a) = apply(&c, &a, &ch);
    assert_eq!(c.state, CaseState::Completed);
    assert_eq!(a.wrap_up_until, T0 + 60_000 + 10_000);
    assert_eq!(
        ch.timers,
        vec![
            (TimerKey::Purge(c.id().clone()), T0 + 60_000 + p.terminal_case_retention_ms as i64),
            (TimerKey::AgentReady(a.id().clone()), T0 + 70_000),
        ]
    );
    assert!(transition::complete(&c, &a, "again", T0 + 60_001, &p).unwrap().is_noop(), "complete is idempotent");
}

#[test]
fn stale_foreign_and_late_accepts_are_refused() {
    let p = Policy::default();
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let b = ready("b", &[("en", 5)], &[], false);
    let (c, a) = offered(&c, &a, 1, T0);
    assert!(matches!(transition::accept(&c, &b, &oid(1), T0, &p), Err(Rejection::PermissionDenied(_))));
    assert!(matches!(transition::accept(&c, &a, &oid(9), T0, &p), Err(Rejection::NotFound(_))));
    assert!(
        matches!(transition::accept(&c, &a, &oid(1), T0 + 20_000, &p), Err(Rejection::FailedPrecondition(..))),
        "at the deadline"
    );
    let ch = transition::decline(&c, &a, &oid(1), "no", T0 + 5, &p).unwrap();
    let (c2, a2) = apply(&c, &a, &ch);
    assert!(transition::decline(&c2, &a2, &oid(1), "no", T0 + 6, &p).unwrap().is_noop(), "decline is idempotent");
    assert!(matches!(transition::accept(&c2, &a2, &oid(1), T0 + 7, &p), Err(Rejection::FailedPrecondition(..))));
    assert_eq!(c2.state, CaseState::Queued);
    assert!(c2.excludes(a.id(), T0 + 7));
    assert_eq!(a2.cool_down_until, T0 + 5 + 5_000);
    assert_eq!(c2.offers[0].outcome, OfferOutcome::Declined);
}

#[test]
fn timeouts_count_misses_and_force_away() {
    let p = Policy { max_consecutive_misses: 2, ..Policy::default() };
    let mut a = ready("a", &[("en", 5)], &[], false);
    for i in 0..2u32 {
        let c = new_case(&format!("c{i}"), "en", &[], Tier::Standard, T0);
        let at = T0 + i64::from(i) * 100_000;
        let (c, a1) = offered(&c, &a, i, at);
        let early = transition::time_out(&c, Some(&a1), at + 19_999, &p);
        assert!(early.is_noop(), "not due yet");
        let ch = transition::time_out(&c, Some(&a1), at + 20_000, &p);
        let (c, a2) = apply(&c, &a1, &ch);
        assert_eq!(c.state, CaseState::Queued);
        assert_eq!(c.offers[0].outcome, OfferOutcome::TimedOut);
        assert_eq!(a2.consecutive_misses, i + 1);
        a = a2;
    }
    assert_eq!(a.status, AgentStatus::Away);
    let c = new_case("stale", "en", &[], Tier::Standard, T0);
    assert!(transition::time_out(&c, Some(&a), T0, &p).is_noop(), "a queued case has no offer to time out");
}

#[test]
fn failed_offers_are_counted_for_the_segment_with_their_time() {
    use dispatch_domain::demand::{SegmentCounter as C, segment_counts};
    let p = Policy::default();
    let target = p.demand.target(Tier::Standard);
    let a = ready("a", &[("en", 5)], &[], false);
    let c = new_case("f1", "en", &[], Tier::Standard, T0);
    // Timed out after the full 20 s.
    let (c1, a1) = offered(&c, &a, 1, T0);
    let ch = transition::time_out(&c1, Some(&a1), T0 + 20_000, &p);
    let counted = segment_counts(ch.case.as_ref().unwrap(), &ch.events, target, 0);
    assert!(counted.contains(&(C::OfferFailed, 1)) && counted.contains(&(C::OfferFailedMs, 20_000)), "{counted:?}");
    // Declined after 3 s.
    let (c2, _) = apply(&c1, &a1, &ch);
    let b = ready("b", &[("en", 5)], &[], false);
    let (c3, a3) = offered(&c2, &b, 2, T0 + 30_000);
    let ch = transition::decline(&c3, &a3, &oid(2), "busy", T0 + 33_000, &p).unwrap();
    let counted = segment_counts(ch.case.as_ref().unwrap(), &ch.events, target, 0);
    assert!(counted.contains(&(C::OfferFailed, 1)) && counted.contains(&(C::OfferFailedMs, 3_000)), "{counted:?}");
    // An offer revoked because the router cancelled is not a failure of matching.
    let (c4, _) = apply(&c3, &a3, &ch);
    let d = ready("d", &[("en", 5)], &[], false);
    let (c5, a5) = offered(&c4, &d, 3, T0 + 40_000);
    let ch = transition::cancel(&c5, Some(&a5), "customer left", T0 + 41_000, &p).unwrap();
    let counted = segment_counts(ch.case.as_ref().unwrap(), &ch.events, target, 0);
    assert!(!counted.iter().any(|(k, _)| *k == C::OfferFailed), "{counted:?}");
}

#[test]
fn disconnect_revokes_and_grace_expiry_signs_out() {
    let p = Policy::default();
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let (c, a) = offered(&c, &a, 1, T0);
    let stale = transition::disconnect(&a, Some(&c), &session(99), T0, &p);
    assert!(stale.is_noop(), "an old session's drop is ignored");
    let ch = transition::disconnect(&a, Some(&c), &session(1), T0 + 10, &p);
    assert!(matches!(ch.events[0], Event::Revoked { reason: RevokeReason::Disconnected, .. }));
    let (c, a) = apply(&c, &a, &ch);
    assert_eq!(c.state, CaseState::Queued);
    assert!(!c.excludes(a.id(), T0 + 11), "a disconnect is not a decline");
    assert!(a.pending_offer.is_none() && !a.connected());
    assert!(transition::presence_expired(&a, T0 + 10 + 29_999, &p).is_noop());
    let off = transition::presence_expired(&a, T0 + 10 + 30_000, &p).agent.unwrap();
    assert_eq!(off.status, AgentStatus::Offline);
    assert!(off.session.is_none());
    let resumed = transition::connect(&a, session(2), T0 + 20, &p).agent.unwrap();
    assert_eq!(resumed.status, AgentStatus::Available, "a reconnect within grace keeps the status");
}

#[test]
fn cancel_from_each_state() {
    let p = Policy::default();
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let ch = transition::cancel(&c, None, "left", T0, &p).unwrap();
    assert_eq!(ch.case.unwrap().state, CaseState::Cancelled);
    let (co, ao) = offered(&c, &a, 1, T0);
    let ch = transition::cancel(&co, Some(&ao), "left", T0, &p).unwrap();
    assert!(ch.agent.as_ref().unwrap().pending_offer.is_none());
    let (cc, _) = apply(&co, &ao, &ch);
    assert!(transition::cancel(&cc, None, "again", T0, &p).unwrap().is_noop(), "a retried cancel changes nothing");
    let mut done = cc.clone();
    done.state = CaseState::Completed;
    assert!(matches!(transition::cancel(&done, None, "late", T0, &p), Err(Rejection::FailedPrecondition(..))));
    let (ca, aa) = apply(&co, &ao, &transition::accept(&co, &ao, &oid(1), T0, &p).unwrap());
    let ch = transition::cancel(&ca, Some(&aa), "left", T0, &p).unwrap();
    assert!(ch.agent.unwrap().assignments.is_empty());
    assert!(
        ch.timers
            .iter()
            .any(|(k, at)| *k == TimerKey::Purge(ca.id().clone()) && *at == T0 + p.terminal_case_retention_ms as i64)
    );
}

#[test]
fn resubmission_compares_the_whole_payload() {
    let c = new_case("c", "en", &[], Tier::Standard, T0);
    assert!(transition::resubmit(&c, &spec("c", "en", &[], Tier::Standard), None).is_ok());
    assert!(matches!(
        transition::resubmit(&c, &spec("c", "en", &[], Tier::Vip), None),
        Err(Rejection::AlreadyExists(_))
    ));
    let acme = dispatch_domain::TenantId::parse("t", "acme").unwrap();
    assert!(
        matches!(
            transition::resubmit(&c, &spec("c", "en", &[], Tier::Standard), Some(&acme)),
            Err(Rejection::AlreadyExists(_))
        ),
        "another tenant cannot claim the id"
    );
    let theirs = Case { tenant: Some(acme.clone()), ..c.clone() };
    assert!(theirs.visible_to(Some(&acme)) && theirs.visible_to(None));
    assert!(!theirs.visible_to(Some(&dispatch_domain::TenantId::parse("t", "globex").unwrap())));
}

// ---------------------------------------------------------------------------------------------
// Invariants under random operation sequences
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Offer(usize, usize),
    Accept(usize, usize),
    Decline(usize, usize),
    Advance(u32),
    TimeOut(usize),
    Complete(usize, usize),
    Cancel(usize),
    Disconnect(usize),
    Reconnect(usize),
    Available(usize),
    Away(usize),
    /// The agent's presence grace runs out (if it is disconnected).
    GraceEnds(usize),
    /// A case's hand-back timer fires (activity warning or hand-back, or a stale firing).
    ReviewAssignment(usize),
    /// The agent reports activity on a case.
    Activity(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0usize..4;
    let a = 0usize..3;
    prop_oneof![
        (c.clone(), a.clone()).prop_map(|(c, a)| Op::Offer(c, a)),
        (c.clone(), a.clone()).prop_map(|(c, a)| Op::Accept(c, a)),
        (c.clone(), a.clone()).prop_map(|(c, a)| Op::Decline(c, a)),
        (0u32..30_000).prop_map(Op::Advance),
        c.clone().prop_map(Op::TimeOut),
        (c.clone(), a.clone()).prop_map(|(c, a)| Op::Complete(c, a)),
        c.clone().prop_map(Op::Cancel),
        a.clone().prop_map(Op::Disconnect),
        a.clone().prop_map(Op::Reconnect),
        a.clone().prop_map(Op::Available),
        a.clone().prop_map(Op::Away),
        a.clone().prop_map(Op::GraceEnds),
        c.clone().prop_map(Op::ReviewAssignment),
        (c, a).prop_map(|(c, a)| Op::Activity(c, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// I2 (at most one accepted offer per case), I3 (capacity), and agreement between the case
    /// and agent records hold after every step, whatever the order of operations.
    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..60)) {
        let p = Policy { cool_down_after_decline_ms: 0, cool_down_after_miss_ms: 0, wrap_up_ms: dispatch_domain::policy::ChannelDurations { voice: 0, chat: 0, email: 0 }, ..Policy::default() };
        let mut now = T0;
        let mut cases: Vec<Case> = (0..4).map(|i| new_case(&format!("c{i}"), "en", &[], Tier::Standard, T0)).collect();
        let mut agents: Vec<Agent> = (0..3).map(|i| { let mut a = ready(&format!("a{i}"), &[("en", 5)], &[], false); a.profile.capacity = BTreeMap::from([(Channel::Chat, 2)]); a }).collect();
        let mut sessions = [1u32, 1, 1];
        let mut next_offer = 0u32;
        let mut history: Vec<Vec<Event>> = vec![Vec::new(); 4];
        let mut counted: BTreeMap<Counter, i64> = BTreeMap::new();
        // The cases' timers as a store holds them: each settled change disarms, then arms.
        let mut armed: BTreeMap<TimerKey, Millis> = cases.iter().flat_map(|c| transition::case_timers(c, T0, &p)).collect();
        for op in ops {
            let pending_case = |agents: &[Agent], cases: &[Case], ai: usize| agents[ai].pending_offer.as_ref().and_then(|po| cases.iter().position(|c| c.id() == &po.case_id));
            let result: Option<(Option<usize>, Option<usize>, Change)> = match op {
                Op::Offer(ci, ai) => { next_offer += 1; transition::offer(&cases[ci], &agents[ai], oid(next_offer), Explanation::default(), now, &p).ok().map(|ch| (Some(ci), Some(ai), ch)) }
                Op::Accept(ci, ai) => { let o = cases[ci].offers.last().map(|o| o.id.clone()); o.and_then(|o| transition::accept(&cases[ci], &agents[ai], &o, now, &p).ok()).map(|ch| (Some(ci), Some(ai), ch)) }
                Op::Decline(ci, ai) => { let o = cases[ci].offers.last().map(|o| o.id.clone()); o.and_then(|o| transition::decline(&cases[ci], &agents[ai], &o, "x", now, &p).ok()).map(|ch| (Some(ci), Some(ai), ch)) }
                Op::Advance(ms) => { now += i64::from(ms); None }
                Op::TimeOut(ci) => { let ai = cases[ci].current_agent().and_then(|id| agents.iter().position(|a| a.id() == id)); Some((Some(ci), ai, transition::time_out(&cases[ci], ai.map(|i| &agents[i]), now, &p))) }
                Op::Complete(ci, ai) => transition::complete(&cases[ci], &agents[ai], "done", now, &p).ok().map(|ch| (Some(ci), Some(ai), ch)),
                Op::Cancel(ci) => { let ai = cases[ci].current_agent().and_then(|id| agents.iter().position(|a| a.id() == id)); transition::cancel(&cases[ci], ai.map(|i| &agents[i]), "x", now, &p).ok().map(|ch| (Some(ci), ai, ch)) }
                Op::Disconnect(ai) => { let ci = pending_case(&agents, &cases, ai); Some((ci, Some(ai), transition::disconnect(&agents[ai], ci.map(|i| &cases[i]), &session(sessions[ai]), now, &p))) }
                Op::Reconnect(ai) => { sessions[ai] += 1; Some((None, Some(ai), transition::connect(&agents[ai], session(sessions[ai]), now, &p))) }
                Op::GraceEnds(ai) => {
                    let at = agents[ai].session.as_ref().and_then(|s| s.disconnected_at).map(|d| d + p.presence_grace_ms as i64);
                    if let Some(at) = at { now = now.max(at); }
                    Some((None, Some(ai), transition::presence_expired(&agents[ai], now, &p)))
                }
                Op::ReviewAssignment(ci) => { let ai = cases[ci].current_agent().and_then(|id| agents.iter().position(|a| a.id() == id)); Some((Some(ci), ai, transition::review_assignment(&cases[ci], ai.map(|i| &agents[i]), now, &p))) }
                Op::Activity(ci, ai) => transition::report_activity(&cases[ci], &agents[ai], now, &p).ok().map(|ch| (Some(ci), Some(ai), ch)),
                Op::Available(ai) | Op::Away(ai) => {
                    let st = if matches!(op, Op::Available(_)) { AgentStatus::Available } else { AgentStatus::Away };
                    let ci = pending_case(&agents, &cases, ai);
                    transition::set_status(&agents[ai], ci.map(|i| &cases[i]), &session(sessions[ai]), st, now, &p).ok().map(|ch| (ci, Some(ai), ch))
                }
            };
            if let Some((ci, ai, ch)) = result {
                let ch = ch.settle(now, &p);
                for key in &ch.disarm { armed.remove(key); }
                armed.extend(ch.timers.iter().cloned());
                for ev in &ch.events {
                    for (counter, delta) in ev.counters() { *counted.entry(counter).or_insert(0) += delta; }
                }
                let case_events: Vec<Event> = ch.events.iter().filter(|e| e.is_case_event()).cloned().collect();
                if let (Some(c), Some(i)) = (ch.case, ci) {
                    // What every replica tells watchers, derived from the two versions alone,
                    // is what the transition said happened.
                    prop_assert_eq!(transition::case_events(Some(&cases[i]), &c), case_events.clone());
                    history[i].extend(case_events);
                    cases[i] = c;
                } else {
                    prop_assert!(case_events.is_empty(), "case events without a case change: {:?}", case_events);
                }
                if let (Some(a), Some(i)) = (ch.agent, ai) { agents[i] = a; }
            }
            // A replica that saw none of the versions in between derives the whole history.
            for (i, c) in cases.iter().enumerate() {
                let mut all = vec![Event::Queued { case_id: c.id().clone() }];
                all.extend(history[i].iter().cloned());
                prop_assert_eq!(transition::case_events(None, c), all);
            }
            // Every offer made is accounted for: accepted, declined, timed out, revoked or live.
            let get = |c: Counter| counted.get(&c).copied().unwrap_or(0);
            let live = cases.iter().filter(|c| matches!(c.state, CaseState::Offered { .. })).count() as i64;
            prop_assert_eq!(
                get(Counter::OffersMade),
                get(Counter::OffersAccepted) + get(Counter::OffersDeclined) + get(Counter::OffersTimedOut) + get(Counter::OffersRevoked) + live
            );
            for c in &cases {
                // No timer the case's state still needs was disarmed, and none it no longer
                // needs is left armed.
                for (key, _) in transition::case_timers(c, now, &p) {
                    prop_assert!(armed.contains_key(&key), "{:?} disarmed while {:?}", key, c.state);
                }
                for key in transition::moot_timers(c) {
                    prop_assert!(!armed.contains_key(&key), "{:?} left armed while {:?}", key, c.state);
                }
                // A case may be accepted again after a hand-back, never while an earlier
                // assignment stands.
                let accepted = c.offers.iter().filter(|o| o.outcome == OfferOutcome::Accepted && o.handed_back_at == 0).count();
                prop_assert!(accepted <= 1, "I2: case {} accepted {} times", c.id(), accepted);
                let standing = c.offers.iter().rev().find(|o| o.outcome == OfferOutcome::Accepted);
                prop_assert!(c.offers.iter().filter(|o| o.outcome == OfferOutcome::Accepted).all(|o| o.handed_back_at > 0 || Some(o) == standing), "only the last acceptance may stand");
                let pending = c.offers.iter().filter(|o| o.outcome == OfferOutcome::Pending).count();
                prop_assert!(pending <= 1, "one live offer per case");
                match &c.state {
                    CaseState::Offered { offer_id, agent_id, .. } => {
                        let a = agents.iter().find(|a| a.id() == agent_id).unwrap();
                        prop_assert_eq!(a.pending_offer.as_ref().map(|p| &p.offer_id), Some(offer_id), "offer held by its agent");
                    }
                    CaseState::Assigned { agent_id, .. } => {
                        let a = agents.iter().find(|a| a.id() == agent_id).unwrap();
                        prop_assert!(a.assignments.contains_key(c.id()), "assignment held by its agent");
                    }
                    _ => prop_assert!(agents.iter().all(|a| !a.assignments.contains_key(c.id()))),
                }
            }
            for a in &agents {
                prop_assert!(a.load(Channel::Chat) <= a.profile.capacity_for(Channel::Chat), "I3: capacity");
                if let Some(po) = &a.pending_offer {
                    let c = cases.iter().find(|c| c.id() == &po.case_id).unwrap();
                    prop_assert!(matches!(&c.state, CaseState::Offered { offer_id, .. } if *offer_id == po.offer_id), "agent's offer is the case's live offer");
                }
            }
        }
    }
}

#[test]
fn a_stale_lease_timer_does_not_disconnect_a_fresh_session() {
    let p = Policy::default();
    let a = ready("a", &[("en", 5)], &[], false); // connected at T0, lease until T0 + 15 s
    // The stream drops and the agent reconnects at T0 + 29 s: a new session with a new lease.
    let dropped = transition::disconnect(&a, None, &session(1), T0 + 1_000, &p).agent.unwrap();
    let back = transition::connect(&dropped, session(2), T0 + 29_000, &p).agent.unwrap();
    // The first session's lease timer (due T0 + 15 s) fires late, after the reconnect.
    assert!(transition::lease_expired(&back, None, T0 + 29_001, &p).is_noop(), "stale timer ignored");
    // The new session's own lease, if never renewed, does expire.
    let gone = transition::lease_expired(&back, None, T0 + 29_000 + p.presence_lease_ms as i64, &p).agent.unwrap();
    assert!(!gone.connected());
}

/// The timers a record implies (re-armed after the store lost writes) are the ones the
/// transitions that led to it armed.
#[test]
fn implied_timers_match_the_armed_ones() {
    let p = Policy::default();
    let sorted = |mut t: Vec<(TimerKey, Millis)>| {
        t.sort_by_key(|(_, due)| *due);
        t
    };
    let submitted = transition::submit(spec("it-1", "en", &[], Tier::Standard), None, T0, &p);
    let case = submitted.case.clone().unwrap();
    assert_eq!(transition::case_timers(&case, T0, &p), submitted.timers);
    let agent = ready("it-a", &[("en", 5)], &[], false);
    let offer = transition::offer(&case, &agent, oid(1), Explanation::default(), T0, &p).unwrap();
    let (case, agent) = apply(&case, &agent, &offer);
    assert_eq!(transition::case_timers(&case, T0, &p), offer.timers);
    let accept = transition::accept(&case, &agent, &oid(1), T0 + 5, &p).unwrap();
    let (case, agent) = apply(&case, &agent, &accept);
    assert_eq!(transition::case_timers(&case, T0 + 5, &p), accept.timers, "a chat case's activity timer");
    let done = transition::complete(&case, &agent, "ok", T0 + 50, &p).unwrap();
    let (case, agent) = apply(&case, &agent, &done);
    let case_armed: Vec<_> = done.timers.iter().filter(|(k, _)| matches!(k, TimerKey::Purge(_))).cloned().collect();
    assert_eq!(transition::case_timers(&case, T0 + 60, &p), case_armed);
    // The agent: wrap-up, and its connected session's lease.
    let implied = transition::agent_timers(&agent, T0 + 60, &p);
    let ready_armed: Vec<_> =
        done.timers.iter().filter(|(k, _)| matches!(k, TimerKey::AgentReady(_))).cloned().collect();
    assert!(!ready_armed.is_empty());
    let lease = (TimerKey::PresenceLease(agent.id().clone()), T0 + 60 + p.presence_lease_ms as i64);
    assert_eq!(sorted(implied), sorted([ready_armed, vec![lease]].concat()));
    // A dropped session: its grace period.
    let dropped = transition::disconnect(&agent, None, &session(1), T0 + 100, &p);
    let agent = dropped.agent.clone().unwrap();
    let grace: Vec<_> =
        dropped.timers.iter().filter(|(k, _)| matches!(k, TimerKey::PresenceGrace(_))).cloned().collect();
    let implied: Vec<_> = transition::agent_timers(&agent, T0 + 900, &p)
        .into_iter()
        .filter(|(k, _)| matches!(k, TimerKey::PresenceGrace(_)))
        .collect();
    assert_eq!(implied, grace);
}

/// A case the store brought back open after it had been closed is closed again: its revived
/// offer is withdrawn from the agent, its assignment released, and nothing is counted twice.
#[test]
fn a_case_revived_by_a_store_loss_is_closed_again() {
    let p = Policy::default();
    let case = transition::submit(spec("rv-1", "en", &[], Tier::Standard), None, T0, &p).case.unwrap();
    let agent = ready("rv-a", &[("en", 5)], &[], false);
    let offer = transition::offer(&case, &agent, oid(1), Explanation::default(), T0, &p).unwrap();
    let (offered, holding) = apply(&case, &agent, &offer);
    let change = transition::close_after_loss(&offered, Some(&holding), CaseState::Completed, T0 + 9, &p);
    assert!(change.events.is_empty(), "counted when it happened");
    let closed = change.case.clone().unwrap();
    assert_eq!(closed.state, CaseState::Completed);
    assert_eq!(closed.close_reason, transition::CLOSED_BEFORE_LOSS);
    assert_eq!(closed.offers[0].outcome, OfferOutcome::Revoked);
    assert_eq!(closed.offers[0].reason, RevokeReason::CaseClosed.as_str());
    assert!(change.agent.unwrap().pending_offer.is_none(), "the revived offer is withdrawn from the agent");
    assert!(matches!(change.timers.as_slice(), [(TimerKey::Purge(_), _)]));
    // An assignment is released; a closed case or a non-terminal target changes nothing.
    let accepted = transition::accept(&offered, &holding, &oid(1), T0 + 1, &p).unwrap();
    let (assigned, working) = apply(&offered, &holding, &accepted);
    let change = transition::close_after_loss(&assigned, Some(&working), CaseState::Cancelled, T0 + 9, &p);
    assert!(change.agent.unwrap().assignments.is_empty());
    assert!(transition::close_after_loss(&closed, None, CaseState::Completed, T0, &p).is_noop());
    assert!(transition::close_after_loss(&offered, None, CaseState::Queued, T0, &p).is_noop());
}

/// A case and its agent agree about an assignment after an accept; a record of either from
/// before it (what a loss may leave) disagrees.
#[test]
fn a_case_and_its_agent_agree_about_an_assignment() {
    let p = Policy::default();
    let case = transition::submit(spec("ag-1", "en", &[], Tier::Standard), None, T0, &p).case.unwrap();
    let agent = ready("ag-a", &[("en", 5)], &[], false);
    assert!(case.assignment_agrees(None), "a waiting case has nobody to agree with");
    let offer = transition::offer(&case, &agent, oid(1), Explanation::default(), T0, &p).unwrap();
    let (offered, holding) = apply(&case, &agent, &offer);
    let accept = transition::accept(&offered, &holding, &oid(1), T0 + 1, &p).unwrap();
    let (assigned, working) = apply(&offered, &holding, &accept);
    assert!(assigned.assignment_agrees(Some(&working)) && working.holding_agrees(Some(&assigned)));
    assert!(!assigned.assignment_agrees(Some(&holding)), "the agent's record from before the accept");
    assert!(!assigned.assignment_agrees(None), "its agent is gone");
    assert!(!working.holding_agrees(Some(&case)), "the case's record from before the offer");
    assert!(!working.holding_agrees(None), "the case is gone");
}

// ---------------------------------------------------------------------------------------------
// Hand-back: work never sticks with a vanished or quiet agent
// ---------------------------------------------------------------------------------------------

/// A case assigned to `a` at `at` (offer 1 at `at`, accepted at once).
fn assigned(case: &Case, agent: &Agent, at: Millis, p: &Policy) -> (Case, Agent, Change) {
    let (c, a) = offered(case, agent, 1, at);
    let ch = transition::accept(&c, &a, &oid(1), at, p).unwrap();
    let (c, a) = apply(&c, &a, &ch);
    (c, a, ch)
}

fn hand_back_timer(ch: &Change, case: &Case) -> Option<Millis> {
    ch.timers.iter().find(|(k, _)| *k == TimerKey::HandBack(case.id().clone())).map(|(_, at)| *at)
}

#[test]
fn a_vanished_agents_case_is_handed_back_with_its_age_and_prefers_them_for_a_while() {
    let p = Policy::default();
    let mut ttl_spec = spec("hb", "en", &[], Tier::Standard);
    ttl_spec.ttl_ms = Some(60_000);
    let c = transition::submit(ttl_spec, None, T0, &p).case.unwrap();
    let a = ready("a", &[("en", 5)], &[], false);
    let (c, a, _) = assigned(&c, &a, T0 + 1_000, &p);
    // The device drops; within the grace period nothing is taken from it.
    let gone = transition::disconnect(&a, None, &session(1), T0 + 2_000, &p).agent.unwrap();
    assert_eq!(transition::review_assignment(&c, Some(&gone), T0 + 3_000, &p).case, None, "in grace: kept");
    // The grace ends: offline, and a hand-back timer due at once for each assigned case.
    let end = T0 + 2_000 + p.presence_grace_ms as i64;
    let expired = transition::presence_expired(&gone, end, &p);
    assert_eq!(hand_back_timer(&expired, &c), Some(end));
    let offline = expired.agent.unwrap();
    assert!(offline.assignments.contains_key(c.id()), "the agent record keeps it until the hand-back");
    let back = transition::review_assignment(&c, Some(&offline), end, &p);
    let (case, agent) = apply(&c, &offline, &back);
    assert_eq!(case.state, CaseState::Queued);
    assert_eq!(case.created_at, T0, "its age is kept");
    assert_eq!(case.queue_rank(&p), c.queue_rank(&p));
    assert_eq!(case.offers[0].outcome, OfferOutcome::Accepted);
    assert_eq!((case.offers[0].handed_back_at, case.offers[0].reason.as_str()), (end, "presence_lost"));
    assert!(agent.assignments.is_empty() && agent.hand_backs == 1);
    let want = Event::HandedBack {
        case_id: c.id().clone(),
        offer_id: oid(1),
        agent_id: a.id().clone(),
        reason: transition::HandBackReason::PresenceLost,
    };
    assert_eq!(back.events, vec![want.clone()]);
    assert_eq!(want.counters(), vec![(Counter::HandedBack, 1)]);
    assert_eq!(transition::case_events(Some(&c), &case), vec![want.clone()], "every replica derives it");
    assert!(transition::case_events(None, &case).contains(&want));
    // Past its time-to-live it still waits: its customer was being served.
    assert!(transition::review_case(&case, T0 + 120_000, &p).case.is_none());
    // The old offer cannot be accepted again, nor the case completed by its old agent.
    let back_in = transition::connect(&agent, session(2), end + 1, &p).agent.unwrap();
    assert!(matches!(
        transition::accept(&case, &back_in, &oid(1), end + 1, &p),
        Err(Rejection::FailedPrecondition(dispatch_domain::Precondition::CaseNotAssigned, _))
    ));
    assert!(transition::complete(&case, &back_in, "done", end + 1, &p).is_err());
    // The agent it was taken from is preferred (affinity) for hand_back_preference_ms.
    let back_in = transition::set_status(&back_in, None, &session(2), AgentStatus::Available, end + 1, &p)
        .unwrap()
        .agent
        .unwrap();
    let affinity = |at: Millis| {
        let s = scoring::score(&case, &back_in, at, &p);
        s.terms.iter().find(|t| t.name == dispatch_domain::state::Term::Affinity).unwrap().value
    };
    assert_eq!(affinity(end + 1), 1.0);
    assert_eq!(affinity(end + p.hand_back_preference_ms as i64), 0.0);
    // Another agent takes it: two accepted offers, the first handed back.
    let b = ready("b", &[("en", 5)], &[], false);
    let ch = transition::offer(&case, &b, oid(2), Explanation::default(), end + 5, &p).unwrap();
    let (case, b) = apply(&case, &b, &ch);
    let (case, _) = apply(&case, &b, &transition::accept(&case, &b, &oid(2), end + 6, &p).unwrap());
    assert_eq!(case.offers.iter().filter(|o| o.outcome == OfferOutcome::Accepted && o.handed_back_at == 0).count(), 1);
    assert!(case.returning.is_none(), "the preference ends with the new assignment");
}

#[test]
fn a_sign_out_holding_cases_hands_them_back_unless_the_agent_signs_in_again() {
    let p = Policy::default();
    let c = new_case("so", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let (c, a, _) = assigned(&c, &a, T0, &p);
    let out = transition::set_status(&a, None, &session(1), AgentStatus::Offline, T0 + 10, &p).unwrap();
    let due = T0 + 10 + p.presence_grace_ms as i64;
    assert_eq!(hand_back_timer(&out, &c), Some(due));
    let signed_out = out.agent.unwrap();
    // Signed in again before the timer: kept (the activity timer is armed again instead).
    let again = transition::connect(&signed_out, session(2), T0 + 20, &p).agent.unwrap();
    let kept = transition::review_assignment(&c, Some(&again), due, &p);
    assert!(kept.case.is_none() && kept.agent.is_none());
    assert_eq!(hand_back_timer(&kept, &c), Some(T0 + 180_000 - 60_000));
    // Not back: handed back, reason signed_out.
    let back = transition::review_assignment(&c, Some(&signed_out), due, &p);
    assert!(matches!(
        back.events.as_slice(),
        [Event::HandedBack { reason: transition::HandBackReason::SignedOut, .. }]
    ));
    // The implied timers (after a store loss) look at it again too.
    let implied = transition::agent_timers(&signed_out, due, &p);
    assert!(implied.contains(&(TimerKey::HandBack(c.id().clone()), due)));
}

#[test]
fn no_activity_warns_then_hands_back_and_activity_resets_the_timer() {
    let p = Policy::default(); // chat: 180 s timeout, warned 60 s before
    let c = new_case("ac", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    let (c, a, accepted) = assigned(&c, &a, T0, &p);
    assert_eq!(hand_back_timer(&accepted, &c), Some(T0 + 120_000));
    assert_eq!(transition::case_timers(&c, T0, &p), accepted.timers, "implied after a loss");
    // A stale firing re-arms the same timer and changes nothing.
    let early = transition::review_assignment(&c, Some(&a), T0 + 50_000, &p);
    assert!(early.is_noop() && hand_back_timer(&early, &c) == Some(T0 + 120_000));
    // The warning: recorded on the case (so every replica tells the device), once.
    let warned = transition::review_assignment(&c, Some(&a), T0 + 120_000, &p);
    assert!(warned.events.is_empty() && warned.agent.is_none());
    assert_eq!(hand_back_timer(&warned, &c), Some(T0 + 180_000));
    let (cw, _) = apply(&c, &a, &warned);
    assert_eq!(transition::activity_warning(Some(&c), &cw, &p), Some((a.id().clone(), T0 + 180_000)));
    assert_eq!(transition::activity_warning(Some(&cw), &cw, &p), None, "told once");
    // Activity: the warning is withdrawn and the timer starts again.
    let act = transition::report_activity(&cw, &a, T0 + 150_000, &p).unwrap();
    assert_eq!(hand_back_timer(&act, &c), Some(T0 + 150_000 + 120_000));
    let (ca, _) = apply(&cw, &a, &act);
    assert_eq!((ca.activity_at, ca.activity_warned_at), (T0 + 150_000, 0));
    assert!(transition::review_assignment(&ca, Some(&a), T0 + 200_000, &p).case.is_none());
    // Quiet again: warned, then handed back at the timeout.
    let (cw, _) = apply(&ca, &a, &transition::review_assignment(&ca, Some(&a), T0 + 270_000, &p));
    let back = transition::review_assignment(&cw, Some(&a), T0 + 330_000, &p);
    assert!(matches!(
        back.events.as_slice(),
        [Event::HandedBack { reason: transition::HandBackReason::NoActivity, .. }]
    ));
    let (case, agent) = apply(&cw, &a, &back);
    assert_eq!(case.state, CaseState::Queued);
    assert!(agent.assignments.is_empty() && agent.hand_backs == 1);
    // Only the holder may report activity, and only on an assigned case.
    let b = ready("b", &[("en", 5)], &[], false);
    assert!(matches!(transition::report_activity(&ca, &b, T0, &p), Err(Rejection::PermissionDenied(_))));
    assert!(matches!(transition::report_activity(&case, &a, T0, &p), Err(Rejection::FailedPrecondition(..))));
    // A channel without the timer: nothing is armed and a firing is a no-op.
    let off = Policy {
        activity_timeout_ms: dispatch_domain::policy::ChannelDurations { voice: 0, chat: 0, email: 0 },
        ..p.clone()
    };
    let (c2, a2, accepted) = assigned(&new_case("ac2", "en", &[], Tier::Standard, T0), &b, T0, &off);
    assert_eq!(hand_back_timer(&accepted, &c2), None);
    assert!(transition::review_assignment(&c2, Some(&a2), T0 + 10_000_000, &off).is_noop());
    // The warning must come before the timeout.
    let bad = Policy { activity_warning_ms: 180_000, ..p };
    assert_eq!(bad.validate().unwrap_err().field, "activity_timeout_ms");
}

// ---------------------------------------------------------------------------------------------
// Eligibility gates: market, data region, clearance, certifications with expiry
// ---------------------------------------------------------------------------------------------

fn gated_case(id: &str, f: impl FnOnce(&mut CaseSpec)) -> Case {
    let mut s = spec(id, "de", &[], Tier::Standard);
    f(&mut s);
    transition::submit(s, None, T0, &Policy::default()).case.unwrap()
}

fn gated_agent(id: &str, f: impl FnOnce(&mut dispatch_domain::model::AgentProfile)) -> Agent {
    let mut a = ready(id, &[("de", 5)], &[], false);
    f(&mut a.profile);
    a
}

fn market(s: &str) -> dispatch_domain::model::Market {
    dispatch_domain::model::Market::parse("m", s).unwrap()
}

fn cert(s: &str) -> dispatch_domain::model::Certification {
    dispatch_domain::model::Certification::parse("c", s).unwrap()
}

#[test]
fn each_gate_excludes_and_says_why_in_words() {
    let p = Policy::default();
    let region = dispatch_domain::model::DataRegion::parse("r", "eu").unwrap();
    let case = gated_case("g1", |s| {
        s.market = Some(market("de"));
        s.data_region = Some(region.clone());
        s.required_clearance = 2;
        s.required_certifications = vec![cert("pci")];
    });
    let good = gated_agent("good", |p| {
        p.markets.insert(market("DE"));
        p.data_regions.insert(region.clone());
        p.clearance = 3;
        p.certifications.insert(cert("pci"), Millis::MAX);
    });
    assert_eq!(scoring::eligibility(&case, &good, T0, &p), Ok(()));
    assert!(scoring::why_not(&case, &good, T0, &p).is_empty());
    let gates: [(Agent, Ineligible, &str); 5] = [
        (
            gated_agent("fr", |q| {
                q.clone_from(&good.profile);
                q.id = AgentId::parse("a", "fr").unwrap();
                q.markets = [market("FR")].into();
            }),
            Ineligible::Market,
            "not contracted for market DE (serves: FR)",
        ),
        (
            gated_agent("us", |q| {
                q.clone_from(&good.profile);
                q.data_regions.clear();
            }),
            Ineligible::DataRegion,
            "not cleared for personal data of region eu",
        ),
        (
            gated_agent("low", |q| {
                q.clone_from(&good.profile);
                q.clearance = 1;
            }),
            Ineligible::Clearance,
            "personal-data clearance 1, the case needs 2",
        ),
        (
            gated_agent("nopci", |q| {
                q.clone_from(&good.profile);
                q.certifications.clear();
            }),
            Ineligible::Certification,
            "lacks certification pci",
        ),
        (
            gated_agent("old", |q| {
                q.clone_from(&good.profile);
                q.certifications.insert(cert("pci"), T0 - 3 * 3_600_000);
            }),
            Ineligible::CertificationExpired,
            "certification pci expired 3 h ago",
        ),
    ];
    for (agent, rule, words) in gates {
        assert_eq!(scoring::eligibility(&case, &agent, T0, &p), Err(rule), "{words}");
        let why = scoring::why_not(&case, &agent, T0, &p);
        assert_eq!(why.len(), 1, "{why:?}");
        assert_eq!((why[0].rule, why[0].detail.as_str()), (rule, words));
    }
    // Every failing rule is listed, not only the first.
    let mut bad = gated_agent("bad", |q| q.clearance = 0);
    bad.status = AgentStatus::Away;
    let why: Vec<&str> = scoring::why_not(&case, &bad, T0, &p).iter().map(|w| w.rule.code()).collect();
    assert_eq!(why, ["not_ready", "market", "data_region", "clearance", "certification"]);
    // A case without gates takes any agent, gated or not.
    let plain = gated_case("g2", |_| {});
    assert_eq!(scoring::eligibility(&plain, &bad_ready(), T0, &p), Ok(()));
}

fn bad_ready() -> Agent {
    gated_agent("plain", |_| {})
}

#[test]
fn a_certification_is_invalid_from_its_expiry_instant() {
    let p = Policy::default();
    let until = T0 + 60_000;
    let vip_case = gated_case("v1", |s| s.tier = Tier::Vip);
    let pci_case = gated_case("v2", |s| s.required_certifications = vec![cert("pci")]);
    let a = gated_agent("a", |q| {
        q.certifications.insert(cert("vip"), until);
        q.certifications.insert(cert("pci"), until);
    });
    for case in [&vip_case, &pci_case] {
        assert_eq!(scoring::eligibility(case, &a, until - 1, &p), Ok(()), "valid a millisecond before");
        assert!(scoring::eligibility(case, &a, until, &p).is_err(), "invalid at the instant");
    }
    assert_eq!(scoring::eligibility(&pci_case, &a, until, &p), Err(Ineligible::CertificationExpired));
    assert_eq!(scoring::eligibility(&vip_case, &a, until, &p), Err(Ineligible::NotVipCertified));
    assert!(a.profile.vip_certified(until - 1) && !a.profile.vip_certified(until));
    assert!(a.profile.holds_vip(), "still filed with the VIP agents; the filter decides");
    // The offer transition re-checks at its own instant.
    assert!(transition::offer(&pci_case, &a, oid(1), Explanation::default(), until, &p).is_err());
}

#[test]
fn the_explanation_counts_the_agents_excluded_per_rule() {
    let p = Policy::default();
    let case = gated_case("x1", |s| s.market = Some(market("DE")));
    let de = gated_agent("de", |q| {
        q.markets.insert(market("DE"));
    });
    let fr1 = gated_agent("fr1", |q| {
        q.markets.insert(market("FR"));
    });
    let fr2 = gated_agent("fr2", |q| {
        q.markets.insert(market("FR"));
    });
    let mut away = gated_agent("away", |q| {
        q.markets.insert(market("DE"));
    });
    away.status = AgentStatus::Away;
    let why = scoring::rank(&case, [&de, &fr1, &fr2, &away], T0, &p);
    assert_eq!(why.eligible, 1);
    assert_eq!(why.excluded, BTreeMap::from([("market".to_owned(), 2), ("not_ready".to_owned(), 1)]));
}

#[test]
fn an_expiry_in_the_past_is_refused_on_upsert_unless_it_is_stored_already() {
    let mut profile = ready("u", &[("de", 5)], &[], false).profile;
    profile.certifications.insert(cert("pci"), T0 - 1);
    let err = transition::upsert_profile(None, profile.clone(), T0).unwrap_err();
    assert!(matches!(&err, Rejection::InvalidArgument(f) if f.field == "certifications"), "{err:?}");
    let stored = Agent::new(profile.clone(), T0 - 10);
    assert!(transition::upsert_profile(Some(&stored), profile, T0).is_ok(), "a sync sending it again as it is");
}

#[test]
fn the_rating_term_is_the_earned_rating_and_a_rating_is_kept_once() {
    let p = Policy::default();
    let term = |c: &Case, a: &Agent| {
        scoring::score(c, a, T0, &p)
            .terms
            .iter()
            .find(|t| t.name == dispatch_domain::state::Term::Rating)
            .unwrap()
            .value
    };
    let c = new_case("rt", "en", &[], Tier::Standard, T0);
    let a = ready("a", &[("en", 5)], &[], false);
    assert!((term(&c, &a) - 0.8).abs() < 1e-12, "a newcomer at the prior 4.0 / 5");
    let (case, agent, _) = assigned(&c, &a, T0, &p);
    let done = transition::complete(&case, &agent, "ok", T0 + 1, &p).unwrap();
    let (case, agent) = apply(&case, &agent, &done);
    let five = dispatch_domain::reputation::CaseRating { stars: 5, controllable: true, at: T0 + 2 };
    let rated = transition::rate(&case, Some(&agent), five, &p).unwrap();
    let (case, agent) = apply(&case, &agent, &rated);
    assert!(term(&c, &agent) > 0.8);
    assert_eq!(case.rating, Some(five));
    assert!(transition::rate(&case, Some(&agent), five, &p).unwrap().is_noop(), "the same rating again");
    let two = dispatch_domain::reputation::CaseRating { stars: 2, ..five };
    assert!(matches!(transition::rate(&case, Some(&agent), two, &p), Err(Rejection::AlreadyExists(_))));
    let open = new_case("rt2", "en", &[], Tier::Standard, T0);
    assert!(matches!(
        transition::rate(&open, None, five, &p),
        Err(Rejection::FailedPrecondition(dispatch_domain::Precondition::CaseNotCompleted, _))
    ));
}
