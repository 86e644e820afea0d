//! Matching a case with agents: the hard filters ([`eligibility`]), the soft terms ([`score`])
//! and the choice of the best candidates ([`rank`]). Callers bring the candidates (from an
//! index); nothing here scans a pool.

use crate::model::{Level, Millis};
use crate::policy::{Policy, Relaxed};
use crate::state::{Agent, CandidateScore, Case, Explanation, Term, TermScore};

/// Why an agent cannot take a case now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Not connected, not available, holding an offer, in wrap-up or cooling down.
    NotReady(&'static str),
    /// No spare capacity for the case's channel.
    NoCapacity,
    /// Does not speak the language well enough.
    Language,
    /// Lacks a required (or not yet dropped preferred) skill at its level.
    Skill,
    /// VIP case, agent not certified.
    NotVipCertified,
    /// Declined or missed this case recently.
    Excluded,
}

impl Ineligible {
    /// Lower-case explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Ineligible::NotReady(why) => why,
            Ineligible::NoCapacity => "no spare capacity for the channel",
            Ineligible::Language => "does not speak the language at the required proficiency",
            Ineligible::Skill => "lacks a required skill level",
            Ineligible::NotVipCertified => "not vip-certified",
            Ineligible::Excluded => "declined or missed this case",
        }
    }
}

/// The hard filters: `Ok` when `agent` may be offered `case` at `now`.
pub fn eligibility(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> Result<(), Ineligible> {
    eligibility_relaxed(case, agent, now, case.relaxed(policy, now))
}

/// [`eligibility`] with the relaxation already worked out (once per selection, not per agent).
pub fn eligibility_relaxed(case: &Case, agent: &Agent, now: Millis, relaxed: Relaxed) -> Result<(), Ineligible> {
    if let Some(why) = agent.unready_reason(now) {
        return Err(Ineligible::NotReady(why));
    }
    if !agent.has_room(case.spec.channel) {
        return Err(Ineligible::NoCapacity);
    }
    matches_requirements(case, agent, relaxed)?;
    if case.excludes(agent.id(), now) {
        return Err(Ineligible::Excluded);
    }
    Ok(())
}

/// The profile-only filters (language, skills, VIP), under the given relaxation.
pub fn matches_requirements(case: &Case, agent: &Agent, relaxed: Relaxed) -> Result<(), Ineligible> {
    let spec = &case.spec;
    let profile = &agent.profile;
    let min_prof = spec.min_proficiency.lowered(relaxed.lower_min_proficiency_by);
    if profile.proficiency(&spec.language).is_none_or(|p| p < min_prof) {
        return Err(Ineligible::Language);
    }
    let held = |s: &crate::model::Skill| profile.skills.get(s).copied();
    for req in &spec.required_skills {
        if held(&req.skill).is_none_or(|l| l < req.level.lowered(relaxed.lower_skill_levels_by)) {
            return Err(Ineligible::Skill);
        }
    }
    if !relaxed.drop_preferred_skills {
        for pref in &spec.preferred_skills {
            if held(&pref.skill).is_none_or(|l| l < pref.level) {
                return Err(Ineligible::Skill);
            }
        }
    }
    if case.needs_vip_certified(relaxed) && !profile.vip_certified {
        return Err(Ineligible::NotVipCertified);
    }
    Ok(())
}

fn above(held: Level, required: Level) -> f64 {
    if required == Level::MAX {
        1.0
    } else {
        f64::from(held.get().saturating_sub(required.get())) / f64::from(Level::MAX.get() - required.get())
    }
}

/// The soft terms of an eligible agent for a case, each 0..=1, weighted by the policy.
///
/// - `language`: proficiency above the case's minimum, scaled to the room above it;
/// - `skill_depth`: mean over required skills of the level above the requirement, and over
///   preferred skills of whether the agent holds them at their level;
/// - `rating`: rating / 5;
/// - `idle`: time since the agent last became free, saturating at `idle_saturation_ms`;
/// - `acceptance`: smoothed share of offers accepted, (accepted + 1) / (received + 2);
/// - `affinity`: 1 when the agent is the customer's previous agent, or the agent a handed-back
///   case was taken from, within `hand_back_preference_ms`.
pub fn score(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> CandidateScore {
    let w = &policy.weights;
    let v = term_values(case, agent, now, policy);
    let weights = [w.language, w.skill_depth, w.rating, w.idle, w.acceptance, w.affinity];
    let names = [Term::Language, Term::SkillDepth, Term::Rating, Term::Idle, Term::Acceptance, Term::Affinity];
    let terms: Vec<TermScore> = (0..6).map(|i| TermScore { name: names[i], value: v[i], weight: weights[i] }).collect();
    CandidateScore { agent_id: agent.id().clone(), total: total(&v, policy), terms }
}

/// The six term values, in [`Term`] order, without allocating.
fn term_values(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> [f64; 6] {
    let spec = &case.spec;
    let profile = &agent.profile;
    let language = profile.proficiency(&spec.language).map_or(0.0, |p| above(p, spec.min_proficiency));
    let (mut depth, mut n) = (0.0, 0usize);
    for req in &spec.required_skills {
        depth += profile.skills.get(&req.skill).map_or(0.0, |l| above(*l, req.level));
        n += 1;
    }
    for pref in &spec.preferred_skills {
        depth += if profile.skills.get(&pref.skill).is_some_and(|l| *l >= pref.level) { 1.0 } else { 0.0 };
        n += 1;
    }
    let skill_depth = if n == 0 { 0.0 } else { depth / n as f64 };
    let idle = ((now - agent.idle_since).max(0) as f64 / policy.idle_saturation_ms as f64).min(1.0);
    let returning = case.prefers_returning(agent.id(), now);
    let affinity = if returning || spec.previous_agent.as_ref() == Some(agent.id()) { 1.0 } else { 0.0 };
    let rating = (profile.rating / 5.0).clamp(0.0, 1.0);
    [language, skill_depth, rating, idle, agent.acceptance_ratio(), affinity]
}

fn total(v: &[f64; 6], policy: &Policy) -> f64 {
    let w = &policy.weights;
    v[0] * w.language + v[1] * w.skill_depth + v[2] * w.rating + v[3] * w.idle + v[4] * w.acceptance + v[5] * w.affinity
}

/// The best eligible candidates for `case` among `agents`, best first (at most
/// `policy.explain_top`), with the count of eligible agents. Ties go to the lower agent id so
/// that the choice is deterministic.
pub fn rank<A: std::borrow::Borrow<Agent>>(
    case: &Case,
    agents: impl IntoIterator<Item = A>,
    now: Millis,
    policy: &Policy,
) -> Explanation {
    rank_first(case, agents, now, policy, 0)
}

/// As [`rank`], but considers the agents in the order given and stops after `limit` eligible
/// ones (0: no limit). Callers pass agents longest-idle first, so a bounded selection still
/// prefers fairness and never scans a whole pool. Totals are computed without allocating; the
/// explanation (terms) is built for the kept candidates only.
pub fn rank_first<A: std::borrow::Borrow<Agent>>(
    case: &Case,
    agents: impl IntoIterator<Item = A>,
    now: Millis,
    policy: &Policy,
    limit: usize,
) -> Explanation {
    let keep = policy.explain_top.max(1);
    let mut top: Vec<(f64, A)> = Vec::with_capacity(keep + 1);
    let mut eligible = 0u32;
    let relaxed = case.relaxed(policy, now);
    for agent in agents {
        let a = agent.borrow();
        if limit > 0 && eligible as usize >= limit {
            break;
        }
        if eligibility_relaxed(case, a, now, relaxed).is_err() {
            continue;
        }
        eligible += 1;
        let t = total(&term_values(case, a, now, policy), policy);
        let pos = top.partition_point(|(bt, b)| *bt > t || (*bt == t && b.borrow().id() < a.id()));
        if pos < keep {
            top.insert(pos, (t, agent));
            top.truncate(keep);
        }
    }
    let candidates = top.iter().map(|(_, a)| score(case, a.borrow(), now, policy)).collect();
    Explanation { candidates, eligible, relaxations: relaxed.describe() }
}

/// The explanation of an offer to candidate `i` of `ranked`: the winner first, the others in
/// rank order (an offer to a lower-ranked candidate happens when better ones were taken).
pub fn with_winner_first(ranked: &Explanation, i: usize) -> Explanation {
    let mut why = ranked.clone();
    if i < why.candidates.len() {
        let winner = why.candidates.remove(i);
        why.candidates.insert(0, winner);
    }
    why
}
