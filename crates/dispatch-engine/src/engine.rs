//! [`Engine`]: a cheap handle over the engine's state, grouped by the concern that owns it.
//! The behaviour lives in sibling modules, each an `impl Engine` block of one concern:
//! `lifecycle` (start, health, shutdown), `api::*` (roster, cases, agent sessions, planner),
//! `write` (the one write path), `delivery` (the one delivery path), `matcher`, `timers`,
//! `follow` (the change log) and `reconcile` (after a store restart).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dispatch_domain::{Millis, Policy};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::fence::{ClosedMemory, Fence};
use crate::index::PoolIndex;
use crate::metrics::{MeteredStore, Metrics};
use crate::sessions::Sessions;
use crate::store::Store;
use crate::watchers::Watchers;
use crate::work::{IdMint, WorkQueue};

/// The dispatch engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Where records live; the truth.
    pub(crate) store: Arc<dyn Store>,
    /// Wakes the sweeper when a test's manual clock moves.
    pub(crate) clock: Clock,
    /// The dispatch rules in force.
    pub(crate) policy: Policy,
    /// Engine settings.
    pub(crate) config: EngineConfig,
    /// A cache of the latest records this process has seen, for selection and planners.
    pub(crate) index: PoolIndex,
    /// Who is told what: device sessions, case watchers, planners' change signal.
    pub(crate) delivery: Delivery,
    /// Matching work to do.
    pub(crate) work: WorkQueue,
    /// Offer and session ids.
    pub(crate) ids: IdMint,
    /// Agents an offer is being committed to by a matcher worker of this process.
    pub(crate) claims: crate::work::Claims<dispatch_domain::AgentId>,
    /// Cases a free agent's matcher worker of this process is committing an offer for.
    pub(crate) case_claims: crate::work::Claims<dispatch_domain::CaseId>,
    /// Writes wait while a reconcile after a store restart is under way.
    pub(crate) fence: Fence,
    /// Lately closed cases, put back after the store lost writes.
    pub(crate) closed: ClosedMemory,
    /// Health, shutdown.
    pub(crate) life: Lifecycle,
    /// What this process measures of itself.
    pub(crate) metrics: Metrics,
    /// The demand-segment counts last read from the store, for estimates.
    pub(crate) demand: crate::demand::DemandCache,
    /// When the next call-in round is due as last read (store clock): the round state is not
    /// read before.
    pub(crate) call_in_due: std::sync::atomic::AtomicI64,
    /// One call-in round at a time in this process (the sweeper's and a test's).
    pub(crate) call_in_round: tokio::sync::Mutex<()>,
    /// The change log follower's progress.
    pub(crate) followed: crate::follow::Followed,
}

/// Everyone this process tells about changes.
pub(crate) struct Delivery {
    /// Agent devices whose streams this process holds.
    pub(crate) sessions: Sessions,
    /// Routers watching cases.
    pub(crate) watchers: Watchers,
    /// Bumped whenever an agent changes (planners' `WatchAvailability`).
    pub(crate) pool_changed: watch::Sender<u64>,
    /// Agents whose invitation changed (the notification service's feed).
    pub(crate) invitations: tokio::sync::broadcast::Sender<Arc<dispatch_domain::Agent>>,
}

/// Whether the process serves, and how it stops.
pub(crate) struct Lifecycle {
    /// Whether writes can succeed now (drives readiness).
    pub(crate) healthy: watch::Sender<bool>,
    /// Shutting down: no new offers from here.
    pub(crate) draining: AtomicBool,
    /// Turns true when the background tasks are to stop.
    pub(crate) stop: watch::Sender<bool>,
}

impl Engine {
    pub(crate) fn new(store: Arc<dyn Store>, clock: Clock, policy: Policy, config: EngineConfig) -> Engine {
        let metrics = Metrics::new(&config.metric_languages);
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        let inner = Inner {
            store,
            metrics,
            clock,
            index: PoolIndex::new(),
            demand: crate::demand::DemandCache::default(),
            call_in_due: std::sync::atomic::AtomicI64::new(0),
            call_in_round: tokio::sync::Mutex::new(()),
            followed: crate::follow::Followed::new(),
            delivery: Delivery {
                sessions: Sessions::default(),
                watchers: Watchers::new(config.max_watches),
                pool_changed: watch::channel(0).0,
                invitations: tokio::sync::broadcast::channel(1024).0,
            },
            work: WorkQueue::new(),
            ids: IdMint::new(config.id_seed),
            claims: crate::work::Claims::default(),
            case_claims: crate::work::Claims::default(),
            fence: Fence::new(config.reconcile_window_ms),
            closed: ClosedMemory::new(config.reconcile_memory_ms, config.reconcile_memory_bytes),
            life: Lifecycle {
                healthy: watch::channel(true).0,
                draining: AtomicBool::new(false),
                stop: watch::channel(false).0,
            },
            policy,
            config,
        };
        Engine { inner: Arc::new(inner) }
    }

    /// The rules in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Now, on the store's clock.
    pub async fn now(&self) -> Result<Millis, EngineError> {
        Ok(self.inner.store.now().await?)
    }

    /// Whether this dispatcher is shutting down.
    pub(crate) fn draining(&self) -> bool {
        self.inner.life.draining.load(Ordering::SeqCst)
    }

    /// How many times this dispatcher reconciled after a store restart.
    pub fn reconciles(&self) -> u64 {
        self.inner.fence.reconciles()
    }

    /// How many times the store lost writes from before what this dispatcher remembers (or
    /// left a case and its agent disagreeing after a restore), and the case ids the last such
    /// report could name: cases that may be missing, reopened or stuck, for an operator to check.
    pub fn losses_beyond_memory(&self) -> (u64, Vec<dispatch_domain::CaseId>) {
        self.inner.fence.losses_beyond_memory()
    }
}
