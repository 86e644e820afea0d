//! The engine: carries out the domain's decisions. Every request follows one path — read the
//! records from the store, let `dispatch_domain::transition` decide on them with the store's
//! `now`, commit the result with compare-and-set (re-reading and deciding again on a
//! conflict), then update the live index, tell agents and watchers, and queue matching work.
//!
//! Two background tasks: the matcher (one queue of "match this case" / "match this agent"
//! work, deduplicated) and the sweeper (fires due timers: offer deadlines, presence grace,
//! wrap-up ends, relaxation steps, time-to-live), plus a periodic rescan of waiting cases.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_domain::model::{AgentProfile, CaseSpec};
use dispatch_domain::scoring;
use dispatch_domain::state::OfferOutcome;
use dispatch_domain::stats::{self, Availability, AvailabilityFilter, GroupBy};
use dispatch_domain::transition::{self, RevokeReason};
use dispatch_domain::{
    Agent, AgentId, AgentStatus, Case, CaseId, CaseState, Change, Event, Millis, OfferId, Policy, Rejection, SessionId,
    TenantId, Tier, TimerKey,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::index::PoolIndex;
use crate::notice::{AgentNotice, AgentSession, CaseEvent, CaseEventKind, SendFailure, Sessions, Watchers};
use crate::store::{ChangeRef, Commit, Committed, Counter, Epoch, Read, Restore, Store, StoreError};

/// Why an engine call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The domain refused the request; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store is unreachable; the caller may retry (idempotent calls are safe to retry).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Too many concurrent changes to the same records; retry.
    #[error("contention: {0}")]
    Contention(String),
    /// A bug or corrupt data.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => EngineError::Contention(m),
            StoreError::Unavailable(m) => EngineError::Unavailable(m),
            StoreError::Corrupt(m) => EngineError::Internal(m),
            StoreError::Fenced(m) => EngineError::Unavailable(format!("the store restarted; reconciling ({m})")),
        }
    }
}

/// Engine settings that are not dispatch rules (those are in [`Policy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How often the sweeper looks for due timers.
    pub sweep_interval_ms: u64,
    /// How often every waiting case is tried again (a safety net for lost triggers).
    pub rescan_interval_ms: u64,
    /// Outbound messages buffered per agent device; a device that lets it fill is disconnected.
    pub agent_outbound_buffer: usize,
    /// Attempts at a compare-and-set before giving up with a contention error.
    pub conflict_retries: u32,
    /// Seed for offer and session ids (`None`: from the operating system).
    pub id_seed: Option<u64>,
    /// How often the store's change log is read (other dispatchers' commits).
    pub change_feed_interval_ms: u64,
    /// How often the store is pinged for health.
    pub health_interval_ms: u64,
    /// Matching tasks working the queue concurrently (with a remote store each offer waits on
    /// round trips; compare-and-set keeps concurrent matchers correct).
    pub matcher_workers: usize,
    /// After the store restarted (and may have lost its latest writes), writes other than the
    /// dispatchers' restores are refused (UNAVAILABLE, retry) for this long, so that every
    /// dispatcher puts back what it knows before anything new is decided.
    pub reconcile_window_ms: u64,
    /// Closed cases are remembered this long (store clock) to be put back after such a loss;
    /// at least the store's own loss window (about 1 s with AOF `everysec`).
    pub reconcile_memory_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sweep_interval_ms: 100,
            rescan_interval_ms: 5_000,
            agent_outbound_buffer: 64,
            conflict_retries: 8,
            id_seed: None,
            change_feed_interval_ms: 100,
            health_interval_ms: 1_000,
            matcher_workers: 4,
            reconcile_window_ms: 2_000,
            reconcile_memory_ms: 10_000,
        }
    }
}

/// Waiting cases of one tier and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingGroup {
    /// Tier.
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
    /// Waiting cases by tier and language.
    pub groups: Vec<WaitingGroup>,
    /// Cumulative counters.
    pub counters: BTreeMap<Counter, i64>,
    /// Mean offer → accept time.
    pub mean_time_to_accept_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    Case(CaseId),
    Agent(AgentId),
}

/// What to read before deciding.
enum Load<'a> {
    Case(&'a CaseId),
    Agent(&'a AgentId),
    /// The case, then the agent holding its offer or assignment.
    CaseAndItsAgent(&'a CaseId),
    /// The agent, then the case of its pending offer.
    AgentAndPendingCase(&'a AgentId),
    /// The case of an offer, and the given agent.
    OfferCaseAndAgent(&'a CaseId, &'a AgentId),
}

/// The result of a committed transition.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What was stored (empty for an idempotent repeat).
    pub committed: Committed,
    /// What happened.
    pub events: Vec<Event>,
}

/// The dispatch engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Clock,
    policy: Policy,
    config: EngineConfig,
    index: PoolIndex,
    sessions: Sessions,
    watchers: Watchers,
    work_tx: mpsc::UnboundedSender<Work>,
    work_pending: Mutex<HashSet<Work>>,
    rng: Mutex<SmallRng>,
    /// Bumped whenever an agent changes (for `WatchAvailability`).
    pool_changed: watch::Sender<u64>,
    /// Whether the store answers (for health).
    healthy: watch::Sender<bool>,
    /// Shutting down: no new offers from here.
    draining: AtomicBool,
    /// Until then (store clock) only restores are written: a reconcile is under way.
    window_until: AtomicI64,
    /// This dispatcher is restoring right now (set before it joins the new epoch).
    reconciling: AtomicBool,
    /// Wakes the tailer to reconcile at once (a write was fenced).
    fenced: tokio::sync::Notify,
    /// Cases that closed lately (store time, case), oldest first, to put back after a loss.
    recently_closed: Mutex<VecDeque<(Millis, Case)>>,
    /// Reconciles done (for tests and logs).
    reconciles: AtomicU64,
    stop: watch::Sender<bool>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Device streams told to reconnect and ended.
    pub sessions_ended: usize,
    /// Live offers handed back (revoked; their cases wait for the other dispatchers).
    pub offers_handed_back: usize,
    /// Sessions whose hand-back did not finish in time (their presence lease reclaims them).
    pub unfinished: usize,
}

impl Engine {
    /// Builds the index from the store and starts the matcher and the sweeper.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Clock,
        policy: Policy,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        policy.validate().map_err(|e| EngineError::Internal(e.to_string()))?;
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let rng = match config.id_seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                policy,
                config,
                index: PoolIndex::new(),
                sessions: Sessions::default(),
                watchers: Watchers::default(),
                work_tx,
                work_pending: Mutex::new(HashSet::new()),
                rng: Mutex::new(rng),
                pool_changed: watch::channel(0).0,
                healthy: watch::channel(true).0,
                draining: AtomicBool::new(false),
                window_until: AtomicI64::new(Millis::MIN),
                reconciling: AtomicBool::new(false),
                fenced: tokio::sync::Notify::new(),
                recently_closed: Mutex::new(VecDeque::new()),
                reconciles: AtomicU64::new(0),
                stop: watch::channel(false).0,
            }),
        };
        let epoch = engine.inner.store.join_epoch().await?;
        engine.open_window(epoch);
        // The cursor first, then the snapshot: a change made in between is read twice (harmless:
        // older versions are ignored), never missed.
        let cursor = engine.inner.store.change_cursor().await?;
        engine.rebuild_index().await?;
        let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
        for _ in 0..engine.inner.config.matcher_workers.max(1) {
            tokio::spawn(engine.clone().matcher(Arc::clone(&work_rx)));
        }
        tokio::spawn(engine.clone().sweeper());
        tokio::spawn(engine.clone().rescanner());
        tokio::spawn(engine.clone().tailer(cursor));
        tokio::spawn(engine.clone().health_probe());
        engine.rescan();
        Ok(engine)
    }

    /// Rebuilds the live index from a store snapshot.
    async fn rebuild_index(&self) -> Result<(), EngineError> {
        let snapshot = self.inner.store.snapshot().await?;
        let (agents, cases) = (snapshot.agents.len(), snapshot.live_cases.len());
        let known: HashSet<AgentId> = snapshot.agents.iter().map(|a| a.id().clone()).collect();
        for agent in snapshot.agents {
            self.inner.index.apply_agent(agent);
        }
        for gone in self.inner.index.agents().iter().filter(|a| !known.contains(a.id())) {
            self.inner.index.remove_agent(gone.id());
        }
        for case in snapshot.live_cases {
            self.inner.index.apply_case(case, &self.inner.policy);
        }
        self.inner.pool_changed.send_modify(|v| *v += 1);
        // Devices held here catch up with offers made or withdrawn elsewhere meanwhile.
        let now = self.now().await?;
        for id in self.inner.sessions.agents() {
            if let Some(a) = self.inner.index.agent(&id) {
                self.sync_device(&a, now).await?;
            }
        }
        info!(agents, live_cases = cases, "pool index built from the store");
        Ok(())
    }

    /// Whether the store answers; changes drive the health service.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.inner.healthy.subscribe()
    }

    async fn health_probe(self) {
        let mut stop = self.inner.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.health_interval_ms.max(10));
        loop {
            let ok = matches!(tokio::time::timeout(interval, self.inner.store.ping()).await, Ok(Ok(())));
            let was = self.inner.healthy.send_replace(ok);
            if was != ok {
                if ok {
                    info!("store reachable again");
                    self.rescan();
                } else {
                    warn!("store unreachable: reporting NOT_SERVING");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Follows the store's change log so that the index sees other dispatchers' commits.
    async fn tailer(self, mut cursor: String) {
        let mut stop = self.inner.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.change_feed_interval_ms.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                () = self.inner.fenced.notified() => {}
                _ = stop.changed() => return,
            }
            match self.follow(&cursor).await {
                Ok(next) => cursor = next,
                Err(e) => debug!(error = %e, "change log read failed; retrying"),
            }
        }
    }

    async fn follow(&self, cursor: &str) -> Result<String, EngineError> {
        let batch = self.inner.store.changes(cursor, 1_000).await?;
        if batch.fenced {
            return self.reconcile().await;
        }
        if batch.gap {
            warn!("change log has a gap; rebuilding the index");
            let cursor = self.inner.store.change_cursor().await?;
            self.rebuild_index().await?;
            self.rescan();
            return Ok(cursor);
        }
        let now = self.now().await?;
        for change in batch.changes {
            // This dispatcher's own commits (and anything already seen) are in the index at that
            // version: no need to read them back.
            let known = match &change {
                ChangeRef::Agent(id, Some(v)) => self.inner.index.agent(id).is_some_and(|a| a.version >= *v),
                ChangeRef::Case(id, Some(v)) => self.inner.index.case(id).is_some_and(|c| c.version >= *v),
                _ => false,
            };
            if known {
                // Already in the index (e.g. from a rebuild), but a device here may not have
                // seen it yet.
                if let ChangeRef::Agent(id, _) = &change
                    && let Some(a) = self.inner.index.agent(id)
                {
                    self.sync_device(&a, now).await?;
                }
                continue;
            }
            match change {
                ChangeRef::Agent(id, _) => match self.inner.store.get_agent(&id).await? {
                    Some(a) => {
                        let ready = a.unready_reason(now).is_none();
                        self.sync_device(&a, now).await?;
                        if self.inner.index.apply_agent(a) {
                            self.inner.pool_changed.send_modify(|v| *v += 1);
                            if ready {
                                self.enqueue(Work::Agent(id));
                            }
                        }
                    }
                    None => self.inner.index.remove_agent(&id),
                },
                ChangeRef::Case(id, _) => match self.inner.store.get_case(&id).await? {
                    Some(c) => {
                        let queued = c.state == CaseState::Queued;
                        if c.state.is_terminal() {
                            self.remember_closed(&c, now);
                        }
                        if self.inner.index.apply_case(c, &self.inner.policy) && queued {
                            self.enqueue(Work::Case(id));
                        }
                    }
                    None => self.inner.index.remove_case(&id, &self.inner.policy),
                },
            }
        }
        Ok(batch.cursor)
    }

    /// After a restart of the store: writes wait until the reconcile window has passed.
    fn open_window(&self, epoch: Epoch) {
        if let Some(at) = epoch.began_after_restart_at {
            let until = at + self.inner.config.reconcile_window_ms as i64;
            self.inner.window_until.fetch_max(until, Ordering::SeqCst);
        }
    }

    /// The store restarted (or another dispatcher found it had): join the new epoch, put back
    /// every record this dispatcher knows in a newer version than the store holds (agents,
    /// live cases, cases closed lately) with the timers they imply, then rebuild the index from
    /// the store. Writes wait for the reconcile window, so that every dispatcher's restore is in
    /// before anything new is decided. Returns the change-log cursor to follow from.
    async fn reconcile(&self) -> Result<String, EngineError> {
        self.inner.reconciling.store(true, Ordering::SeqCst);
        let result = self.restore_all().await;
        self.inner.reconciling.store(false, Ordering::SeqCst);
        result
    }

    /// Whether writes (and refusals, which may rest on records not yet put back) must wait.
    fn in_window(&self, now: Millis) -> bool {
        self.inner.reconciling.load(Ordering::SeqCst) || now < self.inner.window_until.load(Ordering::SeqCst)
    }

    /// A store error on its way out: a fenced one wakes the tailer to reconcile at once.
    fn noticed(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::Fenced(_)) {
            self.inner.fenced.notify_one();
        }
        e
    }

    async fn restore_all(&self) -> Result<String, EngineError> {
        let epoch = self.inner.store.join_epoch().await?;
        self.open_window(epoch);
        let now = self.now().await?;
        let policy = &self.inner.policy;
        let mut records: Vec<Restore> = self
            .inner
            .index
            .agents()
            .iter()
            .map(|a| Restore::Agent(a.as_ref().clone(), transition::agent_timers(a, now, policy)))
            .collect();
        for c in self.inner.index.live_cases() {
            records.push(Restore::Case(c.as_ref().clone(), transition::case_timers(&c, now, policy)));
        }
        for c in self.recently_closed(now) {
            let timers = transition::case_timers(&c, now, policy);
            records.push(Restore::Case(c, timers));
        }
        let known = records.len();
        let written = self.inner.store.restore(records).await?;
        let cursor = self.inner.store.change_cursor().await?;
        self.rebuild_index().await?;
        self.inner.reconciles.fetch_add(1, Ordering::SeqCst);
        warn!(
            epoch = epoch.number,
            known, written, "the store restarted: joined its new epoch and put back what it had lost"
        );
        // Matching resumes when the window closes.
        let engine = self.clone();
        let wait = Duration::from_millis(self.inner.config.reconcile_window_ms);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            engine.rescan();
            for a in engine.inner.index.agents() {
                engine.enqueue(Work::Agent(a.id().clone()));
            }
        });
        Ok(cursor)
    }

    /// How many times this dispatcher reconciled after a store restart.
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.load(Ordering::SeqCst)
    }

    fn remember_closed(&self, case: &Case, now: Millis) {
        self.closed_memory(now).push_back((now, case.clone()));
    }

    /// Cases closed within `reconcile_memory_ms` of `now`.
    fn recently_closed(&self, now: Millis) -> Vec<Case> {
        self.closed_memory(now).iter().map(|(_, c)| c.clone()).collect()
    }

    /// The closed-case memory, pruned to `reconcile_memory_ms` before `now`.
    fn closed_memory(&self, now: Millis) -> std::sync::MutexGuard<'_, VecDeque<(Millis, Case)>> {
        let mut recent = self.inner.recently_closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let horizon = now - self.inner.config.reconcile_memory_ms as i64;
        while recent.front().is_some_and(|(at, _)| *at < horizon) {
            recent.pop_front();
        }
        recent
    }

    /// Stops the background tasks. Records stay in the store; offer deadlines keep running
    /// there, so nothing is lost.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Graceful shutdown: no new offers from here; every device held here is told to reconnect
    /// and its session ended, which hands its live offer back (revoked at once, the case queued
    /// for the other dispatchers) instead of letting it run to its deadline; then the
    /// background tasks stop. Hand-backs still running after `within` are left to the presence
    /// lease (the agents stay signed in for the grace period either way).
    pub async fn shutdown(&self, within: Duration) -> ShutdownReport {
        self.inner.draining.store(true, Ordering::SeqCst);
        let sessions = self.inner.sessions.all();
        let mut report = ShutdownReport { sessions_ended: sessions.len(), ..ShutdownReport::default() };
        let mut tasks = tokio::task::JoinSet::new();
        for (agent_id, session_id) in sessions {
            let reason = "dispatcher shutting down: reconnect".to_owned();
            let _ = self.inner.sessions.send(&agent_id, Some(&session_id), AgentNotice::Reconnect { reason });
            let engine = self.clone();
            tasks.spawn(async move { engine.end_session(&agent_id, &session_id).await });
        }
        let deadline = tokio::time::Instant::now() + within;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(Ok(Ok(handed_back)))) => report.offers_handed_back += usize::from(handed_back),
                Ok(Some(Ok(Err(e)))) => {
                    warn!(error = %e, "hand-back failed; the presence lease will reclaim it");
                    report.unfinished += 1;
                }
                Ok(Some(Err(_))) => report.unfinished += 1,
                Ok(None) => break,
                Err(_) => {
                    report.unfinished += tasks.len();
                    tasks.detach_all();
                    break;
                }
            }
        }
        self.stop();
        info!(?report, "engine shut down");
        report
    }

    /// Whether this dispatcher is shutting down.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// The rules in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Now, on the store's clock.
    pub async fn now(&self) -> Result<Millis, EngineError> {
        Ok(self.inner.store.now().await?)
    }

    // ------------------------------------------------------------------------------------
    // Roster
    // ------------------------------------------------------------------------------------

    /// Registers or updates an agent; returns it and whether it was new.
    pub async fn upsert_agent(&self, profile: AgentProfile) -> Result<(Agent, bool), EngineError> {
        let id = profile.id.clone();
        let mut created = false;
        let out = self
            .transact(Load::Agent(&id), |_, agent, now| {
                created = agent.is_none();
                Ok(transition::upsert_profile(agent, profile.clone(), now))
            })
            .await?;
        let agent = out.committed.agent.ok_or_else(|| EngineError::Internal("upsert stored no agent".into()))?;
        Ok((agent, created))
    }

    /// An agent.
    pub async fn get_agent(&self, id: &AgentId) -> Result<Agent, EngineError> {
        self.inner.store.get_agent(id).await?.ok_or_else(|| not_found("agent", id))
    }

    /// A page of agents after `after`.
    pub async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, EngineError> {
        Ok(self.inner.store.list_agents(after, limit).await?)
    }

    /// Removes an agent that holds no work; its open session is ended.
    pub async fn remove_agent(&self, id: &AgentId) -> Result<(), EngineError> {
        for _ in 0..self.inner.config.conflict_retries {
            let agent = self.get_agent(id).await?;
            transition::check_removable(&agent)?;
            match self.inner.store.remove_agent(id, agent.version).await {
                Ok(()) => {
                    self.inner.index.remove_agent(id);
                    if let Some(s) = self.inner.sessions.current(id) {
                        self.inner.sessions.close(id, &s);
                    }
                    self.inner.pool_changed.send_modify(|v| *v += 1);
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention(format!("agent {id} kept changing")))
    }

    // ------------------------------------------------------------------------------------
    // Cases
    // ------------------------------------------------------------------------------------

    /// Submits a case for `tenant`; a retry with the same payload returns the existing case
    /// (`false`).
    pub async fn submit(&self, spec: CaseSpec, tenant: Option<TenantId>) -> Result<(Case, bool), EngineError> {
        let id = spec.id.clone();
        let mut created = false;
        let out = self
            .transact(Load::Case(&id), |existing, _, now| match existing {
                Some(c) => transition::resubmit(c, &spec, tenant.as_ref()).map(|()| Change::default()),
                None => {
                    created = true;
                    Ok(transition::submit(spec.clone(), tenant.clone(), now, &self.inner.policy))
                }
            })
            .await?;
        match out.committed.case {
            Some(c) => Ok((c, created)),
            None => Ok((self.get_case(&id, tenant.as_ref()).await?, false)),
        }
    }

    /// A case, as seen by a caller scoped to `tenant` (`None`: every case). Another tenant's
    /// case is NOT_FOUND.
    pub async fn get_case(&self, id: &CaseId, tenant: Option<&TenantId>) -> Result<Case, EngineError> {
        self.inner.store.get_case(id).await?.filter(|c| c.visible_to(tenant)).ok_or_else(|| not_found("case", id))
    }

    /// Cancels a case, revoking its offer or releasing its agent.
    pub async fn cancel(&self, id: &CaseId, reason: &str, tenant: Option<&TenantId>) -> Result<Case, EngineError> {
        let out = self
            .transact(Load::CaseAndItsAgent(id), |case, agent, now| {
                let case = case
                    .filter(|c| c.visible_to(tenant))
                    .ok_or_else(|| Rejection::NotFound(format!("case {id} not found")))?;
                transition::cancel(case, agent, reason, now, &self.inner.policy)
            })
            .await?;
        match out.committed.case {
            Some(c) => Ok(c),
            None => self.get_case(id, tenant).await,
        }
    }

    /// The case now, and its future events (events up to the snapshot's version are to be
    /// skipped by the caller: they are already in the snapshot).
    pub async fn watch_case(
        &self,
        id: &CaseId,
        tenant: Option<&TenantId>,
    ) -> Result<(Case, broadcast::Receiver<CaseEvent>), EngineError> {
        let case = self.get_case(id, tenant).await?;
        let rx = self.inner.watchers.subscribe(id);
        // Read again after subscribing: nothing between the two reads is missed.
        let case = self.get_case(id, tenant).await.unwrap_or(case);
        Ok((case, rx))
    }

    // ------------------------------------------------------------------------------------
    // Agent sessions
    // ------------------------------------------------------------------------------------

    /// Opens a device session: signs the agent in (away) or resumes its session within the
    /// grace period. A session already open for the agent is ended.
    pub async fn connect(&self, agent_id: &AgentId) -> Result<AgentSession, EngineError> {
        self.get_agent(agent_id).await?;
        let session_id =
            SessionId::parse("session_id", &self.mint("ss")).map_err(|e| EngineError::Internal(e.to_string()))?;
        let session =
            self.inner.sessions.open(agent_id.clone(), session_id.clone(), self.inner.config.agent_outbound_buffer);
        let out = self
            .transact(Load::Agent(agent_id), |_, agent, now| {
                let agent = agent.ok_or_else(|| Rejection::NotFound(format!("agent {agent_id} not found")))?;
                Ok(transition::connect(agent, session_id.clone(), now, &self.inner.policy))
            })
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.inner.sessions.close(agent_id, &session_id);
                return Err(e);
            }
        };
        if let Some(a) = &out.committed.agent {
            let lease_until = a.session.as_ref().map_or(Millis::MIN, |s| s.lease_until);
            self.inner.sessions.confirm(agent_id, &session_id, a.version, lease_until);
        }
        // A live offer survives a session switch (a second device): show it on the new one.
        if let Some(pending) = out.committed.agent.as_ref().and_then(|a| a.pending_offer.clone()) {
            let now = self.now().await?;
            if let Some(case) = self.inner.index.case(&pending.case_id) {
                self.tell_offer(agent_id, &pending.offer_id, Arc::new(case.spec.clone()), pending.deadline, now);
            }
        }
        info!(agent_id = %agent_id, session_id = %session_id, "agent connected");
        Ok(session)
    }

    /// The device stream ended: revoke the live offer at once; the agent stays signed in for
    /// the grace period.
    pub async fn disconnect(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<(), EngineError> {
        self.end_session(agent_id, session_id).await.map(drop)
    }

    /// Ends a session; whether a live offer was revoked.
    async fn end_session(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<bool, EngineError> {
        self.inner.sessions.close(agent_id, session_id);
        let out = self
            .transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
                Ok(agent
                    .map(|a| transition::disconnect(a, case, session_id, now, &self.inner.policy))
                    .unwrap_or_default())
            })
            .await?;
        info!(agent_id = %agent_id, session_id = %session_id, "agent disconnected");
        Ok(out.events.iter().any(|e| matches!(e, Event::Revoked { .. })))
    }

    /// Checks that `session_id` is the agent's current session (heartbeats).
    pub fn heartbeat(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<(), EngineError> {
        if self.inner.sessions.current(agent_id).as_ref() == Some(session_id) {
            Ok(())
        } else {
            Err(Rejection::FailedPrecondition("this session was replaced by a newer one".into()).into())
        }
    }

    /// The agent sets its status.
    pub async fn set_status(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        status: AgentStatus,
    ) -> Result<Agent, EngineError> {
        let out = self
            .transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
                let agent = agent.ok_or_else(|| Rejection::NotFound(format!("agent {agent_id} not found")))?;
                transition::set_status(agent, case, session_id, status, now, &self.inner.policy)
            })
            .await?;
        if status == AgentStatus::Offline {
            self.inner.sessions.close(agent_id, session_id);
        }
        out.committed.agent.ok_or_else(|| EngineError::Internal("set_status stored no agent".into()))
    }

    async fn offer_case(&self, offer_id: &OfferId) -> Result<CaseId, EngineError> {
        self.inner.store.offer_case(offer_id).await?.ok_or_else(|| not_found("offer", offer_id))
    }

    /// The agent accepts an offer (idempotent on the offer id).
    pub async fn accept(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        offer_id: &OfferId,
    ) -> Result<(), EngineError> {
        let case_id = self.offer_case(offer_id).await?;
        self.transact(Load::OfferCaseAndAgent(&case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, &case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::accept(case, agent, offer_id, now)
        })
        .await?;
        Ok(())
    }

    /// The agent declines an offer (idempotent on the offer id).
    pub async fn decline(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        offer_id: &OfferId,
        reason: &str,
    ) -> Result<(), EngineError> {
        let case_id = self.offer_case(offer_id).await?;
        self.transact(Load::OfferCaseAndAgent(&case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, &case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::decline(case, agent, offer_id, reason, now, &self.inner.policy)
        })
        .await?;
        Ok(())
    }

    /// The agent completes an assigned case.
    pub async fn complete(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        case_id: &CaseId,
        outcome: &str,
    ) -> Result<(), EngineError> {
        self.transact(Load::OfferCaseAndAgent(case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::complete(case, agent, outcome, now, &self.inner.policy)
        })
        .await?;
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Planner
    // ------------------------------------------------------------------------------------

    /// Agent counts, filtered and grouped, from the live index.
    pub async fn availability(
        &self,
        filter: &AvailabilityFilter,
        group_by: &[GroupBy],
    ) -> Result<(Availability, Millis), EngineError> {
        let now = self.now().await?;
        let agents = self.inner.index.agents();
        Ok((stats::availability(agents.iter().map(|a| a.as_ref()), filter, group_by, now), now))
    }

    /// A receiver that changes whenever an agent does.
    pub fn pool_changes(&self) -> watch::Receiver<u64> {
        self.inner.pool_changed.subscribe()
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
                _ => {}
            }
        }
        // VIP first, then language.
        out.groups = groups
            .into_iter()
            .rev()
            .map(|((tier, language), (waiting, oldest_wait_ms))| WaitingGroup {
                tier,
                language,
                waiting,
                oldest_wait_ms,
            })
            .collect();
        out.groups.sort_by(|a, b| b.tier.cmp(&a.tier).then_with(|| a.language.cmp(&b.language)));
        out.counters = self.inner.store.counters().await?.into_iter().collect();
        let accepted = out.counters.get(&Counter::OffersAccepted).copied().unwrap_or(0);
        let total = out.counters.get(&Counter::AcceptMillisTotal).copied().unwrap_or(0);
        out.mean_time_to_accept_ms = if accepted > 0 { total as f64 / accepted as f64 } else { 0.0 };
        Ok(out)
    }

    // ------------------------------------------------------------------------------------
    // The one write path
    // ------------------------------------------------------------------------------------

    async fn load(&self, load: &Load<'_>) -> Result<(Option<Case>, Option<Agent>, Millis), EngineError> {
        let store = &self.inner.store;
        let r = match load {
            Load::Case(id) => store.read(Some(id), None).await?,
            Load::Agent(id) => store.read(None, Some(id)).await?,
            Load::OfferCaseAndAgent(case, agent) => store.read(Some(case), Some(agent)).await?,
            Load::CaseAndItsAgent(id) => {
                let first = store.read(Some(id), None).await?;
                match first.case.as_ref().and_then(|c| c.current_agent()) {
                    Some(a) => {
                        let second = store.read(None, Some(a)).await?;
                        Read { case: first.case, agent: second.agent, now: second.now }
                    }
                    None => first,
                }
            }
            Load::AgentAndPendingCase(id) => {
                let first = store.read(None, Some(id)).await?;
                match first.agent.as_ref().and_then(|a| a.pending_offer.as_ref()) {
                    Some(p) => {
                        let second = store.read(Some(&p.case_id), None).await?;
                        Read { case: second.case, agent: first.agent, now: second.now }
                    }
                    None => first,
                }
            }
        };
        Ok((r.case, r.agent, r.now))
    }

    /// Read → decide → compare-and-set, retried on conflict.
    async fn transact<F>(&self, load: Load<'_>, mut decide: F) -> Result<Outcome, EngineError>
    where
        F: FnMut(Option<&Case>, Option<&Agent>, Millis) -> Result<Change, Rejection>,
    {
        let retries = self.inner.config.conflict_retries;
        for attempt in 0..retries {
            let (case, agent, now) = self.load(&load).await?;
            if self.in_window(now) {
                return Err(reconciling().into());
            }
            let change = match decide(case.as_ref(), agent.as_ref(), now) {
                Ok(c) => c,
                Err(rejection) => {
                    // A refusal is final only if what it was based on is: not if the store
                    // restarted (and may have lost writes) since this dispatcher last joined,
                    // nor while a reconcile that began meanwhile (and joined the new epoch,
                    // which is why the check passes) may yet put it back.
                    self.inner.store.check_epoch().await.map_err(|e| self.noticed(e))?;
                    if self.in_window(now) {
                        return Err(reconciling().into());
                    }
                    return Err(rejection.into());
                }
            };
            if change.is_noop() && change.timers.is_empty() {
                return Ok(Outcome::default());
            }
            match self.commit(change, now).await {
                Ok(out) => return Ok(out),
                Err(StoreError::Conflict(what)) => {
                    debug!(attempt, %what, "compare-and-set conflict, deciding again")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention(format!("gave up after {retries} conflicting attempts")))
    }

    async fn commit(&self, change: Change, now: Millis) -> Result<Outcome, StoreError> {
        if self.in_window(now) {
            return Err(reconciling());
        }
        let Change { case, agent, events, timers } = change;
        let counters = counter_deltas(&events);
        let committed =
            self.inner.store.commit(Commit { case, agent, timers, counters }).await.map_err(|e| self.noticed(e))?;
        self.after_commit(&committed, &events, now);
        Ok(Outcome { committed, events })
    }

    fn after_commit(&self, committed: &Committed, events: &[Event], now: Millis) {
        let inner = &self.inner;
        if let Some(a) = &committed.agent {
            if let Some(ended) = inner.sessions.end_if_superseded(a) {
                info!(agent_id = %a.id(), session_id = %ended, "session ended in the store; device told to reconnect");
            }
            inner.index.apply_agent(a.clone());
            inner.pool_changed.send_modify(|v| *v += 1);
            if a.unready_reason(now).is_none() {
                self.enqueue(Work::Agent(a.id().clone()));
            }
        }
        if let Some(c) = &committed.case {
            if c.state.is_terminal() {
                self.remember_closed(c, now);
            }
            inner.index.apply_case(c.clone(), &inner.policy);
            if c.state == CaseState::Queued {
                self.enqueue(Work::Case(c.id().clone()));
            }
        }
        for ev in events {
            self.announce(ev, committed, now);
        }
    }

    /// Tells agents and watchers about one event.
    fn announce(&self, ev: &Event, committed: &Committed, now: Millis) {
        let case = committed.case.as_ref();
        let spec = || case.map(|c| Arc::new(c.spec.clone()));
        let watch = |kind, agent_id: Option<&AgentId>, offer_id: Option<&OfferId>, reason: &str| {
            if let Some(c) = case {
                self.inner.watchers.publish(CaseEvent {
                    case_id: c.id().clone(),
                    kind,
                    version: c.version,
                    at: now,
                    agent_id: agent_id.cloned(),
                    offer_id: offer_id.cloned(),
                    reason: reason.to_owned(),
                    state: c.state.clone(),
                });
            }
        };
        match ev {
            Event::Queued { .. } => watch(CaseEventKind::Queued, None, None, ""),
            Event::Offered { offer_id, agent_id, deadline, case_id } => {
                info!(case_id = %case_id, agent_id = %agent_id, offer_id = %offer_id, "offer made");
                watch(CaseEventKind::Offered, Some(agent_id), Some(offer_id), "");
                if let Some(spec) = spec() {
                    self.tell_offer(agent_id, offer_id, spec, *deadline, now);
                }
            }
            Event::Declined { agent_id, offer_id, reason, .. } => {
                self.inner.sessions.swap_told(agent_id, None);
                watch(CaseEventKind::Declined, Some(agent_id), Some(offer_id), reason)
            }
            Event::TimedOut { case_id, offer_id, agent_id } => {
                watch(CaseEventKind::OfferTimedOut, Some(agent_id), Some(offer_id), "timed_out");
                self.inner.sessions.swap_told(agent_id, None);
                self.tell(agent_id, revoked(offer_id, case_id, "timed_out"));
            }
            Event::Revoked { case_id, offer_id, agent_id, reason } => {
                watch(CaseEventKind::OfferRevoked, Some(agent_id), Some(offer_id), reason.as_str());
                self.inner.sessions.swap_told(agent_id, None);
                self.tell(agent_id, revoked(offer_id, case_id, reason.as_str()));
            }
            Event::Assigned { offer_id, agent_id, case_id, time_to_accept_ms } => {
                info!(case_id = %case_id, agent_id = %agent_id, offer_id = %offer_id, time_to_accept_ms, "case assigned");
                watch(CaseEventKind::Assigned, Some(agent_id), Some(offer_id), "");
                self.inner.sessions.swap_told(agent_id, None);
                if let Some(spec) = spec() {
                    self.tell(agent_id, AgentNotice::Assigned { offer_id: offer_id.clone(), case: spec });
                }
            }
            Event::Completed { agent_id, outcome, .. } => {
                watch(CaseEventKind::Completed, Some(agent_id), None, outcome)
            }
            Event::Cancelled { case_id, agent_id, offer_id, reason } => {
                watch(CaseEventKind::Cancelled, agent_id.as_ref(), offer_id.as_ref(), reason);
                if let (Some(a), Some(o)) = (agent_id, offer_id) {
                    self.inner.sessions.swap_told(a, None);
                    self.tell(a, revoked(o, case_id, RevokeReason::Cancelled.as_str()));
                }
            }
            Event::Expired { .. } => watch(CaseEventKind::Expired, None, None, "time-to-live reached"),
            Event::AgentStatus { agent_id, status, reason } => {
                if let Some(a) = committed.agent.as_ref().filter(|a| a.id() == agent_id) {
                    info!(agent_id = %agent_id, status = ?status, reason, "agent status");
                    self.tell(
                        agent_id,
                        AgentNotice::Status {
                            status: *status,
                            activity: a.activity(now),
                            reason: (*reason).to_owned(),
                            assignments: a.assignments.keys().cloned().collect(),
                        },
                    );
                }
            }
        }
    }

    /// Shows a live offer to the agent's device here, once (it may reach this process from its
    /// own commit and again from the change log when another dispatcher made it).
    fn tell_offer(&self, agent_id: &AgentId, offer_id: &OfferId, case: Arc<CaseSpec>, deadline: Millis, now: Millis) {
        match self.inner.sessions.swap_told(agent_id, Some(offer_id.clone())) {
            Some(Some(previous)) if &previous == offer_id => {}
            Some(_) => {
                let remaining_ms = u64::try_from(deadline - now).unwrap_or(0);
                self.tell(agent_id, AgentNotice::Offer { offer_id: offer_id.clone(), case, remaining_ms });
            }
            None => {}
        }
    }

    /// Brings a device held here up to date with its agent's record as another dispatcher left
    /// it: a new live offer is shown; an offer that is gone is withdrawn.
    async fn sync_device(&self, agent: &Agent, now: Millis) -> Result<(), EngineError> {
        if self.inner.index.agent(agent.id()).is_some_and(|a| a.version > agent.version) {
            return Ok(()); // a newer version is already here (and was told)
        }
        if let Some(ended) = self.inner.sessions.end_if_superseded(agent) {
            warn!(agent_id = %agent.id(), session_id = %ended, "the store ended this session; device told to reconnect");
            return Ok(());
        }
        match &agent.pending_offer {
            Some(p) => {
                let spec = match self.inner.index.case(&p.case_id) {
                    Some(c) => Arc::new(c.spec.clone()),
                    None => match self.inner.store.get_case(&p.case_id).await? {
                        Some(c) => Arc::new(c.spec),
                        None => return Ok(()),
                    },
                };
                self.tell_offer(agent.id(), &p.offer_id, spec, p.deadline, now);
            }
            None => {
                if let Some(Some(gone)) = self.inner.sessions.swap_told(agent.id(), None) {
                    let Some(case_id) = self.inner.store.offer_case(&gone).await? else { return Ok(()) };
                    let record = self.inner.store.get_case(&case_id).await?.and_then(|c| c.offer(&gone).cloned());
                    match record {
                        // Accepted: the device hears "assigned" from the dispatcher that took
                        // the accept (its own stream's), never "revoked".
                        Some(o) if o.outcome == OfferOutcome::Accepted => {}
                        // Still live: this view of the agent was older than the offer.
                        Some(o) if o.outcome == OfferOutcome::Pending => {
                            self.inner.sessions.swap_told(agent.id(), Some(gone));
                        }
                        Some(o) => {
                            let reason = if o.reason.is_empty() { "revoked".to_owned() } else { o.reason };
                            self.tell(agent.id(), revoked(&gone, &case_id, &reason));
                        }
                        None => self.tell(agent.id(), revoked(&gone, &case_id, "revoked")),
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a notice for an agent's device. A device whose queue is full is not reading:
    /// it is disconnected (its live offer revoked) without slowing anyone else.
    fn tell(&self, agent_id: &AgentId, notice: AgentNotice) {
        self.tell_session(agent_id, None, notice);
    }

    /// As [`Engine::tell`], to one session only.
    pub fn tell_session(&self, agent_id: &AgentId, session: Option<&SessionId>, notice: AgentNotice) {
        if let Err((SendFailure::Full, Some(session_id))) = self.inner.sessions.send(agent_id, session, notice) {
            warn!(agent_id = %agent_id, session_id = %session_id, "agent is not reading its stream; disconnecting");
            let engine = self.clone();
            let agent_id = agent_id.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.disconnect(&agent_id, &session_id).await {
                    warn!(agent_id = %agent_id, error = %e, "disconnect of a stuck reader failed");
                }
            });
        }
    }

    // ------------------------------------------------------------------------------------
    // Matching
    // ------------------------------------------------------------------------------------

    fn enqueue(&self, work: Work) {
        let fresh =
            self.inner.work_pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(work.clone());
        if fresh {
            let _ = self.inner.work_tx.send(work);
        }
    }

    fn rescan(&self) {
        for id in self.inner.index.waiting_ids() {
            self.enqueue(Work::Case(id));
        }
    }

    fn mint(&self, prefix: &str) -> String {
        let n: u64 = self.inner.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random();
        format!("{prefix}-{n:016x}")
    }

    async fn matcher(self, rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>>) {
        let mut stop = self.inner.stop.subscribe();
        loop {
            let work = tokio::select! {
                w = async { rx.lock().await.recv().await } => match w { Some(w) => w, None => return },
                _ = stop.changed() => return,
            };
            self.inner.work_pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&work);
            if self.draining() {
                // The other dispatchers match it (their change log shows the case queued).
                continue;
            }
            let result = match &work {
                Work::Case(id) => self.match_case(id).await,
                Work::Agent(id) => self.match_agent(id).await,
            };
            if let Err(e) = result {
                warn!(?work, error = %e, "matching failed; the rescan will retry");
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
            let mut conflicted = false;
            for (i, cand) in explanation.candidates.iter().enumerate() {
                let Some(agent) = self.inner.index.agent(&cand.agent_id) else {
                    continue;
                };
                let mut why = explanation.clone();
                let winner = why.candidates.remove(i);
                why.candidates.insert(0, winner);
                let offer_id = self.new_offer_id()?;
                let Ok(change) = transition::offer(&case, &agent, offer_id, why, now, policy) else {
                    continue;
                };
                match self.commit(change, now).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict(_)) => {
                        self.refresh(Some(id), Some(agent.id())).await?;
                        conflicted = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !conflicted {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Offers the best waiting case to an agent who just became free.
    async fn match_agent(&self, id: &AgentId) -> Result<(), EngineError> {
        let policy = &self.inner.policy;
        for _ in 0..self.inner.config.conflict_retries {
            let Some(agent) = self.inner.index.agent(id) else {
                return Ok(());
            };
            let now = self.now().await?;
            let Some(case) = self.inner.index.best_case_for(&agent, now, policy) else {
                return Ok(());
            };
            let why = scoring::rank(&case, [agent.as_ref()], now, policy);
            let offer_id = self.new_offer_id()?;
            let Ok(change) = transition::offer(&case, &agent, offer_id, why, now, policy) else {
                return Ok(());
            };
            match self.commit(change, now).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => self.refresh(Some(case.id()), Some(id)).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn new_offer_id(&self) -> Result<OfferId, EngineError> {
        OfferId::parse("offer_id", &self.mint("of")).map_err(|e| EngineError::Internal(e.to_string()))
    }

    /// Re-reads records into the index after a conflict.
    async fn refresh(&self, case: Option<&CaseId>, agent: Option<&AgentId>) -> Result<(), EngineError> {
        if let Some(id) = case
            && let Some(c) = self.inner.store.get_case(id).await?
        {
            self.inner.index.apply_case(c, &self.inner.policy);
        }
        if let Some(id) = agent {
            match self.inner.store.get_agent(id).await? {
                Some(a) => {
                    self.inner.index.apply_agent(a);
                }
                None => self.inner.index.remove_agent(id),
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------------------------

    async fn sweeper(self) {
        let mut stop = self.inner.stop.subscribe();
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

    async fn rescanner(self) {
        let mut stop = self.inner.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.rescan_interval_ms.max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => self.rescan(),
                _ = stop.changed() => return,
            }
        }
    }

    /// Fires every due timer once. Returns how many fired.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        const BATCH: usize = 256;
        let now = self.now().await?;
        self.renew_leases(now).await?;
        let mut fired = 0;
        loop {
            let due = self.inner.store.due_timers(now, BATCH).await?;
            for (key, at) in &due {
                self.fire(key).await?;
                self.inner.store.clear_timer(key, *at).await?;
                fired += 1;
            }
            if due.len() < BATCH {
                return Ok(fired);
            }
        }
    }

    /// Re-arms the presence leases of the agents whose streams this process holds once a third
    /// of each has run (before any lease is looked at, so a live stream's lease never runs out).
    /// Each session keeps its own due time, so renewals stay spread the way the devices
    /// connected, and they are written in small batches: one write of every lease at once would
    /// hold a single-threaded Redis for an estimated 25 ms at 10k agents, in front of every offer.
    async fn renew_leases(&self, now: Millis) -> Result<(), EngineError> {
        const BATCH: usize = 128;
        let lease = self.inner.policy.presence_lease_ms as i64;
        let due = self.inner.sessions.leases_ending_by(now + lease - lease / 3);
        for chunk in due.chunks(BATCH) {
            let timers = chunk.iter().map(|a| (TimerKey::PresenceLease(a.clone()), now + lease)).collect();
            self.inner.store.commit(Commit { timers, ..Commit::default() }).await?;
            self.inner.sessions.leases_renewed(chunk, now + lease);
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
                let r = self
                    .transact(Load::Case(case_id), |case, _, now| {
                        Ok(case.map(|c| transition::review_case(c, now, policy)).unwrap_or_default())
                    })
                    .await;
                self.enqueue(Work::Case(case_id.clone()));
                r.map(drop)
            }
            TimerKey::AgentReady(agent_id) => {
                self.refresh(None, Some(agent_id)).await?;
                self.enqueue(Work::Agent(agent_id.clone()));
                Ok(())
            }
            TimerKey::PresenceLease(agent_id) => self
                .transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
                    Ok(agent.map(|a| transition::lease_expired(a, case, now, policy)).unwrap_or_default())
                })
                .await
                .map(drop),
            TimerKey::Purge(case_id) => Ok(self.inner.store.purge_case(case_id).await?),
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

fn both<'a>(
    case: Option<&'a Case>,
    agent: Option<&'a Agent>,
    case_id: &CaseId,
    agent_id: &AgentId,
) -> Result<(&'a Case, &'a Agent), Rejection> {
    let case = case.ok_or_else(|| Rejection::NotFound(format!("case {case_id} not found")))?;
    let agent = agent.ok_or_else(|| Rejection::NotFound(format!("agent {agent_id} not found")))?;
    Ok((case, agent))
}

/// What a write or a refusal answers while a reconcile is under way.
fn reconciling() -> StoreError {
    StoreError::Unavailable("reconciling after a store restart; retry shortly".into())
}

fn not_found(what: &str, id: &impl std::fmt::Display) -> EngineError {
    EngineError::Rejected(Rejection::NotFound(format!("{what} {id} not found")))
}

fn revoked(offer_id: &OfferId, case_id: &CaseId, reason: &str) -> AgentNotice {
    AgentNotice::OfferRevoked { offer_id: offer_id.clone(), case_id: case_id.clone(), reason: reason.to_owned() }
}

/// The planner counters an event moves.
fn counter_deltas(events: &[Event]) -> Vec<(Counter, i64)> {
    events
        .iter()
        .flat_map(|ev| match ev {
            Event::Queued { .. } => vec![(Counter::Submitted, 1)],
            Event::Offered { .. } => vec![(Counter::OffersMade, 1)],
            Event::Declined { .. } => vec![(Counter::OffersDeclined, 1)],
            Event::TimedOut { .. } => vec![(Counter::OffersTimedOut, 1)],
            Event::Revoked { .. } => vec![(Counter::OffersRevoked, 1)],
            Event::Assigned { time_to_accept_ms, .. } => {
                vec![
                    (Counter::OffersAccepted, 1),
                    (Counter::AcceptMillisTotal, i64::try_from(*time_to_accept_ms).unwrap_or(i64::MAX)),
                ]
            }
            Event::Completed { .. } => vec![(Counter::Completed, 1)],
            Event::Cancelled { .. } => vec![(Counter::Cancelled, 1)],
            Event::Expired { .. } => vec![(Counter::Expired, 1)],
            Event::AgentStatus { .. } => vec![],
        })
        .collect()
}
