//! After the store changed under the dispatchers (a restart, a failover, a slot moved): join its
//! new epoch; if it lost writes, put back what this dispatcher knows, rebuild the index, and
//! resume matching when the window every dispatcher waits out has passed.

use std::time::Duration;

use dispatch_domain::transition;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::Restore;
use crate::work::Work;

impl Engine {
    /// The store changed under this dispatcher (its write was fenced, or the change log says
    /// so): join its current epoch, telling it the highest mark seen written. If the store lost
    /// writes, put back every record this dispatcher knows in a newer version than the store
    /// holds (agents, live cases, cases closed lately) with the timers they imply, and the
    /// marks and counters seen, then rebuild the index from the store; writes wait meanwhile and
    /// for the reconcile window. If it lost nothing (a clean restart, a slot moved to another
    /// node), joining is all. Returns the change-log cursor to follow from.
    pub(crate) async fn reconcile(&self, cursor: &str) -> Result<String, EngineError> {
        self.inner.fence.restoring(true);
        let result = self.reconcile_inner(cursor).await;
        self.inner.fence.restoring(false);
        result
    }

    async fn reconcile_inner(&self, cursor: &str) -> Result<String, EngineError> {
        let epoch = self.inner.store.join_epoch(self.inner.fence.seen().high_water).await?;
        self.inner.fence.joined(epoch);
        if !self.inner.fence.needs_restore(epoch) {
            self.inner.fence.reconciled();
            info!(epoch = epoch.number, "the store changed without losing writes: joined its new epoch");
            return Ok(cursor.to_owned());
        }
        let now = self.now().await?;
        let policy = &self.inner.policy;
        let index = &self.inner.index;
        let mut records: Vec<Restore> = index
            .agents()
            .iter()
            .map(|a| Restore::Agent(a.as_ref().clone(), transition::agent_timers(a, now, policy)))
            .collect();
        for c in index.live_cases() {
            records.push(Restore::Case(c.as_ref().clone(), transition::case_timers(&c, now, policy)));
        }
        for c in self.inner.closed.recent(now) {
            let timers = transition::case_timers(&c, now, policy);
            records.push(Restore::Case(c, timers));
        }
        let known = records.len();
        let written = self.inner.store.restore(records, &self.inner.fence.seen()).await?;
        let cursor = self.inner.store.change_cursor().await?;
        self.rebuild_index().await?;
        self.inner.fence.reconciled();
        warn!(
            epoch = epoch.number,
            known, written, "the store lost writes: joined its new epoch and put back what it had lost"
        );
        // Matching resumes when the window closes.
        let engine = self.clone();
        let wait = Duration::from_millis(self.inner.config.reconcile_window_ms);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            engine.rescan();
            for a in engine.inner.index.agents() {
                engine.inner.work.push(Work::Agent(a.id().clone()));
            }
        });
        Ok(cursor)
    }
}
