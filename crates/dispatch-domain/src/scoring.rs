//! Matching a case with agents: the hard filters ([`eligibility`]), the soft terms ([`score`])
//! and the choice of the best candidates ([`rank`]). Callers bring the candidates (from an
//! index); nothing here scans a pool.

use crate::model::{AgentProfile, DataRegion, Level, Market, Millis, VIP_CERTIFICATION};
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
    /// Not contracted for the case's market.
    Market,
    /// Not cleared for the data region of the case's personal data.
    DataRegion,
    /// Personal-data clearance below the case's.
    Clearance,
    /// VIP case, agent not (or no longer) VIP-certified.
    NotVipCertified,
    /// Lacks a certification the case requires.
    Certification,
    /// Holds a certification the case requires, but it has expired.
    CertificationExpired,
    /// Declined or missed this case recently.
    Excluded,
    /// The offer would be expected to run past a working-time limit.
    WorkingTime(crate::worktime::Limit),
}

#[cfg(test)]
mod tests {
    use super::Ineligible;

    #[test]
    fn slots_follow_the_rules_order() {
        for (i, r) in Ineligible::RULES.iter().enumerate() {
            assert_eq!(r.slot(), i, "{}", r.code());
        }
    }
}

impl Ineligible {
    /// Every rule with a fixed code (the readiness reasons count as one).
    pub const RULES: [Ineligible; 12] = [
        Ineligible::NotReady(""),
        Ineligible::NoCapacity,
        Ineligible::Language,
        Ineligible::Skill,
        Ineligible::Market,
        Ineligible::DataRegion,
        Ineligible::Clearance,
        Ineligible::NotVipCertified,
        Ineligible::Certification,
        Ineligible::CertificationExpired,
        Ineligible::Excluded,
        Ineligible::WorkingTime(crate::worktime::Limit::Day),
    ];

    /// Stable lower-case code (explanations count excluded agents by it).
    pub fn code(self) -> &'static str {
        match self {
            Ineligible::NotReady(_) => "not_ready",
            Ineligible::NoCapacity => "no_capacity",
            Ineligible::Language => "language",
            Ineligible::Skill => "skill",
            Ineligible::Market => "market",
            Ineligible::DataRegion => "data_region",
            Ineligible::Clearance => "clearance",
            Ineligible::NotVipCertified => "vip_certification",
            Ineligible::Certification => "certification",
            Ineligible::CertificationExpired => "certification_expired",
            Ineligible::Excluded => "excluded",
            Ineligible::WorkingTime(_) => "working_time",
        }
    }

    /// The rule's position in [`Ineligible::RULES`] (counted per ineligible agent: no string
    /// is compared).
    fn slot(self) -> usize {
        match self {
            Ineligible::NotReady(_) => 0,
            Ineligible::NoCapacity => 1,
            Ineligible::Language => 2,
            Ineligible::Skill => 3,
            Ineligible::Market => 4,
            Ineligible::DataRegion => 5,
            Ineligible::Clearance => 6,
            Ineligible::NotVipCertified => 7,
            Ineligible::Certification => 8,
            Ineligible::CertificationExpired => 9,
            Ineligible::Excluded => 10,
            Ineligible::WorkingTime(_) => 11,
        }
    }

    /// Lower-case explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Ineligible::NotReady(why) => why,
            Ineligible::NoCapacity => "no spare capacity for the channel",
            Ineligible::Language => "does not speak the language at the required proficiency",
            Ineligible::Skill => "lacks a required skill level",
            Ineligible::Market => "not contracted for the case's market",
            Ineligible::DataRegion => "not cleared for the case's data region",
            Ineligible::Clearance => "personal-data clearance below the case's",
            Ineligible::NotVipCertified => "not vip-certified",
            Ineligible::Certification => "lacks a required certification",
            Ineligible::CertificationExpired => "a required certification has expired",
            Ineligible::Excluded => "declined or missed this case",
            Ineligible::WorkingTime(_) => "the offer would run past a working-time limit",
        }
    }
}

/// The hard filters: `Ok` when `agent` may be offered `case` at `now`.
pub fn eligibility(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> Result<(), Ineligible> {
    eligibility_relaxed(case, agent, now, case.relaxed(policy, now), policy)
}

/// [`eligibility`] with the relaxation already worked out (once per selection, not per agent).
pub fn eligibility_relaxed(
    case: &Case,
    agent: &Agent,
    now: Millis,
    relaxed: Relaxed,
    policy: &Policy,
) -> Result<(), Ineligible> {
    if let Some(why) = agent.unready_reason(now) {
        return Err(Ineligible::NotReady(why));
    }
    if !agent.has_room(case.spec.channel) {
        return Err(Ineligible::NoCapacity);
    }
    if let Some(limit) = crate::worktime::would_cross(agent, case.spec.channel, now, policy) {
        return Err(Ineligible::WorkingTime(limit));
    }
    matches_requirements(case, agent, relaxed, now)?;
    if case.excludes(agent.id(), now) {
        return Err(Ineligible::Excluded);
    }
    Ok(())
}

/// The profile filters (language, skills, market, data region, clearance, VIP and the other
/// certifications, valid at `now`), under the given relaxation. The first that fails. Each
/// filter is one of the gap functions below, which [`why_not`] reads too.
pub fn matches_requirements(case: &Case, agent: &Agent, relaxed: Relaxed, now: Millis) -> Result<(), Ineligible> {
    check_requirements(&CaseNeeds { case, relaxed }, &agent.profile, now)
}

/// What a case needs of an agent's profile, in the terms (`Key`) of what holds the profile:
/// the case itself with its names ([`CaseNeeds`]), or its needs compiled to the ids a compact
/// summary interned them to ([`Compiled`]). The rule reading them is written once
/// ([`check_requirements`]).
pub trait Requirements {
    /// How a skill, market, data region or certification is named.
    type Key: ?Sized;
    /// The primary language ([`Language::primary_code`](crate::model::Language::primary_code))
    /// and the proficiency needed in it.
    fn language(&self) -> (u32, Level);
    /// The skills needed, each with the level needed.
    fn skills(&self) -> impl Iterator<Item = (&Self::Key, Level)>;
    /// The market the agent must be contracted for.
    fn market(&self) -> Option<&Self::Key>;
    /// The data region the agent must be cleared for.
    fn region(&self) -> Option<&Self::Key>;
    /// The personal-data clearance needed.
    fn clearance(&self) -> u8;
    /// The certifications needed, each with whether it is the VIP certification.
    fn certifications(&self) -> impl Iterator<Item = (&Self::Key, bool)>;
}

/// What a profile holds, as the rule reads it, in the terms `K` of a [`Requirements`].
pub trait Qualifications<K: ?Sized> {
    /// The proficiency in the primary language coded `language` (the best of its tags).
    fn proficiency(&self, language: u32) -> Option<Level>;
    /// The level of `skill`.
    fn skill(&self, skill: &K) -> Option<Level>;
    /// Contracted for `market`.
    fn serves(&self, market: &K) -> bool;
    /// Cleared for `region`.
    fn cleared_for(&self, region: &K) -> bool;
    /// Personal-data clearance.
    fn clearance(&self) -> u8;
    /// The expiry of the certification `name` ([`Millis::MAX`]: none), if held.
    fn certified_until(&self, name: &K) -> Option<Millis>;
}

/// A case's needs under a relaxation, read from the case: required skills at their lowered
/// level, preferred ones until dropped, `vip` for a VIP case unless relaxed away.
#[derive(Debug, Clone, Copy)]
pub struct CaseNeeds<'a> {
    /// The case.
    pub case: &'a Case,
    /// The relaxation in force.
    pub relaxed: Relaxed,
}

impl Requirements for CaseNeeds<'_> {
    type Key = str;

    fn language(&self) -> (u32, Level) {
        let spec = &self.case.spec;
        (spec.language.primary_code(), spec.min_proficiency.lowered(self.relaxed.lower_min_proficiency_by))
    }

    fn skills(&self) -> impl Iterator<Item = (&str, Level)> {
        let (spec, relaxed) = (&self.case.spec, self.relaxed);
        let required = spec
            .required_skills
            .iter()
            .map(move |r| (r.skill.as_str(), r.level.lowered(relaxed.lower_skill_levels_by)));
        let preferred = spec
            .preferred_skills
            .iter()
            .filter(move |_| !relaxed.drop_preferred_skills)
            .map(|p| (p.skill.as_str(), p.level));
        required.chain(preferred)
    }

    fn market(&self) -> Option<&str> {
        self.case.spec.market.as_ref().map(Market::as_str)
    }

    fn region(&self) -> Option<&str> {
        self.case.spec.data_region.as_ref().map(DataRegion::as_str)
    }

    fn clearance(&self) -> u8 {
        self.case.spec.required_clearance
    }

    fn certifications(&self) -> impl Iterator<Item = (&str, bool)> {
        let vip = self.case.needs_vip_certified(self.relaxed).then_some((VIP_CERTIFICATION, true));
        vip.into_iter().chain(self.case.spec.required_certifications.iter().map(|c| (c.as_str(), false)))
    }
}

impl Qualifications<str> for AgentProfile {
    fn proficiency(&self, language: u32) -> Option<Level> {
        self.languages.iter().filter(|l| l.language.primary_code() == language).map(|l| l.proficiency).max()
    }

    fn skill(&self, skill: &str) -> Option<Level> {
        self.skills.get(skill).copied()
    }

    fn serves(&self, market: &str) -> bool {
        self.markets.contains(market)
    }

    fn cleared_for(&self, region: &str) -> bool {
        self.data_regions.contains(region)
    }

    fn clearance(&self) -> u8 {
        self.clearance
    }

    fn certified_until(&self, name: &str) -> Option<Millis> {
        self.certifications.get(name).copied()
    }
}

/// A case's needs compiled once for a scan of compact summaries: its names mapped to the ids
/// the summaries hold ([`Compiled::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled<K> {
    language: (u32, Level),
    skills: Vec<(K, Level)>,
    market: Option<K>,
    region: Option<K>,
    clearance: u8,
    certifications: Vec<(K, bool)>,
}

impl<K> Compiled<K> {
    /// `needs` with every name mapped by `id` (a name no summary holds must map to an id none
    /// holds, so that the rule finds it missing).
    pub fn of<N: Requirements>(needs: &N, mut id: impl FnMut(&N::Key) -> K) -> Compiled<K> {
        Compiled {
            language: needs.language(),
            skills: needs.skills().map(|(s, l)| (id(s), l)).collect(),
            market: needs.market().map(&mut id),
            region: needs.region().map(&mut id),
            clearance: needs.clearance(),
            certifications: needs.certifications().map(|(c, vip)| (id(c), vip)).collect(),
        }
    }
}

impl<K> Requirements for Compiled<K> {
    type Key = K;

    fn language(&self) -> (u32, Level) {
        self.language
    }

    fn skills(&self) -> impl Iterator<Item = (&K, Level)> {
        self.skills.iter().map(|(k, l)| (k, *l))
    }

    fn market(&self) -> Option<&K> {
        self.market.as_ref()
    }

    fn region(&self) -> Option<&K> {
        self.region.as_ref()
    }

    fn clearance(&self) -> u8 {
        self.clearance
    }

    fn certifications(&self) -> impl Iterator<Item = (&K, bool)> {
        self.certifications.iter().map(|(k, vip)| (k, *vip))
    }
}

/// The profile filters of [`matches_requirements`] over any [`Requirements`] and
/// [`Qualifications`] in the same terms: the first that fails.
pub fn check_requirements<N: Requirements, Q: Qualifications<N::Key>>(
    needs: &N,
    held: &Q,
    now: Millis,
) -> Result<(), Ineligible> {
    if language_gap(needs, held).is_some() {
        return Err(Ineligible::Language);
    }
    if skill_gaps(needs, held).next().is_some() {
        return Err(Ineligible::Skill);
    }
    if market_gap(needs, held).is_some() {
        return Err(Ineligible::Market);
    }
    if region_gap(needs, held).is_some() {
        return Err(Ineligible::DataRegion);
    }
    if clearance_gap(needs, held).is_some() {
        return Err(Ineligible::Clearance);
    }
    if let Some((_, rule, _)) = certification_gaps(needs, held, now).next() {
        return Err(rule);
    }
    Ok(())
}

/// The proficiency needed, and the agent's (`None`: does not speak it), when the agent's is
/// short.
fn language_gap<N: Requirements, Q: Qualifications<N::Key>>(needs: &N, held: &Q) -> Option<(Level, Option<Level>)> {
    let (language, need) = needs.language();
    let have = held.proficiency(language);
    have.is_none_or(|p| p < need).then_some((need, have))
}

/// The skills needed that the agent lacks: the skill, the level needed, the level held.
fn skill_gaps<'a, N: Requirements, Q: Qualifications<N::Key>>(
    needs: &'a N,
    held: &'a Q,
) -> impl Iterator<Item = (&'a N::Key, Level, Option<Level>)> + 'a {
    needs.skills().filter_map(|(s, need)| {
        let have = held.skill(s);
        have.is_none_or(|l| l < need).then_some((s, need, have))
    })
}

/// The market needed, when the agent is not contracted for it.
fn market_gap<'a, N: Requirements, Q: Qualifications<N::Key>>(needs: &'a N, held: &Q) -> Option<&'a N::Key> {
    needs.market().filter(|m| !held.serves(m))
}

/// The data region needed, when the agent is not cleared for it.
fn region_gap<'a, N: Requirements, Q: Qualifications<N::Key>>(needs: &'a N, held: &Q) -> Option<&'a N::Key> {
    needs.region().filter(|r| !held.cleared_for(r))
}

/// The agent's clearance and the one needed, when the agent's is short.
fn clearance_gap<N: Requirements, Q: Qualifications<N::Key>>(needs: &N, held: &Q) -> Option<(u8, u8)> {
    (held.clearance() < needs.clearance()).then_some((held.clearance(), needs.clearance()))
}

/// The certifications needed that the agent lacks or holds expired at `now`: the name, the
/// rule, and the expiry when expired.
fn certification_gaps<'a, N: Requirements, Q: Qualifications<N::Key>>(
    needs: &'a N,
    held: &'a Q,
    now: Millis,
) -> impl Iterator<Item = (&'a N::Key, Ineligible, Option<Millis>)> + 'a {
    needs.certifications().filter_map(move |(name, is_vip)| match held.certified_until(name) {
        None => Some((name, if is_vip { Ineligible::NotVipCertified } else { Ineligible::Certification }, None)),
        Some(until) if now >= until => Some((
            name,
            if is_vip { Ineligible::NotVipCertified } else { Ineligible::CertificationExpired },
            Some(until),
        )),
        Some(_) => None,
    })
}

/// One rule an agent fails for a case, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRule {
    /// The rule.
    pub rule: Ineligible,
    /// What exactly fails, for the agent or a planner to read.
    pub detail: String,
}

/// Every hard rule `agent` fails for `case` at `now`, each in words (empty: eligible). Unlike
/// [`eligibility`], which stops at the first, this checks them all: "why was I not offered
/// this case?". The same gap functions as [`matches_requirements`] decide; this only words them.
pub fn why_not(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> Vec<FailedRule> {
    let relaxed = case.relaxed(policy, now);
    let needs = CaseNeeds { case, relaxed };
    let spec = &case.spec;
    let profile = &agent.profile;
    let mut out = Vec::new();
    let mut fail = |rule: Ineligible, detail: String| out.push(FailedRule { rule, detail });
    if let Some(why) = agent.unready_reason(now) {
        let detail = match agent.work.capped.filter(|c| now < c.until && why == "at a working-time limit") {
            Some(c) => format!(
                "reached the {} working-time limit; may take work again in {}",
                c.limit.as_str(),
                span(c.until - now)
            ),
            None => format!("cannot take an offer now: {why}"),
        };
        fail(Ineligible::NotReady(why), detail);
    }
    if !agent.has_room(spec.channel) {
        let (load, cap) = (agent.load(spec.channel), profile.capacity_for(spec.channel));
        fail(Ineligible::NoCapacity, format!("holds {load} of {cap} {} cases", spec.channel.as_str()));
    }
    match language_gap(&needs, profile) {
        Some((_, None)) => fail(Ineligible::Language, format!("does not speak {}", spec.language.primary())),
        Some((need, Some(p))) => fail(
            Ineligible::Language,
            format!("speaks {} at {}, the case needs {}", spec.language.primary(), p.get(), need.get()),
        ),
        None => {}
    }
    for (skill, need, held) in skill_gaps(&needs, profile) {
        let detail = match held {
            None => format!("lacks skill {skill} (the case needs level {})", need.get()),
            Some(l) => format!("holds skill {skill} at {}, the case needs {}", l.get(), need.get()),
        };
        fail(Ineligible::Skill, detail);
    }
    if let Some(m) = market_gap(&needs, profile) {
        let serves: Vec<&str> = profile.markets.iter().map(|m| m.as_str()).collect();
        let serves = if serves.is_empty() { "none".to_owned() } else { serves.join(", ") };
        fail(Ineligible::Market, format!("not contracted for market {m} (serves: {serves})"));
    }
    if let Some(r) = region_gap(&needs, profile) {
        fail(Ineligible::DataRegion, format!("not cleared for personal data of region {r}"));
    }
    if let Some((held, need)) = clearance_gap(&needs, profile) {
        fail(Ineligible::Clearance, format!("personal-data clearance {held}, the case needs {need}"));
    }
    for (name, rule, expired) in certification_gaps(&needs, profile, now) {
        let detail = match expired {
            None => format!("lacks certification {name}"),
            Some(until) => format!("certification {name} expired {} ago", span(now - until)),
        };
        fail(rule, detail);
    }
    let wt = &policy.working_time;
    if let Some(limit) = crate::worktime::would_cross(agent, spec.channel, now, policy) {
        let limits = wt.limits_for(agent);
        let room = crate::worktime::room_ms(&agent.work, now, &limits).map_or(0, |(r, _)| r);
        let expected = wt.expected_handle_ms.get(spec.channel);
        fail(
            Ineligible::WorkingTime(limit),
            format!(
                "{} left before the {} working-time limit; a {} case is expected to take {}",
                span(i64::try_from(room).unwrap_or(0)),
                limit.as_str(),
                spec.channel.as_str(),
                span(i64::try_from(expected).unwrap_or(0))
            ),
        );
    }
    if let Some(until) = case.excluded.get(agent.id()).filter(|u| now < **u) {
        fail(
            Ineligible::Excluded,
            format!("declined or missed this case; it may be offered again in {}", span(until - now)),
        );
    }
    out
}

/// A duration in words, coarse: `45 s`, `12 min`, `3 h`, `2 d`.
fn span(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
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
/// - `rating`: the agent's earned rating / 5: the mean of its last `reputation.window`
///   controllable customer ratings shrunk toward `reputation.prior_mean` (a newcomer is at the
///   prior); the profile's typed-in `rating` is not used;
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
    let rating = (agent.ratings.score(&policy.reputation) / 5.0).clamp(0.0, 1.0);
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
    let mut excluded = [0u32; Ineligible::RULES.len()];
    let relaxed = case.relaxed(policy, now);
    for agent in agents {
        let a = agent.borrow();
        if limit > 0 && eligible as usize >= limit {
            break;
        }
        if let Err(why) = eligibility_relaxed(case, a, now, relaxed, policy) {
            excluded[why.slot()] += 1;
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
    let excluded =
        Ineligible::RULES.iter().zip(excluded).filter(|(_, n)| *n > 0).map(|(r, n)| (r.code().to_owned(), n)).collect();
    Explanation { candidates, eligible, relaxations: relaxed.describe(), excluded }
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
