//! Case watchers: the events a router's `WatchCase` sees ([`CaseEvent`]), and the registry of
//! per-case broadcasts of the case's new versions (each watch derives its events from the
//! version it last reported, so it tells the same story on every replica, whichever versions
//! that replica saw). An entry lives only while someone watches its case.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dispatch_domain::demand::WaitEstimate;
use dispatch_domain::state::OfferOutcome;
use dispatch_domain::transition::RevokeReason;
use dispatch_domain::{AgentId, Case, CaseId, CaseState, Event, Millis, OfferId};
use tokio::sync::broadcast;

/// A case lifecycle event for `WatchCase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseEventKind {
    /// The case as it is now (first message of every watch, and after a resync).
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
    /// The assignment was taken back from its agent (vanished or quiet); the case waits again.
    HandedBack,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Expired.
    Expired,
    /// A waiting case's estimated wait was remade; nothing else changed.
    WaitEstimated,
}

impl CaseEventKind {
    /// Nothing follows it: a watch ends after it.
    pub fn is_terminal(self) -> bool {
        matches!(self, CaseEventKind::Completed | CaseEventKind::Cancelled | CaseEventKind::Expired)
    }
}

/// One event of one case. Derived from the case record alone, so every replica sends the same
/// events with the same times.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseEvent {
    /// The case it happened to.
    pub case_id: CaseId,
    /// What happened.
    pub kind: CaseEventKind,
    /// The case version the event was derived from (events derived from one version share it;
    /// a watch whose replica missed versions in between reports the later one).
    pub version: u64,
    /// When it happened (store clock): the offer's time for offer events, the close time for
    /// terminal ones.
    pub at: Millis,
    /// The agent concerned, if any.
    pub agent_id: Option<AgentId>,
    /// The offer concerned, if any.
    pub offer_id: Option<OfferId>,
    /// Decline reason, revoke cause, completion outcome, cancel or expiry reason.
    pub reason: String,
    /// The case's state just after it.
    pub state: CaseState,
    /// While the case waits (the state is queued or offered): its stored estimate.
    pub estimate: Option<WaitEstimate>,
}

/// The estimate an event leaving `case` in `state` shows: its stored one while it waits.
fn shown(case: &Case, state: &CaseState) -> Option<WaitEstimate> {
    case.estimate.filter(|_| state.waits())
}

impl CaseEvent {
    /// The case as it is at `now`.
    pub fn snapshot(case: &Case, now: Millis) -> CaseEvent {
        CaseEvent {
            case_id: case.id().clone(),
            kind: CaseEventKind::Snapshot,
            version: case.version,
            at: now,
            agent_id: case.current_agent().cloned(),
            offer_id: match &case.state {
                CaseState::Offered { offer_id, .. } | CaseState::Assigned { offer_id, .. } => Some(offer_id.clone()),
                CaseState::Queued | CaseState::Completed | CaseState::Cancelled | CaseState::Expired => None,
            },
            reason: case.close_reason.clone(),
            state: case.state.clone(),
            estimate: case.waiting_estimate(),
        }
    }

    /// `after`'s estimate was remade (and nothing else happened).
    pub fn estimated(after: &Case) -> Option<CaseEvent> {
        let estimate = after.waiting_estimate()?;
        Some(CaseEvent {
            case_id: after.id().clone(),
            kind: CaseEventKind::WaitEstimated,
            version: after.version,
            at: estimate.at,
            agent_id: None,
            offer_id: None,
            reason: String::new(),
            state: after.state.clone(),
            estimate: Some(estimate),
        })
    }

    /// A case event of `after` (the record it was derived from); `None` for agent events.
    pub fn of(ev: &Event, after: &Case) -> Option<CaseEvent> {
        let record = |o: &OfferId| after.offer(o);
        let decided = |o: &OfferId| record(o).map_or(after.closed_at, |r| r.decided_at);
        let make = |kind, at, agent: Option<&AgentId>, offer: Option<&OfferId>, reason: &str, state| CaseEvent {
            case_id: after.id().clone(),
            kind,
            version: after.version,
            at,
            agent_id: agent.cloned(),
            offer_id: offer.cloned(),
            reason: reason.to_owned(),
            estimate: shown(after, &state),
            state,
        };
        Some(match ev {
            Event::Queued { .. } => make(CaseEventKind::Queued, after.created_at, None, None, "", CaseState::Queued),
            Event::Offered { offer_id, agent_id, deadline, .. } => {
                let at = record(offer_id).map_or(after.created_at, |r| r.offered_at);
                let state =
                    CaseState::Offered { offer_id: offer_id.clone(), agent_id: agent_id.clone(), deadline: *deadline };
                make(CaseEventKind::Offered, at, Some(agent_id), Some(offer_id), "", state)
            }
            Event::Declined { offer_id, agent_id, reason, .. } => make(
                CaseEventKind::Declined,
                decided(offer_id),
                Some(agent_id),
                Some(offer_id),
                reason,
                CaseState::Queued,
            ),
            Event::TimedOut { offer_id, agent_id, .. } => make(
                CaseEventKind::OfferTimedOut,
                decided(offer_id),
                Some(agent_id),
                Some(offer_id),
                RevokeReason::TimedOut.as_str(),
                CaseState::Queued,
            ),
            Event::Revoked { offer_id, agent_id, reason, .. } => {
                // A cancel's revoke leaves the case cancelled, not waiting.
                let state = if *reason == RevokeReason::Cancelled { CaseState::Cancelled } else { CaseState::Queued };
                make(
                    CaseEventKind::OfferRevoked,
                    decided(offer_id),
                    Some(agent_id),
                    Some(offer_id),
                    reason.as_str(),
                    state,
                )
            }
            Event::Assigned { offer_id, agent_id, .. } => {
                let state = CaseState::Assigned { offer_id: offer_id.clone(), agent_id: agent_id.clone() };
                make(CaseEventKind::Assigned, decided(offer_id), Some(agent_id), Some(offer_id), "", state)
            }
            Event::HandedBack { offer_id, agent_id, reason, .. } => {
                let at = record(offer_id).map_or(after.created_at, |r| r.handed_back_at);
                make(CaseEventKind::HandedBack, at, Some(agent_id), Some(offer_id), reason.as_str(), CaseState::Queued)
            }
            Event::Completed { agent_id, outcome, .. } => {
                make(CaseEventKind::Completed, after.closed_at, Some(agent_id), None, outcome, CaseState::Completed)
            }
            Event::Cancelled { agent_id, offer_id, reason, .. } => make(
                CaseEventKind::Cancelled,
                after.closed_at,
                agent_id.as_ref(),
                offer_id.as_ref(),
                reason,
                CaseState::Cancelled,
            ),
            Event::Expired { .. } => {
                make(CaseEventKind::Expired, after.closed_at, None, None, &after.close_reason, CaseState::Expired)
            }
            Event::AgentStatus { .. } | Event::Invited { .. } | Event::InvitationClosed { .. } => return None,
        })
    }
}

/// Whether the offer `o` of `case` was accepted (its agent holds, or held, the case).
pub(crate) fn accepted(case: &Case, o: &OfferId) -> bool {
    case.offer(o).is_some_and(|r| r.outcome == OfferOutcome::Accepted)
}

/// Watchers by case.
pub(crate) struct Watchers {
    map: DashMap<CaseId, broadcast::Sender<Arc<Case>>>,
    /// Open watches in this process.
    open: AtomicUsize,
    /// At most this many at once.
    limit: usize,
}

/// Too many watches are open.
#[derive(Debug)]
pub(crate) struct WatchLimit(pub(crate) usize);

impl Watchers {
    pub(crate) fn new(limit: usize) -> Self {
        Self { map: DashMap::new(), open: AtomicUsize::new(0), limit }
    }

    /// A receiver of the case's future versions; release it with [`Watchers::release`].
    pub(crate) fn subscribe(&self, id: &CaseId) -> Result<broadcast::Receiver<Arc<Case>>, WatchLimit> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(WatchLimit(self.limit));
        }
        Ok(self.map.entry(id.clone()).or_insert_with(|| broadcast::channel(64).0).subscribe())
    }

    /// A watch of `id` ended (its receiver dropped already): the case's entry goes when no one
    /// else watches it.
    pub(crate) fn release(&self, id: &CaseId) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.map.remove_if(id, |_, tx| tx.receiver_count() == 0);
    }

    /// Sends a new version of a case to its watchers, if any.
    pub(crate) fn publish(&self, case: &Case) {
        if let Some(tx) = self.map.get(case.id()) {
            let _ = tx.send(Arc::new(case.clone()));
        }
    }

    /// Cases with an entry (for tests of the bound).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_only_while_watched_and_watches_are_bounded() {
        let w = Watchers::new(2);
        let id = CaseId::parse("c", "c1").unwrap();
        let a = w.subscribe(&id).unwrap();
        let b = w.subscribe(&id).unwrap();
        assert!(w.subscribe(&id).is_err(), "over the limit");
        drop(a);
        w.release(&id);
        assert_eq!(w.entries(), 1, "still watched");
        drop(b);
        w.release(&id);
        assert_eq!(w.entries(), 0, "freed with its last watcher");
        assert!(w.subscribe(&id).is_ok(), "room again");
    }
}
