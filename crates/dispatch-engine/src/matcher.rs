//! Matching: workers take work items off the queue; a waiting case is offered to the best
//! eligible agent, a free agent the best waiting case. Decisions are taken on the index's
//! records and committed through the one write path; a conflict (the index was stale) re-reads
//! just those records and decides again.

use std::time::Duration;

use dispatch_domain::{AgentId, CaseId, CaseState, OfferId, scoring, transition};
use tracing::warn;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::StoreError;
use crate::work::Work;

/// What an attempt to offer a case to one candidate came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tried {
    /// Committed.
    Offered,
    /// The candidate is gone from the index or may not take it (now): the next one is tried.
    Passed,
    /// The compare-and-set lost: the records were read again, to decide again.
    Conflict,
}

impl Engine {
    /// Waits until the matching work queued so far (and what it queued in turn) is done: on a
    /// manual clock, a simulation steps time only when the engine has acted on the last step.
    pub async fn settled(&self) {
        self.inner.work.settled().await;
    }

    /// Queues every waiting case for matching.
    pub(crate) fn rescan(&self) {
        for id in self.inner.index.waiting_ids() {
            self.inner.work.push(Work::Case(id));
        }
    }

    /// A matcher worker: runs until the engine stops.
    pub(crate) async fn matcher(self) {
        let mut stop = self.inner.life.stop.subscribe();
        loop {
            let work = tokio::select! {
                w = self.inner.work.take() => match w { Some(w) => w, None => return },
                _ = stop.changed() => return,
            };
            if self.draining() {
                // The other dispatchers match it (their change log shows the case queued).
                self.inner.work.done();
                continue;
            }
            let result = match &work {
                Work::Case(id) => self.match_case(id).await,
                Work::Agent(id) => self.match_agent(id).await,
            };
            self.inner.work.done();
            if let Err(e) = result {
                warn!(?work, error = %e, "matching failed; the rescan will retry");
            }
        }
    }

    /// The periodic rescan of waiting cases: a safety net for lost triggers.
    pub(crate) async fn rescanner(self) {
        let mut stop = self.inner.life.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.rescan_interval_ms.max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => self.rescan(),
                _ = stop.changed() => return,
            }
        }
    }

    /// Offers a waiting case to the best eligible agent.
    async fn match_case(&self, id: &CaseId) -> Result<(), EngineError> {
        let policy = &self.inner.policy;
        for _ in 0..self.inner.config.conflict_retries {
            let Some(case) = self.inner.index.case(id) else {
                return Ok(());
            };
            if case.state != CaseState::Queued {
                return Ok(());
            }
            let now = self.now().await?;
            let explanation = self.inner.index.rank_for_case(&case, now, policy);
            // Agents another worker is committing an offer to are passed over (it would most
            // likely win them); if no one else could take the case, the best of those is tried
            // after all.
            let mut passed_over = None;
            let mut tried = Tried::Passed;
            for (i, cand) in explanation.candidates.iter().enumerate() {
                let Some(_claim) = self.inner.claims.claim(&cand.agent_id) else {
                    passed_over.get_or_insert(i);
                    continue;
                };
                tried = self.try_offer(&case, &explanation, i, now).await?;
                if tried != Tried::Passed {
                    break;
                }
            }
            if tried == Tried::Passed
                && let Some(i) = passed_over
            {
                tried = self.try_offer(&case, &explanation, i, now).await?;
            }
            if tried != Tried::Conflict {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Offers `case` to the `i`-th candidate of its ranking, if that agent is still in the
    /// index and may take it; a lost compare-and-set reads both records again.
    async fn try_offer(
        &self,
        case: &dispatch_domain::Case,
        explanation: &dispatch_domain::state::Explanation,
        i: usize,
        now: dispatch_domain::Millis,
    ) -> Result<Tried, EngineError> {
        let Some(agent) = self.inner.index.agent(&explanation.candidates[i].agent_id) else {
            return Ok(Tried::Passed);
        };
        let why = scoring::with_winner_first(explanation, i);
        let Ok(change) = transition::offer(case, &agent, self.new_offer_id()?, why, now, &self.inner.policy) else {
            return Ok(Tried::Passed);
        };
        match self.commit_offer(change, case, now).await {
            Ok(_) => Ok(Tried::Offered),
            Err(StoreError::Conflict(_)) => {
                self.reread_case(case.id()).await?;
                self.reread_agent(agent.id()).await?;
                Ok(Tried::Conflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Offers the best waiting case to an agent who just became free.
    async fn match_agent(&self, id: &AgentId) -> Result<(), EngineError> {
        let policy = &self.inner.policy;
        for _ in 0..self.inner.config.conflict_retries {
            let Some(agent) = self.inner.index.agent(id) else {
                return Ok(());
            };
            // Case workers pass over this agent meanwhile; held by one of them already, this
            // goes ahead all the same (the compare-and-set decides).
            let _claim = self.inner.claims.claim(id);
            let now = self.now().await?;
            let claims = &self.inner.case_claims;
            let Some(case) = self.inner.index.best_case_skipping(&agent, now, policy, |c| claims.held(c)) else {
                return Ok(());
            };
            // Lost to a case worker between the look and now: decide again.
            let Some(_case_claim) = claims.claim(case.id()) else {
                continue;
            };
            let why = scoring::rank(&case, [agent.as_ref()], now, policy);
            let Ok(change) = transition::offer(&case, &agent, self.new_offer_id()?, why, now, policy) else {
                return Ok(());
            };
            match self.commit_offer(change, &case, now).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => {
                    self.reread_case(case.id()).await?;
                    self.reread_agent(id).await?;
                    // Other agents' workers may have passed it over while this held it.
                    self.inner.work.push(Work::Case(case.id().clone()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Commits an offer in a span of its own (case, offer and agent ids as attributes), linked
    /// to the case's submit when that was traced.
    async fn commit_offer(
        &self,
        change: dispatch_domain::Change,
        case: &dispatch_domain::Case,
        now: dispatch_domain::Millis,
    ) -> Result<crate::write::Written, StoreError> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "offer",
            case.id = %case.id(),
            offer.id = tracing::field::Empty,
            agent.id = tracing::field::Empty,
        );
        // Only a traced offer pays for its attributes and its link.
        if !span.is_disabled() {
            for e in &change.events {
                if let dispatch_domain::Event::Offered { offer_id, agent_id, .. } = e {
                    span.record("offer.id", tracing::field::display(offer_id));
                    span.record("agent.id", tracing::field::display(agent_id));
                }
            }
            crate::telemetry::link(&span, case.trace.as_deref());
        }
        self.commit(change, now).instrument(span).await
    }

    fn new_offer_id(&self) -> Result<OfferId, EngineError> {
        OfferId::parse("offer_id", &self.inner.ids.mint("of")).map_err(|e| EngineError::Internal(e.to_string()))
    }
}
