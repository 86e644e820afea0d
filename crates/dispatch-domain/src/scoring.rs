//! Matching a case with agents: the hard filters ([`eligibility`]), the soft terms ([`score`])
//! and the choice of the best candidates ([`rank`]). Callers bring the candidates (from an
//! index); nothing here scans a pool.

use crate::model::{Level, Millis, Tier};
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
    if let Some(why) = agent.unready_reason(now) {
        return Err(Ineligible::NotReady(why));
    }
    if !agent.has_room(case.spec.channel) {
        return Err(Ineligible::NoCapacity);
    }
    matches_requirements(case, agent, case.relaxed(policy, now))?;
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
    if spec.tier == Tier::Vip && !profile.vip_certified && !relaxed.allow_uncertified_for_vip {
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
/// - `affinity`: 1 when the agent is the customer's previous agent.
pub fn score(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> CandidateScore {
    let spec = &case.spec;
    let profile = &agent.profile;
    let w = &policy.weights;
    let language = profile.proficiency(&spec.language).map_or(0.0, |p| above(p, spec.min_proficiency));
    let mut depth = Vec::with_capacity(spec.required_skills.len() + spec.preferred_skills.len());
    for req in &spec.required_skills {
        depth.push(profile.skills.get(&req.skill).map_or(0.0, |l| above(*l, req.level)));
    }
    for pref in &spec.preferred_skills {
        depth.push(if profile.skills.get(&pref.skill).is_some_and(|l| *l >= pref.level) { 1.0 } else { 0.0 });
    }
    let skill_depth = if depth.is_empty() { 0.0 } else { depth.iter().sum::<f64>() / depth.len() as f64 };
    let idle = ((now - agent.idle_since).max(0) as f64 / policy.idle_saturation_ms as f64).min(1.0);
    let affinity = if spec.previous_agent.as_ref() == Some(agent.id()) { 1.0 } else { 0.0 };
    let terms = vec![
        TermScore { name: Term::Language, value: language, weight: w.language },
        TermScore { name: Term::SkillDepth, value: skill_depth, weight: w.skill_depth },
        TermScore { name: Term::Rating, value: (profile.rating / 5.0).clamp(0.0, 1.0), weight: w.rating },
        TermScore { name: Term::Idle, value: idle, weight: w.idle },
        TermScore { name: Term::Acceptance, value: agent.acceptance_ratio(), weight: w.acceptance },
        TermScore { name: Term::Affinity, value: affinity, weight: w.affinity },
    ];
    let total = terms.iter().map(TermScore::contribution).sum();
    CandidateScore { agent_id: agent.id().clone(), total, terms }
}

/// The best eligible candidates for `case` among `agents`, best first (at most
/// `policy.explain_top`), with the count of eligible agents. Ties go to the lower agent id so
/// that the choice is deterministic.
pub fn rank<'a>(case: &Case, agents: impl IntoIterator<Item = &'a Agent>, now: Millis, policy: &Policy) -> Explanation {
    let keep = policy.explain_top.max(1);
    let mut top: Vec<CandidateScore> = Vec::with_capacity(keep + 1);
    let mut eligible = 0u32;
    for agent in agents {
        if eligibility(case, agent, now, policy).is_err() {
            continue;
        }
        eligible += 1;
        let cand = score(case, agent, now, policy);
        let pos = top.partition_point(|c| better(c, &cand));
        if pos < keep {
            top.insert(pos, cand);
            top.truncate(keep);
        }
    }
    Explanation { candidates: top, eligible, relaxations: case.relaxed(policy, now).describe() }
}

/// `a` ranks before `b`.
fn better(a: &CandidateScore, b: &CandidateScore) -> bool {
    a.total > b.total || (a.total == b.total && a.agent_id < b.agent_id)
}
