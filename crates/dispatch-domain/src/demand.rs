//! Demand: the segments cases belong to, the live rates measured per segment, the estimated
//! wait of a waiting case, and the staffing a segment needs against the supply it has.
//!
//! A case's **segment** is its primary language, tier, channel and the names of its required
//! skills (levels fold away, so that segments stay few: `de/vip/voice/billing+disputes`).
//! Planners ask for any set of segments with a [`SegmentFilter`] (a language, and optionally a
//! tier, a channel, and skills a segment must include); figures over several segments add up.
//!
//! **Rates** are counted per segment in one-minute buckets ([`BUCKET_MS`]) in the same atomic
//! step as the commit whose events moved them ([`segment_counts`]), so they survive a
//! dispatcher restart and agree across replicas; a window's rates are sums of its buckets
//! ([`Rates::of`]), never a scan of cases.
//!
//! The **estimated wait** ([`estimate_wait`]) of a waiting case is its position among the
//! waiting cases ahead of it that compete for the same agents, over those agents' service rate
//! (their slots over the mean handle time, less the rate at which later cases of a higher tier
//! overtake it), plus the mean time an offer takes to be accepted.

use serde::{Deserialize, Serialize};

use crate::model::{CaseSpec, Channel, FieldError, Language, Millis, Skill, Tier};
use crate::policy::Policy;
use crate::queueing::{self, Goal, Load, Staffing};
use crate::scoring;
use crate::state::{Agent, AgentStatus, Case, OfferOutcome, Standing};
use crate::transition::{Event, RevokeReason};

/// The width of one rate bucket.
pub const BUCKET_MS: Millis = 60_000;
/// How long buckets are kept (the longest window a planner may ask for).
pub const RETENTION_MS: Millis = 3 * 3_600_000;
/// The windows planners get rates over: arrivals over 5, 15 and 60 minutes.
pub const WINDOWS_MS: [Millis; 3] = [5 * 60_000, 15 * 60_000, 60 * 60_000];
/// The window staffing advice and estimates read arrivals from.
pub const ARRIVAL_WINDOW_MS: Millis = 15 * 60_000;
/// The window handle times, patience and acceptance are read from.
pub const SERVICE_WINDOW_MS: Millis = 60 * 60_000;
/// The fewest completions a window needs before its mean handle time replaces the configured
/// expectation.
pub const MIN_COMPLETIONS: i64 = 5;
/// A waiting case's estimate is recomputed when it runs out, and at least this often.
pub const REESTIMATE_MS: Millis = 30_000;

/// The bucket `at` falls in (its start time).
pub fn bucket_of(at: Millis) -> Millis {
    at.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// A demand segment (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Segment {
    /// Primary language subtag.
    pub language: String,
    /// Customer tier.
    pub tier: Tier,
    /// Medium.
    pub channel: Channel,
    /// Required skill names, sorted, without duplicates.
    pub skills: Vec<Skill>,
}

impl Segment {
    /// The segment of a case.
    pub fn of(spec: &CaseSpec) -> Segment {
        let mut skills: Vec<Skill> = spec.required_skills.iter().map(|s| s.skill.clone()).collect();
        skills.sort();
        skills.dedup();
        Segment { language: spec.language.primary().to_owned(), tier: spec.tier, channel: spec.channel, skills }
    }

    /// The stable key: `<language>/<tier>/<channel>/<skill>+<skill>` (`-` without skills).
    pub fn key(&self) -> String {
        let skills = if self.skills.is_empty() {
            "-".to_owned()
        } else {
            self.skills.iter().map(Skill::as_str).collect::<Vec<_>>().join("+")
        };
        format!("{}/{}/{}/{}", self.language, self.tier.as_str(), self.channel.as_str(), skills)
    }

    /// Reads a key written by [`Segment::key`]; `None` for anything else.
    pub fn parse_key(key: &str) -> Option<Segment> {
        let mut parts = key.split('/');
        let (language, tier, channel, skills) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let language = Language::parse("language", language).ok()?.primary().to_owned();
        let tier = Tier::ALL.into_iter().find(|t| t.as_str() == tier)?;
        let channel = Channel::ALL.into_iter().find(|c| c.as_str() == channel)?;
        let skills = match skills {
            "-" => Vec::new(),
            s => s.split('+').map(|s| Skill::parse("skill", s).ok()).collect::<Option<Vec<_>>>()?,
        };
        Some(Segment { language, tier, channel, skills })
    }
}

/// Which segments a planner asks about: a language, optionally narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFilter {
    /// Primary language subtag (required: a segment without a language is no segment).
    pub language: String,
    /// Only this tier.
    pub tier: Option<Tier>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Segments whose required skills include each of these.
    pub skills: Vec<Skill>,
    /// Only segments with exactly these skills (`skills` then lists all of them).
    pub exact_skills: bool,
}

impl SegmentFilter {
    /// Validates a planner's segment; errors name the field under `field` (`segment`).
    pub fn parse(
        field: &str,
        language: &str,
        tier: Option<Option<Tier>>,
        channel: Option<Option<Channel>>,
        skills: &[&str],
        exact_skills: bool,
    ) -> Result<SegmentFilter, FieldError> {
        if language.is_empty() {
            return Err(FieldError::new(
                format!("{field}.language"),
                "a segment needs a language (an empty segment names no demand)",
            ));
        }
        let language = Language::parse(&format!("{field}.language"), language)?.primary().to_owned();
        let tier = tier.ok_or_else(|| FieldError::new(format!("{field}.tier"), "not a known tier"))?;
        let channel = channel.ok_or_else(|| FieldError::new(format!("{field}.channel"), "not a known channel"))?;
        let mut parsed = Vec::new();
        for (i, s) in skills.iter().enumerate() {
            parsed.push(Skill::parse(&format!("{field}.skills[{i}]"), s)?);
        }
        parsed.sort();
        parsed.dedup();
        Ok(SegmentFilter { language, tier, channel, skills: parsed, exact_skills })
    }

    /// The filter naming exactly `segment`.
    pub fn exactly(segment: &Segment) -> SegmentFilter {
        SegmentFilter {
            language: segment.language.clone(),
            tier: Some(segment.tier),
            channel: Some(segment.channel),
            skills: segment.skills.clone(),
            exact_skills: true,
        }
    }

    /// Whether `segment` is among those asked for.
    pub fn matches(&self, segment: &Segment) -> bool {
        segment.language == self.language
            && self.tier.is_none_or(|t| t == segment.tier)
            && self.channel.is_none_or(|c| c == segment.channel)
            && if self.exact_skills {
                segment.skills == self.skills
            } else {
                self.skills.iter().all(|s| segment.skills.contains(s))
            }
    }
}

/// What is counted per segment and bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentCounter {
    /// Cases submitted.
    Arrived,
    /// Cases first accepted by an agent.
    Answered,
    /// Sum of the waits of the answered cases, submission to first accept, ms.
    AnsweredWaitMs,
    /// Cases that closed (cancelled or expired) without ever being answered: customers who gave up.
    Abandoned,
    /// Sum of the waits of the abandoned cases, submission to close, ms.
    AbandonedWaitMs,
    /// Answered cases answered within their tier's target.
    AnsweredInTarget,
    /// Cases completed.
    Completed,
    /// Sum of handle times of the completed cases: accept to complete plus the channel's
    /// wrap-up, ms.
    HandleMs,
    /// Offers made.
    Offered,
    /// Offers accepted.
    Accepted,
    /// Sum of offer → accept times, ms.
    AcceptMs,
    /// Offline agents invited to come online for the segment.
    Invited,
    /// Invitations answered by signing in in time.
    CalledIn,
    /// Sum of invitation → sign-in times of those, ms.
    CallInSignInMs,
    /// Invitations declined.
    InviteDeclined,
    /// Invitations that lapsed unanswered.
    InviteIgnored,
    /// Offers that ended without an accept while the case still waited for one: declined,
    /// timed out, or taken back from an agent who went away or dropped.
    OfferFailed,
    /// Sum of those offers' times, offer to end, ms.
    OfferFailedMs,
}

impl SegmentCounter {
    /// Every counter.
    pub const ALL: [SegmentCounter; 18] = [
        SegmentCounter::Arrived,
        SegmentCounter::Answered,
        SegmentCounter::AnsweredWaitMs,
        SegmentCounter::Abandoned,
        SegmentCounter::AbandonedWaitMs,
        SegmentCounter::AnsweredInTarget,
        SegmentCounter::Completed,
        SegmentCounter::HandleMs,
        SegmentCounter::Offered,
        SegmentCounter::Accepted,
        SegmentCounter::AcceptMs,
        SegmentCounter::Invited,
        SegmentCounter::CalledIn,
        SegmentCounter::CallInSignInMs,
        SegmentCounter::InviteDeclined,
        SegmentCounter::InviteIgnored,
        SegmentCounter::OfferFailed,
        SegmentCounter::OfferFailedMs,
    ];

    /// The stable name stores use.
    pub fn name(self) -> &'static str {
        match self {
            SegmentCounter::Arrived => "arrived",
            SegmentCounter::Answered => "answered",
            SegmentCounter::AnsweredWaitMs => "answered_wait_ms",
            SegmentCounter::Abandoned => "abandoned",
            SegmentCounter::AbandonedWaitMs => "abandoned_wait_ms",
            SegmentCounter::AnsweredInTarget => "answered_in_target",
            SegmentCounter::Completed => "completed",
            SegmentCounter::HandleMs => "handle_ms",
            SegmentCounter::Offered => "offered",
            SegmentCounter::Accepted => "accepted",
            SegmentCounter::AcceptMs => "accept_ms",
            SegmentCounter::Invited => "invited",
            SegmentCounter::CalledIn => "called_in",
            SegmentCounter::CallInSignInMs => "call_in_sign_in_ms",
            SegmentCounter::InviteDeclined => "invite_declined",
            SegmentCounter::InviteIgnored => "invite_ignored",
            SegmentCounter::OfferFailed => "offer_failed",
            SegmentCounter::OfferFailedMs => "offer_failed_ms",
        }
    }

    /// The counter named `name`.
    pub fn named(name: &str) -> Option<SegmentCounter> {
        SegmentCounter::ALL.into_iter().find(|c| c.name() == name)
    }

    fn index(self) -> usize {
        SegmentCounter::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// The service-level target of one tier: `service_level` of its customers answered within
/// `answer_within_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServiceTarget {
    /// The answer-time target, ms.
    pub answer_within_ms: u64,
    /// The share to answer within it, in (0, 1].
    pub service_level: f64,
}

/// The demand rules' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DemandPolicy {
    /// The VIP target (default 90 % within 30 s).
    pub vip_target: ServiceTarget,
    /// The standard target (default 80 % within 2 min).
    pub standard_target: ServiceTarget,
    /// The most occupancy staffing plans for, in (0, 1].
    pub max_occupancy: f64,
    /// The share of signed-in time agents are not on the queue, in [0, 1).
    pub shrinkage: f64,
}

impl Default for DemandPolicy {
    fn default() -> Self {
        Self {
            vip_target: ServiceTarget { answer_within_ms: 30_000, service_level: 0.9 },
            standard_target: ServiceTarget { answer_within_ms: 120_000, service_level: 0.8 },
            max_occupancy: 1.0,
            shrinkage: 0.0,
        }
    }
}

impl DemandPolicy {
    /// The target of `tier`.
    pub fn target(&self, tier: Tier) -> ServiceTarget {
        match tier {
            Tier::Vip => self.vip_target,
            Tier::Standard => self.standard_target,
        }
    }

    /// The staffing goal of `tier`; errors name the policy field.
    pub fn goal(&self, tier: Tier) -> Result<Goal, FieldError> {
        let t = self.target(tier);
        Goal::new(t.answer_within_ms as f64 / 1000.0, t.service_level, self.max_occupancy, self.shrinkage)
    }
}

/// The segment counts a committed change moves, from its events and the case as written
/// (counted once: the store adds them in the commit's atomic step). `wrap_up_ms` is the
/// channel's wrap-up, added to each handle time.
pub fn segment_counts(
    case: &Case,
    events: &[Event],
    target: ServiceTarget,
    wrap_up_ms: u64,
) -> Vec<(SegmentCounter, i64)> {
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Queued { .. } => out.push((SegmentCounter::Arrived, 1)),
            Event::Offered { .. } => out.push((SegmentCounter::Offered, 1)),
            Event::Declined { offer_id, .. }
            | Event::TimedOut { offer_id, .. }
            | Event::Revoked {
                offer_id,
                reason: RevokeReason::Disconnected | RevokeReason::AgentUnavailable | RevokeReason::TimedOut,
                ..
            } => {
                if let Some(o) = case.offers.iter().find(|o| &o.id == offer_id) {
                    out.push((SegmentCounter::OfferFailed, 1));
                    out.push((
                        SegmentCounter::OfferFailedMs,
                        ms(u64::try_from(o.decided_at - o.offered_at).unwrap_or(0)),
                    ));
                }
            }
            Event::Assigned { offer_id, time_to_accept_ms, waited_ms, .. } => {
                out.push((SegmentCounter::Accepted, 1));
                out.push((SegmentCounter::AcceptMs, ms(*time_to_accept_ms)));
                // The customer's wait ends at the first accept; a handed-back case answered
                // again is not a second arrival answered.
                let first = case.offers.iter().find(|o| o.outcome == OfferOutcome::Accepted);
                if first.is_some_and(|o| &o.id == offer_id) {
                    out.push((SegmentCounter::Answered, 1));
                    out.push((SegmentCounter::AnsweredWaitMs, ms(*waited_ms)));
                    if *waited_ms <= target.answer_within_ms {
                        out.push((SegmentCounter::AnsweredInTarget, 1));
                    }
                }
            }
            Event::Completed { .. } => {
                let accepted =
                    case.offers.iter().rev().find(|o| o.outcome == OfferOutcome::Accepted && o.handed_back_at == 0);
                let handled = accepted.map_or(0, |o| u64::try_from(case.closed_at - o.decided_at).unwrap_or(0));
                out.push((SegmentCounter::Completed, 1));
                out.push((SegmentCounter::HandleMs, ms(handled.saturating_add(wrap_up_ms))));
            }
            Event::Cancelled { .. } | Event::Expired { .. } if !case.was_assigned() => {
                out.push((SegmentCounter::Abandoned, 1));
                out.push((SegmentCounter::AbandonedWaitMs, ms(case.waited_ms(case.closed_at))));
            }
            _ => {}
        }
    }
    out
}

/// The segment counts an agent's change moves: its invitations sent and closed (all of one
/// segment: an agent holds one invitation at a time). `None` without any.
pub fn invitation_counts(events: &[Event]) -> Option<(String, Vec<(SegmentCounter, i64)>)> {
    use crate::callin::InvitationOutcome as O;
    let mut segment = None;
    let mut out = Vec::new();
    for e in events {
        match e {
            Event::Invited { segment: s, .. } => {
                segment = Some(s.clone());
                out.push((SegmentCounter::Invited, 1));
            }
            Event::InvitationClosed { segment: s, outcome, after_ms, .. } => {
                segment = Some(s.clone());
                match outcome {
                    O::CameOnline => {
                        out.push((SegmentCounter::CalledIn, 1));
                        out.push((SegmentCounter::CallInSignInMs, i64::try_from(*after_ms).unwrap_or(i64::MAX)));
                    }
                    O::Declined => out.push((SegmentCounter::InviteDeclined, 1)),
                    O::Ignored => out.push((SegmentCounter::InviteIgnored, 1)),
                    O::Pending => {}
                }
            }
            _ => {}
        }
    }
    segment.map(|s| (s, out))
}

/// Counter totals over some buckets of some segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals([i64; SegmentCounter::ALL.len()]);

impl Totals {
    /// Adds `delta` to `counter`.
    pub fn add(&mut self, counter: SegmentCounter, delta: i64) {
        let slot = &mut self.0[counter.index()];
        *slot = slot.saturating_add(delta);
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Totals) {
        for c in SegmentCounter::ALL {
            self.add(c, other.get(c));
        }
    }

    /// The total of `counter` (never negative).
    pub fn get(&self, counter: SegmentCounter) -> i64 {
        self.0[counter.index()].max(0)
    }
}

/// One stored count: a segment's counter in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCount {
    /// The bucket's start.
    pub bucket: Millis,
    /// The segment's key.
    pub segment: String,
    /// What is counted.
    pub counter: SegmentCounter,
    /// The total.
    pub total: i64,
}

/// The totals of the segments matching `filter` over the buckets in `[now − window, now]`.
pub fn window_totals<'a>(
    counts: impl IntoIterator<Item = (&'a Segment, Millis, &'a Totals)>,
    filter: &SegmentFilter,
    now: Millis,
    window_ms: Millis,
) -> Totals {
    let from = bucket_of(now - window_ms + 1);
    let mut out = Totals::default();
    for (segment, bucket, totals) in counts {
        if bucket >= from && bucket <= now && filter.matches(segment) {
            out.merge(totals);
        }
    }
    out
}

/// Rates over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// The window, ms.
    pub window_ms: Millis,
    /// Cases submitted in it.
    pub arrived: i64,
    /// Arrivals per hour.
    pub arrivals_per_hour: f64,
    /// Cases first answered.
    pub answered: i64,
    /// Customers who gave up (cancelled or expired unanswered).
    pub abandoned: i64,
    /// Abandoned over those whose wait ended (answered + abandoned); 0 with none.
    pub abandonment: f64,
    /// The mean patience, ms, estimated as the total wait of those whose wait ended over the
    /// number who gave up (the maximum-likelihood estimate for exponential patience); `None`
    /// while nobody gave up.
    pub patience_ms: Option<f64>,
    /// Mean wait of the answered, ms.
    pub mean_answer_wait_ms: Option<f64>,
    /// The share answered within the tier's target (of those answered).
    pub answered_in_target: Option<f64>,
    /// Cases completed.
    pub completed: i64,
    /// Mean handle time (accept to complete plus wrap-up), ms.
    pub mean_handle_ms: Option<f64>,
    /// Offers made.
    pub offered: i64,
    /// Accepted over made; `None` before any offer.
    pub accept_ratio: Option<f64>,
    /// Mean offer → accept time, ms.
    pub mean_time_to_accept_ms: Option<f64>,
    /// Mean time of an offer that failed (declined, timed out, taken back), ms; `None`: none
    /// failed.
    pub mean_failed_offer_ms: Option<f64>,
    /// Invitations sent.
    pub invited: i64,
    /// Invitations answered by signing in.
    pub called_in: i64,
    /// Invitations declined.
    pub invite_declined: i64,
    /// Invitations that lapsed.
    pub invite_ignored: i64,
    /// Called in over sent; `None` before any.
    pub conversion: Option<f64>,
    /// Mean invitation → sign-in, ms.
    pub mean_time_to_sign_in_ms: Option<f64>,
}

impl Rates {
    /// The rates of `totals` counted over `window_ms`.
    pub fn of(t: &Totals, window_ms: Millis) -> Rates {
        use SegmentCounter as C;
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        let ended = t.get(C::Answered) + t.get(C::Abandoned);
        let waited = t.get(C::AnsweredWaitMs) + t.get(C::AbandonedWaitMs);
        Rates {
            window_ms,
            arrived: t.get(C::Arrived),
            arrivals_per_hour: t.get(C::Arrived) as f64 * 3_600_000.0 / window_ms.max(1) as f64,
            answered: t.get(C::Answered),
            abandoned: t.get(C::Abandoned),
            abandonment: ratio(t.get(C::Abandoned), ended).unwrap_or(0.0),
            patience_ms: ratio(waited, t.get(C::Abandoned)),
            mean_answer_wait_ms: ratio(t.get(C::AnsweredWaitMs), t.get(C::Answered)),
            answered_in_target: ratio(t.get(C::AnsweredInTarget), t.get(C::Answered)),
            completed: t.get(C::Completed),
            mean_handle_ms: ratio(t.get(C::HandleMs), t.get(C::Completed)),
            offered: t.get(C::Offered),
            accept_ratio: ratio(t.get(C::Accepted), t.get(C::Offered)),
            mean_time_to_accept_ms: ratio(t.get(C::AcceptMs), t.get(C::Accepted)),
            mean_failed_offer_ms: ratio(t.get(C::OfferFailedMs), t.get(C::OfferFailed)),
            invited: t.get(C::Invited),
            called_in: t.get(C::CalledIn),
            invite_declined: t.get(C::InviteDeclined),
            invite_ignored: t.get(C::InviteIgnored),
            conversion: ratio(t.get(C::CalledIn), t.get(C::Invited)),
            mean_time_to_sign_in_ms: ratio(t.get(C::CallInSignInMs), t.get(C::CalledIn)),
        }
    }

    /// The mean handle time to plan with: measured once [`MIN_COMPLETIONS`] cases completed in
    /// the window, else `expected_ms`.
    pub fn handle_ms_or(&self, expected_ms: f64) -> f64 {
        match self.mean_handle_ms {
            Some(h) if self.completed >= MIN_COMPLETIONS && h > 0.0 => h,
            _ => expected_ms,
        }
    }
}

/// The agents who could take a segment's cases, as they are now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supply {
    /// Signed in, status available (working or free): the agents serving the segment.
    pub serving: u32,
    /// Of those, able to take an offer of the segment's channel now.
    pub free: u32,
    /// Their slots in the segment's channel (each agent's capacity for it).
    pub slots: u32,
    /// Of those slots, the ones free now (of agents able to take an offer).
    pub free_slots: u32,
    /// Signed in but away.
    pub away: u32,
    /// Of the slots, those of agents holding the VIP certification (the only ones a VIP case
    /// that overtakes a standard one can take).
    pub vip_slots: u32,
    /// Of the slots not free, those that free at a known time within the next minute: room
    /// held back only by a wrap-up or a cool-down (no case in them).
    pub soon_slots: u32,
    /// When the soonest [`SOON`] of those free, ms from now, in order (0 past `soon_slots`).
    pub soon_ms: [u64; SOON],
}

/// How many of the slots freeing soon a [`Supply`] keeps the times of.
pub const SOON: usize = 8;

/// A wrap-up or cool-down ending within this counts as a slot freeing soon.
pub const SOON_WITHIN_MS: u64 = 60_000;

impl Supply {
    /// Counts `n` slots that free in `in_ms`.
    fn add_soon(&mut self, n: u32, in_ms: u64) {
        for _ in 0..n {
            let kept = (self.soon_slots as usize).min(SOON);
            self.soon_slots += 1;
            if kept < SOON {
                self.soon_ms[kept] = in_ms;
            } else if in_ms < self.soon_ms[SOON - 1] {
                self.soon_ms[SOON - 1] = in_ms;
            } else {
                continue;
            }
            self.soon_ms[..kept.min(SOON - 1) + 1].sort_unstable();
        }
    }
}

/// The supply for `case` among `agents` (the signed-in agents speaking its language): those whose
/// profile meets its requirements under the relaxation in force ([`scoring::matches_requirements`],
/// the rule selection applies), classified by whether they serve (available) or are away, and
/// their slots in its channel, free or not ([`Supply::count`]).
pub fn supply_of<'a>(case: &Case, agents: impl IntoIterator<Item = &'a Agent>, now: Millis, policy: &Policy) -> Supply {
    let relaxed = case.relaxed(policy, now);
    let mut out = Supply::default();
    for agent in agents {
        if agent.connected() && scoring::matches_requirements(case, agent, relaxed, now).is_ok() {
            out.count(&agent.standing(), case.spec.channel, now);
        }
    }
    out
}

/// [`supply_of`] over agents as a scan holds them (compact summaries, or records), the case's
/// needs compiled once into `query`: the same rule and the same figures.
pub fn supply_of_held<'a>(
    query: &crate::compact::Query<'_>,
    channel: Channel,
    agents: impl IntoIterator<Item = crate::compact::Held<'a>>,
    now: Millis,
) -> Supply {
    let mut out = Supply::default();
    for agent in agents {
        if let Some(standing) = query.matches(agent, now) {
            out.count(&standing, channel, now);
        }
    }
    out
}

impl Supply {
    /// Counts an agent who meets the case's requirements, as it stands at `now`, for a case of
    /// `channel`.
    pub fn count(&mut self, agent: &Standing, channel: Channel, now: Millis) {
        match agent.status {
            AgentStatus::Away => self.away += 1,
            AgentStatus::Available => {
                let (capacity, load) = agent.in_channel(channel);
                self.serving += 1;
                self.slots += capacity;
                if agent.vip {
                    self.vip_slots += capacity;
                }
                let room = capacity.saturating_sub(load);
                match agent.readiness.ready_at(now) {
                    Some(t) if room > 0 && t <= now => {
                        self.free += 1;
                        self.free_slots += room;
                    }
                    // Ready again at a known time (wrap-up, cool-down): the room is there soon.
                    Some(t) if room > 0 => {
                        let in_ms = u64::try_from(t - now).unwrap_or(0);
                        if in_ms <= SOON_WITHIN_MS {
                            self.add_soon(room, in_ms);
                        }
                    }
                    _ => {}
                }
            }
            AgentStatus::Offline => {}
        }
    }
}

impl Segment {
    /// A case standing for the segment (its language at the default proficiency, its skills at
    /// the lowest level, no market or certification beyond the tier's): what supply is counted
    /// against for a planner's question.
    pub fn sample_case(&self, policy: &Policy, now: Millis) -> Option<Case> {
        let spec = CaseSpec {
            id: crate::model::CaseId::parse("id", "segment").ok()?,
            language: Language::parse("language", &self.language).ok()?,
            min_proficiency: policy.default_min_level(),
            required_skills: self
                .skills
                .iter()
                .map(|s| crate::model::SkillLevel { skill: s.clone(), level: crate::model::Level::MIN })
                .collect(),
            preferred_skills: Vec::new(),
            tier: self.tier,
            priority: 0,
            channel: self.channel,
            summary: String::new(),
            sentiment: 0.0,
            customer: None,
            previous_agent: None,
            ttl_ms: None,
            market: None,
            data_region: None,
            required_clearance: 0,
            required_certifications: Vec::new(),
        };
        Some(Case::new(spec, now))
    }
}

/// What a waiting case's estimate is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WaitInputs {
    /// Waiting cases ahead of it that compete for the same agents.
    pub ahead: u32,
    /// Of those, VIP cases ahead of a standard case: they take only VIP-certified agents' slots,
    /// so they hold it up by the share of those slots (0 for a VIP case).
    pub ahead_vip: u32,
    /// The agents who could take it.
    pub supply: Supply,
    /// Their mean handle time, ms.
    pub handle_ms: f64,
    /// The mean time from the case's first offer to its accept, failed offers before it
    /// included ([`offer_to_accept_ms`]), ms.
    pub time_to_accept_ms: f64,
    /// Arrivals per ms of cases that will be served before it although they come later (a
    /// higher tier in the same language and channel).
    pub overtaking_per_ms: f64,
    /// The customers' mean patience in its segment, ms (`None`: nobody gave up lately): the
    /// cases ahead that give up shorten its wait.
    pub patience_ms: Option<f64>,
}

/// The estimated wait from now, ms; `None` when no agent who could take the case is signed in
/// (no service rate to estimate from).
///
/// With `k` competing cases ahead and `f` free slots, the case is served at once if `k < f`;
/// otherwise it waits for `k − f + 1` slots to free up, which they do at the rate
/// `slots / handle − overtaking × VIP share of the slots` (floored at a tenth of the service rate: a queue that grows
/// is estimated long, not infinite). With `j` cases still ahead, each of them also gives up at
/// the rate `1 / patience` (exponential patience, as Erlang A has it), so the line moves at
/// `rate + j / patience`: the wait is the sum of `1 / (rate + j / patience)` for `j` from
/// `k − f` down to 0. Either way an offer's mean time to accept is added. VIP cases ahead of a
/// standard case, and VIP arrivals overtaking it, take only VIP-certified agents' slots: they
/// count by the share of those slots among the case's.
pub fn estimate_wait(i: &WaitInputs) -> Option<u64> {
    if i.supply.serving == 0 || i.supply.slots == 0 {
        return None;
    }
    let accept = i.time_to_accept_ms.max(0.0);
    let vip_share = vip_share(&i.supply);
    let place = position(i);
    if place.slots_to_free == 0 {
        return Some(accept.round() as u64);
    }
    // Slots ending a wrap-up or cool-down free at known times, before any busy one.
    let soon = i.supply.soon_slots.min(SOON as u32);
    if place.slots_to_free <= soon {
        return Some((i.supply.soon_ms[place.slots_to_free as usize - 1] as f64 + accept).round() as u64);
    }
    let service_per_ms = f64::from(i.supply.slots) / i.handle_ms.max(1.0);
    let rate = (service_per_ms - i.overtaking_per_ms.max(0.0) * vip_share).max(service_per_ms / 10.0);
    let beyond = place.slots_to_free - 1 - soon;
    let leaving = i.patience_ms.filter(|p| *p > 0.0).map_or(0.0, |p| 1.0 / p);
    let wait = if leaving == 0.0 {
        f64::from(beyond + 1) / rate
    } else {
        (0..=beyond).map(|j| 1.0 / (rate + f64::from(j) * leaving)).sum()
    } + accept;
    Some(wait.min(MAX_ESTIMATE_MS as f64).round() as u64)
}

/// The share of the slots of `supply` that VIP-certified agents hold (1 without slots: nothing to
/// weigh).
fn vip_share(supply: &Supply) -> f64 {
    if supply.slots == 0 {
        return 1.0;
    }
    f64::from(supply.vip_slots.min(supply.slots)) / f64::from(supply.slots)
}

/// Where a case stands in its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// The competing cases ahead of it (VIP cases ahead of a standard case counted by the VIP
    /// share of its slots): 0 is first in line.
    pub cases_ahead: u32,
    /// The busy slots that must free up before it can be offered (0: a free one is there for
    /// it). How certain an estimate can be rests on this: a wait for one slot to free is as
    /// uncertain as one handle time (the simulator's report shows the error by it).
    pub slots_to_free: u32,
}

/// The case's place in line: what [`estimate_wait`] counts from.
pub fn position(i: &WaitInputs) -> Position {
    let vip_ahead = i.ahead_vip.min(i.ahead);
    let cases_ahead = ((i.ahead - vip_ahead) as f64 + f64::from(vip_ahead) * vip_share(&i.supply)).round() as u32;
    Position { cases_ahead, slots_to_free: (cases_ahead + 1).saturating_sub(i.supply.free_slots) }
}

/// The configured handle time of `channel` (the expected handle time plus wrap-up): what
/// estimates and advice plan with until a segment has measured its own.
pub fn expected_handle_ms(policy: &Policy, channel: Channel) -> f64 {
    (policy.working_time.expected_handle_ms.get(channel) + policy.wrap_up_ms.get(channel)) as f64
}

/// Where a case's estimate reads its measured figures: its own segment; its language and
/// channel (for the accept time, until the segment measured one); and, for a standard case,
/// the VIP cases of its language and channel (served first although they come later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateSources {
    /// The segment itself.
    pub segment: SegmentFilter,
    /// Its language and channel, any tier and skills.
    pub around: SegmentFilter,
    /// The segments whose arrivals overtake it (`None` for VIP).
    pub overtaking: Option<SegmentFilter>,
}

impl EstimateSources {
    /// The sources of `segment`.
    pub fn of(segment: &Segment) -> EstimateSources {
        let around = SegmentFilter {
            language: segment.language.clone(),
            tier: None,
            channel: Some(segment.channel),
            skills: Vec::new(),
            exact_skills: false,
        };
        let overtaking =
            (segment.tier == Tier::Standard).then(|| SegmentFilter { tier: Some(Tier::Vip), ..around.clone() });
        EstimateSources { segment: SegmentFilter::exactly(segment), around, overtaking }
    }

    /// The estimate's inputs from the rates read at the sources: `service` and `around` over
    /// [`SERVICE_WINDOW_MS`], `overtaking` over [`ARRIVAL_WINDOW_MS`].
    pub fn inputs(
        (ahead, ahead_vip): (u32, u32),
        supply: Supply,
        service: &Rates,
        around: &Rates,
        overtaking: Option<&Rates>,
        expected_handle_ms: f64,
    ) -> WaitInputs {
        WaitInputs {
            ahead,
            ahead_vip,
            supply,
            handle_ms: service.handle_ms_or(expected_handle_ms),
            time_to_accept_ms: offer_to_accept_ms(service, around),
            overtaking_per_ms: overtaking.map_or(0.0, |r| r.arrived as f64 / r.window_ms.max(1) as f64),
            patience_ms: service.patience_ms.or(around.patience_ms),
        }
    }
}

/// The mean time from a case's first offer to its accept: the accepted offer's time, and before
/// it the failed ones (1 / accept ratio − 1 of them on average, each of their mean time),
/// measured in the segment, or in its language and channel until the segment has its own.
pub fn offer_to_accept_ms(service: &Rates, around: &Rates) -> f64 {
    let accept = service.mean_time_to_accept_ms.or(around.mean_time_to_accept_ms).unwrap_or(0.0);
    let (ratio, failed) = match (service.accept_ratio, service.mean_failed_offer_ms) {
        (Some(r), f) if service.offered >= MIN_OFFERS => (r, f),
        _ => (around.accept_ratio.unwrap_or(1.0), around.mean_failed_offer_ms),
    };
    // At most four failures per accept are planned for: a segment whose offers nearly all
    // fail is a staffing problem, not a longer wait in line.
    let failures = (1.0 / ratio.max(0.2) - 1.0).max(0.0);
    accept + failures * failed.unwrap_or(0.0)
}

/// Offers a segment must have made before its own accept ratio is used.
pub const MIN_OFFERS: i64 = 5;

/// The longest estimate given (a day): beyond it, "over 10 minutes" says all there is.
pub const MAX_ESTIMATE_MS: u64 = 86_400_000;

/// A coarse band of an estimate, for a customer-facing sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WaitBand {
    /// No agent who could take it is signed in.
    Unknown,
    /// Under a minute.
    UnderOneMinute,
    /// One to three minutes.
    OneToThreeMinutes,
    /// Three to ten minutes.
    ThreeToTenMinutes,
    /// Over ten minutes.
    OverTenMinutes,
}

impl WaitBand {
    /// The band of `wait_ms` (`None`: unknown).
    pub fn of(wait_ms: Option<u64>) -> WaitBand {
        match wait_ms {
            None => WaitBand::Unknown,
            Some(w) if w < 60_000 => WaitBand::UnderOneMinute,
            Some(w) if w < 180_000 => WaitBand::OneToThreeMinutes,
            Some(w) if w <= 600_000 => WaitBand::ThreeToTenMinutes,
            Some(_) => WaitBand::OverTenMinutes,
        }
    }

    /// In words.
    pub fn text(self) -> &'static str {
        match self {
            WaitBand::Unknown => "no agent for this case is signed in yet",
            WaitBand::UnderOneMinute => "under 1 minute",
            WaitBand::OneToThreeMinutes => "1–3 minutes",
            WaitBand::ThreeToTenMinutes => "3–10 minutes",
            WaitBand::OverTenMinutes => "over 10 minutes",
        }
    }
}

/// A waiting case's estimate as stored on the case: made at `at`, for a wait of `wait_ms` from
/// then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEstimate {
    /// When it was made (store clock).
    pub at: Millis,
    /// The wait from `at`, ms; `None`: unknown (no agent signed in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The case's place in line at `at` (estimates stored before it was kept read as first in
    /// line).
    #[serde(default)]
    pub position: Position,
}

impl WaitEstimate {
    /// The estimate made at `now` from `inputs`.
    pub fn of(inputs: &WaitInputs, now: Millis) -> WaitEstimate {
        WaitEstimate { at: now, wait_ms: estimate_wait(inputs), position: position(inputs) }
    }

    /// What remains of it at `now` (0 once overrun: it is about to be recomputed).
    pub fn remaining_ms(&self, now: Millis) -> Option<u64> {
        let elapsed = u64::try_from(now - self.at).unwrap_or(0);
        self.wait_ms.map(|w| w.saturating_sub(elapsed))
    }

    /// When it is recomputed if the case still waits: when it runs out, and at least every
    /// [`REESTIMATE_MS`].
    pub fn review_at(&self) -> Millis {
        let w =
            self.wait_ms.map_or(REESTIMATE_MS, |w| i64::try_from(w).unwrap_or(i64::MAX).clamp(1_000, REESTIMATE_MS));
        self.at.saturating_add(w)
    }
}

/// Whether a waiting case `ahead` (queued before `case`, in its language) competes for the
/// agents who could take `case`: the same channel (capacity is per channel), and requirements
/// that `case`'s agents meet (its required skills among `case`'s at no higher level). A VIP case
/// ahead of a standard one competes for the VIP-certified among them only ([`estimate_wait`]
/// weighs it by their share of the slots).
pub fn competes(ahead: &CaseSpec, case: &CaseSpec) -> bool {
    ahead.channel == case.channel
        && ahead
            .required_skills
            .iter()
            .all(|a| case.required_skills.iter().any(|c| c.skill == a.skill && c.level >= a.level))
}

/// The staffing a segment needs now, next to what it has.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Advice {
    /// The offered load (arrivals over [`ARRIVAL_WINDOW_MS`], handle time as planned); `None`
    /// without arrivals.
    pub load: Option<Load>,
    /// The handle time planned with, ms.
    pub handle_ms: f64,
    /// The mean patience used for Erlang A, ms (`None`: nobody gave up; Erlang A is Erlang C).
    pub patience_ms: Option<f64>,
    /// Agents needed by Erlang C (`None`: no load, or out of reach).
    pub erlang_c: Option<Staffing>,
    /// Agents needed by Erlang A.
    pub erlang_a: Option<Staffing>,
    /// Agents serving the segment now.
    pub serving: u32,
    /// Agents missing by Erlang C (scheduled need minus serving, at least 0).
    pub shortfall_c: u32,
    /// Agents missing by Erlang A.
    pub shortfall_a: u32,
}

/// Staffing advice from the measured `arrivals` (over [`ARRIVAL_WINDOW_MS`]) and `service`
/// (over [`SERVICE_WINDOW_MS`]) against the agents serving now. `expected_handle_ms` stands in
/// until enough cases completed. Each agent counts as one server (concurrent chats are not
/// modelled: the advice errs toward more agents).
pub fn advise(arrivals: &Rates, service: &Rates, goal: Goal, serving: u32, expected_handle_ms: f64) -> Advice {
    let handle_ms = service.handle_ms_or(expected_handle_ms);
    let patience_ms = service.patience_ms;
    let load = Load::new(arrivals.arrived as f64 / (arrivals.window_ms.max(1) as f64 / 1000.0), handle_ms / 1000.0)
        .ok()
        .filter(|l| l.erlangs() <= queueing::MAX_ERLANGS);
    let erlang_c =
        load.and_then(|l| queueing::agents_needed(l, goal, |n| queueing::erlang_c_outcome(n, l, goal.target_s)));
    let erlang_a = load.and_then(|l| match patience_ms {
        Some(p) => queueing::agents_needed(l, goal, |n| queueing::erlang_a_outcome(n, l, p / 1000.0, goal.target_s)),
        None => erlang_c,
    });
    let short = |s: Option<Staffing>| s.map_or(0, |s| s.scheduled.saturating_sub(serving));
    Advice {
        load,
        handle_ms,
        patience_ms,
        erlang_c,
        erlang_a,
        serving,
        shortfall_c: short(erlang_c),
        shortfall_a: short(erlang_a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CaseId, Level, SkillLevel};

    fn spec(lang: &str, tier: Tier, skills: &[(&str, u8)]) -> CaseSpec {
        CaseSpec {
            id: CaseId::parse("id", "c1").unwrap(),
            language: Language::parse("language", lang).unwrap(),
            min_proficiency: Level::MIN,
            required_skills: skills
                .iter()
                .map(|(s, l)| SkillLevel {
                    skill: Skill::parse("s", s).unwrap(),
                    level: Level::parse("l", u32::from(*l)).unwrap(),
                })
                .collect(),
            preferred_skills: vec![],
            tier,
            priority: 0,
            channel: Channel::Chat,
            summary: String::new(),
            sentiment: 0.0,
            customer: None,
            previous_agent: None,
            ttl_ms: None,
            market: None,
            data_region: None,
            required_clearance: 0,
            required_certifications: vec![],
        }
    }

    #[test]
    fn a_segment_folds_levels_and_orders_skills_and_its_key_reads_back() {
        let s = Segment::of(&spec("de-AT", Tier::Vip, &[("refunds", 3), ("billing", 2), ("billing", 4)]));
        assert_eq!(s.key(), "de/vip/chat/billing+refunds");
        assert_eq!(Segment::parse_key(&s.key()), Some(s.clone()));
        let plain = Segment::of(&spec("fr", Tier::Standard, &[]));
        assert_eq!(plain.key(), "fr/standard/chat/-");
        assert_eq!(Segment::parse_key(&plain.key()), Some(plain.clone()));
        assert_eq!(Segment::parse_key("fr/gold/chat/-"), None);
        assert_eq!(Segment::parse_key("fr/vip/chat"), None);
        let f =
            SegmentFilter::parse("segment", "de", Some(None), Some(Some(Channel::Chat)), &["billing"], false).unwrap();
        assert!(f.matches(&s) && !f.matches(&plain));
        assert!(!SegmentFilter::exactly(&plain).matches(&Segment { language: "fr".into(), ..s.clone() }));
        let e = SegmentFilter::parse("segment", "", Some(None), Some(None), &[], false).unwrap_err();
        assert_eq!(e.field, "segment.language");
        let e = SegmentFilter::parse("segment", "de", None, Some(None), &[], false).unwrap_err();
        assert_eq!(e.field, "segment.tier");
        let e = SegmentFilter::parse("segment", "de", Some(None), Some(None), &["Bad Skill"], false).unwrap_err();
        assert_eq!(e.field, "segment.skills[0]");
    }

    #[test]
    fn rates_are_means_over_the_window_and_patience_is_total_wait_over_abandons() {
        let mut t = Totals::default();
        for (c, v) in [
            (SegmentCounter::Arrived, 30),
            (SegmentCounter::Answered, 20),
            (SegmentCounter::AnsweredWaitMs, 20 * 30_000),
            (SegmentCounter::Abandoned, 5),
            (SegmentCounter::AbandonedWaitMs, 5 * 60_000),
            (SegmentCounter::Completed, 10),
            (SegmentCounter::HandleMs, 10 * 300_000),
            (SegmentCounter::Offered, 25),
            (SegmentCounter::Accepted, 20),
            (SegmentCounter::AcceptMs, 20 * 4_000),
        ] {
            t.add(c, v);
        }
        let r = Rates::of(&t, 15 * 60_000);
        assert_eq!(r.arrivals_per_hour, 120.0);
        assert_eq!(r.abandonment, 0.2);
        // (600 000 + 300 000) / 5.
        assert_eq!(r.patience_ms, Some(180_000.0));
        assert_eq!(r.mean_handle_ms, Some(300_000.0));
        assert_eq!(r.accept_ratio, Some(0.8));
        assert_eq!(r.mean_time_to_accept_ms, Some(4_000.0));
        assert_eq!(r.handle_ms_or(1.0), 300_000.0);
        let few = Rates { completed: 2, ..r };
        assert_eq!(few.handle_ms_or(1.0), 1.0);
        let empty = Rates::of(&Totals::default(), 60_000);
        assert_eq!((empty.patience_ms, empty.mean_handle_ms, empty.abandonment), (None, None, 0.0));
    }

    #[test]
    fn failed_offers_before_the_accept_lengthen_the_wait_for_it() {
        let totals = |offered: i64, accepted: i64, failed: i64, failed_ms: i64| {
            let mut t = Totals::default();
            t.add(SegmentCounter::Offered, offered);
            t.add(SegmentCounter::Accepted, accepted);
            t.add(SegmentCounter::AcceptMs, accepted * 4_000);
            t.add(SegmentCounter::OfferFailed, failed);
            t.add(SegmentCounter::OfferFailedMs, failed_ms);
            Rates::of(&t, 900_000)
        };
        // Half the offers fail, after 20 s each: one failure per accept, 4 s + 20 s.
        let half = totals(10, 5, 5, 100_000);
        assert_eq!(half.mean_failed_offer_ms, Some(20_000.0));
        assert_eq!(offer_to_accept_ms(&half, &Rates::default()), 24_000.0);
        // Every offer accepted: the accept time alone.
        assert_eq!(offer_to_accept_ms(&totals(10, 10, 0, 0), &Rates::default()), 4_000.0);
        // A segment with too few offers reads its language and channel's.
        let few = totals(2, 1, 1, 5_000);
        assert_eq!(offer_to_accept_ms(&few, &half), 4_000.0 + 20_000.0);
        // Nearly every offer failing is planned as at most four failures per accept.
        let hopeless = totals(100, 1, 99, 99 * 10_000);
        assert_eq!(offer_to_accept_ms(&hopeless, &Rates::default()), 4_000.0 + 4.0 * 10_000.0);
    }

    #[test]
    fn slots_ending_a_wrap_up_or_cool_down_free_before_busy_ones() {
        let mut supply = Supply { serving: 10, slots: 10, vip_slots: 10, ..Supply::default() };
        for in_ms in [9_000, 3_000, 40_000] {
            supply.add_soon(1, in_ms);
        }
        assert_eq!((supply.soon_slots, &supply.soon_ms[..4]), (3, &[3_000, 9_000, 40_000, 0][..]));
        let base = WaitInputs {
            ahead: 0,
            ahead_vip: 0,
            supply,
            handle_ms: 300_000.0,
            time_to_accept_ms: 5_000.0,
            overtaking_per_ms: 0.0,
            patience_ms: None,
        };
        // First in line takes the slot free in 3 s, the second the one in 9 s, the third 40 s.
        assert_eq!(estimate_wait(&base), Some(8_000));
        assert_eq!(estimate_wait(&WaitInputs { ahead: 1, ..base }), Some(14_000));
        assert_eq!(estimate_wait(&WaitInputs { ahead: 2, ..base }), Some(45_000));
        // The fourth waits for a busy slot: the first of ten, 300 s / 10 = 30 s, as without them.
        let plain = WaitInputs { supply: Supply { soon_slots: 0, soon_ms: [0; SOON], ..supply }, ..base };
        assert_eq!(estimate_wait(&WaitInputs { ahead: 3, ..base }), estimate_wait(&plain));
        // Only the soonest SOON are kept, in order.
        let mut many = Supply::default();
        for in_ms in (0..20u64).rev() {
            many.add_soon(1, in_ms * 1_000);
        }
        assert_eq!(many.soon_slots, 20);
        assert_eq!(many.soon_ms, [0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000]);
    }

    #[test]
    fn a_place_in_line_counts_competing_cases_and_the_slots_that_must_free() {
        let supply = Supply { serving: 4, free: 1, slots: 4, free_slots: 1, vip_slots: 2, ..Supply::default() };
        let i = WaitInputs {
            ahead: 0,
            ahead_vip: 0,
            supply,
            handle_ms: 300_000.0,
            time_to_accept_ms: 0.0,
            overtaking_per_ms: 0.0,
            patience_ms: None,
        };
        assert_eq!(position(&i), Position { cases_ahead: 0, slots_to_free: 0 }, "the free slot is its");
        assert_eq!(position(&WaitInputs { ahead: 1, ..i }), Position { cases_ahead: 1, slots_to_free: 1 });
        assert_eq!(position(&WaitInputs { ahead: 5, ..i }), Position { cases_ahead: 5, slots_to_free: 5 });
        // Four VIP cases ahead of a standard one hold up half the slots: they count as two.
        let vips = WaitInputs { ahead: 4, ahead_vip: 4, ..i };
        assert_eq!(position(&vips), Position { cases_ahead: 2, slots_to_free: 2 });
        let e = WaitEstimate::of(&vips, 7);
        assert_eq!((e.at, e.wait_ms, e.position), (7, estimate_wait(&vips), position(&vips)));
        assert_eq!(estimate_wait(&WaitInputs { ahead: 0, ..i }), Some(0), "served at once");
        // An estimate stored before the position was kept reads as first in line.
        let old: WaitEstimate = serde_json::from_str(r#"{"at":5,"wait_ms":9000}"#).unwrap();
        assert_eq!(old.position, Position::default());
    }

    #[test]
    fn the_estimate_is_position_over_service_rate_and_grows_with_the_queue() {
        let supply = Supply { serving: 10, free: 0, slots: 10, free_slots: 0, vip_slots: 10, ..Supply::default() };
        let base = WaitInputs {
            ahead: 0,
            ahead_vip: 0,
            supply,
            handle_ms: 300_000.0,
            time_to_accept_ms: 5_000.0,
            overtaking_per_ms: 0.0,
            patience_ms: None,
        };
        // First in line, nothing free: the next of 10 slots frees in 300 s / 10 = 30 s.
        assert_eq!(estimate_wait(&base), Some(35_000));
        assert_eq!(estimate_wait(&WaitInputs { ahead: 9, ..base }), Some(305_000));
        // Free slots: served at once.
        let free = Supply { free: 3, free_slots: 3, ..supply };
        assert_eq!(estimate_wait(&WaitInputs { ahead: 2, supply: free, ..base }), Some(5_000));
        assert_eq!(estimate_wait(&WaitInputs { ahead: 3, supply: free, ..base }), Some(35_000));
        // Overtaking VIP arrivals slow the line; a growing queue is long, not infinite.
        let overtaken = estimate_wait(&WaitInputs { overtaking_per_ms: 1.0 / 60_000.0, ..base }).unwrap();
        assert!(overtaken > 35_000, "{overtaken}");
        let swamped = estimate_wait(&WaitInputs { overtaking_per_ms: 1.0, ..base }).unwrap();
        assert_eq!(swamped, 305_000);
        // VIP cases overtake only on the slots of VIP-certified agents: none, no slowing; half,
        // half as much.
        let none_vip =
            WaitInputs { overtaking_per_ms: 1.0 / 60_000.0, supply: Supply { vip_slots: 0, ..supply }, ..base };
        assert_eq!(estimate_wait(&none_vip), estimate_wait(&base));
        let half = WaitInputs { supply: Supply { vip_slots: 5, ..supply }, ..none_vip };
        let half = estimate_wait(&half).unwrap();
        assert!(35_000 < half && half < overtaken, "{half} between 35000 and {overtaken}");
        // Nobody signed in: unknown.
        assert_eq!(estimate_wait(&WaitInputs { supply: Supply::default(), ..base }), None);
        // Monotone in the position.
        let mut last = 0;
        for ahead in 0..50 {
            let w = estimate_wait(&WaitInputs { ahead, ..base }).unwrap();
            assert!(w >= last);
            last = w;
        }
        // Customers ahead who give up shorten the wait: 10 ahead of 10 busy slots (30 s per
        // slot), patience 300 s: 1/(1/30 + j/300) summed over j = 0..=10 is about 158 s, not 330.
        let impatient = estimate_wait(&WaitInputs { ahead: 10, patience_ms: Some(300_000.0), ..base }).unwrap();
        let expected: f64 = (0..=10).map(|j| 1.0 / (1.0 / 30_000.0 + f64::from(j) / 300_000.0)).sum::<f64>() + 5_000.0;
        assert_eq!(impatient, expected.round() as u64);
        assert!(impatient < estimate_wait(&WaitInputs { ahead: 10, ..base }).unwrap());
        // Endless patience is the patient estimate.
        let patient = WaitInputs { ahead: 10, patience_ms: Some(f64::MAX), ..base };
        assert_eq!(estimate_wait(&patient), estimate_wait(&WaitInputs { ahead: 10, ..base }));
        // Ten VIP cases ahead of a standard case where half the slots are VIP-certified hold it
        // up like five; with every slot certified, like ten.
        let half = Supply { vip_slots: 5, ..supply };
        let vips = WaitInputs { ahead: 10, ahead_vip: 10, supply: half, ..base };
        assert_eq!(estimate_wait(&vips), estimate_wait(&WaitInputs { ahead: 5, supply: half, ..base }));
        let all = WaitInputs { ahead: 10, ahead_vip: 10, ..base };
        assert_eq!(estimate_wait(&all), estimate_wait(&WaitInputs { ahead: 10, ..base }));
        assert_eq!(WaitBand::of(Some(59_999)), WaitBand::UnderOneMinute);
        assert_eq!(WaitBand::of(Some(60_000)), WaitBand::OneToThreeMinutes);
        assert_eq!(WaitBand::of(Some(600_000)), WaitBand::ThreeToTenMinutes);
        assert_eq!(WaitBand::of(Some(600_001)), WaitBand::OverTenMinutes);
        assert_eq!(WaitBand::of(None), WaitBand::Unknown);
        let e = WaitEstimate { at: 1_000, wait_ms: Some(90_000), position: Position::default() };
        assert_eq!((e.remaining_ms(31_000), e.remaining_ms(200_000), e.review_at()), (Some(60_000), Some(0), 31_000));
        assert_eq!(WaitEstimate { at: 0, wait_ms: Some(10), position: Position::default() }.review_at(), 1_000);
    }

    #[test]
    fn competing_cases_share_the_channel_and_need_nothing_more_than_the_case() {
        let plain = spec("de", Tier::Standard, &[]);
        let billing = spec("de", Tier::Standard, &[("billing", 2)]);
        let vip = spec("de", Tier::Vip, &[]);
        assert!(competes(&plain, &billing) && competes(&vip, &plain));
        assert!(!competes(&billing, &plain));
        assert!(!competes(&spec("de", Tier::Standard, &[("billing", 3)]), &billing));
        let voice = CaseSpec { channel: Channel::Voice, ..plain.clone() };
        assert!(!competes(&voice, &plain));
    }

    #[test]
    fn advice_meets_the_textbook_case_and_the_shortfall_is_need_minus_serving() {
        // 100 contacts per 30 minutes, 3-minute handle, 80 % in 20 s: 14 agents.
        let mut t = Totals::default();
        t.add(SegmentCounter::Arrived, 50); // 50 per 15 minutes = 100 per 30.
        let arrivals = Rates::of(&t, ARRIVAL_WINDOW_MS);
        let service = Rates::default();
        let goal = Goal::new(20.0, 0.8, 1.0, 0.0).unwrap();
        let a = advise(&arrivals, &service, goal, 9, 180_000.0);
        assert_eq!(a.erlang_c.map(|s| s.on_queue), Some(14));
        assert_eq!(a.erlang_a, a.erlang_c, "nobody gave up: Erlang A is Erlang C");
        assert_eq!((a.shortfall_c, a.shortfall_a), (5, 5));
        // Impatient customers: fewer agents reach the target (those who give up are not served).
        let mut s = Totals::default();
        s.add(SegmentCounter::Answered, 10);
        s.add(SegmentCounter::AnsweredWaitMs, 10 * 20_000);
        s.add(SegmentCounter::Abandoned, 5);
        s.add(SegmentCounter::AbandonedWaitMs, 5 * 20_000);
        let impatient = advise(&arrivals, &Rates::of(&s, SERVICE_WINDOW_MS), goal, 20, 180_000.0);
        assert!(impatient.erlang_a.unwrap().on_queue <= 14);
        assert_eq!(impatient.shortfall_c, 0);
        // No arrivals: nothing needed.
        let idle = advise(&Rates::of(&Totals::default(), ARRIVAL_WINDOW_MS), &service, goal, 3, 180_000.0);
        assert_eq!((idle.erlang_c, idle.shortfall_c), (None, 0));
    }
}
