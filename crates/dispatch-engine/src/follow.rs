//! Following the store: the change log (other dispatchers' commits) and index rebuilds from a
//! snapshot. What is read goes through the one delivery path, like this process's own commits.

use std::collections::HashSet;
use std::time::Duration;

use dispatch_domain::{AgentId, CaseId};
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::ChangeRef;

/// Entries read from the change log at once; the follower reads on while batches come back full.
const BATCH: usize = 1_000;

/// Where the follower is: how many passes over the change log it has begun and finished, and a
/// way to ask for one now. A task that must see every commit made before it asks (the call-in
/// round's winner, planning on the index) waits for a pass begun after it asked.
pub(crate) struct Followed {
    passes: tokio::sync::watch::Sender<(u64, u64)>,
    now: tokio::sync::Notify,
}

impl Followed {
    pub(crate) fn new() -> Self {
        Self { passes: tokio::sync::watch::Sender::new((0, 0)), now: tokio::sync::Notify::new() }
    }
}

impl Engine {
    /// Waits (at most `bound`) until the index holds every change the store logged before this
    /// call; whether it does.
    pub(crate) async fn catch_up(&self, bound: Duration) -> bool {
        let followed = &self.inner.followed;
        let mut rx = followed.passes.subscribe();
        let (begun, _) = *rx.borrow_and_update();
        followed.now.notify_one();
        tokio::time::timeout(bound, rx.wait_for(|(_, done)| *done > begun)).await.is_ok_and(|r| r.is_ok())
    }
}

impl Engine {
    /// Follows the store's change log from `cursor` until the engine stops.
    pub(crate) async fn tailer(self, mut cursor: String) {
        let mut stop = self.inner.life.stop.subscribe();
        let interval = Duration::from_millis(self.inner.config.change_feed_interval_ms.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                () = self.inner.fence.woken() => {}
                () = self.inner.followed.now.notified() => {}
                _ = stop.changed() => return,
            }
            self.inner.followed.passes.send_modify(|(begun, _)| *begun += 1);
            loop {
                match self.follow(&cursor).await {
                    Ok((next, full)) => {
                        cursor = next;
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "change log read failed; retrying");
                        break;
                    }
                }
            }
            self.inner.followed.passes.send_modify(|(begun, done)| *done = *begun);
        }
    }

    /// Reads one batch after `cursor`; the next cursor, and whether the batch was full.
    async fn follow(&self, cursor: &str) -> Result<(String, bool), EngineError> {
        let batch = self.inner.store.changes(cursor, BATCH).await?;
        if batch.fenced {
            return Ok((self.reconcile(cursor).await?, false));
        }
        self.inner.fence.saw(batch.high_water, &[]);
        if batch.high_water > 0 {
            self.inner.fence.saw_at(batch.high_water, self.now().await?);
        }
        if batch.gap {
            warn!("change log has a gap; rebuilding the index");
            let cursor = self.inner.store.change_cursor().await?;
            self.rebuild_index().await?;
            self.rescan();
            return Ok((cursor, false));
        }
        let full = batch.changes.len() >= BATCH;
        if let Some(at) = batch.oldest_at {
            self.inner.metrics.change_log_read(batch.changes.len(), self.now().await? - at);
        } else if batch.changes.is_empty() {
            self.inner.metrics.change_log_read(0, 0);
        }
        for change in batch.changes {
            // This dispatcher's own commits (and anything already seen) are in the index at that
            // version: no need to read them back.
            match change {
                ChangeRef::Agent(id, Some(v)) if self.inner.index.agent(&id).is_some_and(|a| a.version >= v) => {}
                ChangeRef::Case(id, Some(v)) if self.inner.index.case_version(&id).is_some_and(|k| k >= v) => {}
                ChangeRef::Agent(id, _) => self.reread_agent(&id).await?,
                ChangeRef::Case(id, _) => self.reread_case(&id).await?,
            }
        }
        Ok((batch.cursor, full))
    }

    /// Reads an agent from the store into the index (and on to whoever is told).
    pub(crate) async fn reread_agent(&self, id: &AgentId) -> Result<(), EngineError> {
        let agent = self.inner.store.get_agent(id).await?;
        let now = self.now().await?;
        match agent {
            Some(a) => self.observe(None, Some(a), now),
            None => self.observe_agent_removed(id),
        }
        Ok(())
    }

    /// Reads a case from the store into the index (and on to whoever is told).
    pub(crate) async fn reread_case(&self, id: &CaseId) -> Result<(), EngineError> {
        let case = self.inner.store.get_case(id).await?;
        let now = self.now().await?;
        match case {
            Some(c) => self.observe(Some(c), None, now),
            None => self.observe_case_purged(id),
        }
        Ok(())
    }

    /// Brings the index up to a store snapshot: every agent and live case, through the
    /// delivery path; agents gone from the store are removed, and cases the index holds as live
    /// that the snapshot does not are read again (they closed or were purged meanwhile).
    pub(crate) async fn rebuild_index(&self) -> Result<(), EngineError> {
        let snapshot = self.inner.store.snapshot().await?;
        let now = self.now().await?;
        let (agents, cases) = (snapshot.agents.len(), snapshot.live_cases.len());
        let known: HashSet<AgentId> = snapshot.agents.iter().map(|a| a.id().clone()).collect();
        let live: HashSet<CaseId> = snapshot.live_cases.iter().map(|c| c.id().clone()).collect();
        for gone in self.inner.index.agents().iter().filter(|a| !known.contains(a.id())) {
            self.observe_agent_removed(gone.id());
        }
        for agent in snapshot.agents {
            self.observe(None, Some(agent), now);
        }
        for case in snapshot.live_cases {
            self.observe(Some(case), None, now);
        }
        for stale in self.inner.index.live_cases().iter().filter(|c| !live.contains(c.id())) {
            self.reread_case(stale.id()).await?;
        }
        self.inner.delivery.pool_changed.send_modify(|v| *v += 1);
        info!(agents, live_cases = cases, "pool index built from the store");
        Ok(())
    }
}
