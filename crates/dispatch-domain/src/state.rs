//! The two records the dispatcher persists: [`Agent`] (profile + live state) and [`Case`]
//! (spec + lifecycle + offer history). Both carry a `version`, the fencing token a store checks
//! before writing (compare-and-set); stores set it, the rules never do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{AgentId, AgentProfile, CaseId, CaseSpec, Channel, Millis, OfferId, SessionId, TenantId};
use crate::policy::{Policy, Relaxed};

/// What the agent chose, or was forced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Signed out, or the presence grace ran out.
    Offline,
    /// Wants work.
    Available,
    /// Signed in, no new work (by choice, or after missed offers).
    Away,
}

/// Why an agent's status is what it is: the last status change's cause, sent to the device and
/// shown to planners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReason {
    /// A device signed in (status away until the agent asks for available).
    SignedIn,
    /// A device reconnected within the grace period; the status was kept.
    SessionResumed,
    /// The agent asked for it.
    #[default]
    Requested,
    /// Set away after `max_consecutive_misses` offers missed in a row.
    MissedOffers,
    /// The device stayed away past the presence grace period: signed out.
    PresenceLost,
}

impl StatusReason {
    /// Lower-case name, sent to devices.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusReason::SignedIn => "signed_in",
            StatusReason::SessionResumed => "session_resumed",
            StatusReason::Requested => "requested",
            StatusReason::MissedOffers => "missed_offers",
            StatusReason::PresenceLost => "presence_lost",
        }
    }
}

/// The planner's exclusive bucket for an agent at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Not signed in.
    Offline,
    /// Could take an offer now (for some channel).
    Available,
    /// Available by status but cannot take an offer now.
    Busy,
    /// Away.
    Away,
    /// Signed in but the device is gone, within its reconnect grace period (whatever its status).
    Reconnecting,
}

/// One signed-in device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Minted per connection; a stale connection's events are ignored by comparing it.
    pub id: SessionId,
    /// The stream is open.
    pub connected: bool,
    /// When the stream dropped (while `connected` is false).
    pub disconnected_at: Option<Millis>,
    /// The presence lease of this session runs at least until then (set at connect; renewals
    /// move only the timer). A lease timer firing earlier belongs to an older session: stale.
    #[serde(default)]
    pub lease_until: Millis,
}

/// The offer an agent is holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffer {
    /// The offer.
    pub offer_id: OfferId,
    /// Its case.
    pub case_id: CaseId,
    /// The case's channel (it counts against that capacity).
    pub channel: Channel,
    /// When it times out.
    pub deadline: Millis,
}

/// An agent: the roster profile and the live state, one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// From the roster.
    pub profile: AgentProfile,
    /// Chosen status.
    pub status: AgentStatus,
    /// The current device session, if signed in.
    pub session: Option<Session>,
    /// The live offer, at most one at a time.
    pub pending_offer: Option<PendingOffer>,
    /// Cases the agent accepted and has not completed, with their channel.
    pub assignments: BTreeMap<CaseId, Channel>,
    /// Offers missed in a row (reset by any answer).
    pub consecutive_misses: u32,
    /// No offers before this time (wrap-up after a completed case).
    pub wrap_up_until: Millis,
    /// No offers before this time (after a decline or a miss).
    pub cool_down_until: Millis,
    /// When the agent last became free of all work (fairness: longest idle first).
    pub idle_since: Millis,
    /// Offers ever made to this agent.
    pub offers_received: u64,
    /// Offers this agent accepted.
    pub offers_accepted: u64,
    /// Why the status is what it is (the last status change's cause).
    #[serde(default)]
    pub status_reason: StatusReason,
    /// Status changes so far (sign-ins and resumes included): a replica that sees this move
    /// between two versions of the record tells the device, whichever replica decided it.
    #[serde(default)]
    pub status_changes: u64,
    /// Assigned cases taken back from this agent (it vanished or went quiet on them).
    #[serde(default)]
    pub hand_backs: u64,
    /// Engaged time and the day's figures, for the working-time limits and the agent's own
    /// figures ([`crate::worktime`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub work: crate::worktime::WorkLog,
    /// Customers' ratings of the cases it completed ([`crate::reputation`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub ratings: crate::reputation::Ratings,
    /// The latest invitation to come online (kept after it closes, until the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<crate::callin::Invitation>,
    /// Call-in history: invitations sent today and in all, and how many it answered.
    #[serde(default, skip_serializing_if = "is_default")]
    pub call_in: crate::callin::CallInLog,
    /// Fencing token, set by the store.
    pub version: u64,
}

/// The parts of an agent's record its readiness is decided from: a small copy, so that an index
/// may keep it inline and ask the same rule ([`Readiness::unready_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The device stream is open.
    pub connected: bool,
    /// Status available.
    pub available: bool,
    /// An offer is out to it.
    pub offer_held: bool,
    /// The end of its wrap-up.
    pub wrap_up_until: Millis,
    /// The end of its cool-down.
    pub cool_down_until: Millis,
    /// The end of the working-time cap it reached, if any.
    pub capped_until: Option<Millis>,
}

impl Readiness {
    /// Why the agent cannot take any offer at `now`, ignoring the case: `None` when it can.
    pub fn unready_reason(&self, now: Millis) -> Option<&'static str> {
        if !self.connected {
            Some("not connected")
        } else if !self.available {
            Some("not available")
        } else if self.offer_held {
            Some("holding an offer")
        } else if now < self.wrap_up_until {
            Some("in wrap-up")
        } else if now < self.cool_down_until {
            Some("cooling down")
        } else if self.capped_until.is_some_and(|until| now < until) {
            Some("at a working-time limit")
        } else {
            None
        }
    }

    /// When the agent can take an offer if nothing changes but time: `now` if it can now, the
    /// end of its wrap-up or cool-down if only those hold it back; `None` if anything else does.
    pub fn ready_at(&self, now: Millis) -> Option<Millis> {
        let t = now.max(self.wrap_up_until).max(self.cool_down_until);
        self.unready_reason(t).is_none().then_some(t)
    }
}

/// What the supply of a segment counts of one agent ([`crate::demand::Supply::count`]): its
/// status, readiness, capacity and load per channel (in [`Channel::ALL`] order) and whether it
/// holds the VIP certification. Small and `Copy`, so that an index keeps it inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Its status.
    pub status: AgentStatus,
    /// Its readiness.
    pub readiness: Readiness,
    /// Capacity per channel.
    pub capacity: [u16; 3],
    /// Offers plus assignments per channel.
    pub load: [u16; 3],
    /// Holds the VIP certification.
    pub vip: bool,
}

impl Standing {
    /// Capacity and load in `channel`.
    pub fn in_channel(&self, channel: Channel) -> (u32, u32) {
        let i = channel.index();
        (u32::from(self.capacity[i]), u32::from(self.load[i]))
    }
}

impl Agent {
    /// A newly registered agent: offline, no history.
    pub fn new(profile: AgentProfile, now: Millis) -> Self {
        Self {
            profile,
            status: AgentStatus::Offline,
            session: None,
            pending_offer: None,
            assignments: BTreeMap::new(),
            consecutive_misses: 0,
            wrap_up_until: 0,
            cool_down_until: 0,
            idle_since: now,
            offers_received: 0,
            offers_accepted: 0,
            status_reason: StatusReason::Requested,
            status_changes: 0,
            hand_backs: 0,
            work: crate::worktime::WorkLog::default(),
            ratings: crate::reputation::Ratings::default(),
            invitation: None,
            call_in: crate::callin::CallInLog::default(),
            version: 0,
        }
    }

    /// Sets the status for `reason` (counted as a status change, even if the status stays).
    pub fn change_status(&mut self, status: AgentStatus, reason: StatusReason) {
        self.status = status;
        self.status_reason = reason;
        self.status_changes += 1;
    }

    /// The agent becomes idle from `now` when it holds no offer and no assignment (fairness:
    /// longest idle first counts from there).
    pub fn idle_if_free(&mut self, now: Millis) {
        if self.pending_offer.is_none() && self.assignments.is_empty() {
            self.idle_since = now;
        }
    }

    /// Whether the device is in its reconnect grace period: signed in, stream dropped. Such an
    /// agent cannot take an offer, so planners count it apart.
    pub fn in_grace(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.connected)
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.profile.id
    }

    /// Whether the agent and `case` (one it holds, as read; `None`: gone) agree that it holds
    /// it: the case names this agent as its current one.
    pub fn holding_agrees(&self, case: Option<&Case>) -> bool {
        case.is_some_and(|c| c.current_agent() == Some(self.id()))
    }

    /// The device stream is open.
    pub fn connected(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.connected)
    }

    /// Offers plus assignments in `channel`.
    pub fn load(&self, channel: Channel) -> u32 {
        let assigned = self.assignments.values().filter(|c| **c == channel).count() as u32;
        assigned + u32::from(self.pending_offer.as_ref().is_some_and(|o| o.channel == channel))
    }

    /// Room for one more case of `channel`.
    pub fn has_room(&self, channel: Channel) -> bool {
        self.load(channel) < self.profile.capacity_for(channel)
    }

    /// Could take an offer as far as its record goes: signed in and connected, available, no
    /// offer held, room in some channel. Time-bound conditions (wrap-up, cool-down) are left to
    /// [`Agent::unready_reason`]. Indexes keep only such agents.
    pub fn routable(&self) -> bool {
        self.connected()
            && self.status == AgentStatus::Available
            && self.pending_offer.is_none()
            && Channel::ALL.iter().any(|c| self.has_room(*c))
    }

    /// Why the agent cannot take any offer now, ignoring the case: `None` when it can.
    pub fn unready_reason(&self, now: Millis) -> Option<&'static str> {
        self.readiness().unready_reason(now)
    }

    /// When the agent can take an offer if nothing changes but time: `now` if it can now, the
    /// end of its wrap-up or cool-down if only those hold it back; `None` if anything else does.
    pub fn ready_at(&self, now: Millis) -> Option<Millis> {
        self.readiness().ready_at(now)
    }

    /// What its readiness is decided from ([`Readiness`]).
    pub fn readiness(&self) -> Readiness {
        Readiness {
            connected: self.connected(),
            available: self.status == AgentStatus::Available,
            offer_held: self.pending_offer.is_some(),
            wrap_up_until: self.wrap_up_until,
            cool_down_until: self.cool_down_until,
            capped_until: self.work.capped.map(|c| c.until),
        }
    }

    /// What supply counts of it ([`Standing`]).
    pub fn standing(&self) -> Standing {
        let narrow = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        Standing {
            status: self.status,
            readiness: self.readiness(),
            capacity: Channel::ALL.map(|c| narrow(self.profile.capacity_for(c))),
            load: Channel::ALL.map(|c| narrow(self.load(c))),
            vip: self.profile.holds_vip(),
        }
    }

    /// The planner's bucket.
    pub fn activity(&self, now: Millis) -> Activity {
        match (&self.session, self.status) {
            (None, _) | (_, AgentStatus::Offline) => Activity::Offline,
            (Some(s), _) if !s.connected => Activity::Reconnecting,
            (Some(_), AgentStatus::Away) => Activity::Away,
            (Some(_), AgentStatus::Available) => {
                if self.unready_reason(now).is_none() && Channel::ALL.iter().any(|c| self.has_room(*c)) {
                    Activity::Available
                } else {
                    Activity::Busy
                }
            }
        }
    }

    /// When the agent may next become ready for work through time alone (end of wrap-up or
    /// cool-down), if that is in the future.
    pub fn next_ready_at(&self, now: Millis) -> Option<Millis> {
        let capped = self.work.capped.map_or(0, |c| c.until);
        let at = self.wrap_up_until.max(self.cool_down_until).max(capped);
        (at > now).then_some(at)
    }

    /// Smoothed acceptance ratio, 0..=1: (accepted + 1) / (received + 2).
    pub fn acceptance_ratio(&self) -> f64 {
        (self.offers_accepted as f64 + 1.0) / (self.offers_received as f64 + 2.0)
    }
}

/// Where a case is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CaseState {
    /// Waiting for an agent.
    Queued,
    /// One live offer out.
    Offered {
        /// The live offer.
        offer_id: OfferId,
        /// To whom.
        agent_id: AgentId,
        /// Until when.
        deadline: Millis,
    },
    /// An agent accepted.
    Assigned {
        /// The accepted offer.
        offer_id: OfferId,
        /// The agent working on it.
        agent_id: AgentId,
    },
    /// The agent finished it.
    Completed,
    /// The router cancelled it.
    Cancelled,
    /// Its time-to-live ran out while it waited.
    Expired,
}

impl CaseState {
    /// Completed, cancelled or expired: nothing more happens.
    pub fn is_terminal(&self) -> bool {
        matches!(self, CaseState::Completed | CaseState::Cancelled | CaseState::Expired)
    }

    /// Waiting for a human: queued, or offered and not yet accepted (an estimate is shown).
    pub fn waits(&self) -> bool {
        matches!(self, CaseState::Queued | CaseState::Offered { .. })
    }

    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            CaseState::Queued => "queued",
            CaseState::Offered { .. } => "offered",
            CaseState::Assigned { .. } => "assigned",
            CaseState::Completed => "completed",
            CaseState::Cancelled => "cancelled",
            CaseState::Expired => "expired",
        }
    }
}

/// How an offer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferOutcome {
    /// Still live.
    Pending,
    /// Accepted.
    Accepted,
    /// Declined by the agent.
    Declined,
    /// Not answered in time.
    TimedOut,
    /// Taken back (disconnect, away, cancel).
    Revoked,
}

/// The soft scoring terms (see [`crate::scoring::score`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// Language proficiency above the minimum.
    Language,
    /// Skill levels above the requirement; preferred skills held.
    SkillDepth,
    /// Customer rating.
    Rating,
    /// Time since the agent became free.
    Idle,
    /// Share of offers accepted.
    Acceptance,
    /// Previous agent of this customer.
    Affinity,
}

impl Term {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Term::Language => "language",
            Term::SkillDepth => "skill_depth",
            Term::Rating => "rating",
            Term::Idle => "idle",
            Term::Acceptance => "acceptance",
            Term::Affinity => "affinity",
        }
    }
}

/// One scoring term of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermScore {
    /// Term.
    pub name: Term,
    /// 0..=1 before weighting.
    pub value: f64,
    /// The configured weight.
    pub weight: f64,
}

impl TermScore {
    /// `value × weight`.
    pub fn contribution(&self) -> f64 {
        self.value * self.weight
    }
}

/// A candidate with its score and terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The agent.
    pub agent_id: AgentId,
    /// Sum of contributions.
    pub total: f64,
    /// The terms, in a fixed order.
    pub terms: Vec<TermScore>,
}

/// Why an offer went to its agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Best first; the first is the winner.
    pub candidates: Vec<CandidateScore>,
    /// Agents that passed the hard filters.
    pub eligible: u32,
    /// Relaxation in force.
    pub relaxations: Vec<String>,
    /// Agents considered and found ineligible, by rule ([`crate::scoring::Ineligible::code`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded: BTreeMap<String, u32>,
}

/// One offer in a case's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferRecord {
    /// Offer id.
    pub id: OfferId,
    /// To whom.
    pub agent_id: AgentId,
    /// When made.
    pub offered_at: Millis,
    /// When it times out.
    pub deadline: Millis,
    /// How it ended.
    pub outcome: OfferOutcome,
    /// When it ended (0 while pending).
    pub decided_at: Millis,
    /// Decline reason or revoke cause; for an accepted offer handed back, why it was.
    pub reason: String,
    /// Why this agent.
    pub explanation: Explanation,
    /// When the assignment this accepted offer made was handed back to the queue (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_back_at: Millis,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero(v: &Millis) -> bool {
    *v == 0
}

/// The agent a handed-back case prefers should they come back soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Returning {
    /// The agent the case was taken from.
    pub agent_id: AgentId,
    /// The preference lasts until then.
    pub until: Millis,
}

/// How many offers a case's history keeps (the oldest are dropped).
pub const MAX_OFFER_HISTORY: usize = 64;

/// A case: the spec and its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// As submitted.
    pub spec: CaseSpec,
    /// When submitted; the age used for ordering never resets.
    pub created_at: Millis,
    /// Where it is.
    pub state: CaseState,
    /// Offers, oldest first (at most [`MAX_OFFER_HISTORY`]).
    pub offers: Vec<OfferRecord>,
    /// Agents not to offer it again before the given time (declined or missed).
    pub excluded: BTreeMap<AgentId, Millis>,
    /// Why it closed: the completion outcome, or the cancel or expiry reason (empty while
    /// open). Stored as `outcome` (the name records were written with).
    #[serde(rename = "outcome")]
    pub close_reason: String,
    /// When it reached a terminal state (0 before).
    pub closed_at: Millis,
    /// The tenant whose router submitted it (`None`: submitted without tenant scoping).
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// The W3C `traceparent` of the submit, when it was traced: later spans of the case (its
    /// offers, on any replica) link back to it. Observability only; no rule reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// While assigned: the last sign of work from its agent (the accept, then each reported
    /// activity), for the activity timer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub activity_at: Millis,
    /// While assigned: when the agent was warned that the case will be handed back for want of
    /// activity (0: not warned since the last activity).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub activity_warned_at: Millis,
    /// A handed-back case's preference for the agent it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returning: Option<Returning>,
    /// The customer's rating, once given (completed cases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<crate::reputation::CaseRating>,
    /// While waiting: the latest estimate of its wait (made at submission and recomputed as it
    /// waits), so that every replica reports the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::demand::WaitEstimate>,
    /// Fencing token, set by the store.
    pub version: u64,
}

impl Case {
    /// The estimate the case shows: its stored one while it waits (queued or offered).
    pub fn waiting_estimate(&self) -> Option<crate::demand::WaitEstimate> {
        self.estimate.filter(|_| self.state.waits())
    }

    /// A newly submitted case.
    pub fn new(spec: CaseSpec, now: Millis) -> Self {
        Self {
            spec,
            created_at: now,
            state: CaseState::Queued,
            offers: Vec::new(),
            excluded: BTreeMap::new(),
            close_reason: String::new(),
            closed_at: 0,
            tenant: None,
            trace: None,
            activity_at: 0,
            activity_warned_at: 0,
            returning: None,
            rating: None,
            estimate: None,
            version: 0,
        }
    }

    /// Whether a caller scoped to `tenant` may see this case (`None`: unscoped, sees all).
    /// A router never learns that another tenant's case exists.
    pub fn visible_to(&self, tenant: Option<&TenantId>) -> bool {
        tenant.is_none_or(|t| self.tenant.as_ref() == Some(t))
    }

    /// The case's id.
    pub fn id(&self) -> &CaseId {
        &self.spec.id
    }

    /// How long it has waited (from submission to now, or to its end).
    pub fn waited_ms(&self, now: Millis) -> u64 {
        let end = if self.closed_at > 0 { self.closed_at } else { now };
        u64::try_from(end - self.created_at).unwrap_or(0)
    }

    /// Relaxation in force at `now`.
    pub fn relaxed(&self, policy: &Policy, now: Millis) -> Relaxed {
        policy.relaxed(self.waited_ms(now))
    }

    /// The queue order key: lower goes first. Age plus head starts: a VIP case is worth
    /// `vip_head_start_ms` of waiting, a priority point `priority_head_start_ms`. As every case
    /// ages at the same rate the order of two cases never changes while they wait, and an older
    /// standard case overtakes a newer VIP one once it has waited the head start longer: no tier
    /// starves.
    pub fn queue_rank(&self, policy: &Policy) -> i64 {
        let vip = if self.spec.tier == crate::model::Tier::Vip { policy.vip_head_start_ms } else { 0 };
        let prio = u64::from(self.spec.priority) * policy.priority_head_start_ms;
        self.created_at.saturating_sub(i64::try_from(vip.saturating_add(prio)).unwrap_or(i64::MAX))
    }

    /// Only VIP-certified agents may take it under this relaxation.
    pub fn needs_vip_certified(&self, relaxed: Relaxed) -> bool {
        self.spec.tier == crate::model::Tier::Vip && !relaxed.allow_uncertified_for_vip
    }

    /// The agent who completed it (the accepted offer that was not handed back).
    pub fn completed_by(&self) -> Option<&AgentId> {
        (self.state == CaseState::Completed)
            .then(|| self.offers.iter().rev().find(|o| o.outcome == OfferOutcome::Accepted && o.handed_back_at == 0))
            .flatten()
            .map(|o| &o.agent_id)
    }

    /// The live or accepted offer's agent.
    pub fn current_agent(&self) -> Option<&AgentId> {
        match &self.state {
            CaseState::Offered { agent_id, .. } | CaseState::Assigned { agent_id, .. } => Some(agent_id),
            _ => None,
        }
    }

    /// Whether this case and `agent` (the agent it names, as read) agree about its assignment:
    /// an assigned case is held by its agent. A loss the dispatchers could not put back may
    /// leave them disagreeing.
    pub fn assignment_agrees(&self, agent: Option<&Agent>) -> bool {
        match &self.state {
            CaseState::Assigned { agent_id, .. } => {
                agent.is_some_and(|a| a.id() == agent_id && a.assignments.contains_key(self.id()))
            }
            CaseState::Queued
            | CaseState::Offered { .. }
            | CaseState::Completed
            | CaseState::Cancelled
            | CaseState::Expired => true,
        }
    }

    /// Whether an agent ever accepted it (a handed-back case has been: it no longer expires,
    /// as its customer was already being served).
    pub fn was_assigned(&self) -> bool {
        self.offers.iter().any(|o| o.outcome == OfferOutcome::Accepted)
    }

    /// Whether `agent` is the agent this handed-back case was taken from, still preferred at
    /// `now`.
    pub fn prefers_returning(&self, agent: &AgentId, now: Millis) -> bool {
        self.returning.as_ref().is_some_and(|r| &r.agent_id == agent && now < r.until)
    }

    /// The offer with this id, if in the history.
    pub fn offer(&self, id: &OfferId) -> Option<&OfferRecord> {
        self.offers.iter().rev().find(|o| &o.id == id)
    }

    pub(crate) fn offer_mut(&mut self, id: &OfferId) -> Option<&mut OfferRecord> {
        self.offers.iter_mut().rev().find(|o| &o.id == id)
    }

    /// `agent` declined or missed this case and may not get it again yet.
    pub fn excludes(&self, agent: &AgentId, now: Millis) -> bool {
        self.excluded.get(agent).is_some_and(|until| now < *until)
    }

    /// When a waiting case needs looking at again through time alone: its next relaxation
    /// step, the end of an exclusion, or its time-to-live.
    pub fn next_review_at(&self, policy: &Policy, now: Millis) -> Option<Millis> {
        if self.state != CaseState::Queued {
            return None;
        }
        let relax = policy.next_relaxation_after(self.waited_ms(now)).map(|a| self.created_at + a as i64);
        let unexclude = self.excluded.values().copied().filter(|u| *u > now).min();
        let ttl = self.spec.ttl_ms.filter(|_| !self.was_assigned()).map(|t| self.created_at + t as i64);
        let estimate = self.estimate.as_ref().map(crate::demand::WaitEstimate::review_at);
        [relax, unexclude, ttl, estimate].into_iter().flatten().min()
    }
}
