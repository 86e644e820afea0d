//! Start, health and shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dispatch_domain::Policy;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::sessions::StreamEnd;
use crate::store::Store;

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
    /// Joins the store's epoch, builds the index from the store, and starts the background
    /// tasks: matcher workers, the sweeper, the rescan, the change-log follower and the health
    /// probe.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Clock,
        policy: Policy,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        policy.validate().map_err(|e| EngineError::Config(e.to_string()))?;
        config.validate().map_err(EngineError::Config)?;
        let engine = Engine::new(store, clock, policy, config);
        let epoch = engine.inner.store.join_epoch(0).await?;
        engine.inner.fence.joined(epoch);
        engine.inner.fence.started_in(epoch);
        engine.log_weights().await;
        // The cursor first, then the snapshot: a change made in between is read twice (harmless:
        // older versions are ignored), never missed.
        let cursor = engine.inner.store.change_cursor().await?;
        engine.rebuild_index().await?;
        for _ in 0..engine.inner.config.matcher_workers {
            tokio::spawn(engine.clone().matcher());
        }
        tokio::spawn(engine.clone().sweeper());
        tokio::spawn(engine.clone().rescanner());
        tokio::spawn(engine.clone().tailer(cursor));
        tokio::spawn(engine.clone().health_probe());
        engine.rescan();
        Ok(engine)
    }

    /// Records the scoring weights in force in the store's change log of weights, if they
    /// differ from the latest entry (workers are told who changed them and when).
    async fn log_weights(&self) {
        let inner = &self.inner;
        let at = match inner.store.now().await {
            Ok(at) => at,
            Err(e) => {
                warn!(error = %e, "could not read the store's clock to log the weights");
                return;
            }
        };
        let change = dispatch_domain::transparency::WeightChange {
            at,
            by: inner.config.policy_author.clone(),
            weights: inner.policy.weights.clone(),
        };
        match inner.store.log_weights(&change).await {
            Ok(true) => info!(by = change.by, weights = change.key(), "new scoring weights logged"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "could not log the scoring weights"),
        }
    }

    /// Whether writes can succeed now (readiness); changes drive the health service.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.inner.life.healthy.subscribe()
    }

    /// Whether a write could succeed now: the store's probe (which runs a write's checks: up,
    /// its epoch holds, not out of memory, Functions loaded) passes and no reconcile window is
    /// open. A probe the store fenced wakes the reconcile.
    async fn writable(&self, within: Duration) -> Result<(), String> {
        match tokio::time::timeout(within, self.inner.store.ping()).await {
            Err(_) => return Err("the store did not answer in time".to_owned()),
            Ok(Err(e)) => return Err(self.inner.fence.note(e).to_string()),
            Ok(Ok(())) => {}
        }
        let now = self.now().await.map_err(|e| e.to_string())?;
        if self.inner.fence.closed(now) {
            return Err("reconciling after a store restart".to_owned());
        }
        Ok(())
    }

    async fn health_probe(self) {
        let mut stop = self.inner.life.stop.subscribe();
        let mut fence = self.inner.fence.changes();
        let interval = Duration::from_millis(self.inner.config.health_interval_ms.max(10));
        loop {
            let verdict = self.writable(interval).await;
            let ok = verdict.is_ok();
            let was = self.inner.life.healthy.send_replace(ok);
            if was != ok {
                match verdict {
                    Ok(()) => {
                        info!("writes succeed again: reporting SERVING");
                        self.rescan();
                    }
                    Err(why) => warn!(why, "writes cannot succeed: reporting NOT_SERVING"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = fence.changed() => {}
                _ = self.inner.clock.moved() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Stops the background tasks. Records stay in the store; offer deadlines keep running
    /// there, so nothing is lost.
    pub fn stop(&self) {
        self.inner.life.stop.send_replace(true);
    }

    /// Graceful shutdown: no new offers from here; every device held here is told to reconnect
    /// and its session ended, which hands its live offer back (revoked at once, the case queued
    /// for the other dispatchers) instead of letting it run to its deadline; then the
    /// background tasks stop. Hand-backs still running after `within` are left to the presence
    /// lease (the agents stay signed in for the grace period either way).
    pub async fn shutdown(&self, within: Duration) -> ShutdownReport {
        self.inner.life.draining.store(true, Ordering::SeqCst);
        let sessions = self.inner.delivery.sessions.all();
        let mut report = ShutdownReport { sessions_ended: sessions.len(), ..ShutdownReport::default() };
        let mut tasks = tokio::task::JoinSet::new();
        for (agent_id, session_id) in sessions {
            let engine = self.clone();
            // The hand-back first, on the open stream (the device hears its offer withdrawn),
            // then the stream's end: a device that reconnects to another dispatcher at once
            // finds its offer gone and the case offered again, not the same offer shown there.
            tasks.spawn(async move {
                let handed_back = engine.disconnect_in_store(&agent_id, &session_id).await;
                engine.inner.delivery.sessions.end_session(&agent_id, &session_id, StreamEnd::ServerShutdown);
                handed_back
            });
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
        if let Err(e) = self.inner.store.leave().await {
            warn!(error = %e, "could not leave the store's members; a store restart will wait for this dispatcher");
        }
        self.stop();
        info!(?report, "engine shut down");
        report
    }
}
