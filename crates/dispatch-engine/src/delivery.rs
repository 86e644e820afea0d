//! The one delivery path. Every record this process learns of — from its own commits, from
//! other dispatchers' commits read off the change log, from an index rebuild or a re-read after
//! a conflict — goes through [`Engine::observe`]: the index takes it if it is newer than what
//! it knew, and what an observer sees is derived from two versions of the record with the
//! domain's [`transition::case_events`]: device notices from the version the index replaced and
//! the new one, case watch events from the version each watch last reported and the new one
//! (`api::cases::CaseWatch`); status notices and session ends from the agent record,
//! the planners' change signal, and matching work. So a watcher, a device or a planner on any
//! replica sees what they would see on the replica that decided.

use std::sync::Arc;

use dispatch_domain::model::CaseSpec;
use dispatch_domain::transition::{self, RevokeReason};
use dispatch_domain::{Agent, AgentId, Case, CaseId, CaseState, Event, Millis, OfferId, SessionId};
use tracing::{info, warn};

use crate::engine::Engine;
use crate::index::Applied;
use crate::sessions::{AgentNotice, SendFailure, StreamEnd};
use crate::watchers;
use crate::work::Work;

impl Engine {
    /// See the module docs. Case first, then agent: the order in which a commit logs them.
    pub(crate) fn observe(&self, case: Option<Case>, agent: Option<Agent>, now: Millis) {
        if let Some(c) = case {
            self.observe_case(c, now);
        }
        if let Some(a) = agent {
            self.observe_agent(a, now);
        }
    }

    fn observe_case(&self, after: Case, now: Millis) {
        let inner = &self.inner;
        let before = match inner.index.apply_case(after.clone(), &inner.policy) {
            Applied::Newer(before) => before,
            Applied::Stale => return,
        };
        if after.state.is_terminal() {
            inner.closed.remember(&after, now);
        }
        if after.state == CaseState::Queued {
            inner.work.push(Work::Case(after.id().clone()));
        }
        inner.delivery.watchers.publish(&after);
        for ev in transition::case_events(before.as_deref(), &after) {
            self.tell_device(&ev, &after, now);
        }
        if let Some((agent_id, due)) = transition::activity_warning(before.as_deref(), &after, &inner.policy) {
            info!(case_id = %after.id(), agent_id = %agent_id, "no activity on an assigned case: warned");
            let remaining_ms = u64::try_from(due - now).unwrap_or(0);
            self.tell(&agent_id, AgentNotice::ActivityWarning { case_id: after.id().clone(), remaining_ms });
        }
    }

    /// What the agent's device hears of one case event: only what still holds in `after` (an
    /// offer that is already gone is not shown; a withdrawal is told for an offer it was shown).
    fn tell_device(&self, ev: &Event, after: &Case, now: Millis) {
        let sessions = &self.inner.delivery.sessions;
        let spec = || Arc::new(after.spec.clone());
        match ev {
            Event::Offered { offer_id, agent_id, deadline, .. } => {
                if matches!(&after.state, CaseState::Offered { offer_id: o, .. } if o == offer_id) {
                    info!(case_id = %after.id(), agent_id = %agent_id, offer_id = %offer_id, "offer made");
                    self.show_offer(agent_id, offer_id, spec(), *deadline, now);
                }
            }
            Event::Assigned { offer_id, agent_id, .. } => {
                sessions.unshow_offer(agent_id, offer_id);
                if matches!(&after.state, CaseState::Assigned { offer_id: o, .. } if o == offer_id) {
                    info!(case_id = %after.id(), agent_id = %agent_id, offer_id = %offer_id, "case assigned");
                    self.tell(agent_id, AgentNotice::Assigned { offer_id: offer_id.clone(), case: spec() });
                }
            }
            Event::Declined { offer_id, agent_id, .. } => {
                sessions.unshow_offer(agent_id, offer_id);
            }
            Event::TimedOut { offer_id, agent_id, .. } => {
                self.withdraw(agent_id, offer_id, after.id(), RevokeReason::TimedOut);
            }
            Event::Revoked { offer_id, agent_id, reason, .. } => {
                self.withdraw(agent_id, offer_id, after.id(), *reason);
            }
            Event::Cancelled { agent_id: Some(agent_id), offer_id: Some(offer_id), .. } => {
                // An assignment taken back: the device holds the case and must drop it.
                if watchers::accepted(after, offer_id) {
                    let notice = AgentNotice::OfferRevoked {
                        offer_id: offer_id.clone(),
                        case_id: after.id().clone(),
                        reason: RevokeReason::Cancelled,
                    };
                    self.tell(agent_id, notice);
                }
            }
            Event::HandedBack { offer_id, agent_id, reason, .. } => {
                info!(case_id = %after.id(), agent_id = %agent_id, reason = reason.as_str(), "case handed back");
                let notice = AgentNotice::HandedBack {
                    offer_id: offer_id.clone(),
                    case_id: after.id().clone(),
                    reason: *reason,
                };
                self.tell(agent_id, notice);
            }
            Event::Cancelled { .. }
            | Event::Queued { .. }
            | Event::Completed { .. }
            | Event::Expired { .. }
            | Event::AgentStatus { .. }
            | Event::Invited { .. }
            | Event::InvitationClosed { .. } => {}
        }
    }

    fn withdraw(&self, agent_id: &AgentId, offer_id: &OfferId, case_id: &CaseId, reason: RevokeReason) {
        if self.inner.delivery.sessions.unshow_offer(agent_id, offer_id) {
            let notice = AgentNotice::OfferRevoked { offer_id: offer_id.clone(), case_id: case_id.clone(), reason };
            self.tell(agent_id, notice);
        }
    }

    fn observe_agent(&self, after: Agent, now: Millis) {
        let inner = &self.inner;
        let before = match inner.index.apply_agent(after.clone()) {
            Applied::Newer(before) => before,
            Applied::Stale => return,
        };
        inner.delivery.pool_changed.send_modify(|v| *v += 1);
        if after.invitation.is_some() && before.as_ref().is_none_or(|b| b.invitation != after.invitation) {
            let _ = inner.delivery.invitations.send(Arc::new(after.clone()));
        }
        if after.unready_reason(now).is_none() {
            inner.work.push(Work::Agent(after.id().clone()));
        }
        let status_moved =
            before.as_ref().map_or(after.status_changes > 0, |b| b.status_changes != after.status_changes);
        // A session this dispatcher disconnects as it shuts down ends as a shutdown (the device
        // reconnects elsewhere), not as a lost lease.
        let ended = inner.delivery.sessions.superseded(&after).map(|why| match why {
            StreamEnd::LeaseLost if self.draining() => StreamEnd::ServerShutdown,
            why => why,
        });
        // A device that signed out hears its new status before its stream ends; a replaced
        // one hears only why it ends.
        if status_moved && matches!(ended, None | Some(StreamEnd::SignedOut)) {
            info!(agent_id = %after.id(), status = ?after.status, reason = after.status_reason.as_str(), "agent status");
            let notice = AgentNotice::Status {
                status: after.status,
                activity: after.activity(now),
                reason: after.status_reason,
                assignments: after.assignments.keys().cloned().collect(),
            };
            self.tell(after.id(), notice);
        }
        // A new working-time cap, whichever replica set it.
        if let Some(c) = after.work.capped.filter(|c| before.as_ref().is_none_or(|b| b.work.capped != Some(*c)))
            && ended.is_none()
        {
            info!(agent_id = %after.id(), limit = c.limit.as_str(), until = c.until, "agent at a working-time limit");
            let remaining_ms = u64::try_from(c.until - now).unwrap_or(0);
            self.tell(after.id(), AgentNotice::WorkingTimeLimit { limit: c.limit, remaining_ms });
        }
        if let Some(why) = ended
            && let Some(session_id) = inner.delivery.sessions.end(after.id(), why)
        {
            info!(agent_id = %after.id(), session_id = %session_id, why = why.as_str(), "session ended by the store's record");
        }
    }

    /// An agent was removed from the roster.
    pub(crate) fn observe_agent_removed(&self, id: &AgentId) {
        self.inner.index.remove_agent(id);
        self.inner.delivery.pool_changed.send_modify(|v| *v += 1);
        self.inner.delivery.sessions.end(id, StreamEnd::Removed);
    }

    /// A case was purged (its retention ran out).
    pub(crate) fn observe_case_purged(&self, id: &CaseId) {
        self.inner.index.remove_case(id, &self.inner.policy);
    }

    /// Shows a live offer to the agent's device here, once.
    pub(crate) fn show_offer(
        &self,
        agent_id: &AgentId,
        offer_id: &OfferId,
        case: Arc<CaseSpec>,
        deadline: Millis,
        now: Millis,
    ) {
        if self.inner.delivery.sessions.show_offer(agent_id, offer_id) {
            let remaining_ms = u64::try_from(deadline - now).unwrap_or(0);
            self.tell(agent_id, AgentNotice::Offer { offer_id: offer_id.clone(), case, remaining_ms });
        }
    }

    /// Queues a notice for an agent's device held here. A device whose queue is full is not
    /// reading: it is disconnected (its live offer revoked) without slowing anyone else.
    pub(crate) fn tell(&self, agent_id: &AgentId, notice: AgentNotice) {
        if let Err((SendFailure::Full, Some(session_id))) = self.inner.delivery.sessions.send(agent_id, None, notice) {
            warn!(agent_id = %agent_id, session_id = %session_id, "agent is not reading its stream; disconnecting");
            self.disconnect_in_background(agent_id, &session_id);
        }
    }

    pub(crate) fn disconnect_in_background(&self, agent_id: &AgentId, session_id: &SessionId) {
        self.inner.delivery.sessions.forget(agent_id, session_id);
        let (engine, agent_id, session_id) = (self.clone(), agent_id.clone(), session_id.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.disconnect(&agent_id, &session_id).await {
                warn!(agent_id = %agent_id, error = %e, "disconnect of a stuck reader failed");
            }
        });
    }
}
