//! Time: the sweeper fires due timers (offer deadlines, presence grace and leases, wrap-up
//! ends, case reviews, hand-backs, purges) and renews the presence leases of the sessions held here. Every
//! handler re-checks the records, so a stale or duplicate firing is harmless; a timer is
//! cleared only if it was not re-armed meanwhile.

use std::time::Duration;

use dispatch_domain::demand::WaitEstimate;
use dispatch_domain::{Change, Millis, TimerKey, transition};
use tracing::warn;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::work::Work;
use crate::write::Load;

/// How many due timers fire at once: enough that a burst of them (the wrap-up ends of a busy
/// minute, a day's purges) is not a queue of round trips one after another, few enough that a
/// burst does not crowd the store.
const FIRING_AT_ONCE: usize = 32;

fn flatten(r: Result<Result<(), EngineError>, tokio::task::JoinError>) -> Result<(), EngineError> {
    r.map_err(|e| EngineError::Internal(format!("a timer's firing failed: {e}")))?
}

impl Engine {
    pub(crate) async fn sweeper(self) {
        let mut stop = self.inner.life.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.sweep_interval_ms.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.inner.clock.moved() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.sweep().await {
                warn!(error = %e, "sweep failed; retrying next interval");
            }
        }
    }

    /// Fires every due timer once, [`FIRING_AT_ONCE`] at a time (each handler re-checks its
    /// records, and timers of the same record are settled by compare-and-set like any other
    /// race). Returns how many fired; the first error, once every firing begun has ended.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        const BATCH: usize = 256;
        let now = self.now().await?;
        self.renew_leases(now).await?;
        let mut fired = 0;
        loop {
            let due = self.inner.store.due_timers(now, BATCH).await?;
            if fired == 0 {
                self.inner.metrics.timers_due(due.len());
            }
            let mut firing = tokio::task::JoinSet::new();
            let mut failed = None;
            for (key, at) in due.iter().cloned() {
                if firing.len() >= FIRING_AT_ONCE
                    && let Some(Err(e)) = firing.join_next().await.map(flatten)
                {
                    failed.get_or_insert(e);
                }
                let engine = self.clone();
                firing.spawn(async move {
                    engine.fire(&key).await?;
                    engine.gated(now, engine.inner.store.clear_timer(&key, at)).await?;
                    Ok::<_, EngineError>(())
                });
            }
            while let Some(r) = firing.join_next().await {
                if let Err(e) = flatten(r) {
                    failed.get_or_insert(e);
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            fired += due.len();
            if due.len() < BATCH {
                // Then, when one is due, a call-in round (one dispatcher wins each).
                self.call_in_round().await?;
                return Ok(fired);
            }
        }
    }

    /// Re-arms the presence leases of the sessions held here that are due (before any lease is
    /// looked at, so a live stream's lease never runs out). Each session keeps its own due
    /// time, so renewals stay spread the way the devices connected, and they are written in
    /// small batches: one write of every lease at once would hold a single-threaded Redis for
    /// an estimated 25 ms at 10k agents, in front of every offer.
    async fn renew_leases(&self, now: Millis) -> Result<(), EngineError> {
        const BATCH: usize = 128;
        let policy = &self.inner.policy;
        let due = self.inner.delivery.sessions.leases_due(now, policy);
        let until = transition::lease_due(now, policy);
        for chunk in due.chunks(BATCH) {
            let timers = chunk.iter().map(|a| (TimerKey::PresenceLease(a.clone()), until)).collect();
            self.commit(Change { timers, ..Change::default() }, now).await?;
            self.inner.delivery.sessions.leases_renewed(chunk, until);
        }
        Ok(())
    }

    async fn fire(&self, key: &TimerKey) -> Result<(), EngineError> {
        let policy = &self.inner.policy;
        let result = match key {
            TimerKey::OfferDeadline(case_id) => self
                .transact(Load::CaseAndItsAgent(case_id), |case, agent, now| {
                    Ok(case.map(|c| transition::time_out(c, agent, now, policy)).unwrap_or_default())
                })
                .await
                .map(drop),
            TimerKey::CaseReview(case_id) => {
                // A waiting case whose estimate ran out gets a new one, from the index's
                // view of the queue (gathered before the decision, which stays pure).
                let now = self.now().await?;
                let inputs = match self.inner.index.case(case_id) {
                    Some(c) if transition::estimate_due(&c, now) => Some(self.estimate_for(&c, now).await),
                    _ => None,
                };
                let r = self
                    .transact(Load::Case(case_id), |case, _, now| {
                        let Some(c) = case else { return Ok(Change::default()) };
                        let mut change = transition::review_case(c, now, policy);
                        if let Some(i) = inputs.as_ref().filter(|_| transition::estimate_due(c, now)) {
                            let estimate = WaitEstimate::of(i, now);
                            transition::estimate(c, &mut change, estimate, now, policy);
                        }
                        Ok(change)
                    })
                    .await;
                self.inner.work.push(Work::Case(case_id.clone()));
                r.map(drop)
            }
            TimerKey::AgentReady(agent_id) => {
                // One read: the record refreshes the index and is reviewed (its working time);
                // a review that changes something is written with compare-and-set on that
                // version. Lost to a concurrent change, it is moot: that change was settled too.
                let mark = self.inner.fence.read_mark();
                let read = self.inner.store.read(None, Some(agent_id)).await?;
                let Some(agent) = read.agent else {
                    return self.agent_missing(agent_id, mark).await;
                };
                let review = transition::review_agent(&agent, read.now, policy);
                self.observe(None, Some(agent), read.now);
                if !(review.is_noop() && review.timers.is_empty()) {
                    match self.commit(review, read.now).await {
                        Ok(_) | Err(crate::store::StoreError::Conflict(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.inner.work.push(Work::Agent(agent_id.clone()));
                Ok(())
            }
            TimerKey::PresenceLease(agent_id) => self
                .transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
                    Ok(agent.map(|a| transition::lease_expired(a, case, now, policy)).unwrap_or_default())
                })
                .await
                .map(drop),
            TimerKey::Purge(case_id) => {
                let now = self.now().await?;
                self.gated(now, self.inner.store.purge_case(case_id)).await?;
                self.observe_case_purged(case_id);
                Ok(())
            }
            TimerKey::HandBack(case_id) => self
                .transact(Load::CaseAndItsAgent(case_id), |case, agent, now| {
                    Ok(case.map(|c| transition::review_assignment(c, agent, now, policy)).unwrap_or_default())
                })
                .await
                .map(drop),
            TimerKey::InvitationExpiry(agent_id) => self
                .transact(Load::Agent(agent_id), |_, agent, now| {
                    Ok(agent.map(|a| transition::invitation_expired(a, now)).unwrap_or_default())
                })
                .await
                .map(drop),
            TimerKey::PresenceGrace(agent_id) => self
                .transact(Load::Agent(agent_id), |_, agent, now| {
                    Ok(agent.map(|a| transition::presence_expired(a, now, policy)).unwrap_or_default())
                })
                .await
                .map(drop),
        };
        match result {
            // A refused timer (its records moved on) is simply spent.
            Ok(()) | Err(EngineError::Rejected(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
