//! The state machines. Every function takes the current records, the time and the policy, and
//! returns a [`Change`]: the new records (to be written with compare-and-set on their versions),
//! the events that happened, and the timers to arm. Nothing is written here; a rejected request
//! returns a [`Rejection`] and changes nothing.
//!
//! Case:  queued → offered → assigned → completed; offered → queued on decline, time-out or
//! revoke; queued/offered/assigned → cancelled; queued → expired.
//! assigned → queued when handed back (its agent vanished past the grace period, signed out,
//! or reported no activity within the channel's activity timeout).
//! Agent: offline → away (sign-in) ⇄ available; disconnect keeps the status for the grace period,
//! then offline; missing `max_consecutive_misses` offers in a row forces away.

use serde::{Deserialize, Serialize};

use crate::model::{AgentId, AgentProfile, CaseId, CaseSpec, FieldError, Millis, OfferId, SessionId, TenantId};
use crate::policy::Policy;
use crate::scoring;
use crate::state::{
    Agent, AgentStatus, Case, CaseState, Explanation, MAX_OFFER_HISTORY, OfferOutcome, OfferRecord, PendingOffer,
    Returning, Session, StatusReason,
};
use crate::stats::Counter;

/// Why a request was refused. Each maps to one gRPC status in the transport crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A field is invalid.
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not act on it.
    #[error("{0}")]
    PermissionDenied(String),
    /// It is in the wrong state for this: why, in a word a program can switch on, and in words.
    #[error("{1}")]
    FailedPrecondition(Precondition, String),
    /// It exists with other content.
    #[error("{0}")]
    AlreadyExists(String),
    /// The command came over a session that is no longer the agent's current one (another
    /// device replaced it, or the agent signed out): the device must not act on it.
    #[error("this session is no longer the agent's current session; reconnect")]
    StaleSession,
}

/// Why a command met the wrong state (gRPC `ErrorInfo.reason` of a FAILED_PRECONDITION; stable:
/// clients switch on them, and `proto/dispatch/v1/dispatch.proto` lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// An offer was made for a case that is no longer waiting.
    CaseNotQueued,
    /// The agent cannot take the case (status, capacity, skills, ...).
    AgentNotEligible,
    /// The offer is no longer the case's live offer.
    OfferNotLive,
    /// The offer was already accepted (by this agent: a retry that lost its answer gets OK).
    OfferAlreadyAccepted,
    /// The offer was already declined.
    OfferAlreadyDeclined,
    /// The offer's deadline passed.
    OfferExpired,
    /// The offer was taken back (disconnect, away, cancel, shutdown).
    OfferRevoked,
    /// The case is not assigned (not yet accepted, or already closed).
    CaseNotAssigned,
    /// The case is closed (completed, cancelled or expired).
    CaseClosed,
    /// The agent holds an offer or assignments.
    AgentHoldsWork,
    /// The command came over a session that another device (or a sign-out) replaced.
    SessionReplaced,
    /// A rating was given for a case that is not completed.
    CaseNotCompleted,
}

impl Precondition {
    /// The stable reason, upper snake case.
    pub fn reason(self) -> &'static str {
        match self {
            Precondition::CaseNotQueued => "CASE_NOT_QUEUED",
            Precondition::AgentNotEligible => "AGENT_NOT_ELIGIBLE",
            Precondition::OfferNotLive => "OFFER_NOT_LIVE",
            Precondition::OfferAlreadyAccepted => "OFFER_ALREADY_ACCEPTED",
            Precondition::OfferAlreadyDeclined => "OFFER_ALREADY_DECLINED",
            Precondition::OfferExpired => "OFFER_EXPIRED",
            Precondition::OfferRevoked => "OFFER_REVOKED",
            Precondition::CaseNotAssigned => "CASE_NOT_ASSIGNED",
            Precondition::CaseClosed => "CASE_CLOSED",
            Precondition::AgentHoldsWork => "AGENT_HOLDS_WORK",
            Precondition::SessionReplaced => "SESSION_REPLACED",
            Precondition::CaseNotCompleted => "CASE_NOT_COMPLETED",
        }
    }

    /// Every reason.
    pub const ALL: [Precondition; 12] = [
        Precondition::CaseNotQueued,
        Precondition::AgentNotEligible,
        Precondition::OfferNotLive,
        Precondition::OfferAlreadyAccepted,
        Precondition::OfferAlreadyDeclined,
        Precondition::OfferExpired,
        Precondition::OfferRevoked,
        Precondition::CaseNotAssigned,
        Precondition::CaseClosed,
        Precondition::AgentHoldsWork,
        Precondition::SessionReplaced,
        Precondition::CaseNotCompleted,
    ];
}

impl Rejection {
    /// Why a FAILED_PRECONDITION (a stale session counts as one).
    pub fn precondition(&self) -> Option<Precondition> {
        match self {
            Rejection::FailedPrecondition(p, _) => Some(*p),
            Rejection::StaleSession => Some(Precondition::SessionReplaced),
            _ => None,
        }
    }

    /// `<what> <id> not found`.
    pub fn not_found(what: &str, id: &impl std::fmt::Display) -> Rejection {
        Rejection::NotFound(format!("{what} {id} not found"))
    }
}

/// Why a waiting case expired (its close reason).
pub const EXPIRED_REASON: &str = "time-to-live reached while waiting";

/// The close reason of a case closed again after the store lost its closing.
pub const CLOSED_BEFORE_LOSS: &str = "closed before the store lost writes; its last details are lost";

/// Why a live offer ended without an answer from its agent (what the device and watchers are
/// told, and the offer record's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// Not answered before its deadline.
    TimedOut,
    /// The agent's stream dropped.
    Disconnected,
    /// The agent went away or offline.
    AgentUnavailable,
    /// The router cancelled the case.
    Cancelled,
    /// The case had been closed already; the store lost that and brought the offer back.
    CaseClosed,
}

impl RevokeReason {
    /// Every reason.
    pub const ALL: [RevokeReason; 5] = [
        RevokeReason::TimedOut,
        RevokeReason::Disconnected,
        RevokeReason::AgentUnavailable,
        RevokeReason::Cancelled,
        RevokeReason::CaseClosed,
    ];

    /// Lower-case name, sent to agents and watchers.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::TimedOut => "timed_out",
            RevokeReason::Disconnected => "disconnected",
            RevokeReason::AgentUnavailable => "agent_unavailable",
            RevokeReason::Cancelled => "cancelled",
            RevokeReason::CaseClosed => "case_closed",
        }
    }

    /// The reason named `s` (as written by [`RevokeReason::as_str`]).
    pub fn parse(s: &str) -> Option<RevokeReason> {
        RevokeReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Why an assigned case went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandBackReason {
    /// The agent's device stayed away past the presence grace period.
    PresenceLost,
    /// The agent signed out and did not sign in again within the grace period.
    SignedOut,
    /// The agent reported no activity on the case within the channel's activity timeout.
    NoActivity,
}

impl HandBackReason {
    /// Every reason.
    pub const ALL: [HandBackReason; 3] =
        [HandBackReason::PresenceLost, HandBackReason::SignedOut, HandBackReason::NoActivity];

    /// Lower-case name, sent to agents and watchers and kept in the offer record.
    pub fn as_str(self) -> &'static str {
        match self {
            HandBackReason::PresenceLost => "presence_lost",
            HandBackReason::SignedOut => "signed_out",
            HandBackReason::NoActivity => "no_activity",
        }
    }

    /// The reason named `s`.
    pub fn parse(s: &str) -> Option<HandBackReason> {
        HandBackReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Something that happened, for watchers, agents and counters.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A case was submitted.
    Queued {
        /// Case.
        case_id: CaseId,
    },
    /// An offer was made.
    Offered {
        /// Case.
        case_id: CaseId,
        /// Offer.
        offer_id: OfferId,
        /// Agent.
        agent_id: AgentId,
        /// Deadline.
        deadline: Millis,
    },
    /// The agent declined.
    Declined {
        /// Case.
        case_id: CaseId,
        /// Offer.
        offer_id: OfferId,
        /// Agent.
        agent_id: AgentId,
        /// As given.
        reason: String,
    },
    /// The offer was not answered in time.
    TimedOut {
        /// Case.
        case_id: CaseId,
        /// Offer.
        offer_id: OfferId,
        /// Agent.
        agent_id: AgentId,
    },
    /// The offer was taken back.
    Revoked {
        /// Case.
        case_id: CaseId,
        /// Offer.
        offer_id: OfferId,
        /// Agent.
        agent_id: AgentId,
        /// Why.
        reason: RevokeReason,
    },
    /// The agent accepted.
    Assigned {
        /// Case.
        case_id: CaseId,
        /// Offer.
        offer_id: OfferId,
        /// Agent.
        agent_id: AgentId,
        /// From offer to accept.
        time_to_accept_ms: u64,
        /// The customer's tier.
        tier: crate::model::Tier,
        /// From submission to this accept: how long the customer waited for a human.
        waited_ms: u64,
    },
    /// The assignment was taken back from its agent and the case queued again, with its age.
    HandedBack {
        /// Case.
        case_id: CaseId,
        /// The accepted offer whose assignment ended.
        offer_id: OfferId,
        /// The agent it was taken from.
        agent_id: AgentId,
        /// Why.
        reason: HandBackReason,
    },
    /// The agent completed the case.
    Completed {
        /// Case.
        case_id: CaseId,
        /// Agent.
        agent_id: AgentId,
        /// As given.
        outcome: String,
    },
    /// The router cancelled the case.
    Cancelled {
        /// Case.
        case_id: CaseId,
        /// The agent who held the offer or the assignment, to be told.
        agent_id: Option<AgentId>,
        /// The live or accepted offer.
        offer_id: Option<OfferId>,
        /// As given.
        reason: String,
    },
    /// The case's time-to-live ran out while waiting.
    Expired {
        /// Case.
        case_id: CaseId,
    },
    /// The agent's status was set (on its request, on sign-in or resume, or forced).
    AgentStatus {
        /// Agent.
        agent_id: AgentId,
        /// New status.
        status: AgentStatus,
        /// Why.
        reason: StatusReason,
    },
    /// An offline agent was invited to come online for a segment in shortfall.
    Invited {
        /// Agent.
        agent_id: AgentId,
        /// The invitation.
        invitation_id: String,
        /// Its segment's key.
        segment: String,
    },
    /// An invitation ended: the agent came online, declined, or let it lapse.
    InvitationClosed {
        /// Agent.
        agent_id: AgentId,
        /// The invitation.
        invitation_id: String,
        /// Its segment's key.
        segment: String,
        /// How.
        outcome: crate::callin::InvitationOutcome,
        /// From sending to the answer, ms.
        after_ms: u64,
    },
}

impl Event {
    /// The planner counters this event moves (one place: the store adds them in the same
    /// atomic step as the commit that carried the event).
    pub fn counters(&self) -> Vec<(Counter, i64)> {
        match self {
            Event::Queued { .. } => vec![(Counter::Submitted, 1)],
            Event::Offered { .. } => vec![(Counter::OffersMade, 1)],
            Event::Declined { .. } => vec![(Counter::OffersDeclined, 1)],
            Event::TimedOut { .. } => vec![(Counter::OffersTimedOut, 1)],
            Event::Revoked { .. } => vec![(Counter::OffersRevoked, 1)],
            Event::Assigned { time_to_accept_ms, tier, waited_ms, .. } => {
                let (assigned, waited) = match tier {
                    crate::model::Tier::Vip => (Counter::AssignedVip, Counter::WaitMillisVip),
                    crate::model::Tier::Standard => (Counter::AssignedStandard, Counter::WaitMillisStandard),
                };
                vec![
                    (Counter::OffersAccepted, 1),
                    (Counter::AcceptMillisTotal, i64::try_from(*time_to_accept_ms).unwrap_or(i64::MAX)),
                    (assigned, 1),
                    (waited, i64::try_from(*waited_ms).unwrap_or(i64::MAX)),
                ]
            }
            Event::Completed { .. } => vec![(Counter::Completed, 1)],
            Event::HandedBack { .. } => vec![(Counter::HandedBack, 1)],
            Event::Cancelled { .. } => vec![(Counter::Cancelled, 1)],
            Event::Expired { .. } => vec![(Counter::Expired, 1)],
            Event::AgentStatus { .. } | Event::Invited { .. } | Event::InvitationClosed { .. } => vec![],
        }
    }

    /// A short name (metrics labels, trace attributes).
    pub fn name(&self) -> &'static str {
        match self {
            Event::Queued { .. } => "submitted",
            Event::Offered { .. } => "offered",
            Event::Assigned { .. } => "accepted",
            Event::Declined { .. } => "declined",
            Event::TimedOut { .. } => "timed_out",
            Event::Revoked { .. } => "revoked",
            Event::Completed { .. } => "completed",
            Event::HandedBack { .. } => "handed_back",
            Event::Cancelled { .. } => "cancelled",
            Event::Expired { .. } => "expired",
            Event::AgentStatus { .. } => "agent_status",
            Event::Invited { .. } => "invited",
            Event::InvitationClosed { .. } => "invitation_closed",
        }
    }

    /// The [`Event::name`] of every case event (metrics zero-initialise a series per name).
    pub const CASE_EVENT_NAMES: [&'static str; 10] = [
        "submitted",
        "offered",
        "accepted",
        "declined",
        "timed_out",
        "revoked",
        "handed_back",
        "completed",
        "cancelled",
        "expired",
    ];

    /// Whether this is an event of a case's life (every event but [`Event::AgentStatus`]).
    pub fn is_case_event(&self) -> bool {
        !matches!(self, Event::AgentStatus { .. } | Event::Invited { .. } | Event::InvitationClosed { .. })
    }
}

/// The case events that lead from `before` (`None`: not known yet) to `after`, in order,
/// derived from the records alone: the offer history and the state. Every replica derives what
/// it tells watchers and devices with this, from its own commits and from other replicas'
/// alike, so they tell the same story; a replica that missed versions in between derives the
/// same events (for offers still in the history). It equals the case events of the transitions
/// that led from one to the other (a property test checks it).
pub fn case_events(before: Option<&Case>, after: &Case) -> Vec<Event> {
    let case_id = || after.id().clone();
    let mut out = Vec::new();
    if before.is_none() {
        out.push(Event::Queued { case_id: case_id() });
    }
    for rec in &after.offers {
        let prev = before.and_then(|b| b.offer(&rec.id));
        let (offer_id, agent_id) = (|| rec.id.clone(), || rec.agent_id.clone());
        if prev.is_none() {
            out.push(Event::Offered {
                case_id: case_id(),
                offer_id: offer_id(),
                agent_id: agent_id(),
                deadline: rec.deadline,
            });
        }
        let decided_now =
            rec.outcome != OfferOutcome::Pending && prev.is_none_or(|p| p.outcome == OfferOutcome::Pending);
        if decided_now {
            out.push(match rec.outcome {
                OfferOutcome::Accepted => Event::Assigned {
                    case_id: case_id(),
                    offer_id: offer_id(),
                    agent_id: agent_id(),
                    time_to_accept_ms: u64::try_from(rec.decided_at - rec.offered_at).unwrap_or(0),
                    tier: after.spec.tier,
                    waited_ms: u64::try_from(rec.decided_at - after.created_at).unwrap_or(0),
                },
                OfferOutcome::Declined => Event::Declined {
                    case_id: case_id(),
                    offer_id: offer_id(),
                    agent_id: agent_id(),
                    reason: rec.reason.clone(),
                },
                OfferOutcome::TimedOut => {
                    Event::TimedOut { case_id: case_id(), offer_id: offer_id(), agent_id: agent_id() }
                }
                OfferOutcome::Revoked | OfferOutcome::Pending => Event::Revoked {
                    case_id: case_id(),
                    offer_id: offer_id(),
                    agent_id: agent_id(),
                    reason: RevokeReason::parse(&rec.reason).unwrap_or(RevokeReason::Disconnected),
                },
            });
        }
        if rec.handed_back_at > 0 && prev.is_none_or(|p| p.handed_back_at == 0) {
            out.push(Event::HandedBack {
                case_id: case_id(),
                offer_id: offer_id(),
                agent_id: agent_id(),
                reason: HandBackReason::parse(&rec.reason).unwrap_or(HandBackReason::PresenceLost),
            });
        }
    }
    if !after.state.is_terminal() || before.is_some_and(|b| b.state.is_terminal()) {
        return out;
    }
    let last = after.offers.last();
    match after.state {
        CaseState::Completed => {
            if let Some(o) = after.offers.iter().rev().find(|o| o.outcome == OfferOutcome::Accepted) {
                out.push(Event::Completed {
                    case_id: case_id(),
                    agent_id: o.agent_id.clone(),
                    outcome: after.close_reason.clone(),
                });
            }
        }
        CaseState::Cancelled => {
            // The offer the cancel took back, or the assignment it released.
            let held = last.filter(|o| {
                o.outcome == OfferOutcome::Accepted
                    || (o.outcome == OfferOutcome::Revoked
                        && o.reason == RevokeReason::Cancelled.as_str()
                        && o.decided_at == after.closed_at)
            });
            out.push(Event::Cancelled {
                case_id: case_id(),
                agent_id: held.map(|o| o.agent_id.clone()),
                offer_id: held.map(|o| o.id.clone()),
                reason: after.close_reason.clone(),
            });
        }
        CaseState::Expired => out.push(Event::Expired { case_id: case_id() }),
        CaseState::Queued | CaseState::Offered { .. } | CaseState::Assigned { .. } => {}
    }
    out
}

/// When a presence lease armed at `now` runs out.
pub fn lease_due(now: Millis, policy: &Policy) -> Millis {
    now + policy.presence_lease_ms as i64
}

/// Whether a session whose lease runs to `lease_until` is due for renewal at `now`: once a
/// third of the lease has run, so that a live stream's lease never runs out between sweeps.
pub fn lease_renewal_due(lease_until: Millis, now: Millis, policy: &Policy) -> bool {
    let lease = policy.presence_lease_ms as i64;
    lease_until <= now + lease - lease / 3
}

/// What a timer is for. One timer per key; arming again moves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum TimerKey {
    /// The case's live offer times out.
    OfferDeadline(CaseId),
    /// A waiting case reaches a relaxation step, an exclusion end or its time-to-live.
    CaseReview(CaseId),
    /// An agent's wrap-up or cool-down ends.
    AgentReady(AgentId),
    /// A disconnected agent's grace period ends.
    PresenceGrace(AgentId),
    /// A connected agent's presence lease ends unless the dispatcher holding its stream renews
    /// it (a dispatcher that died cannot).
    PresenceLease(AgentId),
    /// A terminal case's retention ends: it is deleted.
    Purge(CaseId),
    /// An assigned case is looked at for hand-back: its agent signed out or vanished past the
    /// grace period, or its activity timer warns or runs out.
    HandBack(CaseId),
    /// An agent's invitation to come online lapses.
    InvitationExpiry(AgentId),
}

/// The outcome of a transition: what to write, what happened, what to arm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// The case's new value, when it changed.
    pub case: Option<Case>,
    /// The agent's new value, when it changed.
    pub agent: Option<Agent>,
    /// What happened.
    pub events: Vec<Event>,
    /// Timers to arm (key, due time).
    pub timers: Vec<(TimerKey, Millis)>,
    /// Timers the change makes moot, disarmed in the same write ([`moot_timers`]; set by
    /// [`Change::settle`]). Disarming is hygiene, not correctness: a timer left armed finds
    /// nothing to do when it fires.
    pub disarm: Vec<TimerKey>,
}

impl Change {
    /// Brings the agent's working-time log up to its new state ([`crate::worktime::settle`]):
    /// every change passes here before it is written. A cap it sets arms the agent's ready
    /// timer for when it ends.
    pub fn settle(mut self, now: Millis, policy: &Policy) -> Change {
        // A case that moved on (every move has an event) no longer needs the timers of the
        // state it left, unless this change arms them again.
        if let Some(case) = self.case.as_ref().filter(|_| !self.events.is_empty()) {
            let armed = &self.timers;
            self.disarm = moot_timers(case).filter(|k| !armed.iter().any(|(a, _)| a == k)).collect();
        }
        if let Some(agent) = self.agent.as_mut() {
            // The agent's own figures of the day, from what happened to it.
            for ev in &self.events {
                let count: fn(&mut crate::worktime::DayFigures) = match ev {
                    Event::Offered { agent_id, .. } if agent_id == agent.id() => |d| d.offers += 1,
                    Event::Assigned { agent_id, .. } if agent_id == agent.id() => |d| d.accepted += 1,
                    Event::Declined { agent_id, .. } if agent_id == agent.id() => |d| d.declined += 1,
                    Event::TimedOut { agent_id, .. } if agent_id == agent.id() => |d| d.missed += 1,
                    Event::Completed { agent_id, .. } if agent_id == agent.id() => |d| d.handled += 1,
                    _ => continue,
                };
                agent.work.count(now, count);
            }
            let review = crate::worktime::settle(agent, now, policy);
            // One ready timer per agent. Capped: when it may work again (the latest of the cap,
            // wrap-up and cool-down). Otherwise the earliest of what this change armed and when
            // an agent counted while available runs out of room.
            let key = TimerKey::AgentReady(agent.id().clone());
            let at = if agent.work.capped.is_some_and(|c| now < c.until) {
                agent.next_ready_at(now)
            } else {
                let armed = self.timers.iter().filter(|(k, _)| *k == key).map(|(_, at)| *at).min();
                [armed, review].into_iter().flatten().min()
            };
            if let Some(at) = at {
                self.timers.retain(|(k, _)| *k != key);
                self.timers.push((key, at));
            }
        }
        self
    }

    /// Nothing to write: a repeated request that was already carried out, or a stale timer.
    pub fn is_noop(&self) -> bool {
        self.case.is_none() && self.agent.is_none()
    }

    fn case_review(&mut self, case: &Case, policy: &Policy, now: Millis) {
        if let Some(at) = case.next_review_at(policy, now) {
            self.timers.push((TimerKey::CaseReview(case.id().clone()), at));
        }
    }

    fn purge_later(&mut self, case: &Case, policy: &Policy, now: Millis) {
        self.timers.push((TimerKey::Purge(case.id().clone()), now + policy.terminal_case_retention_ms as i64));
    }

    fn agent_ready(&mut self, agent: &Agent, now: Millis) {
        if let Some(at) = agent.next_ready_at(now) {
            self.timers.push((TimerKey::AgentReady(agent.id().clone()), at));
        }
    }
}

/// A new case from a router of `tenant`. A repeated submission is settled by [`resubmit`].
pub fn submit(spec: CaseSpec, tenant: Option<TenantId>, now: Millis, policy: &Policy) -> Change {
    let case = Case { tenant, ..Case::new(spec, now) };
    let mut change = Change { events: vec![Event::Queued { case_id: case.id().clone() }], ..Change::default() };
    change.case_review(&case, policy, now);
    change.case = Some(case);
    change
}

/// Puts a fresh wait estimate on a waiting case: on `change`'s new version of it, or on a copy
/// of `case` when the change leaves it alone; its review is re-armed for when the estimate is
/// due. A case no longer waiting (or closed by the change) is left as it is.
pub fn estimate(case: &Case, change: &mut Change, estimate: crate::demand::WaitEstimate, now: Millis, policy: &Policy) {
    let Some(mut next) = change.case.take().or_else(|| (case.state == CaseState::Queued).then(|| case.clone())) else {
        return;
    };
    if next.state == CaseState::Queued {
        next.estimate = Some(estimate);
        let id = next.id().clone();
        change.timers.retain(|(k, _)| *k != TimerKey::CaseReview(id.clone()));
        change.case_review(&next, policy, now);
    }
    change.case = Some(next);
}

/// Whether a waiting case's estimate is due for recomputing at `now` (it ran out, or it is
/// [`REESTIMATE_MS`](crate::demand::REESTIMATE_MS) old).
pub fn estimate_due(case: &Case, now: Millis) -> bool {
    case.state == CaseState::Queued && case.estimate.is_some_and(|e| e.review_at() <= now)
}

/// A submission whose id exists: the same payload from the same tenant is a retry, anything
/// else a conflict.
pub fn resubmit(existing: &Case, spec: &CaseSpec, tenant: Option<&TenantId>) -> Result<(), Rejection> {
    if &existing.spec == spec && existing.tenant.as_ref() == tenant {
        Ok(())
    } else {
        Err(Rejection::AlreadyExists(format!("case {} exists with a different payload", spec.id)))
    }
}

/// Offers `case` to `agent`, re-checking every hard filter on the records as they are now.
pub fn offer(
    case: &Case,
    agent: &Agent,
    offer_id: OfferId,
    explanation: Explanation,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    if case.state != CaseState::Queued {
        return Err(Rejection::FailedPrecondition(
            Precondition::CaseNotQueued,
            format!("case {} is {}, not queued", case.id(), case.state.name()),
        ));
    }
    if let Err(why) = scoring::eligibility(case, agent, now, policy) {
        return Err(Rejection::FailedPrecondition(
            Precondition::AgentNotEligible,
            format!("agent {} is not eligible: {}", agent.id(), why.describe()),
        ));
    }
    let deadline = now + policy.offer_timeout(case.spec.channel, case.spec.tier) as i64;
    let mut case = case.clone();
    let mut agent = agent.clone();
    case.state = CaseState::Offered { offer_id: offer_id.clone(), agent_id: agent.id().clone(), deadline };
    case.offers.push(OfferRecord {
        id: offer_id.clone(),
        agent_id: agent.id().clone(),
        offered_at: now,
        deadline,
        outcome: OfferOutcome::Pending,
        decided_at: 0,
        reason: String::new(),
        explanation,
        handed_back_at: 0,
    });
    if case.offers.len() > MAX_OFFER_HISTORY {
        case.offers.remove(0);
    }
    agent.pending_offer = Some(PendingOffer {
        offer_id: offer_id.clone(),
        case_id: case.id().clone(),
        channel: case.spec.channel,
        deadline,
    });
    agent.offers_received += 1;
    let events = vec![Event::Offered { case_id: case.id().clone(), offer_id, agent_id: agent.id().clone(), deadline }];
    let timers = vec![(TimerKey::OfferDeadline(case.id().clone()), deadline)];
    Ok(Change { case: Some(case), agent: Some(agent), events, timers, disarm: Vec::new() })
}

/// Checks that `offer_id` is `agent`'s live offer on `case` before `now`'s deadline; `Ok(None)`
/// when the same agent already answered it with `done` (an idempotent retry).
fn live_offer<'a>(
    case: &'a Case,
    agent: &Agent,
    offer_id: &OfferId,
    done: OfferOutcome,
    now: Millis,
) -> Result<Option<&'a OfferRecord>, Rejection> {
    let record = case.offer(offer_id).ok_or_else(|| Rejection::not_found("offer", offer_id))?;
    if &record.agent_id != agent.id() {
        return Err(Rejection::PermissionDenied(format!("offer {offer_id} was made to another agent")));
    }
    if record.handed_back_at > 0 {
        return Err(Rejection::FailedPrecondition(
            Precondition::CaseNotAssigned,
            format!("offer {offer_id} was accepted, then its case was handed back ({})", record.reason),
        ));
    }
    if record.outcome == done {
        return Ok(None);
    }
    let live = matches!(&case.state, CaseState::Offered { offer_id: o, .. } if o == offer_id);
    if !live || record.outcome != OfferOutcome::Pending {
        let (why, how) = match record.outcome {
            OfferOutcome::Pending => (Precondition::OfferNotLive, "no longer live"),
            OfferOutcome::Accepted => (Precondition::OfferAlreadyAccepted, "already accepted"),
            OfferOutcome::Declined => (Precondition::OfferAlreadyDeclined, "already declined"),
            OfferOutcome::TimedOut => (Precondition::OfferExpired, "timed out"),
            OfferOutcome::Revoked => (Precondition::OfferRevoked, "revoked"),
        };
        return Err(Rejection::FailedPrecondition(why, format!("offer {offer_id} is {how}")));
    }
    if now >= record.deadline {
        return Err(Rejection::FailedPrecondition(Precondition::OfferExpired, format!("offer {offer_id} timed out")));
    }
    Ok(Some(record))
}

fn close_offer(case: &mut Case, offer_id: &OfferId, outcome: OfferOutcome, reason: &str, now: Millis) {
    if let Some(rec) = case.offer_mut(offer_id) {
        rec.outcome = outcome;
        rec.decided_at = now;
        reason.clone_into(&mut rec.reason);
    }
}

/// Clears the agent's pending offer; the agent is free of all work from `now` if it holds none.
fn release_offer(agent: &mut Agent, now: Millis) {
    agent.pending_offer = None;
    agent.idle_if_free(now);
}

/// The agent accepts its live offer: the case is assigned to it.
pub fn accept(
    case: &Case,
    agent: &Agent,
    offer_id: &OfferId,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    let Some(record) = live_offer(case, agent, offer_id, OfferOutcome::Accepted, now)? else {
        return Ok(Change::default());
    };
    let time_to_accept_ms = u64::try_from(now - record.offered_at).unwrap_or(0);
    let mut case = case.clone();
    let mut agent = agent.clone();
    close_offer(&mut case, offer_id, OfferOutcome::Accepted, "", now);
    case.state = CaseState::Assigned { offer_id: offer_id.clone(), agent_id: agent.id().clone() };
    case.excluded.clear();
    case.returning = None;
    case.activity_at = now;
    case.activity_warned_at = 0;
    agent.pending_offer = None;
    agent.assignments.insert(case.id().clone(), case.spec.channel);
    agent.consecutive_misses = 0;
    agent.offers_accepted += 1;
    let events = vec![Event::Assigned {
        case_id: case.id().clone(),
        offer_id: offer_id.clone(),
        agent_id: agent.id().clone(),
        time_to_accept_ms,
        tier: case.spec.tier,
        waited_ms: u64::try_from(now - case.created_at).unwrap_or(0),
    }];
    let timers = activity_timer(&case, policy).into_iter().collect();
    Ok(Change { case: Some(case), agent: Some(agent), events, timers, disarm: Vec::new() })
}

/// The activity timer of an assigned case: the warning, or once warned the hand-back.
fn activity_timer(case: &Case, policy: &Policy) -> Option<(TimerKey, Millis)> {
    let timeout = policy.activity_timeout(case.spec.channel)? as i64;
    let due = case.activity_at + timeout;
    let at = if case.activity_warned_at > 0 { due } else { due - policy.activity_warning_ms as i64 };
    Some((TimerKey::HandBack(case.id().clone()), at))
}

/// When an assigned case is handed back for want of activity, if its channel has the timer.
pub fn activity_hand_back_at(case: &Case, policy: &Policy) -> Option<Millis> {
    policy.activity_timeout(case.spec.channel).map(|t| case.activity_at + t as i64)
}

/// The agent reports activity on a case it holds (a reply sent, a call still running): the
/// activity timer starts again and a warning is withdrawn.
pub fn report_activity(case: &Case, agent: &Agent, now: Millis, policy: &Policy) -> Result<Change, Rejection> {
    check_holder(case, agent)?;
    let mut case = case.clone();
    case.activity_at = now;
    case.activity_warned_at = 0;
    let timers = activity_timer(&case, policy).into_iter().collect();
    Ok(Change { case: Some(case), timers, ..Change::default() })
}

/// The hand-back timer fired for `case`, with `agent` the agent it is assigned to (as read;
/// `None`: gone). An agent signed out (the grace period over, or a sign-out not undone in it)
/// loses the case at once; otherwise the channel's activity timer warns once, then hands it
/// back. A case not assigned, or an agent who reported activity since, is left alone (a stale
/// firing re-arms the timer it should be).
pub fn review_assignment(case: &Case, agent: Option<&Agent>, now: Millis, policy: &Policy) -> Change {
    let CaseState::Assigned { agent_id, .. } = &case.state else {
        return Change::default();
    };
    let agent = agent.filter(|a| a.id() == agent_id);
    let vanished = agent.is_none_or(|a| a.session.is_none());
    if vanished {
        let reason = match agent.map(|a| a.status_reason) {
            Some(StatusReason::Requested) => HandBackReason::SignedOut,
            _ => HandBackReason::PresenceLost,
        };
        return hand_back(case, agent, reason, now, policy);
    }
    let Some(due) = activity_hand_back_at(case, policy) else {
        return Change::default();
    };
    if now >= due {
        return hand_back(case, agent, HandBackReason::NoActivity, now, policy);
    }
    let warn_at = due - policy.activity_warning_ms as i64;
    if now >= warn_at && case.activity_warned_at == 0 {
        let mut case = case.clone();
        case.activity_warned_at = now;
        let timers = activity_timer(&case, policy).into_iter().collect();
        return Change { timers, case: Some(case), ..Change::default() };
    }
    Change { timers: activity_timer(case, policy).into_iter().collect(), ..Change::default() }
}

/// Takes `case`'s assignment back from its agent: the case is queued again with its age (its
/// accepted offer marked handed back), preferring that agent for `hand_back_preference_ms`
/// should they return; the agent, if it still holds it, is freed of it and counts a hand-back.
fn hand_back(case: &Case, agent: Option<&Agent>, reason: HandBackReason, now: Millis, policy: &Policy) -> Change {
    let CaseState::Assigned { offer_id, agent_id } = case.state.clone() else {
        return Change::default();
    };
    let mut case = case.clone();
    if let Some(rec) = case.offer_mut(&offer_id) {
        rec.handed_back_at = now;
        reason.as_str().clone_into(&mut rec.reason);
    }
    case.state = CaseState::Queued;
    case.activity_at = 0;
    case.activity_warned_at = 0;
    case.returning = Some(Returning { agent_id: agent_id.clone(), until: now + policy.hand_back_preference_ms as i64 });
    let mut change = Change {
        events: vec![Event::HandedBack { case_id: case.id().clone(), offer_id, agent_id, reason }],
        ..Change::default()
    };
    if let Some(a) = agent.filter(|a| a.assignments.contains_key(case.id())) {
        let mut a = a.clone();
        a.assignments.remove(case.id());
        a.hand_backs += 1;
        a.idle_if_free(now);
        change.agent = Some(a);
    }
    change.case_review(&case, policy, now);
    change.case = Some(case);
    change
}

/// The warning a device is to hear, derived from two versions of a case like every notice:
/// `Some((agent, hand-back time))` when `after` newly carries an activity warning.
pub fn activity_warning(before: Option<&Case>, after: &Case, policy: &Policy) -> Option<(AgentId, Millis)> {
    let CaseState::Assigned { agent_id, .. } = &after.state else {
        return None;
    };
    if after.activity_warned_at == 0 || before.is_some_and(|b| b.activity_warned_at == after.activity_warned_at) {
        return None;
    }
    activity_hand_back_at(after, policy).map(|due| (agent_id.clone(), due))
}

/// The agent declines its live offer: the case goes back to the queue (keeping its age), the
/// agent cools down and will not get this case again for `reoffer_same_agent_after_ms`.
pub fn decline(
    case: &Case,
    agent: &Agent,
    offer_id: &OfferId,
    reason: &str,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    if live_offer(case, agent, offer_id, OfferOutcome::Declined, now)?.is_none() {
        return Ok(Change::default());
    }
    let mut case = case.clone();
    let mut agent = agent.clone();
    close_offer(&mut case, offer_id, OfferOutcome::Declined, reason, now);
    case.state = CaseState::Queued;
    case.excluded.insert(agent.id().clone(), now + policy.reoffer_same_agent_after_ms as i64);
    release_offer(&mut agent, now);
    agent.consecutive_misses = 0;
    agent.cool_down_until = now + policy.cool_down_after_decline_ms as i64;
    let mut change = Change {
        events: vec![Event::Declined {
            case_id: case.id().clone(),
            offer_id: offer_id.clone(),
            agent_id: agent.id().clone(),
            reason: reason.to_owned(),
        }],
        ..Change::default()
    };
    change.case_review(&case, policy, now);
    change.agent_ready(&agent, now);
    change.case = Some(case);
    change.agent = Some(agent);
    Ok(change)
}

/// The offer deadline timer fired. A no-op unless the case still has that agent's live offer
/// and its deadline has passed; otherwise the case goes back to the queue, the agent counts a
/// miss, cools down, and is set away after `max_consecutive_misses`.
pub fn time_out(case: &Case, agent: Option<&Agent>, now: Millis, policy: &Policy) -> Change {
    let CaseState::Offered { offer_id, agent_id, deadline } = &case.state else {
        return Change::default();
    };
    if now < *deadline {
        return Change { timers: vec![(TimerKey::OfferDeadline(case.id().clone()), *deadline)], ..Change::default() };
    }
    let mut case = case.clone();
    let offer_id = offer_id.clone();
    let agent_id = agent_id.clone();
    close_offer(&mut case, &offer_id, OfferOutcome::TimedOut, RevokeReason::TimedOut.as_str(), now);
    case.state = CaseState::Queued;
    case.excluded.insert(agent_id.clone(), now + policy.reoffer_same_agent_after_ms as i64);
    let mut change = Change {
        events: vec![Event::TimedOut {
            case_id: case.id().clone(),
            offer_id: offer_id.clone(),
            agent_id: agent_id.clone(),
        }],
        ..Change::default()
    };
    change.case_review(&case, policy, now);
    if let Some(agent) = agent.filter(|a| a.pending_offer.as_ref().is_some_and(|p| p.offer_id == offer_id)) {
        let mut agent = agent.clone();
        release_offer(&mut agent, now);
        agent.consecutive_misses += 1;
        agent.cool_down_until = now + policy.cool_down_after_miss_ms as i64;
        if agent.consecutive_misses >= policy.max_consecutive_misses && agent.status == AgentStatus::Available {
            change.events.push(status_event(&mut agent, AgentStatus::Away, StatusReason::MissedOffers));
        }
        change.agent_ready(&agent, now);
        change.agent = Some(agent);
    }
    change.case = Some(case);
    change
}

/// Takes back the agent's live offer on `case` (if `case` is that offer's case).
fn revoke_into(
    change: &mut Change,
    case: &Case,
    agent: &mut Agent,
    reason: RevokeReason,
    now: Millis,
    policy: &Policy,
) {
    let Some(pending) = agent.pending_offer.clone() else {
        return;
    };
    release_offer(agent, now);
    let live = matches!(&case.state, CaseState::Offered { offer_id, .. } if *offer_id == pending.offer_id);
    if !live {
        return;
    }
    let mut case = case.clone();
    close_offer(&mut case, &pending.offer_id, OfferOutcome::Revoked, reason.as_str(), now);
    case.state = CaseState::Queued;
    change.events.push(Event::Revoked {
        case_id: case.id().clone(),
        offer_id: pending.offer_id,
        agent_id: agent.id().clone(),
        reason,
    });
    change.case_review(&case, policy, now);
    change.case = Some(case);
}

/// The agent completes an assigned case; wrap-up follows.
pub fn complete(case: &Case, agent: &Agent, outcome: &str, now: Millis, policy: &Policy) -> Result<Change, Rejection> {
    if case.completed_by() == Some(agent.id()) {
        return Ok(Change::default());
    }
    check_holder(case, agent)?;
    let mut case = case.clone();
    let mut agent = agent.clone();
    case.state = CaseState::Completed;
    outcome.clone_into(&mut case.close_reason);
    case.closed_at = now;
    agent.assignments.remove(case.id());
    agent.wrap_up_until = agent.wrap_up_until.max(now + policy.wrap_up_ms.get(case.spec.channel) as i64);
    agent.idle_if_free(now);
    let mut change = Change {
        events: vec![Event::Completed {
            case_id: case.id().clone(),
            agent_id: agent.id().clone(),
            outcome: outcome.to_owned(),
        }],
        ..Change::default()
    };
    change.purge_later(&case, policy, now);
    change.agent_ready(&agent, now);
    change.case = Some(case);
    change.agent = Some(agent);
    Ok(change)
}

/// `case` must be assigned to `agent`: PERMISSION_DENIED when another agent holds it (offered
/// or assigned), FAILED_PRECONDITION when nobody does.
fn check_holder(case: &Case, agent: &Agent) -> Result<(), Rejection> {
    match &case.state {
        CaseState::Assigned { agent_id, .. } if agent_id == agent.id() => Ok(()),
        CaseState::Offered { agent_id, .. } | CaseState::Assigned { agent_id, .. } if agent_id != agent.id() => {
            Err(Rejection::PermissionDenied(format!("case {} is not assigned to agent {}", case.id(), agent.id())))
        }
        other => Err(Rejection::FailedPrecondition(
            Precondition::CaseNotAssigned,
            format!("case {} is {}, not assigned", case.id(), other.name()),
        )),
    }
}

/// The router cancels a case: a live offer is revoked, an assignment released. Cancelling a
/// cancelled case again changes nothing and succeeds; a completed or expired one is refused.
/// `agent` is the case's current agent, if it has one.
pub fn cancel(
    case: &Case,
    agent: Option<&Agent>,
    reason: &str,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    if case.state == CaseState::Cancelled {
        // A retried cancel (the first answer was lost) gets the same result.
        return Ok(Change::default());
    }
    if case.state.is_terminal() {
        return Err(Rejection::FailedPrecondition(
            Precondition::CaseClosed,
            format!("case {} is already {}", case.id(), case.state.name()),
        ));
    }
    let mut case = case.clone();
    let mut change = Change::default();
    let (agent_id, offer_id) = match case.state.clone() {
        CaseState::Offered { offer_id, agent_id, .. } => {
            // A withdrawn offer counts as revoked: offers made = accepted + declined + timed
            // out + revoked + live.
            close_offer(&mut case, &offer_id, OfferOutcome::Revoked, RevokeReason::Cancelled.as_str(), now);
            change.events.push(Event::Revoked {
                case_id: case.id().clone(),
                offer_id: offer_id.clone(),
                agent_id: agent_id.clone(),
                reason: RevokeReason::Cancelled,
            });
            if let Some(a) = agent.filter(|a| a.pending_offer.as_ref().is_some_and(|p| p.offer_id == offer_id)) {
                let mut a = a.clone();
                release_offer(&mut a, now);
                change.agent = Some(a);
            }
            (Some(agent_id), Some(offer_id))
        }
        CaseState::Assigned { offer_id, agent_id } => {
            if let Some(a) = agent.filter(|a| a.assignments.contains_key(case.id())) {
                let mut a = a.clone();
                a.assignments.remove(case.id());
                a.idle_if_free(now);
                change.agent = Some(a);
            }
            (Some(agent_id), Some(offer_id))
        }
        CaseState::Queued | CaseState::Completed | CaseState::Cancelled | CaseState::Expired => (None, None),
    };
    case.state = CaseState::Cancelled;
    reason.clone_into(&mut case.close_reason);
    case.closed_at = now;
    change.events.push(Event::Cancelled { case_id: case.id().clone(), agent_id, offer_id, reason: reason.to_owned() });
    change.purge_later(&case, policy, now);
    change.case = Some(case);
    Ok(change)
}

/// The store lost writes and brought back `case` in an older, open state, but it had been
/// closed (`closed`: completed, cancelled or expired) before: close it again, so that it is not
/// served a second time. A live offer is withdrawn from `agent` (reason
/// [`RevokeReason::CaseClosed`]), an assignment released. No events: what happened was counted
/// when it happened.
pub fn close_after_loss(case: &Case, agent: Option<&Agent>, closed: CaseState, now: Millis, policy: &Policy) -> Change {
    if case.state.is_terminal() || !closed.is_terminal() {
        return Change::default();
    }
    let mut case = case.clone();
    let mut change = Change::default();
    match case.state.clone() {
        CaseState::Offered { offer_id, .. } => {
            close_offer(&mut case, &offer_id, OfferOutcome::Revoked, RevokeReason::CaseClosed.as_str(), now);
            if let Some(a) = agent.filter(|a| a.pending_offer.as_ref().is_some_and(|p| p.offer_id == offer_id)) {
                let mut a = a.clone();
                release_offer(&mut a, now);
                change.agent = Some(a);
            }
        }
        CaseState::Assigned { .. } => {
            if let Some(a) = agent.filter(|a| a.assignments.contains_key(case.id())) {
                let mut a = a.clone();
                a.assignments.remove(case.id());
                a.idle_if_free(now);
                change.agent = Some(a);
            }
        }
        CaseState::Queued | CaseState::Completed | CaseState::Cancelled | CaseState::Expired => {}
    }
    case.state = closed;
    CLOSED_BEFORE_LOSS.clone_into(&mut case.close_reason);
    case.closed_at = now;
    change.purge_later(&case, policy, now);
    change.case = Some(case);
    change
}

/// The case review timer fired: expire a waiting case past its time-to-live, otherwise arm the
/// next review (the caller then tries to match it, as relaxation may have widened the pool).
pub fn review_case(case: &Case, now: Millis, policy: &Policy) -> Change {
    let mut change = Change::default();
    if case.state != CaseState::Queued {
        return change;
    }
    if !case.was_assigned() && case.spec.ttl_ms.is_some_and(|ttl| case.created_at + ttl as i64 <= now) {
        let mut case = case.clone();
        case.state = CaseState::Expired;
        EXPIRED_REASON.clone_into(&mut case.close_reason);
        case.closed_at = now;
        change.events.push(Event::Expired { case_id: case.id().clone() });
        change.purge_later(&case, policy, now);
        change.case = Some(case);
        return change;
    }
    change.case_review(case, policy, now);
    change
}

/// The timers of a case that its present state makes moot: its review unless it waits, its
/// offer deadline unless it is offered, and its hand-back once it is over (terminal states are
/// final). Its hand-back while it is assigned is armed by its agent's changes as well as its
/// own, so only a terminal case gives it up; its purge is never moot.
pub fn moot_timers(case: &Case) -> impl Iterator<Item = TimerKey> {
    let id = case.id();
    let review = (case.state != CaseState::Queued).then(|| TimerKey::CaseReview(id.clone()));
    let deadline = (!matches!(case.state, CaseState::Offered { .. })).then(|| TimerKey::OfferDeadline(id.clone()));
    let hand_back = case.state.is_terminal().then(|| TimerKey::HandBack(id.clone()));
    [review, deadline, hand_back].into_iter().flatten()
}

/// The timers a case implies in its present state: those the transitions that led to it
/// armed. Used to re-arm timers after the store lost some (a restart that lost its last writes).
pub fn case_timers(case: &Case, now: Millis, policy: &Policy) -> Vec<(TimerKey, Millis)> {
    let id = || case.id().clone();
    match &case.state {
        CaseState::Queued => {
            case.next_review_at(policy, now).map(|at| (TimerKey::CaseReview(id()), at)).into_iter().collect()
        }
        CaseState::Offered { deadline, .. } => vec![(TimerKey::OfferDeadline(id()), *deadline)],
        CaseState::Assigned { .. } => activity_timer(case, policy).into_iter().collect(),
        CaseState::Completed | CaseState::Cancelled | CaseState::Expired => {
            vec![(TimerKey::Purge(id()), case.closed_at + policy.terminal_case_retention_ms as i64)]
        }
    }
}

/// The timers an agent implies in its present state (see [`case_timers`]). A connected
/// session's lease is re-armed a full lease from `now`: the dispatcher holding its stream
/// renews it from there.
pub fn agent_timers(agent: &Agent, now: Millis, policy: &Policy) -> Vec<(TimerKey, Millis)> {
    let id = || agent.id().clone();
    let mut timers: Vec<(TimerKey, Millis)> =
        agent.next_ready_at(now).map(|at| (TimerKey::AgentReady(id()), at)).into_iter().collect();
    if let Some(i) = agent.invitation.as_ref().filter(|i| i.outcome == crate::callin::InvitationOutcome::Pending) {
        timers.push((TimerKey::InvitationExpiry(id()), i.expires_at));
    }
    match &agent.session {
        Some(s) if s.connected => timers.push((TimerKey::PresenceLease(id()), lease_due(now, policy))),
        Some(s) => {
            let since = s.disconnected_at.unwrap_or(now);
            timers.push((TimerKey::PresenceGrace(id()), since + policy.presence_grace_ms as i64));
        }
        // Signed out holding cases: they are looked at for hand-back.
        None => timers.extend(agent.assignments.keys().map(|c| (TimerKey::HandBack(c.clone()), now))),
    }
    timers
}

/// The agent's ready timer fired (wrap-up or cool-down over, a working-time cap over, or an
/// agent counted while available running out of room): its working time is brought up to date
/// (which may cap it), and the timer armed again if time alone will change it again.
pub fn review_agent(agent: &Agent, now: Millis, policy: &Policy) -> Change {
    let mut settled = agent.clone();
    let review = crate::worktime::settle(&mut settled, now, policy);
    if settled.work != agent.work {
        // Settled, and its timer armed, as every change is before it is written.
        return Change { agent: Some(agent.clone()), ..Change::default() };
    }
    let next = [agent.next_ready_at(now), review].into_iter().flatten().min();
    Change {
        timers: next.map(|at| (TimerKey::AgentReady(agent.id().clone()), at)).into_iter().collect(),
        ..Change::default()
    }
}

/// Registers a new agent or updates a profile; the live state is kept. A certification whose
/// expiry is already past is refused, unless the stored profile has it with that same expiry
/// (a roster sync sending the profile again as it is).
pub fn upsert_profile(existing: Option<&Agent>, profile: AgentProfile, now: Millis) -> Result<Change, Rejection> {
    let stored = |c: &crate::model::Certification| existing.and_then(|a| a.profile.certifications.get(c)).copied();
    if let Some((c, until)) =
        profile.certifications.iter().find(|(c, until)| **until <= now && stored(c) != Some(**until))
    {
        return Err(
            FieldError::new("certifications", format!("{c} expires at {until}, which is not in the future")).into()
        );
    }
    let agent = match existing {
        Some(a) => Agent { profile, ..a.clone() },
        None => Agent::new(profile, now),
    };
    Ok(Change { agent: Some(agent), ..Change::default() })
}

/// The customer rates a completed case (`agent`: the agent who completed it, as read; `None`
/// if gone): the rating is kept on the case and, if the agent could influence it, enters the
/// agent's window. The same rating again changes nothing; another one for a rated case is
/// ALREADY_EXISTS. Nothing else of the finished case changes.
pub fn rate(
    case: &Case,
    agent: Option<&Agent>,
    rating: crate::reputation::CaseRating,
    policy: &Policy,
) -> Result<Change, Rejection> {
    if case.state != CaseState::Completed {
        return Err(Rejection::FailedPrecondition(
            Precondition::CaseNotCompleted,
            format!("case {} is {}; only a completed case is rated", case.id(), case.state.name()),
        ));
    }
    if let Some(given) = case.rating {
        return if given.stars == rating.stars && given.controllable == rating.controllable {
            Ok(Change::default())
        } else {
            Err(Rejection::AlreadyExists(format!("case {} was rated {} already", case.id(), given.stars)))
        };
    }
    let mut case = case.clone();
    case.rating = Some(rating);
    let agent = agent.filter(|a| case.completed_by() == Some(a.id())).map(|a| {
        let mut a = a.clone();
        a.ratings.add(rating, &policy.reputation);
        a
    });
    Ok(Change { case: Some(case), agent, ..Change::default() })
}

/// An agent may be removed only when it holds no offer and no assignment.
pub fn check_removable(agent: &Agent) -> Result<(), Rejection> {
    if agent.pending_offer.is_some() || !agent.assignments.is_empty() {
        return Err(Rejection::FailedPrecondition(
            Precondition::AgentHoldsWork,
            format!(
                "agent {} holds an offer or {} assignment(s); finish or cancel them first",
                agent.id(),
                agent.assignments.len()
            ),
        ));
    }
    Ok(())
}

/// Invites an offline agent to come online for `segment` (its cases stood for by `case`),
/// re-checking on the record that it is still a candidate
/// ([`not_candidate`](crate::callin::not_candidate)): the cap, quiet hours and opt-in hold at the
/// moment of writing. The invitation lapses after the policy's time to live.
pub fn invite(
    agent: &Agent,
    case: &Case,
    segment: &str,
    invitation_id: String,
    incentive: String,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    use crate::callin::{Invitation, InvitationOutcome, not_candidate};
    if agent.invitation.as_ref().is_some_and(|i| i.id == invitation_id) {
        return Ok(Change::default());
    }
    if let Some(why) = not_candidate(agent, case, now, policy) {
        return Err(Rejection::FailedPrecondition(
            Precondition::AgentNotEligible,
            format!("agent {} cannot be invited: {why}", agent.id()),
        ));
    }
    let mut a = agent.clone();
    let day = a.profile.call_in.as_ref().map_or(0, |p| p.local_day(now));
    if a.call_in.day != day {
        a.call_in.day = day;
        a.call_in.sent_today = 0;
    }
    a.call_in.sent_today += 1;
    a.call_in.sent += 1;
    a.call_in.last_sent_at = now;
    let expires_at = now.saturating_add(i64::try_from(policy.call_in.invitation_ttl_ms).unwrap_or(i64::MAX));
    a.invitation = Some(Invitation {
        id: invitation_id.clone(),
        segment: segment.to_owned(),
        sent_at: now,
        expires_at,
        outcome: InvitationOutcome::Pending,
        answered_at: 0,
        delivered_at: 0,
        incentive,
    });
    let events = vec![Event::Invited { agent_id: a.id().clone(), invitation_id, segment: segment.to_owned() }];
    let timers = vec![(TimerKey::InvitationExpiry(a.id().clone()), expires_at)];
    Ok(Change { agent: Some(a), events, timers, ..Change::default() })
}

/// Ends the agent's live invitation with `outcome` (the one place each of the three ways
/// passes); `None` when none is live.
fn close_invitation(agent: &mut Agent, outcome: crate::callin::InvitationOutcome, now: Millis) -> Option<Event> {
    use crate::callin::InvitationOutcome as O;
    let inv = agent.invitation.as_mut()?;
    // A lapsed invitation can only be ignored; the other endings need it open.
    let open = match outcome {
        O::Ignored => inv.outcome == O::Pending,
        _ => inv.live(now),
    };
    if !open {
        return None;
    }
    inv.outcome = outcome;
    inv.answered_at = now;
    if outcome == crate::callin::InvitationOutcome::CameOnline {
        agent.call_in.came_online += 1;
    }
    let inv = agent.invitation.as_ref()?;
    Some(Event::InvitationClosed {
        agent_id: agent.id().clone(),
        invitation_id: inv.id.clone(),
        segment: inv.segment.clone(),
        outcome,
        after_ms: u64::try_from(now - inv.sent_at).unwrap_or(0),
    })
}

/// The invitation's time ran out: a pending one is ignored.
pub fn invitation_expired(agent: &Agent, now: Millis) -> Change {
    let mut a = agent.clone();
    match a.invitation.as_ref() {
        Some(i) if i.outcome == crate::callin::InvitationOutcome::Pending && now >= i.expires_at => {}
        _ => return Change::default(),
    }
    let events = close_invitation(&mut a, crate::callin::InvitationOutcome::Ignored, now).into_iter().collect();
    Change { agent: Some(a), events, ..Change::default() }
}

/// The notification service acknowledges invitation `id`: delivered (it reached the agent's
/// phone), or `declined` (the agent said no). Idempotent: a repeat changes nothing; an unknown
/// id is NOT_FOUND.
pub fn acknowledge_invitation(agent: &Agent, id: &str, declined: bool, now: Millis) -> Result<Change, Rejection> {
    let Some(inv) = agent.invitation.as_ref().filter(|i| i.id == id) else {
        return Err(Rejection::NotFound(format!("invitation {id} is not agent {}'s latest", agent.id())));
    };
    let mut a = agent.clone();
    let mut events = Vec::new();
    if inv.delivered_at == 0
        && let Some(i) = a.invitation.as_mut()
    {
        i.delivered_at = now;
    }
    if declined {
        events.extend(close_invitation(&mut a, crate::callin::InvitationOutcome::Declined, now));
    }
    if a == *agent {
        return Ok(Change::default());
    }
    Ok(Change { agent: Some(a), events, ..Change::default() })
}

/// A device stream opened. Within the grace period of a dropped session, the session resumes
/// with its status; otherwise the agent signs in as away.
pub fn connect(agent: &Agent, session_id: SessionId, now: Millis, policy: &Policy) -> Change {
    let mut agent = agent.clone();
    let resumed = agent.session.is_some() && agent.status != AgentStatus::Offline;
    let (status, reason) = if resumed {
        (agent.status, StatusReason::SessionResumed)
    } else {
        (AgentStatus::Away, StatusReason::SignedIn)
    };
    let lease_until = lease_due(now, policy);
    agent.session = Some(Session { id: session_id, connected: true, disconnected_at: None, lease_until });
    let mut events = vec![status_event(&mut agent, status, reason)];
    if !resumed {
        events.extend(close_invitation(&mut agent, crate::callin::InvitationOutcome::CameOnline, now));
    }
    let timers = vec![(TimerKey::PresenceLease(agent.id().clone()), lease_until)];
    Change { agent: Some(agent), events, timers, ..Change::default() }
}

/// The presence lease ran out: the dispatcher that held the agent's stream is gone (or cut off
/// from the store). Treated as a disconnect of the current session.
pub fn lease_expired(agent: &Agent, pending_case: Option<&Case>, now: Millis, policy: &Policy) -> Change {
    match agent.session.as_ref().filter(|s| s.connected && now >= s.lease_until) {
        Some(s) => disconnect(agent, pending_case, &s.id.clone(), now, policy),
        None => Change::default(),
    }
}

/// A device stream dropped. Ignored unless it is the current session. The pending offer (on
/// `pending_case`) is revoked at once; the agent stays signed in for the grace period.
pub fn disconnect(
    agent: &Agent,
    pending_case: Option<&Case>,
    session_id: &SessionId,
    now: Millis,
    policy: &Policy,
) -> Change {
    let mut change = Change::default();
    let current = agent.session.as_ref().is_some_and(|s| &s.id == session_id && s.connected);
    if !current {
        return change;
    }
    let mut agent = agent.clone();
    if let Some(s) = agent.session.as_mut() {
        s.connected = false;
        s.disconnected_at = Some(now);
    }
    revoke_for(&mut change, pending_case, &mut agent, RevokeReason::Disconnected, now, policy);
    change.timers.push((TimerKey::PresenceGrace(agent.id().clone()), now + policy.presence_grace_ms as i64));
    change.agent = Some(agent);
    change
}

fn revoke_for(
    change: &mut Change,
    pending_case: Option<&Case>,
    agent: &mut Agent,
    reason: RevokeReason,
    now: Millis,
    policy: &Policy,
) {
    match pending_case {
        Some(case) => revoke_into(change, case, agent, reason, now, policy),
        None => {
            if agent.pending_offer.is_some() {
                release_offer(agent, now);
            }
        }
    }
}

/// The grace timer fired: a still-disconnected agent goes offline, and the cases assigned to
/// it are handed back (one hand-back timer each, due now).
pub fn presence_expired(agent: &Agent, now: Millis, policy: &Policy) -> Change {
    let Some(session) = &agent.session else {
        return Change::default();
    };
    let Some(at) = session.disconnected_at.filter(|_| !session.connected) else {
        return Change::default();
    };
    let due = at + policy.presence_grace_ms as i64;
    if now < due {
        return Change { timers: vec![(TimerKey::PresenceGrace(agent.id().clone()), due)], ..Change::default() };
    }
    let mut agent = agent.clone();
    agent.session = None;
    let events = vec![status_event(&mut agent, AgentStatus::Offline, StatusReason::PresenceLost)];
    let timers = agent.assignments.keys().map(|c| (TimerKey::HandBack(c.clone()), now)).collect();
    Change { agent: Some(agent), events, timers, ..Change::default() }
}

/// The agent asks for a status on its session. Going away or offline revokes the pending offer
/// (on `pending_case`); going available clears the miss count; offline ends the session, and
/// cases still assigned are handed back unless the agent signs in again within the grace
/// period.
pub fn set_status(
    agent: &Agent,
    pending_case: Option<&Case>,
    session_id: &SessionId,
    status: AgentStatus,
    now: Millis,
    policy: &Policy,
) -> Result<Change, Rejection> {
    check_session(agent, session_id)?;
    let mut change = Change::default();
    let mut agent = agent.clone();
    if status != AgentStatus::Available {
        revoke_for(&mut change, pending_case, &mut agent, RevokeReason::AgentUnavailable, now, policy);
    } else {
        agent.consecutive_misses = 0;
    }
    if status == AgentStatus::Offline {
        agent.session = None;
        let due = now + policy.presence_grace_ms as i64;
        change.timers.extend(agent.assignments.keys().map(|c| (TimerKey::HandBack(c.clone()), due)));
    }
    change.events.push(status_event(&mut agent, status, StatusReason::Requested));
    change.agent_ready(&agent, now);
    change.agent = Some(agent);
    Ok(change)
}

/// Commands on an agent stream act only through the agent's current session.
pub fn check_session(agent: &Agent, session_id: &SessionId) -> Result<(), Rejection> {
    if agent.session.as_ref().is_some_and(|s| &s.id == session_id && s.connected) {
        Ok(())
    } else {
        Err(Rejection::StaleSession)
    }
}

/// Sets `agent`'s status for `reason`; the event that says so.
fn status_event(agent: &mut Agent, status: AgentStatus, reason: StatusReason) -> Event {
    agent.change_status(status, reason);
    Event::AgentStatus { agent_id: agent.id().clone(), status, reason }
}
