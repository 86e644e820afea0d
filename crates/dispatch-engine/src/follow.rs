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
        let mark = self.inner.fence.read_mark();
        let agent = self.inner.store.get_agent(id).await?;
        let now = self.now().await?;
        match agent {
            Some(a) => self.observe(None, Some(a), now),
            None => self.agent_missing(id, mark).await?,
        }
        Ok(())
    }

    /// A read begun at `mark` found no record of agent `id`: it leaves the index if it is gone
    /// for real ([`Engine::gone`]).
    pub(crate) async fn agent_missing(&self, id: &AgentId, mark: u64) -> Result<(), EngineError> {
        if self.inner.index.agent(id).is_some() && self.gone(mark).await? {
            self.observe_agent_removed(id);
        }
        Ok(())
    }

    /// A read begun at `mark` found no record of case `id`: it leaves the index if it is gone
    /// for real ([`Engine::gone`]).
    async fn case_missing(&self, id: &CaseId, mark: u64) -> Result<(), EngineError> {
        if self.inner.index.case(id).is_some() && self.gone(mark).await? {
            self.observe_case_purged(id);
        }
        Ok(())
    }

    /// Whether records that a read begun at `mark` found missing, and the index holds, are gone
    /// for real (purged, removed) rather than lost by a store that restarted: only if the store
    /// is still in the epoch this dispatcher joined and no reconcile straddled the read. A
    /// record the store lost stays in the index, which is what this dispatcher's restore is
    /// made of: dropped here, it would be put back by nobody (a case confirmed to a router,
    /// then missing). One kept wrongly is dropped at the next read that finds it missing, or
    /// when an offer of it fails its compare-and-set. A fenced store wakes the reconcile.
    async fn gone(&self, mark: u64) -> Result<bool, EngineError> {
        if self.inner.fence.may_be_lost(mark) {
            debug!("a record missing from the store is kept while a reconcile may put it back");
            return Ok(false);
        }
        self.inner.store.check_epoch().await.map_err(|e| self.inner.fence.note(e))?;
        Ok(!self.inner.fence.may_be_lost(mark))
    }

    /// Reads a case from the store into the index (and on to whoever is told).
    pub(crate) async fn reread_case(&self, id: &CaseId) -> Result<(), EngineError> {
        let mark = self.inner.fence.read_mark();
        let case = self.inner.store.get_case(id).await?;
        let now = self.now().await?;
        match case {
            Some(c) => self.observe(Some(c), None, now),
            None => self.case_missing(id, mark).await?,
        }
        Ok(())
    }

    /// Brings the index up to a store snapshot: every agent and live case, through the
    /// delivery path; agents gone from the store are removed (if gone for real: [`Engine::gone`]),
    /// and cases the index holds as live that the snapshot does not are read again (they closed
    /// or were purged meanwhile).
    pub(crate) async fn rebuild_index(&self) -> Result<(), EngineError> {
        let mark = self.inner.fence.read_mark();
        let snapshot = self.inner.store.snapshot().await?;
        let now = self.now().await?;
        let (agents, cases) = (snapshot.agents.len(), snapshot.live_cases.len());
        let known: HashSet<AgentId> = snapshot.agents.iter().map(|a| a.id().clone()).collect();
        let live: HashSet<CaseId> = snapshot.live_cases.iter().map(|c| c.id().clone()).collect();
        let missing: Vec<AgentId> =
            self.inner.index.agents().iter().filter(|a| !known.contains(a.id())).map(|a| a.id().clone()).collect();
        if !missing.is_empty() && self.gone(mark).await? {
            for id in &missing {
                self.observe_agent_removed(id);
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dispatch_domain::limits::Limits;
    use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
    use dispatch_domain::{Channel, Level, Policy, Tier};

    use super::*;
    use crate::{Clock, EngineConfig, MemoryStore, Store};

    async fn engine_with_a_case_and_an_agent() -> (Engine, Arc<MemoryStore>, CaseId, AgentId) {
        let clock = Clock::manual(1_700_000_000_000);
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let engine =
            Engine::start(Arc::clone(&store) as Arc<dyn Store>, clock, Policy::default(), EngineConfig::default())
                .await
                .unwrap();
        let limits = Limits::default();
        let input = AgentProfileInput {
            id: "a1",
            languages: vec![("de", 4)],
            capacity: vec![(Some(Channel::Chat), 1)],
            ..AgentProfileInput::default()
        };
        let (agent, _, _) = engine.upsert_agent(AgentProfile::parse(input, &limits).unwrap()).await.unwrap();
        // An English case no one here can take: it waits, live in the index.
        let input = CaseSpecInput {
            id: "c1",
            language: "en",
            tier: Some(Tier::Vip),
            channel: Some(Channel::Chat),
            ..Default::default()
        };
        let (case, _, _) = engine.submit(CaseSpec::parse(input, Level::MIN, &limits).unwrap(), None).await.unwrap();
        (engine, store, case.id().clone(), agent.id().clone())
    }

    /// A store that lost records (and has not been rejoined) is no proof that they are gone:
    /// the index keeps them, so that the reconcile puts them back. Once the store is rejoined,
    /// a record really missing leaves the index.
    #[tokio::test]
    async fn records_a_lossy_store_lacks_stay_in_the_index_until_the_epoch_is_rejoined() {
        let (engine, store, case, agent) = engine_with_a_case_and_an_agent().await;
        let index = &engine.inner.index;
        store.lose(Some(&case), Some(&agent));

        let e = engine.reread_case(&case).await.expect_err("a fenced store is reported");
        assert!(matches!(&e, EngineError::Unavailable(m) if m.contains("restarted")), "{e:?}");
        assert!(index.case(&case).is_some(), "the case stays for the restore");
        assert!(engine.reread_agent(&agent).await.is_err());
        assert!(index.agent(&agent).is_some(), "the agent stays for the restore");
        assert!(engine.rebuild_index().await.is_err());
        assert!(index.case(&case).is_some() && index.agent(&agent).is_some(), "a rebuild keeps them too");

        // While a reconcile makes its restore from the index, nothing leaves it either, even
        // once the store answers epoch checks.
        store.end_loss();
        engine.inner.fence.restoring(true);
        engine.reread_case(&case).await.unwrap();
        engine.reread_agent(&agent).await.unwrap();
        assert!(index.case(&case).is_some() && index.agent(&agent).is_some());
        // A read that began before a restore was written proves nothing either.
        let mark = engine.inner.fence.read_mark();
        engine.inner.fence.restored(crate::store::Epoch::default());
        engine.inner.fence.restoring(false);
        engine.case_missing(&case, mark).await.unwrap();
        assert!(index.case(&case).is_some(), "the read straddled a restore");

        // In the epoch joined, with no reconcile under way, missing is gone.
        engine.reread_case(&case).await.unwrap();
        assert!(index.case(&case).is_none(), "a case really gone leaves the index");
        engine.reread_agent(&agent).await.unwrap();
        assert!(index.agent(&agent).is_none(), "an agent really gone leaves the index");
        engine.stop();
    }
}
