//! After the store changed under the dispatchers (a restart, a failover, a slot moved): join its
//! new epoch; if it lost writes, put back what this dispatcher knows, rebuild the index, and
//! resume matching when the window every dispatcher waits out has passed.

use std::time::Duration;

use dispatch_domain::transition;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::{Marks, Restore};
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
            self.inner.metrics.reconciled(None);
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
        // The closings this dispatcher saw since the loss began go with its restore, so that no
        // dispatcher's restore (made from an index that had not yet seen them) revives them.
        let lost_since = epoch.lost_after.map_or(dispatch_domain::Millis::MIN, |m| self.inner.fence.lost_since(m));
        let marks = Marks { closed: index.closed_since(lost_since.saturating_sub(1_000)), ..self.inner.fence.seen() };
        let written = self.inner.store.restore(records, &marks).await?;
        let revived = self.close_revived(now).await?;
        self.inner.store.restored().await?;
        self.inner.fence.restored(epoch);
        let cursor = self.inner.store.change_cursor().await?;
        self.rebuild_index().await?;
        self.check_loss(epoch, now, revived);
        self.inner.fence.reconciled();
        self.inner.metrics.reconciled(Some(written));
        warn!(
            epoch = epoch.number,
            known, written, "the store lost writes: joined its new epoch and put back what it had lost"
        );
        // Matching resumes when the window closes; by then every dispatcher's restore is in (and
        // read from the change log), so cases and agents that still disagree are for real.
        let engine = self.clone();
        let wait = Duration::from_millis(self.inner.config.reconcile_window_ms);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            engine.check_pairs(epoch.number);
            engine.rescan();
            for a in engine.inner.index.agents() {
                engine.inner.work.push(Work::Agent(a.id().clone()));
            }
        });
        Ok(cursor)
    }

    /// Cases the store brought back open that this dispatcher knows were closed (beyond what its
    /// closed-case memory could put back, but not beyond the index's record of closings): each
    /// is closed again by the domain (`transition::close_after_loss`) and put back with its
    /// agent, so that no revived offer is accepted and no customer served twice. Returns them.
    async fn close_revived(&self, now: dispatch_domain::Millis) -> Result<Vec<dispatch_domain::CaseId>, EngineError> {
        let snapshot = self.inner.store.snapshot().await?;
        let mut records = Vec::new();
        let mut ids = Vec::new();
        for case in snapshot.live_cases {
            let Some((closed_at_version, closed)) = self.inner.index.closed(case.id()) else { continue };
            if closed_at_version <= case.version {
                continue;
            }
            let agent = case.current_agent().and_then(|a| snapshot.agents.iter().find(|x| x.id() == a)).cloned();
            let change = transition::close_after_loss(&case, agent.as_ref(), closed, now, &self.inner.policy);
            let timers = change.timers.clone();
            if let Some(mut c) = change.case {
                // Above what the store holds and what this dispatcher knew.
                c.version = closed_at_version.max(case.version) + 1;
                records.push(Restore::Case(c, timers));
            }
            if let Some(mut a) = change.agent {
                a.version += 1;
                let timers = transition::agent_timers(&a, now, &self.inner.policy);
                records.push(Restore::Agent(a, timers));
            }
            ids.push(case.id().clone());
        }
        if !records.is_empty() {
            self.inner.store.restore(records, &self.inner.fence.seen()).await?;
        }
        Ok(ids)
    }

    /// After every dispatcher's restore: cases and agents that disagree about an assignment (one
    /// holds it, the other does not), which the loss left and no restore could mend: reported.
    fn check_pairs(&self, epoch: u64) {
        let index = &self.inner.index;
        let mut ids = Vec::new();
        for case in index.live_cases() {
            let agent = case.current_agent().and_then(|a| index.agent(a));
            if !case.assignment_agrees(agent.as_deref()) {
                ids.push(case.id().clone());
            }
        }
        for agent in index.agents() {
            for held in agent.assignments.keys() {
                if !agent.holding_agrees(index.case(held).as_deref()) && !ids.contains(held) {
                    ids.push(held.clone());
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        tracing::error!(
            epoch,
            cases = ids.len(),
            ids = ?ids.iter().take(100).collect::<Vec<_>>(),
            "after the store lost writes, cases and their agents disagree and could not be put back: \
             check these cases, they may be stuck"
        );
        self.inner.fence.lost_beyond_memory(ids);
    }

    /// After a restore: whether the loss reached back past what this dispatcher remembers of
    /// closed cases (the cases closed in that time may be missing or reopened, and a router's
    /// retry could serve a customer twice), or revived cases it had to close again. Such a loss
    /// is shouted about, with the ids it can name, rather than served silently.
    fn check_loss(
        &self,
        epoch: crate::store::Epoch,
        now: dispatch_domain::Millis,
        revived: Vec<dispatch_domain::CaseId>,
    ) {
        let mut ids = revived;
        let lost_since = epoch.lost_after.map_or(dispatch_domain::Millis::MIN, |m| self.inner.fence.lost_since(m));
        let covered_from = self.inner.closed.covered_from(now);
        let beyond = lost_since < covered_from;
        if beyond {
            ids.extend(self.inner.closed.forgotten_since(lost_since));
        }
        if !beyond && ids.is_empty() {
            return;
        }
        ids.dedup();
        tracing::error!(
            epoch = epoch.number,
            lost_since,
            remembered_from = covered_from,
            cases = ids.len(),
            ids = ?ids.iter().take(100).collect::<Vec<_>>(),
            "the store lost writes this dispatcher could not put back: cases closed since then may be \
             missing or reopened, and the cases named may be stuck; check them before routers re-submit"
        );
        self.inner.fence.lost_beyond_memory(ids);
    }
}
