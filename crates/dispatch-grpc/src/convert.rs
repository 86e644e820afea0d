//! Conversions between `dispatch.v1` messages and domain values. Incoming messages are
//! destructured exhaustively, so a new proto field does not compile until it is given a
//! meaning here; validation itself is the domain's (`*::parse`), with field paths.

use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput, SkillLevel};
use dispatch_domain::state::{CandidateScore, Explanation, OfferOutcome, OfferRecord};
use dispatch_domain::stats::{Availability, AvailabilityFilter, Counts, GroupBy};
use dispatch_domain::{
    Activity, Agent, AgentStatus, Case, CaseState, Channel, FieldError, Language, Level, Millis, Policy, Skill,
    TenantId, Tier,
};
use dispatch_engine::{AgentNotice, CaseEvent, CaseEventKind, Counter, QueueStats, StreamEnd};
use dispatch_proto::v1 as pb;

use crate::error;

fn prefixed(prefix: &str) -> impl Fn(FieldError) -> FieldError + '_ {
    move |e| e.under(prefix)
}

use dispatch_domain::demand::{WaitBand, WaitEstimate};

/// An enum number the proto does not define: named as such, with the values it may take.
fn unknown(field: &str, what: &str, v: i32, allowed: &str) -> FieldError {
    FieldError::new(field, format!("{what} {v} is not a known {what}; {allowed}"))
}

/// Proto channel → domain (`None` for unspecified; an unknown number is an error).
pub(crate) fn channel_from(field: &str, v: i32) -> Result<Option<Channel>, FieldError> {
    match pb::Channel::try_from(v) {
        Err(_) => Err(unknown(field, "channel", v, "CHANNEL_VOICE, CHANNEL_CHAT or CHANNEL_EMAIL")),
        Ok(pb::Channel::Unspecified) => Ok(None),
        Ok(pb::Channel::Voice) => Ok(Some(Channel::Voice)),
        Ok(pb::Channel::Chat) => Ok(Some(Channel::Chat)),
        Ok(pb::Channel::Email) => Ok(Some(Channel::Email)),
    }
}

fn channel_to(c: Channel) -> pb::Channel {
    match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Chat => pb::Channel::Chat,
        Channel::Email => pb::Channel::Email,
    }
}

pub(crate) fn tier_from(field: &str, v: i32) -> Result<Option<Tier>, FieldError> {
    match pb::Tier::try_from(v) {
        Err(_) => Err(unknown(field, "tier", v, "TIER_STANDARD or TIER_VIP")),
        Ok(pb::Tier::Unspecified) => Ok(None),
        Ok(pb::Tier::Standard) => Ok(Some(Tier::Standard)),
        Ok(pb::Tier::Vip) => Ok(Some(Tier::Vip)),
    }
}

fn tier_to(t: Tier) -> pb::Tier {
    match t {
        Tier::Standard => pb::Tier::Standard,
        Tier::Vip => pb::Tier::Vip,
    }
}

/// Proto agent status → domain (unspecified or unknown is an error naming `field`).
pub(crate) fn status_from(field: &str, v: i32) -> Result<AgentStatus, FieldError> {
    const ALLOWED: &str = "AGENT_STATUS_AVAILABLE, AGENT_STATUS_AWAY or AGENT_STATUS_OFFLINE";
    match pb::AgentStatus::try_from(v) {
        Err(_) => Err(unknown(field, "status", v, ALLOWED)),
        Ok(pb::AgentStatus::Unspecified) => Err(FieldError::new(field, format!("is required: {ALLOWED}"))),
        Ok(pb::AgentStatus::Offline) => Ok(AgentStatus::Offline),
        Ok(pb::AgentStatus::Available) => Ok(AgentStatus::Available),
        Ok(pb::AgentStatus::Away) => Ok(AgentStatus::Away),
    }
}

fn status_to(s: AgentStatus) -> pb::AgentStatus {
    match s {
        AgentStatus::Offline => pb::AgentStatus::Offline,
        AgentStatus::Available => pb::AgentStatus::Available,
        AgentStatus::Away => pb::AgentStatus::Away,
    }
}

fn activity_to(a: Activity) -> pb::Activity {
    match a {
        Activity::Offline => pb::Activity::Offline,
        Activity::Available => pb::Activity::Available,
        Activity::Busy => pb::Activity::Busy,
        Activity::Away => pb::Activity::Away,
        Activity::Reconnecting => pb::Activity::Reconnecting,
    }
}

fn skills_to(skills: &[SkillLevel]) -> Vec<pb::SkillLevel> {
    skills.iter().map(|s| pb::SkillLevel { skill: s.skill.to_string(), level: u32::from(s.level.get()) }).collect()
}

/// `AgentProfile` (under field `prefix`) → domain profile.
pub(crate) fn profile_from(
    p: &pb::AgentProfile,
    prefix: &str,
    limits: &dispatch_domain::limits::Limits,
) -> Result<AgentProfile, FieldError> {
    let pb::AgentProfile {
        agent_id,
        display_name,
        languages,
        skills,
        vip_certified,
        capacity,
        rating,
        markets,
        data_regions,
        clearance,
        certifications,
        work_limits,
        call_in,
    } = p;
    let call_in = call_in
        .as_ref()
        .map(|c| {
            let pb::CallInPreferences { languages, max_per_day, quiet_from_min, quiet_to_min, utc_offset_min } = c;
            dispatch_domain::callin::CallInPrefs::parse(
                "call_in",
                dispatch_domain::callin::CallInInput {
                    languages: languages.iter().map(String::as_str).collect(),
                    max_per_day: *max_per_day,
                    quiet_from_min: *quiet_from_min,
                    quiet_to_min: *quiet_to_min,
                    utc_offset_min: *utc_offset_min,
                },
            )
        })
        .transpose()
        .map_err(prefixed(prefix))?;
    let channels = capacity
        .iter()
        .enumerate()
        .map(|(i, c)| channel_from(&format!("capacity[{i}].channel"), c.channel))
        .collect::<Result<Vec<_>, _>>()
        .map_err(prefixed(prefix))?;
    AgentProfile::parse(
        AgentProfileInput {
            id: agent_id,
            display_name,
            languages: languages
                .iter()
                .map(|l| {
                    let pb::LanguageProficiency { language, proficiency } = l;
                    (language.as_str(), *proficiency)
                })
                .collect(),
            skills: skills
                .iter()
                .map(|s| {
                    let pb::SkillLevel { skill, level } = s;
                    (skill.as_str(), *level)
                })
                .collect(),
            vip_certified: *vip_certified,
            capacity: capacity
                .iter()
                .zip(channels)
                .map(|(c, channel)| {
                    let pb::ChannelCapacity { channel: _, capacity } = c;
                    (channel, *capacity)
                })
                .collect(),
            rating: *rating,
            markets: markets.iter().map(String::as_str).collect(),
            data_regions: data_regions.iter().map(String::as_str).collect(),
            clearance: *clearance,
            certifications: certifications
                .iter()
                .map(|c| {
                    // `valid` is read only.
                    let pb::Certification { name, expires_at_ms, valid: _ } = c;
                    (name.as_str(), *expires_at_ms)
                })
                .collect(),
            work_limits: work_limits.as_ref().map(|w| {
                let pb::WorkLimits { max_continuous_ms, break_ms, max_per_day_ms, max_per_week_ms } = w;
                dispatch_domain::worktime::WorkLimits {
                    max_continuous_ms: *max_continuous_ms,
                    break_ms: *break_ms,
                    max_per_day_ms: *max_per_day_ms,
                    max_per_week_ms: *max_per_week_ms,
                }
            }),
            call_in,
        },
        limits,
    )
    .map_err(prefixed(prefix))
}

fn profile_to(p: &AgentProfile, now: Millis) -> pb::AgentProfile {
    pb::AgentProfile {
        agent_id: p.id.to_string(),
        display_name: p.display_name.clone(),
        languages: p
            .languages
            .iter()
            .map(|l| pb::LanguageProficiency {
                language: l.language.to_string(),
                proficiency: u32::from(l.proficiency.get()),
            })
            .collect(),
        skills: p
            .skills
            .iter()
            .map(|(s, l)| pb::SkillLevel { skill: s.to_string(), level: u32::from(l.get()) })
            .collect(),
        vip_certified: p.vip_certified(now),
        capacity: p
            .capacity
            .iter()
            .map(|(c, n)| pb::ChannelCapacity { channel: channel_to(*c) as i32, capacity: *n })
            .collect(),
        rating: p.rating,
        markets: p.markets.iter().map(ToString::to_string).collect(),
        data_regions: p.data_regions.iter().map(ToString::to_string).collect(),
        clearance: u32::from(p.clearance),
        certifications: p
            .certifications
            .iter()
            .map(|(c, until)| pb::Certification {
                name: c.to_string(),
                expires_at_ms: if *until == Millis::MAX { 0 } else { *until },
                valid: now < *until,
            })
            .collect(),
        work_limits: p.work_limits.map(|w| pb::WorkLimits {
            max_continuous_ms: w.max_continuous_ms,
            break_ms: w.break_ms,
            max_per_day_ms: w.max_per_day_ms,
            max_per_week_ms: w.max_per_week_ms,
        }),
        call_in: p.call_in.as_ref().map(|c| pb::CallInPreferences {
            languages: c.languages.clone(),
            max_per_day: c.max_per_day,
            quiet_from_min: u32::from(c.quiet_from_min),
            quiet_to_min: u32::from(c.quiet_to_min),
            utc_offset_min: i32::from(c.utc_offset_min),
        }),
    }
}

/// An invitation on `agent`'s record → proto.
pub fn invitation_to(i: &dispatch_domain::callin::Invitation, agent: &Agent) -> pb::Invitation {
    use dispatch_domain::callin::InvitationOutcome as O;
    let outcome = match i.outcome {
        O::Pending => pb::InvitationOutcome::Pending,
        O::CameOnline => pb::InvitationOutcome::CameOnline,
        O::Declined => pb::InvitationOutcome::Declined,
        O::Ignored => pb::InvitationOutcome::Ignored,
    };
    pb::Invitation {
        invitation_id: i.id.clone(),
        agent_id: agent.id().to_string(),
        display_name: agent.profile.display_name.clone(),
        segment: i.segment.clone(),
        sent_at_ms: i.sent_at,
        expires_at_ms: i.expires_at,
        outcome: outcome as i32,
        answered_at_ms: i.answered_at,
        delivered_at_ms: i.delivered_at,
        incentive: i.incentive.clone(),
    }
}

fn remaining(until: Millis, now: Millis) -> u64 {
    u64::try_from(until - now).unwrap_or(0)
}

/// Domain agent → proto, with remaining times measured at `now`.
pub fn agent_to(a: &Agent, now: Millis, policy: &Policy) -> pb::Agent {
    let reputation = &policy.reputation;
    // Day and week figures do not depend on the limits.
    let used = a.work.used(now, &dispatch_domain::worktime::WorkLimits::default());
    let capped = a.work.capped.filter(|c| now < c.until);
    pb::Agent {
        profile: Some(profile_to(&a.profile, now)),
        presence: Some(pb::AgentPresence {
            status: status_to(a.status) as i32,
            activity: activity_to(a.activity(now)) as i32,
            connected: a.connected(),
            pending_offer_id: a.pending_offer.as_ref().map(|o| o.offer_id.to_string()).unwrap_or_default(),
            assigned_case_ids: a.assignments.keys().map(ToString::to_string).collect(),
            consecutive_misses: a.consecutive_misses,
            wrap_up_remaining_ms: remaining(a.wrap_up_until, now),
            cool_down_remaining_ms: remaining(a.cool_down_until, now),
            offers_received: a.offers_received,
            offers_accepted: a.offers_accepted,
            hand_backs: a.hand_backs,
            engaged_today_ms: used.day_ms,
            engaged_week_ms: used.week_ms,
            capped_limit: capped.map(|c| c.limit.as_str().to_owned()).unwrap_or_default(),
            capped_remaining_ms: capped.map_or(0, |c| remaining(c.until, now)),
            reputation: a.ratings.score(reputation),
            ratings_total: a.ratings.total,
            ratings_controllable: a.ratings.controllable,
            invitation: a.invitation.as_ref().map(|i| invitation_to(i, a)),
            invitations_sent: a.call_in.sent,
            invitations_answered: a.call_in.came_online,
        }),
        version: a.version,
    }
}

/// `CaseSpec` (under field `prefix`) → domain spec.
pub(crate) fn spec_from(s: &pb::CaseSpec, prefix: &str, policy: &Policy) -> Result<CaseSpec, FieldError> {
    let pb::CaseSpec {
        case_id,
        language,
        min_language_proficiency,
        required_skills,
        preferred_skills,
        tier,
        priority,
        channel,
        summary,
        sentiment,
        customer_id,
        previous_agent_id,
        ttl_ms,
        market,
        data_region,
        required_clearance,
        required_certifications,
    } = s;
    let pairs = |v: &'_ [pb::SkillLevel]| -> Vec<(String, u32)> {
        v.iter()
            .map(|s| {
                let pb::SkillLevel { skill, level } = s;
                (skill.clone(), *level)
            })
            .collect()
    };
    let (req, pref) = (pairs(required_skills), pairs(preferred_skills));
    let tier = tier_from("tier", *tier).map_err(prefixed(prefix))?;
    let channel = channel_from("channel", *channel).map_err(prefixed(prefix))?;
    CaseSpec::parse(
        CaseSpecInput {
            id: case_id,
            language,
            min_proficiency: *min_language_proficiency,
            required_skills: req.iter().map(|(s, l)| (s.as_str(), *l)).collect(),
            preferred_skills: pref.iter().map(|(s, l)| (s.as_str(), *l)).collect(),
            tier,
            priority: *priority,
            channel,
            summary,
            sentiment: *sentiment,
            customer_id,
            previous_agent_id,
            ttl_ms: *ttl_ms,
            market,
            data_region,
            required_clearance: *required_clearance,
            required_certifications: required_certifications.iter().map(String::as_str).collect(),
        },
        policy.default_min_level(),
        &policy.limits,
    )
    .map_err(prefixed(prefix))
}

fn spec_to(s: &CaseSpec, viewer: Option<&TenantId>) -> pb::CaseSpec {
    pb::CaseSpec {
        case_id: s.id.as_seen_by(viewer).to_owned(),
        language: s.language.to_string(),
        min_language_proficiency: u32::from(s.min_proficiency.get()),
        required_skills: skills_to(&s.required_skills),
        preferred_skills: skills_to(&s.preferred_skills),
        tier: tier_to(s.tier) as i32,
        priority: u32::from(s.priority),
        channel: channel_to(s.channel) as i32,
        summary: s.summary.clone(),
        sentiment: s.sentiment,
        customer_id: s.customer.as_ref().map(ToString::to_string).unwrap_or_default(),
        previous_agent_id: s.previous_agent.as_ref().map(ToString::to_string).unwrap_or_default(),
        ttl_ms: s.ttl_ms.unwrap_or(0),
        market: s.market.as_ref().map(ToString::to_string).unwrap_or_default(),
        data_region: s.data_region.as_ref().map(ToString::to_string).unwrap_or_default(),
        required_clearance: u32::from(s.required_clearance),
        required_certifications: s.required_certifications.iter().map(ToString::to_string).collect(),
    }
}

/// The case summary an agent sees in an offer.
pub fn summary_to(s: &CaseSpec) -> pb::CaseSummary {
    pb::CaseSummary {
        case_id: s.id.to_string(),
        language: s.language.to_string(),
        required_skills: skills_to(&s.required_skills),
        preferred_skills: skills_to(&s.preferred_skills),
        tier: tier_to(s.tier) as i32,
        channel: channel_to(s.channel) as i32,
        summary: s.summary.clone(),
        sentiment: s.sentiment,
        priority: u32::from(s.priority),
        customer_id: s.customer.as_ref().map(ToString::to_string).unwrap_or_default(),
        market: s.market.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

fn figures_to(d: &dispatch_domain::worktime::DayFigures) -> pb::AgentFigures {
    pb::AgentFigures {
        offers_received: d.offers,
        offers_accepted: d.accepted,
        offers_declined: d.declined,
        offers_missed: d.missed,
        cases_handled: d.handled,
        engaged_ms: d.engaged_ms,
    }
}

/// Why an agent gets no offers, and its figures → proto.
pub fn agent_explanation_to(e: &dispatch_engine::api::planner::AgentExplanation) -> pb::ExplainAgentResponse {
    pb::ExplainAgentResponse {
        reasons: e
            .reasons
            .iter()
            .map(|r| pb::NoOfferReason {
                code: r.code.to_owned(),
                detail: r.detail.clone(),
                until_ms: r.until.unwrap_or(0),
            })
            .collect(),
        today: Some(figures_to(&e.today)),
        last_7_days: Some(figures_to(&e.week)),
        reputation: e.reputation,
        ratings_total: e.ratings.0,
        ratings_controllable: e.ratings.1,
        hand_backs: e.hand_backs,
        at_ms: e.at,
    }
}

/// Fairness figures → proto.
pub fn fairness_to(f: &dispatch_engine::api::planner::Fairness) -> pb::GetFairnessResponse {
    pb::GetFairnessResponse {
        agents: f.agents,
        offers: f.offers,
        offers_gini: f.offers_gini,
        offers_top_decile_share: f.offers_top_decile_share,
        engaged_ms: f.engaged_ms,
        engaged_gini: f.engaged_gini,
        waits: f
            .waits
            .iter()
            .map(|(tier, assigned, mean)| pb::TierWaits {
                tier: tier_to(*tier) as i32,
                assigned: *assigned,
                mean_wait_ms: *mean,
            })
            .collect(),
        hand_backs: f.hand_backs,
        top_hand_backs: f
            .top_hand_backs
            .iter()
            .map(|(a, n)| pb::AgentHandBacks { agent_id: a.to_string(), hand_backs: *n })
            .collect(),
        at_ms: f.at,
    }
}

/// The allocation parameters → proto.
pub fn allocation_to(p: &dispatch_engine::api::planner::AllocationPolicy) -> pb::AllocationPolicy {
    let a = &p.parameters;
    pb::AllocationPolicy {
        changes: p
            .changes
            .iter()
            .map(|c| {
                let w = &c.weights;
                pb::WeightChange {
                    at_ms: c.at,
                    by: c.by.clone(),
                    weights: [
                        ("language", w.language),
                        ("skill_depth", w.skill_depth),
                        ("rating", w.rating),
                        ("idle", w.idle),
                        ("acceptance", w.acceptance),
                        ("affinity", w.affinity),
                    ]
                    .into_iter()
                    .map(|(t, v)| (t.to_owned(), v))
                    .collect(),
                }
            })
            .collect(),
        filters: a
            .filters
            .iter()
            .map(|f| pb::AllocationFilter { code: f.code.to_owned(), description: f.description.to_owned() })
            .collect(),
        weights: a
            .weights
            .iter()
            .map(|w| pb::AllocationWeight {
                term: w.term.to_owned(),
                weight: w.weight,
                share: w.share,
                description: w.description.to_owned(),
            })
            .collect(),
        text: a.text.clone(),
    }
}

/// Why an agent may or may not be offered a case → proto.
pub fn match_explanation_to(e: &dispatch_engine::api::planner::MatchExplanation) -> pb::ExplainMatchResponse {
    pb::ExplainMatchResponse {
        eligible: e.failed.is_empty(),
        failed: e
            .failed
            .iter()
            .map(|f| pb::FailedRule { rule: f.rule.code().to_owned(), detail: f.detail.clone() })
            .collect(),
        score: e.score.as_ref().map(candidate_to),
        relaxations: e.relaxations.clone(),
        case_state: state_to(&e.case_state) as i32,
        at_ms: e.at,
    }
}

fn state_to(s: &CaseState) -> pb::CaseState {
    match s {
        CaseState::Queued => pb::CaseState::Queued,
        CaseState::Offered { .. } => pb::CaseState::Offered,
        CaseState::Assigned { .. } => pb::CaseState::Assigned,
        CaseState::Completed => pb::CaseState::Completed,
        CaseState::Cancelled => pb::CaseState::Cancelled,
        CaseState::Expired => pb::CaseState::Expired,
    }
}

fn outcome_to(o: OfferOutcome) -> pb::OfferOutcome {
    match o {
        OfferOutcome::Pending => pb::OfferOutcome::Pending,
        OfferOutcome::Accepted => pb::OfferOutcome::Accepted,
        OfferOutcome::Declined => pb::OfferOutcome::Declined,
        OfferOutcome::TimedOut => pb::OfferOutcome::TimedOut,
        OfferOutcome::Revoked => pb::OfferOutcome::Revoked,
    }
}

fn candidate_to(c: &CandidateScore) -> pb::CandidateScore {
    pb::CandidateScore {
        agent_id: c.agent_id.to_string(),
        total: c.total,
        terms: c
            .terms
            .iter()
            .map(|t| pb::ScoreTerm {
                name: t.name.as_str().to_owned(),
                value: t.value,
                weight: t.weight,
                contribution: t.contribution(),
            })
            .collect(),
    }
}

fn explanation_to(e: &Explanation) -> pb::Explanation {
    pb::Explanation {
        candidates: e.candidates.iter().map(candidate_to).collect(),
        eligible: e.eligible,
        relaxations: e.relaxations.clone(),
        excluded: e.excluded.iter().map(|(rule, n)| pb::ExclusionCount { rule: rule.clone(), agents: *n }).collect(),
    }
}

fn offer_to(case: &Case, o: &OfferRecord, viewer: Option<&TenantId>) -> pb::Offer {
    pb::Offer {
        offer_id: o.id.to_string(),
        case_id: case.id().as_seen_by(viewer).to_owned(),
        agent_id: o.agent_id.to_string(),
        outcome: outcome_to(o.outcome) as i32,
        offered_at_ms: o.offered_at,
        deadline_ms: o.deadline,
        decided_at_ms: o.decided_at,
        reason: o.reason.clone(),
        explanation: Some(explanation_to(&o.explanation)),
        handed_back_at_ms: o.handed_back_at,
    }
}

/// Domain case → proto, with the wait and relaxation measured at `now`, as `viewer` (the
/// caller's tenant) names it.
pub fn case_to(c: &Case, now: Millis, policy: &Policy, viewer: Option<&TenantId>) -> pb::Case {
    let relaxations = if c.state.is_terminal() { Vec::new() } else { c.relaxed(policy, now).describe() };
    pb::Case {
        spec: Some(spec_to(&c.spec, viewer)),
        state: state_to(&c.state) as i32,
        version: c.version,
        created_at_ms: c.created_at,
        current_agent_id: c.current_agent().map(ToString::to_string).unwrap_or_default(),
        offers: c.offers.iter().map(|o| offer_to(c, o, viewer)).collect(),
        outcome: c.close_reason.clone(),
        relaxations,
        waited_ms: c.waited_ms(now),
        rating: c.rating.map_or(0, |r| u32::from(r.stars)),
        rating_agent_controllable: c.rating.is_some_and(|r| r.controllable),
        estimate: c.waiting_estimate().map(|e| estimate_to(&e, now)),
    }
}

/// A wait band → proto.
fn band_to(b: WaitBand) -> pb::WaitBand {
    match b {
        WaitBand::Unknown => pb::WaitBand::Unknown,
        WaitBand::UnderOneMinute => pb::WaitBand::UnderOneMinute,
        WaitBand::OneToThreeMinutes => pb::WaitBand::OneToThreeMinutes,
        WaitBand::ThreeToTenMinutes => pb::WaitBand::ThreeToTenMinutes,
        WaitBand::OverTenMinutes => pb::WaitBand::OverTenMinutes,
    }
}

/// A stored estimate as of `now` → proto.
pub fn estimate_to(e: &WaitEstimate, now: Millis) -> pb::WaitEstimate {
    let left = e.remaining_ms(now);
    let band = WaitBand::of(left);
    pb::WaitEstimate {
        known: left.is_some(),
        wait_ms: left.unwrap_or(0),
        band: band_to(band) as i32,
        band_text: band.text().to_owned(),
        estimated_at_ms: e.at,
        as_of_ms: now,
        estimated_wait_ms: e.wait_ms.unwrap_or(0),
        cases_ahead: e.position.cases_ahead,
        slots_to_free: e.position.slots_to_free,
    }
}

/// A case event → proto, as `viewer` (the watcher's tenant) names the case.
pub fn event_to(e: &CaseEvent, viewer: Option<&TenantId>) -> pb::CaseEvent {
    let kind = match e.kind {
        CaseEventKind::Snapshot => pb::CaseEventKind::Snapshot,
        CaseEventKind::Queued => pb::CaseEventKind::Queued,
        CaseEventKind::Offered => pb::CaseEventKind::Offered,
        CaseEventKind::Declined => pb::CaseEventKind::Declined,
        CaseEventKind::OfferTimedOut => pb::CaseEventKind::OfferTimedOut,
        CaseEventKind::OfferRevoked => pb::CaseEventKind::OfferRevoked,
        CaseEventKind::Assigned => pb::CaseEventKind::Assigned,
        CaseEventKind::HandedBack => pb::CaseEventKind::HandedBack,
        CaseEventKind::Completed => pb::CaseEventKind::Completed,
        CaseEventKind::Cancelled => pb::CaseEventKind::Cancelled,
        CaseEventKind::Expired => pb::CaseEventKind::Expired,
        CaseEventKind::WaitEstimated => pb::CaseEventKind::WaitEstimated,
    };
    pb::CaseEvent {
        case_id: e.case_id.as_seen_by(viewer).to_owned(),
        kind: kind as i32,
        version: e.version,
        at_ms: e.at,
        agent_id: e.agent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        offer_id: e.offer_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        reason: e.reason.clone(),
        state: state_to(&e.state) as i32,
        estimate: e.estimate.map(|est| estimate_to(&est, e.at)),
    }
}

/// An engine notice → the message on the agent's stream; an error status is the stream's last
/// word (see `DispatcherMessage` in the proto for what the app should do).
pub fn notice_to(n: AgentNotice) -> Result<pb::DispatcherMessage, tonic::Status> {
    use pb::dispatcher_message::Event;
    let event = match n {
        AgentNotice::Ended { why } => {
            let reason = match why {
                StreamEnd::SignedOut => pb::SessionEndReason::SignedOut,
                StreamEnd::Replaced => pb::SessionEndReason::Replaced,
                StreamEnd::Removed => pb::SessionEndReason::Removed,
                StreamEnd::ServerShutdown => {
                    return Err(error::unavailable("dispatcher shutting down: reconnect"));
                }
                StreamEnd::LeaseLost => {
                    return Err(error::unavailable("this session's presence lease ran out: reconnect"));
                }
                StreamEnd::HeartbeatTimeout => {
                    return Err(error::unavailable("no heartbeat within the timeout: reconnect"));
                }
                StreamEnd::TooSlow => {
                    return Err(error::unavailable("the device did not read its stream: reconnect"));
                }
                StreamEnd::CredentialsExpired => {
                    return Err(tonic::Status::unauthenticated("stream age or credentials expired; reconnect"));
                }
            };
            Event::Ended(pb::SessionEnded { reason: reason as i32 })
        }
        AgentNotice::Offer { offer_id, case, remaining_ms } => {
            Event::Offer(pb::OfferMade { offer_id: offer_id.to_string(), case: Some(summary_to(&case)), remaining_ms })
        }
        AgentNotice::OfferRevoked { offer_id, case_id, reason } => Event::OfferRevoked(pb::OfferRevoked {
            offer_id: offer_id.to_string(),
            case_id: case_id.to_string(),
            reason: reason.as_str().to_owned(),
        }),
        AgentNotice::Assigned { offer_id, case } => {
            Event::Assignment(pb::AssignmentConfirmed { offer_id: offer_id.to_string(), case: Some(summary_to(&case)) })
        }
        AgentNotice::HandedBack { offer_id, case_id, reason } => Event::HandedBack(pb::CaseHandedBack {
            offer_id: offer_id.to_string(),
            case_id: case_id.to_string(),
            reason: reason.as_str().to_owned(),
        }),
        AgentNotice::ActivityWarning { case_id, remaining_ms } => {
            Event::ActivityWarning(pb::ActivityWarning { case_id: case_id.to_string(), remaining_ms })
        }
        AgentNotice::WorkingTimeLimit { limit, remaining_ms } => {
            Event::WorkingTime(pb::WorkingTimeLimit { limit: limit.as_str().to_owned(), resume_in_ms: remaining_ms })
        }
        AgentNotice::AgentExplanation(e) => Event::Explained(agent_explanation_to(&e)),
        AgentNotice::AllocationParameters(a) => Event::AllocationPolicy(allocation_to(&a)),
        AgentNotice::Explanation { case_id, explanation } => Event::Explanation(pb::MatchExplained {
            case_id: case_id.to_string(),
            explanation: Some(match_explanation_to(&explanation)),
        }),
        AgentNotice::Status { status, activity, reason, assignments } => Event::Status(pb::StatusChanged {
            status: status_to(status) as i32,
            activity: activity_to(activity) as i32,
            reason: reason.as_str().to_owned(),
            assigned_case_ids: assignments.iter().map(ToString::to_string).collect(),
        }),
        AgentNotice::Result { request_id, outcome } => {
            let mut result = pb::CommandResult { request_id, ..pb::CommandResult::default() };
            if let Err(e) = outcome {
                let details = error::Details::of(&e);
                result.code = error::code(&e) as i32;
                result.message = e.to_string();
                result.reason = details.reason.unwrap_or_default().to_owned();
                result.field = details.field.map(|f| f.field).unwrap_or_default();
                result.retry_after_ms = details.retry.map_or(0, |d| d.as_millis() as u32);
            }
            Event::Result(result)
        }
    };
    Ok(pb::DispatcherMessage { event: Some(event) })
}

/// `AvailabilityFilter` and group-by list (under `prefix`) → domain.
pub(crate) fn filter_from(
    limits: &dispatch_domain::limits::Limits,
    f: Option<&pb::AvailabilityFilter>,
    group_by: &[i32],
    prefix: &str,
) -> Result<(AvailabilityFilter, Vec<GroupBy>), FieldError> {
    let mut filter = AvailabilityFilter::default();
    if let Some(pb::AvailabilityFilter { languages, min_language_proficiency, skills, vip_certified_only, markets }) = f
    {
        if markets.len() > limits.max_skills {
            return Err(FieldError::new(format!("{prefix}filter.markets"), "too many markets"));
        }
        for (i, m) in markets.iter().enumerate() {
            filter.markets.push(dispatch_domain::model::Market::parse(&format!("{prefix}filter.markets[{i}]"), m)?);
        }
        for (i, l) in languages.iter().enumerate() {
            filter.languages.push(Language::parse(&format!("{prefix}filter.languages[{i}]"), l)?);
        }
        if *min_language_proficiency > 0 {
            filter.min_proficiency =
                Some(Level::parse(&format!("{prefix}filter.min_language_proficiency"), *min_language_proficiency)?);
        }
        if skills.len() > limits.max_skills || languages.len() > limits.max_languages {
            return Err(FieldError::new(format!("{prefix}filter"), "too many skills or languages"));
        }
        for (i, s) in skills.iter().enumerate() {
            let pb::SkillLevel { skill, level } = s;
            filter.skills.push(SkillLevel {
                skill: Skill::parse(&format!("{prefix}filter.skills[{i}].skill"), skill)?,
                level: Level::parse(&format!("{prefix}filter.skills[{i}].level"), *level)?,
            });
        }
        filter.vip_certified_only = *vip_certified_only;
    }
    let mut dims = Vec::new();
    for (i, g) in group_by.iter().enumerate() {
        let field = format!("{prefix}group_by[{i}]");
        let dim = match pb::GroupBy::try_from(*g) {
            Ok(pb::GroupBy::Language) => GroupBy::Language,
            Ok(pb::GroupBy::Skill) => GroupBy::Skill,
            Ok(pb::GroupBy::Tier) => GroupBy::Tier,
            Ok(pb::GroupBy::Activity) => GroupBy::Activity,
            Ok(pb::GroupBy::Unspecified) | Err(_) => {
                return Err(FieldError::new(field, format!("{g} is not a grouping")));
            }
        };
        if dims.contains(&dim) {
            return Err(FieldError::new(field, "grouping listed twice"));
        }
        dims.push(dim);
    }
    Ok((filter, dims))
}

fn counts_to(c: &Counts) -> pb::AvailabilityCounts {
    let Counts { registered, online, available, busy, away, offline, reconnecting } = *c;
    pb::AvailabilityCounts { registered, online, available, busy, away, offline, reconnecting }
}

/// Planner counts → report.
pub fn report_to(a: &Availability, now: Millis) -> pb::AvailabilityReport {
    pb::AvailabilityReport {
        total: Some(counts_to(&a.total)),
        groups: a
            .groups
            .iter()
            .map(|(k, c)| pb::AvailabilityGroup {
                language: k.language.clone().unwrap_or_default(),
                skill: k.skill.clone().unwrap_or_default(),
                tier: k.tier.unwrap_or_default().to_owned(),
                activity: k.activity.map_or(pb::Activity::Unspecified, activity_to) as i32,
                counts: Some(counts_to(c)),
            })
            .collect(),
        at_ms: now,
    }
}

/// Queue stats → response.
pub fn queue_stats_to(s: &QueueStats) -> pb::GetQueueStatsResponse {
    let c = |k: Counter| u64::try_from(s.counters.get(&k).copied().unwrap_or(0)).unwrap_or(0);
    pb::GetQueueStatsResponse {
        waiting: s.waiting,
        offered: s.offered,
        assigned: s.assigned,
        oldest_wait_ms: s.oldest_wait_ms,
        groups: s
            .groups
            .iter()
            .map(|g| pb::WaitingGroup {
                tier: tier_to(g.tier) as i32,
                language: g.language.clone(),
                waiting: g.waiting,
                oldest_wait_ms: g.oldest_wait_ms,
            })
            .collect(),
        submitted_total: c(Counter::Submitted),
        offers_made: c(Counter::OffersMade),
        offers_accepted: c(Counter::OffersAccepted),
        offers_declined: c(Counter::OffersDeclined),
        offers_timed_out: c(Counter::OffersTimedOut),
        offers_revoked: c(Counter::OffersRevoked),
        completed_total: c(Counter::Completed),
        cancelled_total: c(Counter::Cancelled),
        expired_total: c(Counter::Expired),
        mean_time_to_accept_ms: s.mean_time_to_accept_ms,
        handed_back_total: c(Counter::HandedBack),
    }
}

/// A staffing outcome → proto (unreachable: `reachable` false).
fn staffing_to(s: &Option<dispatch_domain::queueing::Staffing>) -> pb::StaffingOutcome {
    match s {
        None => pb::StaffingOutcome::default(),
        Some(s) => pb::StaffingOutcome {
            reachable: true,
            agents_on_queue: s.on_queue,
            agents_scheduled: s.scheduled,
            service_level: s.outcome.service_level,
            average_speed_of_answer_ms: s.outcome.average_wait_s * 1000.0,
            probability_of_waiting: s.outcome.p_wait,
            occupancy: s.outcome.occupancy,
            abandonment: s.outcome.p_abandon,
        },
    }
}

/// A planner's segment view → proto.
pub fn segment_demand_to(d: &dispatch_engine::demand::SegmentDemand, now: Millis) -> pb::SegmentDemand {
    let seg = &d.segment;
    let rates = |r: &dispatch_domain::demand::Rates| pb::SegmentRates {
        window_ms: r.window_ms,
        arrived: u64::try_from(r.arrived).unwrap_or(0),
        arrivals_per_hour: r.arrivals_per_hour,
        answered: u64::try_from(r.answered).unwrap_or(0),
        abandoned: u64::try_from(r.abandoned).unwrap_or(0),
        abandonment: r.abandonment,
        patience_ms: r.patience_ms.unwrap_or(0.0),
        mean_answer_wait_ms: r.mean_answer_wait_ms.unwrap_or(0.0),
        answered_in_target: r.answered_in_target.unwrap_or(0.0),
        completed: u64::try_from(r.completed).unwrap_or(0),
        mean_handle_ms: r.mean_handle_ms.unwrap_or(0.0),
        offers_made: u64::try_from(r.offered).unwrap_or(0),
        accept_ratio: r.accept_ratio.unwrap_or(0.0),
        mean_time_to_accept_ms: r.mean_time_to_accept_ms.unwrap_or(0.0),
        invited: u64::try_from(r.invited).unwrap_or(0),
        called_in: u64::try_from(r.called_in).unwrap_or(0),
        invitations_declined: u64::try_from(r.invite_declined).unwrap_or(0),
        invitations_ignored: u64::try_from(r.invite_ignored).unwrap_or(0),
        conversion: r.conversion.unwrap_or(0.0),
        mean_time_to_sign_in_ms: r.mean_time_to_sign_in_ms.unwrap_or(0.0),
    };
    let s = &d.supply;
    let a = &d.advice;
    pb::SegmentDemand {
        segment: Some(pb::Segment {
            key: seg.key(),
            language: seg.language.clone(),
            tier: tier_to(seg.tier) as i32,
            channel: channel_to(seg.channel) as i32,
            skills: seg.skills.iter().map(|s| s.as_str().to_owned()).collect(),
        }),
        rates: d.rates.iter().map(rates).collect(),
        supply: Some(pb::SegmentSupply {
            serving: s.serving,
            free: s.free,
            slots: s.slots,
            free_slots: s.free_slots,
            away: s.away,
        }),
        waiting: d.waiting,
        oldest_wait_ms: d.oldest_wait_ms,
        estimate: Some(estimate_to(&d.estimate, now)),
        advice: Some(pb::StaffingAdvice {
            erlangs: a.load.map_or(0.0, |l| l.erlangs()),
            handle_ms: a.handle_ms,
            patience_ms: a.patience_ms.unwrap_or(0.0),
            target_answer_ms: i64::try_from(d.target.answer_within_ms).unwrap_or(i64::MAX),
            target_service_level: d.target.service_level,
            erlang_c: a.erlang_c.is_some().then(|| staffing_to(&a.erlang_c)),
            erlang_a: a.erlang_a.is_some().then(|| staffing_to(&a.erlang_a)),
            serving: a.serving,
            shortfall_erlang_c: a.shortfall_c,
            shortfall_erlang_a: a.shortfall_a,
        }),
        invitations_pending: d.invitations_pending,
    }
}

/// A staffing what-if → proto.
pub fn what_if_to(w: &dispatch_domain::queueing::WhatIf) -> pb::WhatIfStaffingResponse {
    pb::WhatIfStaffingResponse {
        erlangs: w.erlangs,
        erlang_c: Some(staffing_to(&w.erlang_c)),
        erlang_a: w.erlang_a.as_ref().map(staffing_to),
    }
}
