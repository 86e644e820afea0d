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

/// What an agent (or a planner about it) is told: why no offers now, and its own figures.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentExplanation {
    /// Why no offers now (see [`dispatch_domain::transparency::why_no_offers`]).
    pub reasons: Vec<dispatch_domain::transparency::NoOfferReason>,
    /// Today's figures (UTC day).
    pub today: dispatch_domain::worktime::DayFigures,
    /// The last seven days' figures.
    pub week: dispatch_domain::worktime::DayFigures,
    /// The earned rating selection scores.
    pub reputation: f64,
    /// Ratings received, and of those the ones the agent could influence.
    pub ratings: (u64, u64),
    /// Assigned cases taken back from the agent so far.
    pub hand_backs: u64,
    /// The store's time.
    pub at: Millis,
}

/// Two-sided fairness over a window: how evenly offers and engaged time spread over the agents
/// of a segment, customers' waits by tier, and hand-backs.
#[derive(Debug, Clone, PartialEq)]
pub struct Fairness {
    /// Agents counted (speaking the language asked for, or all).
    pub agents: u64,
    /// Offers they received in the window, and the Gini coefficient of their spread.
    pub offers: u64,
    /// 0: every agent got as many; toward 1: a few got them all.
    pub offers_gini: f64,
    /// The share of offers that went to the top tenth of the agents.
    pub offers_top_decile_share: f64,
    /// Engaged time in the window, and its Gini coefficient.
    pub engaged_ms: u64,
    /// As `offers_gini`, for engaged time.
    pub engaged_gini: f64,
    /// Accepts and the mean wait from submission to accept, VIP then standard (since the
    /// counters began).
    pub waits: Vec<(Tier, u64, f64)>,
    /// Hand-backs in total, and the agents with the most (at most ten).
    pub hand_backs: u64,
    /// Agents by hand-backs, most first.
    pub top_hand_backs: Vec<(AgentId, u64)>,
    /// The store's time.
    pub at: Millis,
}

/// The allocation parameters in force and how the weights came to be.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationPolicy {
    /// Filters and weights.
    pub parameters: dispatch_domain::transparency::AllocationParameters,
    /// The latest weight changes, newest first.
    pub changes: Vec<dispatch_domain::transparency::WeightChange>,
}

/// How many weight changes are shown.
const WEIGHT_CHANGES_SHOWN: usize = 20;

/// How many waiting cases per language "why no offers" looks at.
const EXPLAIN_WAITING: usize = 500;

impl Engine {
    /// Why `agent` gets no offers now and its own figures, from its record as stored and the
    /// waiting cases in its languages (the first 500 of each, in queue order).
    pub async fn explain_agent(&self, agent_id: &AgentId) -> Result<AgentExplanation, EngineError> {
        let read = self.inner.store.read(None, Some(agent_id)).await?;
        let agent = read.agent.ok_or_else(|| Rejection::not_found("agent", agent_id))?;
        let policy = &self.inner.policy;
        let waiting = self.inner.index.waiting_in(&agent.profile.primary_languages(), EXPLAIN_WAITING);
        let now = read.now;
        Ok(AgentExplanation {
            reasons: dispatch_domain::transparency::why_no_offers(
                &agent,
                waiting.iter().map(|c| c.as_ref()),
                now,
                policy,
            ),
            today: agent.work.figures(now, 1),
            week: agent.work.figures(now, dispatch_domain::worktime::WEEK_DAYS),
            reputation: agent.ratings.score(&policy.reputation),
            ratings: (agent.ratings.total, agent.ratings.controllable),
            hand_backs: agent.hand_backs,
            at: now,
        })
    }

    /// Fairness figures over the last `days` UTC days (1 to 7) for the agents speaking
    /// `language` (primary subtag; `None`: all), from the live index and the store's counters.
    pub async fn fairness(&self, language: Option<&str>, days: i64) -> Result<Fairness, EngineError> {
        let now = self.now().await?;
        let agents: Vec<_> = self
            .inner
            .index
            .agents()
            .into_iter()
            .filter(|a| language.is_none_or(|l| a.profile.primary_languages().contains(&l)))
            .collect();
        let figures: Vec<_> = agents.iter().map(|a| a.work.figures(now, days)).collect();
        let offers = stats::spread(figures.iter().map(|f| f64::from(f.offers)).collect());
        let engaged = stats::spread(figures.iter().map(|f| f.engaged_ms as f64).collect());
        let counters: BTreeMap<Counter, i64> = self.inner.store.counters().await?.into_iter().collect();
        let get = |c: Counter| counters.get(&c).copied().unwrap_or(0).max(0) as u64;
        let waits = [
            (Tier::Vip, Counter::AssignedVip, Counter::WaitMillisVip),
            (Tier::Standard, Counter::AssignedStandard, Counter::WaitMillisStandard),
        ]
        .map(|(tier, n, total)| (tier, get(n), stats::mean(get(total), get(n))))
        .to_vec();
        let mut top_hand_backs: Vec<(AgentId, u64)> =
            agents.iter().filter(|a| a.hand_backs > 0).map(|a| (a.id().clone(), a.hand_backs)).collect();
        top_hand_backs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_hand_backs.truncate(10);
        Ok(Fairness {
            agents: agents.len() as u64,
            offers: offers.total as u64,
            offers_gini: offers.gini,
            offers_top_decile_share: offers.top_decile_share,
            engaged_ms: engaged.total as u64,
            engaged_gini: engaged.gini,
            waits,
            hand_backs: get(Counter::HandedBack),
            top_hand_backs,
            at: now,
        })
    }

    /// The allocation parameters in force (filters, weights and their shares, in words), and
    /// the latest changes of the weights (who, when), newest first.
    pub async fn allocation_policy(&self) -> Result<AllocationPolicy, EngineError> {
        let changes = self.inner.store.weight_log(WEIGHT_CHANGES_SHOWN).await?;
        Ok(AllocationPolicy {
            parameters: dispatch_domain::transparency::allocation_parameters(&self.inner.policy),
            changes,
        })
    }

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
