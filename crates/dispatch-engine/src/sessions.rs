//! Agent device sessions held by this process: what a device is told ([`AgentNotice`]), why its
//! stream ends ([`StreamEnd`]), and the registry that routes notices to the one open session
//! of each agent, with its presence-lease bookkeeping.

use std::sync::Arc;

use dashmap::DashMap;
use dispatch_domain::model::CaseSpec;
use dispatch_domain::transition::{self, HandBackReason, RevokeReason};
use dispatch_domain::{Activity, Agent, AgentId, AgentStatus, CaseId, Millis, OfferId, SessionId, StatusReason};
use tokio::sync::mpsc;

use crate::EngineError;

/// Why an agent's stream ends. The transport tells the device, and what the app should do
/// follows from it (see `DispatcherMessage` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The agent signed out (SetStatus OFFLINE, here or on another device). Stay signed out.
    SignedOut,
    /// Another device of the same agent opened a stream. Do not reconnect by itself.
    Replaced,
    /// The agent was removed from the roster. Do not reconnect.
    Removed,
    /// This session's presence lease ran out in the store (its dispatcher was cut off or
    /// paused). Reconnect.
    LeaseLost,
    /// This dispatcher is shutting down. Reconnect (another replica takes the stream).
    ServerShutdown,
    /// The device sent nothing, not even a heartbeat, within the heartbeat timeout. Reconnect.
    HeartbeatTimeout,
    /// The stream's credentials or its maximum age ran out. Reconnect with fresh credentials.
    CredentialsExpired,
    /// The device did not read its stream and its outbound queue filled. Reconnect.
    TooSlow,
}

impl StreamEnd {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::SignedOut => "signed_out",
            StreamEnd::Replaced => "replaced",
            StreamEnd::Removed => "removed",
            StreamEnd::LeaseLost => "lease_lost",
            StreamEnd::ServerShutdown => "server_shutdown",
            StreamEnd::HeartbeatTimeout => "heartbeat_timeout",
            StreamEnd::CredentialsExpired => "credentials_expired",
            StreamEnd::TooSlow => "too_slow",
        }
    }
}

/// A message for one agent's device.
#[derive(Debug, Clone)]
pub enum AgentNotice {
    /// A new offer (or the live one again, after a reconnect).
    Offer {
        /// The offer to accept or decline by id.
        offer_id: OfferId,
        /// The case, as submitted.
        case: Arc<CaseSpec>,
        /// Time left to accept when sent.
        remaining_ms: u64,
    },
    /// The offer is gone without an answer from the agent.
    OfferRevoked {
        /// The offer that is gone.
        offer_id: OfferId,
        /// Its case.
        case_id: CaseId,
        /// Why.
        reason: RevokeReason,
    },
    /// The accept went through: the case is the agent's.
    Assigned {
        /// The accepted offer.
        offer_id: OfferId,
        /// The case, as submitted.
        case: Arc<CaseSpec>,
    },
    /// A case assigned to the agent was taken back (it reported no activity in time, or its
    /// device was away past the grace period): the device must drop it.
    HandedBack {
        /// The accepted offer whose assignment ended.
        offer_id: OfferId,
        /// The case.
        case_id: CaseId,
        /// Why.
        reason: HandBackReason,
    },
    /// No activity was reported on an assigned case for a while: it is handed back when
    /// `remaining_ms` have passed unless the agent reports activity (or completes it) before.
    ActivityWarning {
        /// The case.
        case_id: CaseId,
        /// Time left until the hand-back when sent.
        remaining_ms: u64,
    },
    /// The agent reached a working-time limit: no offers until `remaining_ms` have passed
    /// (the work in hand finishes).
    WorkingTimeLimit {
        /// The limit reached.
        limit: dispatch_domain::worktime::Limit,
        /// Time until the agent may take work again, when sent.
        remaining_ms: u64,
    },
    /// The answer to the agent's question why it gets no offers, with its own figures.
    AgentExplanation(Box<crate::api::planner::AgentExplanation>),
    /// The allocation parameters in force, as the agent asked.
    AllocationParameters(Box<crate::api::planner::AllocationPolicy>),
    /// The answer to the agent's question why it may or may not be offered a case.
    Explanation {
        /// The case asked about.
        case_id: CaseId,
        /// The answer.
        explanation: Box<crate::api::planner::MatchExplanation>,
    },
    /// The agent's status changed (or was confirmed on sign-in or resume).
    Status {
        /// The new status.
        status: AgentStatus,
        /// The planner bucket it puts the agent in now.
        activity: Activity,
        /// Why.
        reason: StatusReason,
        /// Cases still assigned to the agent.
        assignments: Vec<CaseId>,
    },
    /// The answer to one command.
    Result {
        /// As sent by the agent.
        request_id: String,
        /// What happened.
        outcome: Result<(), EngineError>,
    },
    /// The last message of the stream.
    Ended {
        /// Why the stream ends.
        why: StreamEnd,
    },
}

struct Slot {
    session_id: SessionId,
    tx: mpsc::Sender<Box<AgentNotice>>,
    /// Offers this device was shown and not yet told the end of (an offer is shown once, and
    /// a withdrawal is told only for an offer it was shown). Usually one; more when a replica
    /// learns of a new offer before the end of the previous one. At most [`SHOWN`].
    shown: Vec<OfferId>,
    /// The agent record's version when this session was stored (`None` until then).
    since_version: Option<u64>,
    /// When the presence lease this process last armed for the session runs out (store time).
    lease_until: Millis,
    /// One of this session's commands is being carried out: its end waits for the result.
    busy: bool,
    /// The session ends once the command in flight has its result.
    ending: Option<StreamEnd>,
}

/// Open sessions by agent. Removing a slot ends that device's stream; the device is told why
/// first (an [`AgentNotice::Ended`]), unless its queue is full.
#[derive(Default)]
pub(crate) struct Sessions {
    slots: DashMap<AgentId, Slot>,
}

/// How many shown offers a session remembers (the oldest is forgotten beyond).
const SHOWN: usize = 8;

/// Why a notice could not be queued.
pub(crate) enum SendFailure {
    /// No session (or another one) is open.
    NoSession,
    /// The device does not read: its queue is full.
    Full,
}

fn end(slot: &Slot, why: StreamEnd) {
    let _ = slot.tx.try_send(Box::new(AgentNotice::Ended { why }));
}

impl Sessions {
    /// Opens a session, replacing (and so ending) any other of the same agent. Returns the
    /// receiving end of its bounded queue. Boxed notices: tokio allocates a channel's first
    /// block of 32 slots up front, and 32 pointers instead of 32 notices take about 2 KiB less
    /// per connected agent.
    pub(crate) fn open(
        &self,
        agent_id: AgentId,
        session_id: SessionId,
        buffer: usize,
    ) -> mpsc::Receiver<Box<AgentNotice>> {
        let (tx, rx) = mpsc::channel(buffer);
        let slot = Slot {
            session_id,
            tx,
            shown: Vec::new(),
            since_version: None,
            lease_until: Millis::MIN,
            busy: false,
            ending: None,
        };
        if let Some(old) = self.slots.insert(agent_id, slot) {
            end(&old, StreamEnd::Replaced);
        }
        rx
    }

    /// Notes that the session was stored with the agent record at `version`, with a presence
    /// lease running to `lease_until`.
    pub(crate) fn confirm(&self, agent_id: &AgentId, session_id: &SessionId, version: u64, lease_until: Millis) {
        if let Some(mut s) = self.slots.get_mut(agent_id).filter(|s| &s.session_id == session_id) {
            s.since_version = Some(version);
            s.lease_until = lease_until;
        }
    }

    /// Agents whose session here is due for a lease renewal at `now`.
    pub(crate) fn leases_due(&self, now: Millis, policy: &dispatch_domain::Policy) -> Vec<AgentId> {
        self.slots
            .iter()
            .filter(|s| transition::lease_renewal_due(s.lease_until, now, policy))
            .map(|s| s.key().clone())
            .collect()
    }

    /// Notes that the leases of `agents` were re-armed to run to `until`.
    pub(crate) fn leases_renewed(&self, agents: &[AgentId], until: Millis) {
        for id in agents {
            if let Some(mut s) = self.slots.get_mut(id) {
                s.lease_until = s.lease_until.max(until);
            }
        }
    }

    /// Why the session held here ends, given a newer record of its agent (`None`: it does
    /// not): another session replaced it, the agent signed out, or the record still names it
    /// but disconnected (its lease ran out while this process was paused or cut off).
    pub(crate) fn superseded(&self, agent: &Agent) -> Option<StreamEnd> {
        let slot = self.slots.get(agent.id())?;
        let newer = slot.since_version.is_some_and(|v| agent.version > v);
        if !newer || transition::check_session(agent, &slot.session_id).is_ok() {
            return None;
        }
        Some(match &agent.session {
            Some(s) if s.id == slot.session_id => StreamEnd::LeaseLost,
            Some(_) => StreamEnd::Replaced,
            None => StreamEnd::SignedOut,
        })
    }

    /// Ends the agent's session held here (any), telling the device why; if one of its
    /// commands is in flight, once that command has its result. Returns its id.
    pub(crate) fn end(&self, agent_id: &AgentId, why: StreamEnd) -> Option<SessionId> {
        let session_id = self.slots.get(agent_id)?.session_id.clone();
        self.end_session(agent_id, &session_id, why);
        Some(session_id)
    }

    /// As [`Sessions::end`], if `session_id` is still the agent's current session.
    pub(crate) fn end_session(&self, agent_id: &AgentId, session_id: &SessionId, why: StreamEnd) {
        let deferred = self.slots.get_mut(agent_id).filter(|s| &s.session_id == session_id).is_some_and(|mut s| {
            if s.busy {
                s.ending.get_or_insert(why);
            }
            s.busy
        });
        if !deferred && let Some((_, slot)) = self.slots.remove_if(agent_id, |_, s| &s.session_id == session_id) {
            end(&slot, why);
        }
    }

    /// A command of `session_id` begins; `false` if that session is no longer open here.
    pub(crate) fn begin_command(&self, agent_id: &AgentId, session_id: &SessionId) -> bool {
        self.slots.get_mut(agent_id).filter(|s| &s.session_id == session_id).map(|mut s| s.busy = true).is_some()
    }

    /// Queues the result of the session's command in flight; then the session ends if it was
    /// to. `false` if the session is over (the device is to hear nothing more).
    pub(crate) fn finish_command(&self, agent_id: &AgentId, session_id: &SessionId, result: AgentNotice) -> bool {
        let ending = match self.slots.get_mut(agent_id).filter(|s| &s.session_id == session_id) {
            None => return false,
            Some(mut s) => {
                let _ = s.tx.try_send(Box::new(result));
                s.busy = false;
                s.ending.take()
            }
        };
        match ending {
            Some(why) => {
                self.end_session(agent_id, session_id, why);
                false
            }
            None => true,
        }
    }

    /// Forgets the session if it is still the agent's current one (its stream is over).
    pub(crate) fn forget(&self, agent_id: &AgentId, session_id: &SessionId) {
        self.slots.remove_if(agent_id, |_, s| &s.session_id == session_id);
    }

    /// The agent's current session id.
    pub(crate) fn current(&self, agent_id: &AgentId) -> Option<SessionId> {
        self.slots.get(agent_id).map(|s| s.session_id.clone())
    }

    /// Queues a notice for the agent's current session (`Some(session)`: only that one).
    pub(crate) fn send(
        &self,
        agent_id: &AgentId,
        session: Option<&SessionId>,
        notice: AgentNotice,
    ) -> Result<(), (SendFailure, Option<SessionId>)> {
        let Some(slot) = self.slots.get(agent_id) else {
            return Err((SendFailure::NoSession, None));
        };
        if session.is_some_and(|s| s != &slot.session_id) {
            return Err((SendFailure::NoSession, None));
        }
        match slot.tx.try_send(Box::new(notice)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err((SendFailure::Full, Some(slot.session_id.clone()))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err((SendFailure::NoSession, Some(slot.session_id.clone()))),
        }
    }

    /// Records that the agent's device is being shown `offer`; `false` if it was already (or
    /// no session is open here).
    pub(crate) fn show_offer(&self, agent_id: &AgentId, offer: &OfferId) -> bool {
        self.slots.get_mut(agent_id).is_some_and(|mut s| {
            if s.shown.contains(offer) {
                return false;
            }
            if s.shown.len() == SHOWN {
                s.shown.remove(0);
            }
            s.shown.push(offer.clone());
            true
        })
    }

    /// Forgets that the device was shown `offer`; whether it had been.
    pub(crate) fn unshow_offer(&self, agent_id: &AgentId, offer: &OfferId) -> bool {
        self.slots.get_mut(agent_id).is_some_and(|mut s| {
            let before = s.shown.len();
            s.shown.retain(|o| o != offer);
            s.shown.len() < before
        })
    }

    /// Open sessions here.
    pub(crate) fn all(&self) -> Vec<(AgentId, SessionId)> {
        self.slots.iter().map(|e| (e.key().clone(), e.session_id.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(a: &str, s: &str) -> (AgentId, SessionId) {
        (AgentId::parse("a", a).unwrap(), SessionId::parse("s", s).unwrap())
    }

    #[test]
    fn a_replaced_session_is_told_why_before_its_stream_ends() {
        let reg = Sessions::default();
        let (a, s1) = ids("a", "s1");
        let mut first = reg.open(a.clone(), s1, 4);
        let _second = reg.open(a, SessionId::parse("s", "s2").unwrap(), 4);
        let last = first.try_recv().expect("a message");
        assert!(matches!(*last, AgentNotice::Ended { why: StreamEnd::Replaced }), "{last:?}");
        assert!(first.try_recv().is_err(), "then the stream ends");
    }

    #[test]
    fn a_session_ending_during_its_own_command_ends_after_the_result() {
        let reg = Sessions::default();
        let (a, s) = ids("a", "s");
        let mut rx = reg.open(a.clone(), s.clone(), 4);
        assert!(reg.begin_command(&a, &s));
        reg.end(&a, StreamEnd::SignedOut);
        let result = AgentNotice::Result { request_id: "r1".into(), outcome: Ok(()) };
        assert!(!reg.finish_command(&a, &s, result), "the session is over");
        assert!(matches!(*rx.try_recv().unwrap(), AgentNotice::Result { .. }));
        assert!(matches!(*rx.try_recv().unwrap(), AgentNotice::Ended { why: StreamEnd::SignedOut }));
        assert!(reg.current(&a).is_none());
    }

    #[test]
    fn an_offer_shown_before_the_end_of_the_previous_one_keeps_that_end() {
        let reg = Sessions::default();
        let (a, s) = ids("a", "s");
        let _rx = reg.open(a.clone(), s, 4);
        let (o1, o2) = (OfferId::parse("o", "o1").unwrap(), OfferId::parse("o", "o2").unwrap());
        assert!(reg.show_offer(&a, &o1));
        assert!(reg.show_offer(&a, &o2), "the next offer, learnt first");
        assert!(reg.unshow_offer(&a, &o1), "the first one's withdrawal is still told");
        assert!(reg.unshow_offer(&a, &o2));
    }

    #[test]
    fn an_offer_is_shown_once_and_withdrawn_only_if_shown() {
        let reg = Sessions::default();
        let (a, s) = ids("a", "s");
        let _rx = reg.open(a.clone(), s, 4);
        let o = OfferId::parse("o", "o1").unwrap();
        assert!(!reg.unshow_offer(&a, &o), "never shown");
        assert!(reg.show_offer(&a, &o));
        assert!(!reg.show_offer(&a, &o), "shown once");
        assert!(reg.unshow_offer(&a, &o));
        assert!(!reg.unshow_offer(&a, &o));
    }
}
