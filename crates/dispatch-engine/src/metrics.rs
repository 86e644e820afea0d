//! What the dispatcher measures of itself, exposed in the Prometheus text format. No rule lives
//! here: these are counts of what the write path committed, how long the store took, what the
//! follower and the reconcile did; the figures of the live pool are read from the index when
//! scraped. Label sets are bounded: tiers, channels, event kinds, store operations, and
//! languages only as a configured list plus `other`. Every replica counts what it did itself
//! (sum over replicas for the whole pool); the pool gauges are the same on every replica.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use dispatch_domain::{Activity, AgentStatus, Case, CaseState, Channel, Event, Millis, Tier};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use dispatch_domain::{Agent, AgentId, CaseId, OfferId, TimerKey};

use crate::store::{ChangeBatch, Commit, Committed, Counter, Epoch, Marks, Read, Restore, Snapshot, Store, StoreError};

/// Buckets for waits and answer times (seconds): 50 ms to 30 minutes.
const WAIT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Buckets for store round trips (seconds): 0.1 ms to 2.5 s.
const STORE_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5];

/// The label of languages outside the configured list.
pub const OTHER_LANGUAGE: &str = "other";

/// See the module docs.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    languages: Arc<HashSet<String>>,
    case_events: IntCounterVec,
    submit_to_offer: HistogramVec,
    offer_to_accept: HistogramVec,
    submit_to_assigned: HistogramVec,
    store_ops: HistogramVec,
    /// `store_ops` of each operation with outcome `ok`, resolved once (the hot path).
    store_ok: Arc<Vec<prometheus::Histogram>>,
    store_errors: IntCounterVec,
    commit_conflicts: IntCounterVec,
    change_log_lag_entries: IntGauge,
    change_log_lag: prometheus::Gauge,
    reconciles: IntCounterVec,
    restored_records: IntCounter,
    fenced_writes: IntCounter,
    timers_due: IntGauge,
    cases: IntGaugeVec,
    oldest_wait: prometheus::GaugeVec,
    waiting_by_language: IntGaugeVec,
    agents: IntGaugeVec,
    available_by_language: IntGaugeVec,
    devices: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are fixed and distinct: registration cannot clash.
    r.register(Box::new(c.clone())).expect("metric names are distinct");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid metric"))
}

impl Metrics {
    /// Metrics in a registry of their own; `languages` get a label of their own, the others
    /// count as `other`.
    pub fn new(languages: &[String]) -> Self {
        let r = Registry::new();
        let build = gauge_vec(&r, "dispatch_build_info", "The running build (value 1).", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let mut m = Self {
            languages: Arc::new(languages.iter().map(|l| l.to_ascii_lowercase()).collect()),
            case_events: counter_vec(
                &r,
                "dispatch_case_events_total",
                "Case events this replica committed (submitted, offered, accepted, declined, timed_out, \
                 revoked, handed_back, completed, cancelled, expired).",
                &["event", "tier", "channel"],
            ),
            submit_to_offer: histogram_vec(
                &r,
                "dispatch_submit_to_offer_seconds",
                "From submit to each offer of the case.",
                &["tier"],
                WAIT_BUCKETS,
            ),
            offer_to_accept: histogram_vec(
                &r,
                "dispatch_offer_to_accept_seconds",
                "From offer to accept.",
                &["tier"],
                WAIT_BUCKETS,
            ),
            submit_to_assigned: histogram_vec(
                &r,
                "dispatch_submit_to_assigned_seconds",
                "From submit to the accepted offer.",
                &["tier"],
                WAIT_BUCKETS,
            ),
            store_ops: histogram_vec(
                &r,
                "dispatch_store_operation_seconds",
                "Store operations by kind and outcome (ok, conflict, fenced, unavailable, corrupt).",
                &["op", "outcome"],
                STORE_BUCKETS,
            ),
            store_ok: Arc::new(Vec::new()),
            store_errors: counter_vec(
                &r,
                "dispatch_store_errors_total",
                "Store operations that failed, by kind and outcome (conflict: a compare-and-set lost).",
                &["op", "outcome"],
            ),
            commit_conflicts: counter_vec(
                &r,
                "dispatch_commit_conflicts_total",
                "Commits that lost their compare-and-set, by the transition they carried (its first event: \
                 offered for an offer, assigned for an accept, ...; none for a write without events).",
                &["transition"],
            ),
            change_log_lag_entries: register(
                &r,
                IntGauge::new("dispatch_change_log_lag_entries", "Change-log entries waiting at the last read.")
                    .expect("valid metric"),
            ),
            change_log_lag: register(
                &r,
                prometheus::Gauge::new(
                    "dispatch_change_log_lag_seconds",
                    "How long the oldest change-log entry of the last read had waited.",
                )
                .expect("valid metric"),
            ),
            reconciles: counter_vec(
                &r,
                "dispatch_reconciles_total",
                "Epochs joined after the store changed (lossless: joined; lossy: restored).",
                &["kind"],
            ),
            restored_records: register(
                &r,
                IntCounter::new("dispatch_restored_records_total", "Records put back after the store lost writes.")
                    .expect("valid metric"),
            ),
            fenced_writes: register(
                &r,
                IntCounter::new("dispatch_fenced_writes_total", "Writes the store refused as from an older epoch.")
                    .expect("valid metric"),
            ),
            timers_due: register(
                &r,
                IntGauge::new("dispatch_timers_due", "Due timers the sweeper found at its last pass (its backlog).")
                    .expect("valid metric"),
            ),
            cases: gauge_vec(&r, "dispatch_cases", "Live cases by state and tier.", &["state", "tier"]),
            oldest_wait: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new("dispatch_oldest_wait_seconds", "The longest wait among waiting cases, by tier."),
                    &["tier"],
                )
                .expect("valid metric"),
            ),
            waiting_by_language: gauge_vec(
                &r,
                "dispatch_waiting_cases",
                "Waiting cases by language (configured languages, the rest as other).",
                &["language"],
            ),
            agents: gauge_vec(
                &r,
                "dispatch_agents",
                "Agents by status (available, away, offline; in_grace: signed in, stream dropped).",
                &["status"],
            ),
            available_by_language: gauge_vec(
                &r,
                "dispatch_available_agents",
                "Available, connected agents by language they speak (configured languages, the rest as other).",
                &["language"],
            ),
            devices: register(
                &r,
                IntGauge::new("dispatch_connected_devices", "Agent device streams open on this replica.")
                    .expect("valid metric"),
            ),
            registry: r,
        };
        m.store_ok = Self::ok_histograms(&m.store_ops);
        m.zeroes();
        m
    }

    fn ok_histograms(store_ops: &HistogramVec) -> Arc<Vec<prometheus::Histogram>> {
        Arc::new(StoreOp::ALL.iter().map(|op| store_ops.with_label_values(&[op.name(), "ok"])).collect())
    }

    /// Counters that alerts take `rate` or `increase` of start at zero, so that their first
    /// increment is seen (a series that appears at 1 has no increase).
    fn zeroes(&self) {
        for event in Event::CASE_EVENT_NAMES {
            for tier in [Tier::Standard, Tier::Vip] {
                for channel in Channel::ALL {
                    self.case_events.with_label_values(&[event, tier.as_str(), channel.as_str()]);
                }
            }
        }
        for transition in ["offered", "assigned"] {
            self.commit_conflicts.with_label_values(&[transition]);
        }
        for kind in ["joined", "restored"] {
            self.reconciles.with_label_values(&[kind]);
        }
        for op in ["commit", "read"] {
            for outcome in ["conflict", "fenced", "unavailable", "corrupt"] {
                self.store_errors.with_label_values(&[op, outcome]);
            }
        }
    }

    /// The registry (the gRPC edge adds its own metrics to it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The label of a language: its primary subtag (`de` for `de-CH`, as the planner groups
    /// them) when configured, else `other`.
    fn language<'a>(&self, primary: &'a str) -> &'a str {
        if self.languages.contains(&primary.to_ascii_lowercase()) { primary } else { OTHER_LANGUAGE }
    }

    /// Counts what a commit did (`case`: the case as committed, if it was written).
    pub(crate) fn committed(&self, events: &[Event], case: Option<&Case>, now: Millis) {
        let Some(case) = case else { return };
        let (tier, channel) = (case.spec.tier.as_str(), case.spec.channel.as_str());
        let secs = |from: Millis| (now - from).max(0) as f64 / 1000.0;
        for e in events.iter().filter(|e| e.is_case_event()) {
            match e {
                Event::Offered { .. } => {
                    self.submit_to_offer.with_label_values(&[tier]).observe(secs(case.created_at));
                }
                Event::Assigned { time_to_accept_ms, .. } => {
                    self.offer_to_accept.with_label_values(&[tier]).observe(*time_to_accept_ms as f64 / 1000.0);
                    self.submit_to_assigned.with_label_values(&[tier]).observe(secs(case.created_at));
                }
                _ => {}
            }
            self.case_events.with_label_values(&[e.name(), tier, channel]).inc();
        }
    }

    /// Times one store operation.
    pub(crate) fn store_op<T>(&self, op: StoreOp, started: Instant, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => {
                self.store_ok[op as usize].observe(started.elapsed().as_secs_f64());
                return;
            }
            Err(StoreError::Conflict(_)) => "conflict",
            Err(StoreError::Fenced(_)) => "fenced",
            Err(StoreError::Unavailable(_)) => "unavailable",
            Err(StoreError::Corrupt(_)) => "corrupt",
        };
        self.store_ops.with_label_values(&[op.name(), outcome]).observe(started.elapsed().as_secs_f64());
        self.store_errors.with_label_values(&[op.name(), outcome]).inc();
        if matches!(result, Err(StoreError::Fenced(_))) {
            self.fenced_writes.inc();
        }
    }

    /// A commit of `events` lost its compare-and-set (another writer changed a record first).
    pub(crate) fn conflict(&self, events: &[Event]) {
        let transition = events.first().map_or("none", Event::name);
        self.commit_conflicts.with_label_values(&[transition]).inc();
    }

    /// A change-log read found `entries` waiting, the oldest `age_ms` old.
    pub(crate) fn change_log_read(&self, entries: usize, age_ms: i64) {
        self.change_log_lag_entries.set(entries as i64);
        self.change_log_lag.set(age_ms.max(0) as f64 / 1000.0);
    }

    /// An epoch joined after the store changed; `restored`: records put back after a loss.
    pub(crate) fn reconciled(&self, restored: Option<usize>) {
        match restored {
            None => self.reconciles.with_label_values(&["joined"]).inc(),
            Some(n) => {
                self.reconciles.with_label_values(&["restored"]).inc();
                self.restored_records.inc_by(n as u64);
            }
        }
    }

    /// The sweeper's last pass found `n` due timers.
    pub(crate) fn timers_due(&self, n: usize) {
        self.timers_due.set(n as i64);
    }

    /// Sets the pool gauges from the live index.
    pub(crate) fn pool(&self, cases: &[Arc<Case>], agents: &[Arc<Agent>], devices: usize, now: Millis) {
        self.cases.reset();
        self.oldest_wait.reset();
        self.waiting_by_language.reset();
        self.agents.reset();
        self.available_by_language.reset();
        for tier in [Tier::Vip, Tier::Standard] {
            self.oldest_wait.with_label_values(&[tier.as_str()]).set(0.0);
            for state in ["queued", "offered", "assigned"] {
                self.cases.with_label_values(&[state, tier.as_str()]).set(0);
            }
        }
        for l in self.languages.iter().map(String::as_str).chain([OTHER_LANGUAGE]) {
            self.waiting_by_language.with_label_values(&[l]).set(0);
            self.available_by_language.with_label_values(&[l]).set(0);
        }
        for case in cases.iter().filter(|c| !c.state.is_terminal()) {
            let tier = case.spec.tier.as_str();
            self.cases.with_label_values(&[case.state.name(), tier]).inc();
            if case.state == CaseState::Queued {
                let wait = case.waited_ms(now) as f64 / 1000.0;
                let g = self.oldest_wait.with_label_values(&[tier]);
                g.set(g.get().max(wait));
                self.waiting_by_language.with_label_values(&[self.language(case.spec.language.primary())]).inc();
            }
        }
        for status in ["available", "away", "offline", "in_grace"] {
            self.agents.with_label_values(&[status]).set(0);
        }
        for agent in agents {
            let status = match agent.status {
                AgentStatus::Available => "available",
                AgentStatus::Away => "away",
                AgentStatus::Offline => "offline",
            };
            self.agents.with_label_values(&[status]).inc();
            if agent.in_grace() {
                self.agents.with_label_values(&["in_grace"]).inc();
            }
            // Signed in, connected and available by status, with room or not (the domain's
            // activities available and busy).
            if matches!(agent.activity(now), Activity::Available | Activity::Busy) {
                let labels: HashSet<&str> =
                    agent.profile.primary_languages().into_iter().map(|l| self.language(l)).collect();
                for label in labels {
                    self.available_by_language.with_label_values(&[label]).inc();
                }
            }
        }
        self.devices.set(devices as i64);
    }

    /// The exposition (Prometheus text format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&[])
    }
}

/// A histogram of the gRPC edge's (kept here so that every metric is made the same way).
pub fn rpc_histogram(r: &Registry) -> HistogramVec {
    histogram_vec(
        r,
        "dispatch_rpc_duration_seconds",
        "gRPC calls by method and status code, until the response began (streams: their start).",
        &["method", "code"],
        STORE_BUCKETS,
    )
}

/// Requests refused by load shedding (RESOURCE_EXHAUSTED before they reached a handler).
pub fn shed_counter(r: &Registry) -> IntCounter {
    register(
        r,
        IntCounter::new("dispatch_rpc_shed_total", "Requests refused by load shedding (per-connection limit).")
            .expect("valid metric"),
    )
}

/// A store operation, as labelled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOp {
    Read,
    Ping,
    PurgeCase,
    ChangeCursor,
    Changes,
    GetAgent,
    ListAgents,
    RemoveAgent,
    GetCase,
    OfferCase,
    Commit,
    DueTimers,
    ClearTimer,
    Counters,
    SegmentCounts,
    State,
    WeightLog,
    Snapshot,
    JoinEpoch,
    CheckEpoch,
    Restore,
    Restored,
    Leave,
}

impl StoreOp {
    const ALL: [StoreOp; 23] = [
        StoreOp::Read,
        StoreOp::Ping,
        StoreOp::PurgeCase,
        StoreOp::ChangeCursor,
        StoreOp::Changes,
        StoreOp::GetAgent,
        StoreOp::ListAgents,
        StoreOp::RemoveAgent,
        StoreOp::GetCase,
        StoreOp::OfferCase,
        StoreOp::Commit,
        StoreOp::DueTimers,
        StoreOp::ClearTimer,
        StoreOp::Counters,
        StoreOp::SegmentCounts,
        StoreOp::State,
        StoreOp::WeightLog,
        StoreOp::Snapshot,
        StoreOp::JoinEpoch,
        StoreOp::CheckEpoch,
        StoreOp::Restore,
        StoreOp::Restored,
        StoreOp::Leave,
    ];

    fn name(self) -> &'static str {
        match self {
            StoreOp::Read => "read",
            StoreOp::Ping => "ping",
            StoreOp::PurgeCase => "purge_case",
            StoreOp::ChangeCursor => "change_cursor",
            StoreOp::Changes => "changes",
            StoreOp::GetAgent => "get_agent",
            StoreOp::ListAgents => "list_agents",
            StoreOp::RemoveAgent => "remove_agent",
            StoreOp::GetCase => "get_case",
            StoreOp::OfferCase => "offer_case",
            StoreOp::Commit => "commit",
            StoreOp::DueTimers => "due_timers",
            StoreOp::ClearTimer => "clear_timer",
            StoreOp::Counters => "counters",
            StoreOp::SegmentCounts => "segment_counts",
            StoreOp::State => "state",
            StoreOp::WeightLog => "weight_log",
            StoreOp::Snapshot => "snapshot",
            StoreOp::JoinEpoch => "join_epoch",
            StoreOp::CheckEpoch => "check_epoch",
            StoreOp::Restore => "restore",
            StoreOp::Restored => "restored",
            StoreOp::Leave => "leave",
        }
    }
}

/// A store that times every operation it passes on (but `now`, which rarely leaves the
/// process) into [`Metrics`].
pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl MeteredStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

macro_rules! timed {
    ($self:ident, $op:expr, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.metrics.store_op($op, started, &result);
        result
    }};
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn read(&self, case: Option<&CaseId>, agent: Option<&AgentId>) -> Result<Read, StoreError> {
        timed!(self, StoreOp::Read, self.inner.read(case, agent))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, StoreOp::Ping, self.inner.ping())
    }
    async fn purge_case(&self, id: &CaseId) -> Result<(), StoreError> {
        timed!(self, StoreOp::PurgeCase, self.inner.purge_case(id))
    }
    async fn change_cursor(&self) -> Result<String, StoreError> {
        timed!(self, StoreOp::ChangeCursor, self.inner.change_cursor())
    }
    async fn changes(&self, cursor: &str, limit: usize) -> Result<ChangeBatch, StoreError> {
        timed!(self, StoreOp::Changes, self.inner.changes(cursor, limit))
    }
    async fn now(&self) -> Result<Millis, StoreError> {
        self.inner.now().await
    }
    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        timed!(self, StoreOp::GetAgent, self.inner.get_agent(id))
    }
    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        timed!(self, StoreOp::ListAgents, self.inner.list_agents(after, limit))
    }
    async fn remove_agent(&self, id: &AgentId, version: u64) -> Result<(), StoreError> {
        timed!(self, StoreOp::RemoveAgent, self.inner.remove_agent(id, version))
    }
    async fn get_case(&self, id: &CaseId) -> Result<Option<Case>, StoreError> {
        timed!(self, StoreOp::GetCase, self.inner.get_case(id))
    }
    async fn offer_case(&self, offer: &OfferId) -> Result<Option<CaseId>, StoreError> {
        timed!(self, StoreOp::OfferCase, self.inner.offer_case(offer))
    }
    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        timed!(self, StoreOp::Commit, self.inner.commit(commit))
    }
    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<(TimerKey, Millis)>, StoreError> {
        timed!(self, StoreOp::DueTimers, self.inner.due_timers(now, limit))
    }
    async fn clear_timer(&self, key: &TimerKey, due: Millis) -> Result<(), StoreError> {
        timed!(self, StoreOp::ClearTimer, self.inner.clear_timer(key, due))
    }
    async fn counters(&self) -> Result<Vec<(Counter, i64)>, StoreError> {
        timed!(self, StoreOp::Counters, self.inner.counters())
    }
    async fn get_state(&self, name: &str) -> Result<Option<(u64, String)>, StoreError> {
        timed!(self, StoreOp::State, self.inner.get_state(name))
    }
    async fn put_state(&self, name: &str, expected: u64, body: &str) -> Result<bool, StoreError> {
        timed!(self, StoreOp::State, self.inner.put_state(name, expected, body))
    }
    async fn segment_counts(&self, since: Millis) -> Result<Vec<dispatch_domain::demand::BucketCount>, StoreError> {
        timed!(self, StoreOp::SegmentCounts, self.inner.segment_counts(since))
    }
    async fn log_weights(&self, change: &dispatch_domain::transparency::WeightChange) -> Result<bool, StoreError> {
        timed!(self, StoreOp::WeightLog, self.inner.log_weights(change))
    }
    async fn weight_log(&self, limit: usize) -> Result<Vec<dispatch_domain::transparency::WeightChange>, StoreError> {
        timed!(self, StoreOp::WeightLog, self.inner.weight_log(limit))
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        timed!(self, StoreOp::Snapshot, self.inner.snapshot())
    }
    async fn join_epoch(&self, high_water: u64) -> Result<Epoch, StoreError> {
        timed!(self, StoreOp::JoinEpoch, self.inner.join_epoch(high_water))
    }
    async fn check_epoch(&self) -> Result<(), StoreError> {
        timed!(self, StoreOp::CheckEpoch, self.inner.check_epoch())
    }
    async fn restore(&self, records: Vec<Restore>, marks: &Marks) -> Result<usize, StoreError> {
        timed!(self, StoreOp::Restore, self.inner.restore(records, marks))
    }
    async fn restored(&self) -> Result<(), StoreError> {
        timed!(self, StoreOp::Restored, self.inner.restored())
    }
    async fn leave(&self) -> Result<(), StoreError> {
        timed!(self, StoreOp::Leave, self.inner.leave())
    }
}
