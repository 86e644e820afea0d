//! The planner: who is available, how the queue is doing.

use std::collections::BTreeMap;

use dispatch_domain::scoring::{self, FailedRule};
use dispatch_domain::state::CandidateScore;
use dispatch_domain::stats::{self, Availability, AvailabilityFilter, Counter, GroupBy};
use dispatch_domain::{AgentId, CaseId, CaseState, Millis, Rejection, Tier};
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::EngineError;

/// Waiting cases of one tier and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingGroup {
    /// The customers' tier.
    pub tier: Tier,
    /// Language tag as submitted.
    pub language: String,
    /// How many wait.
    pub waiting: u64,
    /// The longest wait among them.
    pub oldest_wait_ms: u64,
}

/// How the queue is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Cases waiting for an offer.
    pub waiting: u64,
    /// Cases with a live offer.
    pub offered: u64,
    /// Cases assigned and not completed.
    pub assigned: u64,
    /// Longest wait among waiting cases.
    pub oldest_wait_ms: u64,
    /// Waiting cases by tier (VIP first) and language.
    pub groups: Vec<WaitingGroup>,
    /// Cumulative counters.
    pub counters: BTreeMap<Counter, i64>,
    /// Mean offer → accept time.
    pub mean_time_to_accept_ms: f64,
}

/// Why one agent may or may not be offered one case, now.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchExplanation {
    /// The case's state (an agent is offered only waiting cases).
    pub case_state: CaseState,
    /// Every hard rule the agent fails, in words (empty: eligible).
    pub failed: Vec<FailedRule>,
    /// The agent's score for the case when eligible.
    pub score: Option<CandidateScore>,
    /// The relaxation in force for the case now.
    pub relaxations: Vec<String>,
    /// The store's time.
    pub at: Millis,
}

impl Engine {
    /// Why `agent` may or may not be offered `case` now, from the records as stored: every
    /// failed rule in words (the domain's [`scoring::why_not`]), or its score.
    pub async fn explain_match(&self, case_id: &CaseId, agent_id: &AgentId) -> Result<MatchExplanation, EngineError> {
        let read = self.inner.store.read(Some(case_id), Some(agent_id)).await?;
        let case = read.case.ok_or_else(|| Rejection::not_found("case", case_id))?;
        let agent = read.agent.ok_or_else(|| Rejection::not_found("agent", agent_id))?;
        let policy = &self.inner.policy;
        let failed = scoring::why_not(&case, &agent, read.now, policy);
        let score = failed.is_empty().then(|| scoring::score(&case, &agent, read.now, policy));
        Ok(MatchExplanation {
            case_state: case.state.clone(),
            failed,
            score,
            relaxations: case.relaxed(policy, read.now).describe(),
            at: read.now,
        })
    }

    /// Agent counts, filtered and grouped, from the live index; with the store's time.
    pub async fn availability(
        &self,
        filter: &AvailabilityFilter,
        group_by: &[GroupBy],
    ) -> Result<(Availability, Millis), EngineError> {
        let now = self.now().await?;
        let agents = self.inner.index.agents();
        Ok((stats::availability(agents.iter().map(|a| a.as_ref()), filter, group_by, now), now))
    }

    /// The metrics exposition: this process's counters and histograms, and the pool's gauges
    /// read from the live index now.
    pub async fn metrics_text(&self) -> String {
        let now = self.now().await.unwrap_or_else(|_| self.inner.clock.now());
        let index = &self.inner.index;
        self.inner.metrics.pool(&index.live_cases(), &index.agents(), self.inner.delivery.sessions.all().len(), now);
        self.inner.metrics.encode()
    }

    /// This process's metrics (the gRPC edge adds its own to their registry).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// A receiver that changes whenever an agent does (on this replica or another).
    pub fn pool_changes(&self) -> watch::Receiver<u64> {
        self.inner.delivery.pool_changed.subscribe()
    }

    /// Queue figures: live cases from the index, counters from the store.
    pub async fn queue_stats(&self) -> Result<QueueStats, EngineError> {
        let now = self.now().await?;
        let mut out = QueueStats::default();
        let mut groups: BTreeMap<(Tier, String), (u64, u64)> = BTreeMap::new();
        for case in self.inner.index.live_cases() {
            match case.state {
                CaseState::Queued => {
                    let wait = case.waited_ms(now);
                    out.waiting += 1;
                    out.oldest_wait_ms = out.oldest_wait_ms.max(wait);
                    let g = groups.entry((case.spec.tier, case.spec.language.as_str().to_owned())).or_default();
                    g.0 += 1;
                    g.1 = g.1.max(wait);
                }
                CaseState::Offered { .. } => out.offered += 1,
                CaseState::Assigned { .. } => out.assigned += 1,
                CaseState::Completed | CaseState::Cancelled | CaseState::Expired => {}
            }
        }
        out.groups = groups
            .into_iter()
            .map(|((tier, language), (waiting, oldest_wait_ms))| WaitingGroup {
                tier,
                language,
                waiting,
                oldest_wait_ms,
            })
            .collect();
        // VIP first, then language.
        out.groups.sort_by(|a, b| b.tier.cmp(&a.tier).then_with(|| a.language.cmp(&b.language)));
        out.counters = self.inner.store.counters().await?.into_iter().collect();
        let get = |c: Counter| out.counters.get(&c).copied().unwrap_or(0);
        out.mean_time_to_accept_ms =
            stats::mean_time_to_accept_ms(get(Counter::OffersAccepted), get(Counter::AcceptMillisTotal));
        Ok(out)
    }
}
