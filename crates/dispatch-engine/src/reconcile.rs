//! After the store restarted (and may have lost its latest writes): join the new epoch, put
//! back what this dispatcher knows, rebuild the index, and resume matching when the window every
//! dispatcher waits out has passed.

use std::time::Duration;

use dispatch_domain::transition;
use tracing::warn;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::Restore;
use crate::work::Work;

impl Engine {
    /// Joins the new epoch and puts back every record this dispatcher knows in a newer version
    /// than the store holds (agents, live cases, cases closed lately) with the timers they
    /// imply, then rebuilds the index from the store. Writes wait meanwhile and for the
    /// reconcile window. Returns the change-log cursor to follow from.
    pub(crate) async fn reconcile(&self) -> Result<String, EngineError> {
        self.inner.fence.restoring(true);
        let result = self.restore_all().await;
        self.inner.fence.restoring(false);
        result
    }

    async fn restore_all(&self) -> Result<String, EngineError> {
        let epoch = self.inner.store.join_epoch().await?;
        self.inner.fence.joined(epoch);
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
        let written = self.inner.store.restore(records).await?;
        let cursor = self.inner.store.change_cursor().await?;
        self.rebuild_index().await?;
        self.inner.fence.reconciled();
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
                engine.inner.work.push(Work::Agent(a.id().clone()));
            }
        });
        Ok(cursor)
    }
}
