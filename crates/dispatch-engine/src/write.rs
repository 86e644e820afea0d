//! The one write path. Every change to the store passes [`Engine::gated`]: refused while the
//! epoch fence is closed (a reconcile is under way), and a fenced store error wakes the
//! reconcile. Transitions go read → decide → [`Engine::commit`] with compare-and-set, retried
//! on conflict ([`Engine::transact`]); offers are decided on the index's records and committed
//! the same way; agent removal, lease renewals and purges pass the same gate. Every committed
//! record then goes through the one delivery path (`delivery.rs`).

use std::future::Future;

use dispatch_domain::stats::Counter;
use dispatch_domain::{Agent, AgentId, Case, CaseId, Change, Event, Millis, Rejection};
use tracing::debug;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::fence::reconciling;
use crate::store::{Commit, Committed, Read, StoreError};

/// What to read before deciding.
pub(crate) enum Load<'a> {
    /// One case.
    Case(&'a CaseId),
    /// One agent.
    Agent(&'a AgentId),
    /// The case, then the agent holding its offer or assignment.
    CaseAndItsAgent(&'a CaseId),
    /// The case, then the agent holding it or, for a completed case, the one who completed it.
    CaseAndItsLastAgent(&'a CaseId),
    /// The agent, then the case of its pending offer.
    AgentAndPendingCase(&'a AgentId),
    /// A case and a given agent (an agent's command about a case).
    CaseAndAgent(&'a CaseId, &'a AgentId),
}

/// The result of a committed transition.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    /// What was stored (empty for an idempotent repeat).
    pub(crate) committed: Committed,
    /// What happened.
    pub(crate) events: Vec<Event>,
    /// The store's clock when it was decided.
    pub(crate) now: Millis,
}

impl Engine {
    /// Runs one write through the gate: refused while the fence is closed; a fenced error wakes
    /// the reconcile.
    pub(crate) async fn gated<T>(
        &self,
        now: Millis,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.inner.fence.closed(now) {
            return Err(reconciling());
        }
        write.await.map_err(|e| self.inner.fence.note(e))
    }

    async fn load(&self, load: &Load<'_>) -> Result<(Option<Case>, Option<Agent>, Millis), EngineError> {
        let store = &self.inner.store;
        let r = match load {
            Load::Case(id) => store.read(Some(id), None).await?,
            Load::Agent(id) => store.read(None, Some(id)).await?,
            Load::CaseAndAgent(case, agent) => store.read(Some(case), Some(agent)).await?,
            Load::CaseAndItsAgent(id) | Load::CaseAndItsLastAgent(id) => {
                let first = store.read(Some(id), None).await?;
                let last = matches!(load, Load::CaseAndItsLastAgent(_));
                let agent = first.case.as_ref().and_then(|c| c.current_agent().or(c.completed_by().filter(|_| last)));
                match agent {
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

    /// Read → decide → compare-and-set, retried on conflict. The decision sees the records it
    /// read and the store's time.
    pub(crate) async fn transact<F>(&self, load: Load<'_>, decide: F) -> Result<Written, EngineError>
    where
        F: FnMut(Option<&Case>, Option<&Agent>, Millis) -> Result<Change, Rejection>,
    {
        use tracing::Instrument;
        let (case_id, agent_id) = match &load {
            Load::Case(c) | Load::CaseAndItsAgent(c) | Load::CaseAndItsLastAgent(c) => (Some(*c), None),
            Load::Agent(a) | Load::AgentAndPendingCase(a) => (None, Some(*a)),
            Load::CaseAndAgent(c, a) => (Some(*c), Some(*a)),
        };
        let span = tracing::debug_span!(
            "transition",
            case.id = case_id.map(tracing::field::display),
            agent.id = agent_id.map(tracing::field::display),
            events = tracing::field::Empty,
        );
        self.transact_inner(load, decide).instrument(span).await
    }

    async fn transact_inner<F>(&self, load: Load<'_>, mut decide: F) -> Result<Written, EngineError>
    where
        F: FnMut(Option<&Case>, Option<&Agent>, Millis) -> Result<Change, Rejection>,
    {
        let retries = self.inner.config.conflict_retries;
        for attempt in 0..retries {
            let (case, agent, now) = self.load(&load).await?;
            if self.inner.fence.closed(now) {
                return Err(reconciling().into());
            }
            let change = match decide(case.as_ref(), agent.as_ref(), now) {
                Ok(c) => c,
                Err(rejection) => return Err(self.refusal(rejection, now).await),
            };
            if change.is_noop() && change.timers.is_empty() {
                // Nothing to write: the caller is answered from what was read (a retried submit
                // or accept finds its own earlier write). What was read goes to the index, so
                // this dispatcher holds every record it confirmed to a caller: one whose first
                // write's reply was lost, confirmed here from the store before this index (or
                // any other) followed the log, would otherwise be put back by nobody if the
                // store then lost its last writes.
                self.observe(case, agent, now);
                return Ok(Written { now, ..Written::default() });
            }
            let span = tracing::Span::current();
            if !span.is_disabled() {
                let names: Vec<&str> = change.events.iter().map(Event::name).collect();
                span.record("events", tracing::field::debug(&names));
            }
            match self.commit(change, now).await {
                Ok(out) => return Ok(out),
                Err(StoreError::Conflict(what)) => debug!(attempt, %what, "compare-and-set conflict, deciding again"),
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention(format!("gave up after {retries} conflicting attempts")))
    }

    /// A refusal is final only if what it was based on is: not if the store restarted (and may
    /// have lost writes) since this dispatcher last joined, nor while a reconcile that began
    /// meanwhile (and joined the new epoch, which is why the check passes) may yet put it back.
    pub(crate) async fn refusal(&self, rejection: Rejection, now: Millis) -> EngineError {
        if let Err(e) = self.inner.store.check_epoch().await {
            return self.inner.fence.note(e).into();
        }
        if self.inner.fence.closed(now) {
            return reconciling().into();
        }
        rejection.into()
    }

    /// Commits a decided change through the gate, then delivers what was stored.
    pub(crate) async fn commit(&self, change: Change, now: Millis) -> Result<Written, StoreError> {
        let Change { case, agent, events, timers } = change.settle(now, &self.inner.policy);
        let counters: Vec<(Counter, i64)> = events.iter().flat_map(Event::counters).collect();
        let segment = match case.as_ref() {
            Some(c) => self.segment_write(c, &events, now),
            None => dispatch_domain::demand::invitation_counts(&events).map(|(segment, counts)| {
                crate::store::SegmentWrite { bucket: dispatch_domain::demand::bucket_of(now), segment, counts }
            }),
        };
        let commit = Commit { case, agent, timers, counters, segment };
        let committed = self.gated(now, self.inner.store.commit(commit)).await.inspect_err(|e| {
            if matches!(e, StoreError::Conflict(_)) {
                self.inner.metrics.conflict(&events);
            }
        })?;
        self.inner.fence.saw(committed.seq, &committed.counters);
        self.inner.fence.saw_at(committed.seq, now);
        self.inner.metrics.committed(&events, committed.case.as_ref(), now);
        self.observe(committed.case.clone(), committed.agent.clone(), now);
        Ok(Written { committed, events, now })
    }
}
