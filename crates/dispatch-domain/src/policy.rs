//! The configurable rules: offer timeouts, misses, wrap-up, cool-downs, presence grace,
//! queue ordering, relaxation steps and scoring weights. Deserialised from the `[policy]` table
//! of the configuration; every field has a default.

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::model::{Channel, Level, Tier};

/// All dispatch rules in one value, passed to every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Offer timeout when no override matches.
    pub offer_timeout_ms: u64,
    /// Per channel and tier overrides of the offer timeout, first match wins.
    pub offer_timeout_overrides: Vec<OfferTimeoutOverride>,
    /// After this many missed offers in a row the agent is set away.
    pub max_consecutive_misses: u32,
    /// Pause after a decline before the agent gets another offer.
    pub cool_down_after_decline_ms: u64,
    /// Pause after a missed offer before the agent gets another offer.
    pub cool_down_after_miss_ms: u64,
    /// A case is not offered again to an agent who declined or missed it for this long.
    pub reoffer_same_agent_after_ms: u64,
    /// Wrap-up after completing a case, per channel.
    pub wrap_up_ms: ChannelDurations,
    /// A disconnected agent keeps the session (and its status) this long before going offline.
    pub presence_grace_ms: u64,
    /// Proficiency required when a case does not say.
    pub default_min_proficiency: u8,
    /// Queue order: how many milliseconds of waiting a VIP case is worth.
    pub vip_head_start_ms: u64,
    /// Queue order: how many milliseconds of waiting one priority point is worth.
    pub priority_head_start_ms: u64,
    /// Relaxation steps, applied once the case has waited `after_ms`.
    pub relaxation: Vec<RelaxationStep>,
    /// Scoring weights.
    pub weights: Weights,
    /// Idle time at which the idle term reaches its maximum.
    pub idle_saturation_ms: u64,
    /// How many top candidates each offer records as its explanation.
    pub explain_top: usize,
    /// A connected agent's presence lease; the dispatcher holding the stream renews it. When a
    /// dispatcher dies, its agents are treated as disconnected after at most this long.
    pub presence_lease_ms: u64,
    /// How long completed, cancelled and expired cases are kept (then deleted).
    pub terminal_case_retention_ms: u64,
    /// Caps on list sizes and text lengths of requests.
    pub limits: Limits,
    /// Selection considers at most this many eligible agents per case, longest idle first (and
    /// the customer's previous agent), and offers to the best scored among them; 0 scores every
    /// eligible agent (exact, but linear in the pool).
    pub selection_candidate_limit: usize,
    /// Per channel: an assigned case with no activity reported by its agent (accept, then each
    /// `ReportActivity`) for this long is handed back to the queue; 0 turns the timer off for
    /// the channel.
    pub activity_timeout_ms: ChannelDurations,
    /// The agent is warned this long before an activity hand-back (at timeout − warning).
    pub activity_warning_ms: u64,
    /// A case handed back prefers its last agent (the affinity term) for this long, should
    /// they come back.
    pub hand_back_preference_ms: u64,
    /// Working-time limits by market, and what counts as engaged.
    pub working_time: crate::worktime::WorkingTimePolicy,
    /// How customers' ratings become the rating term.
    pub reputation: crate::reputation::ReputationPolicy,
    /// Service-level targets per tier and the staffing assumptions.
    pub demand: crate::demand::DemandPolicy,
    /// Calling in offline agents.
    pub call_in: crate::callin::CallInPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            offer_timeout_ms: 20_000,
            offer_timeout_overrides: Vec::new(),
            max_consecutive_misses: 3,
            cool_down_after_decline_ms: 5_000,
            cool_down_after_miss_ms: 10_000,
            reoffer_same_agent_after_ms: 300_000,
            wrap_up_ms: ChannelDurations { voice: 30_000, chat: 10_000, email: 5_000 },
            presence_grace_ms: 30_000,
            default_min_proficiency: 3,
            vip_head_start_ms: 300_000,
            priority_head_start_ms: 30_000,
            relaxation: vec![
                RelaxationStep { after_ms: 30_000, drop_preferred_skills: true, ..RelaxationStep::default() },
                RelaxationStep { after_ms: 120_000, lower_min_proficiency_by: 1, ..RelaxationStep::default() },
            ],
            weights: Weights::default(),
            idle_saturation_ms: 600_000,
            explain_top: 3,
            presence_lease_ms: 15_000,
            terminal_case_retention_ms: 24 * 3600 * 1000,
            limits: Limits::default(),
            selection_candidate_limit: 200,
            activity_timeout_ms: ChannelDurations { voice: 0, chat: 180_000, email: 0 },
            activity_warning_ms: 60_000,
            hand_back_preference_ms: 120_000,
            working_time: crate::worktime::WorkingTimePolicy::default(),
            reputation: crate::reputation::ReputationPolicy::default(),
            demand: crate::demand::DemandPolicy::default(),
            call_in: crate::callin::CallInPolicy::default(),
        }
    }
}

/// An offer timeout for a channel and/or tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferTimeoutOverride {
    /// Matches this channel only (any when absent).
    pub channel: Option<Channel>,
    /// Matches this tier only (any when absent).
    pub tier: Option<Tier>,
    /// The timeout.
    pub timeout_ms: u64,
}

/// A duration per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDurations {
    /// Voice.
    pub voice: u64,
    /// Chat.
    pub chat: u64,
    /// E-mail.
    pub email: u64,
}

impl ChannelDurations {
    /// The duration for `channel`.
    pub fn get(&self, channel: Channel) -> u64 {
        match channel {
            Channel::Voice => self.voice,
            Channel::Chat => self.chat,
            Channel::Email => self.email,
        }
    }
}

/// One relaxation step: what stops being required once a case has waited `after_ms`.
/// Steps accumulate; the case keeps its original age for ordering.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaxationStep {
    /// Wait after which the step applies.
    pub after_ms: u64,
    /// Preferred skills stop being required.
    pub drop_preferred_skills: bool,
    /// Required skill levels are lowered by this much (never below 1).
    pub lower_skill_levels_by: u8,
    /// The minimum language proficiency is lowered by this much (never below 1).
    pub lower_min_proficiency_by: u8,
    /// VIP cases may go to agents who are not VIP-certified.
    pub allow_uncertified_for_vip: bool,
}

/// What is in force for one case at one moment: the sum of the steps it has reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relaxed {
    /// Preferred skills no longer required.
    pub drop_preferred_skills: bool,
    /// Lowering of required skill levels.
    pub lower_skill_levels_by: u8,
    /// Lowering of the language proficiency.
    pub lower_min_proficiency_by: u8,
    /// VIP open to uncertified agents.
    pub allow_uncertified_for_vip: bool,
}

impl Relaxed {
    /// Human-readable names of what is relaxed, for `GetCase` and explanations.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.drop_preferred_skills {
            out.push("preferred skills dropped".to_owned());
        }
        if self.lower_skill_levels_by > 0 {
            out.push(format!("skill levels lowered by {}", self.lower_skill_levels_by));
        }
        if self.lower_min_proficiency_by > 0 {
            out.push(format!("language proficiency lowered by {}", self.lower_min_proficiency_by));
        }
        if self.allow_uncertified_for_vip {
            out.push("vip open to uncertified agents".to_owned());
        }
        out
    }
}

/// Scoring weights; a term's contribution is `weight × value` with value in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Language proficiency above the minimum.
    pub language: f64,
    /// Skill levels above the required ones, and preferred skills held.
    pub skill_depth: f64,
    /// Customer rating.
    pub rating: f64,
    /// Time since the agent last became free (fairness: longest idle first).
    pub idle: f64,
    /// Share of offers the agent accepted (smoothed).
    pub acceptance: f64,
    /// The agent helped this customer before.
    pub affinity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { language: 1.0, skill_depth: 1.0, rating: 0.5, idle: 2.0, acceptance: 0.5, affinity: 1.5 }
    }
}

/// A policy that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{field}: {reason}")]
pub struct PolicyError {
    /// The key under `[policy]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Policy {
    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |field: &str, reason: &str| Err(PolicyError { field: field.to_owned(), reason: reason.to_owned() });
        for tier in crate::model::Tier::ALL {
            if let Err(e) = self.demand.goal(tier) {
                let field = format!("demand.{}_target.{}", tier.as_str(), e.field);
                return Err(PolicyError { field, reason: e.reason });
            }
        }
        if !(100..=3_600_000).contains(&self.offer_timeout_ms) {
            return err("offer_timeout_ms", "must be 100 to 3600000");
        }
        if self.offer_timeout_overrides.iter().any(|o| !(100..=3_600_000).contains(&o.timeout_ms)) {
            return err("offer_timeout_overrides", "every timeout_ms must be 100 to 3600000");
        }
        if self.max_consecutive_misses == 0 {
            return err("max_consecutive_misses", "must be at least 1");
        }
        if !(1..=5).contains(&self.default_min_proficiency) {
            return err("default_min_proficiency", "must be 1 to 5");
        }
        if self.relaxation.windows(2).any(|w| w[0].after_ms >= w[1].after_ms) {
            return err("relaxation", "steps must be in strictly increasing after_ms order");
        }
        let w = &self.weights;
        if [w.language, w.skill_depth, w.rating, w.idle, w.acceptance, w.affinity]
            .iter()
            .any(|x| !x.is_finite() || *x < 0.0)
        {
            return err("weights", "weights must be finite and not negative");
        }
        if self.idle_saturation_ms == 0 {
            return err("idle_saturation_ms", "must be above 0");
        }
        if !(1_000..=600_000).contains(&self.presence_lease_ms) {
            return err("presence_lease_ms", "must be 1000 to 600000");
        }
        if self.terminal_case_retention_ms < 60_000 {
            return err("terminal_case_retention_ms", "must be at least 60000");
        }
        let l = &self.limits;
        if l.max_skills == 0 || l.max_languages == 0 || l.max_capacity == 0 || l.max_page_size == 0 {
            return err("limits", "max_skills, max_languages, max_capacity and max_page_size must be above 0");
        }
        if l.max_summary_len > 1 << 20 || l.max_reason_len > 1 << 16 || l.max_name_len > 1 << 12 || l.max_skills > 256 {
            return err(
                "limits",
                "a cap is above its hard ceiling (summary 1 MiB, reason 64 KiB, name 4 KiB, 256 skills)",
            );
        }
        if !(1..=10).contains(&self.explain_top) {
            return err("explain_top", "must be 1 to 10");
        }
        self.reputation.validate().map_err(|r| PolicyError { field: "reputation".into(), reason: r })?;
        let wt = &self.working_time;
        wt.default
            .validate("working_time.default")
            .map_err(|r| PolicyError { field: "working_time".into(), reason: r })?;
        for (m, limits) in &wt.markets {
            if crate::model::Market::parse("", m).map(|p| p.as_str() != m).unwrap_or(true) {
                return err("working_time.markets", &format!("{m:?} is not an upper-case ISO 3166-1 alpha-2 code"));
            }
            limits
                .validate(&format!("working_time.markets.{m}"))
                .map_err(|r| PolicyError { field: "working_time".into(), reason: r })?;
        }
        let t = &self.activity_timeout_ms;
        if [t.voice, t.chat, t.email].iter().any(|t| *t > 0 && *t <= self.activity_warning_ms) {
            return err("activity_timeout_ms", "every timeout above 0 must be longer than activity_warning_ms");
        }
        Ok(())
    }

    /// The default minimum proficiency as a level.
    pub fn default_min_level(&self) -> Level {
        Level::parse("", u32::from(self.default_min_proficiency)).unwrap_or(Level::MIN)
    }

    /// The offer timeout for a case of this channel and tier.
    pub fn offer_timeout(&self, channel: Channel, tier: Tier) -> u64 {
        self.offer_timeout_overrides
            .iter()
            .find(|o| o.channel.is_none_or(|c| c == channel) && o.tier.is_none_or(|t| t == tier))
            .map_or(self.offer_timeout_ms, |o| o.timeout_ms)
    }

    /// The activity timeout of `channel`'s assigned cases, if it is on.
    pub fn activity_timeout(&self, channel: Channel) -> Option<u64> {
        Some(self.activity_timeout_ms.get(channel)).filter(|t| *t > 0)
    }

    /// What is relaxed for a case that has waited `waited_ms`.
    pub fn relaxed(&self, waited_ms: u64) -> Relaxed {
        self.relaxation.iter().filter(|s| s.after_ms <= waited_ms).fold(Relaxed::default(), |acc, s| Relaxed {
            drop_preferred_skills: acc.drop_preferred_skills || s.drop_preferred_skills,
            lower_skill_levels_by: acc.lower_skill_levels_by.saturating_add(s.lower_skill_levels_by),
            lower_min_proficiency_by: acc.lower_min_proficiency_by.saturating_add(s.lower_min_proficiency_by),
            allow_uncertified_for_vip: acc.allow_uncertified_for_vip || s.allow_uncertified_for_vip,
        })
    }

    /// The wait at which the next relaxation step applies, if any is left.
    pub fn next_relaxation_after(&self, waited_ms: u64) -> Option<u64> {
        self.relaxation.iter().map(|s| s.after_ms).find(|a| *a > waited_ms)
    }
}
