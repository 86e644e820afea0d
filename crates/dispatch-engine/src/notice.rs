//! What the engine tells agents (over their session) and case watchers, and the registries
//! that route those messages.

use std::sync::Arc;

use dashmap::DashMap;
use dispatch_domain::model::CaseSpec;
use dispatch_domain::transition;
use dispatch_domain::{Activity, Agent, AgentId, AgentStatus, CaseId, CaseState, Millis, OfferId, SessionId};
use tokio::sync::{broadcast, mpsc};

use crate::EngineError;

/// A message for one agent's device.
#[derive(Debug, Clone)]
pub enum AgentNotice {
    /// A new offer (or the live one again, after a reconnect).
    Offer {
        /// Offer.
        offer_id: OfferId,
        /// The case.
        case: Arc<CaseSpec>,
        /// Time left to accept when sent.
        remaining_ms: u64,
    },
    /// The offer is gone.
    OfferRevoked {
        /// Offer.
        offer_id: OfferId,
        /// Case.
        case_id: CaseId,
        /// `timed_out`, `cancelled`, `disconnected`, `agent_unavailable`.
        reason: String,
    },
    /// The accept went through: the case is the agent's.
    Assigned {
        /// Offer.
        offer_id: OfferId,
        /// The case.
        case: Arc<CaseSpec>,
    },
    /// The agent's status changed (or was confirmed on sign-in).
    Status {
        /// Status.
        status: AgentStatus,
        /// Planner bucket.
        activity: Activity,
        /// Why.
        reason: String,
        /// Cases still assigned.
        assignments: Vec<CaseId>,
    },
    /// This dispatcher is going away: the device is to reconnect (to another replica); the
    /// stream ends after this.
    Reconnect {
        /// Why.
        reason: String,
    },
    /// The answer to one command.
    Result {
        /// As sent by the agent.
        request_id: String,
        /// What happened.
        outcome: Result<(), EngineError>,
    },
}

/// One signed-in device as the transport sees it: the session id and the receiving end of its
/// bounded outbound queue.
pub struct AgentSession {
    /// The agent.
    pub agent_id: AgentId,
    /// This connection.
    pub session_id: SessionId,
    /// Messages for the device; ends when the engine closes the session (replaced, signed out,
    /// or too slow to read). Boxed: tokio allocates a channel's first block of 32 slots up
    /// front, and 32 pointers instead of 32 notices take about 2 KiB less per connected agent.
    pub notices: mpsc::Receiver<Box<AgentNotice>>,
}

struct Slot {
    session_id: SessionId,
    tx: mpsc::Sender<Box<AgentNotice>>,
    /// The live offer this device was last told about (so that an offer reaching this process
    /// twice, from its own commit and from the change log, is shown once).
    told_offer: Option<OfferId>,
    /// The agent record's version when this session was stored (`None` until then).
    since_version: Option<u64>,
    /// When the presence lease this process last armed for the session runs out (store time).
    lease_until: Millis,
}

/// Open sessions by agent. Dropping a slot's sender ends that device's stream.
#[derive(Default)]
pub(crate) struct Sessions {
    slots: DashMap<AgentId, Slot>,
}

/// Why a notice could not be queued.
pub(crate) enum SendFailure {
    /// No session (or another one) is open.
    NoSession,
    /// The device does not read: its queue is full.
    Full,
}

impl Sessions {
    /// Opens a session, replacing (and so ending) any other of the same agent.
    pub fn open(&self, agent_id: AgentId, session_id: SessionId, buffer: usize) -> AgentSession {
        let (tx, rx) = mpsc::channel(buffer);
        self.slots.insert(
            agent_id.clone(),
            Slot {
                session_id: session_id.clone(),
                tx,
                told_offer: None,
                since_version: None,
                lease_until: Millis::MIN,
            },
        );
        AgentSession { agent_id, session_id, notices: rx }
    }

    /// Notes that the session was stored with the agent record at `version`, with a presence
    /// lease running to `lease_until`.
    pub fn confirm(&self, agent_id: &AgentId, session_id: &SessionId, version: u64, lease_until: Millis) {
        if let Some(mut s) = self.slots.get_mut(agent_id).filter(|s| &s.session_id == session_id) {
            s.since_version = Some(version);
            s.lease_until = lease_until;
        }
    }

    /// Agents whose session here has a presence lease running out by `by`.
    pub fn leases_ending_by(&self, by: Millis) -> Vec<AgentId> {
        self.slots.iter().filter(|s| s.lease_until <= by).map(|s| s.key().clone()).collect()
    }

    /// Notes that the leases of `agents` were re-armed to run to `until`.
    pub fn leases_renewed(&self, agents: &[AgentId], until: Millis) {
        for id in agents {
            if let Some(mut s) = self.slots.get_mut(id) {
                s.lease_until = s.lease_until.max(until);
            }
        }
    }

    /// Ends the session held here if a newer record of its agent no longer has it connected.
    /// When the record still names it (its lease ran out while this process was paused or cut
    /// off from the store) the device is told to reconnect; when another session replaced it
    /// or the agent signed out, the stream just ends (as it does when both are on this
    /// process). Returns the ended session.
    pub fn end_if_superseded(&self, agent: &Agent) -> Option<SessionId> {
        let gone = self.slots.get(agent.id()).is_some_and(|s| {
            s.since_version.is_some_and(|v| agent.version > v)
                && transition::check_session(agent, &s.session_id).is_err()
        });
        if !gone {
            return None;
        }
        let (_, slot) = self.slots.remove(agent.id())?;
        if agent.session.as_ref().is_some_and(|x| x.id == slot.session_id) {
            let reason = "this session's presence lease ran out: reconnect".to_owned();
            let _ = slot.tx.try_send(Box::new(AgentNotice::Reconnect { reason }));
        }
        Some(slot.session_id)
    }

    /// Closes the session if it is still the agent's current one.
    pub fn close(&self, agent_id: &AgentId, session_id: &SessionId) -> bool {
        self.slots.remove_if(agent_id, |_, s| &s.session_id == session_id).is_some()
    }

    /// The agent's current session id.
    pub fn current(&self, agent_id: &AgentId) -> Option<SessionId> {
        self.slots.get(agent_id).map(|s| s.session_id.clone())
    }

    /// Queues a notice for the agent's current session (`Some(session)`: only that one).
    pub fn send(
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

    /// Records that the agent's device was told about `offer` (or that it holds none); returns
    /// the offer it had been told about before. `None` when no session is open here.
    pub fn swap_told(&self, agent_id: &AgentId, offer: Option<OfferId>) -> Option<Option<OfferId>> {
        self.slots.get_mut(agent_id).map(|mut s| std::mem::replace(&mut s.told_offer, offer))
    }

    /// Open sessions here.
    pub fn all(&self) -> Vec<(AgentId, SessionId)> {
        self.slots.iter().map(|e| (e.key().clone(), e.session_id.clone())).collect()
    }

    /// Agents with an open session here.
    pub fn agents(&self) -> Vec<AgentId> {
        self.slots.iter().map(|e| e.key().clone()).collect()
    }
}

/// A case lifecycle event for `WatchCase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseEventKind {
    /// The case as it is now (first message of every watch).
    Snapshot,
    /// Submitted.
    Queued,
    /// Offered to an agent.
    Offered,
    /// The agent declined.
    Declined,
    /// The offer timed out.
    OfferTimedOut,
    /// The offer was revoked.
    OfferRevoked,
    /// An agent accepted.
    Assigned,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Expired.
    Expired,
}

/// One event of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseEvent {
    /// Case.
    pub case_id: CaseId,
    /// What happened.
    pub kind: CaseEventKind,
    /// The case version after it.
    pub version: u64,
    /// When.
    pub at: Millis,
    /// The agent concerned.
    pub agent_id: Option<AgentId>,
    /// The offer concerned.
    pub offer_id: Option<OfferId>,
    /// Decline reason, revoke cause, outcome.
    pub reason: String,
    /// The state after it.
    pub state: CaseState,
}

/// Watchers by case.
#[derive(Default)]
pub(crate) struct Watchers {
    map: DashMap<CaseId, broadcast::Sender<CaseEvent>>,
}

impl Watchers {
    pub fn subscribe(&self, id: &CaseId) -> broadcast::Receiver<CaseEvent> {
        self.map.entry(id.clone()).or_insert_with(|| broadcast::channel(64).0).subscribe()
    }

    pub fn publish(&self, ev: CaseEvent) {
        let terminal = ev.state.is_terminal();
        let id = ev.case_id.clone();
        let unwatched = match self.map.get(&id) {
            Some(tx) => tx.send(ev).is_err(),
            None => return,
        };
        if terminal || unwatched {
            self.map.remove_if(&id, |_, tx| terminal || tx.receiver_count() == 0);
        }
    }
}
