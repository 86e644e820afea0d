//! The one write path. Every change to the store passes [`Engine::gated`]: refused while the
//! epoch fence is closed (a reconcile is under way), and a fenced store error wakes the
//! reconcile. Transitions go read → decide → [`Engine::commit`] with compare-and-set, retried
//! on conflict ([`Engine::transact`]); offers are decided on the index's records and committed
//! the same way; agent removal, lease renewals and purges pass the same gate. Every committed
//! record then goes through the one delivery path (`delivery.rs`).

use std::future::Future;
use std::sync::Arc;

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

/// The records a load names, as the index holds them (`None`: absent), and which of the two
/// slots it names at all.
struct Indexed {
    case: Option<Arc<Case>>,
    agent: Option<Arc<Agent>>,
    names_case: bool,
    names_agent: bool,
}

impl Indexed {
    /// Whether `change` writes every record the decision read (or found absent): each is then
    /// checked by compare-and-set, so a commit that succeeds was decided on the store's records.
    fn covered_by(&self, change: &Change) -> bool {
        (!self.names_case || change.case.is_some()) && (!self.names_agent || change.agent.is_some())
    }
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

    /// The records `load` names as the index holds them, for a first decision without a read.
    /// `None` when the index cannot stand in for the store: it lacks a record the load names
    /// through another (the agent a case names, the case an agent's offer names), or the case
    /// closed (the index keeps only live ones).
    fn load_indexed(&self, load: &Load<'_>) -> Option<Indexed> {
        let index = &self.inner.index;
        let case = |id: &CaseId| match index.case(id) {
            Some(c) => Some(Some(c)),
            None if index.closed(id).is_some() => None,
            None => Some(None),
        };
        let named_agent = |id: &AgentId| index.agent(id).map(Some);
        // (case, agent, whether the case slot is named, whether the agent slot is)
        let (case, agent, names_case, names_agent) = match load {
            Load::Case(id) => (case(id)?, None, true, false),
            Load::Agent(id) => (None, index.agent(id), false, true),
            Load::CaseAndAgent(c, a) => (case(c)?, index.agent(a), true, true),
            Load::CaseAndItsAgent(id) | Load::CaseAndItsLastAgent(id) => {
                let c = case(id)?;
                let last = matches!(load, Load::CaseAndItsLastAgent(_));
                let named = c.as_ref().and_then(|c| c.current_agent().or(c.completed_by().filter(|_| last)).cloned());
                match named {
                    Some(a) => (c, named_agent(&a)?, true, true),
                    None => (c, None, true, false),
                }
            }
            Load::AgentAndPendingCase(id) => {
                let a = index.agent(id);
                match a.as_ref().and_then(|a| a.pending_offer.as_ref()).map(|p| p.case_id.clone()) {
                    Some(c) => (Some(index.case(&c)?), a, true, true),
                    None => (None, a, false, true),
                }
            }
        };
        Some(Indexed { case, agent, names_case, names_agent })
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
        // First on the index's records, with no read: the compare-and-set on every record the
        // decision rests on is what makes that safe (a stale record only costs a conflict). A
        // refusal or a no-op rests on what was read, so it is decided again on the store's
        // records, as is a change that leaves alone a record it read (nothing would check it).
        if let Some(indexed) = self.load_indexed(&load) {
            let now = self.now().await?;
            if !self.inner.fence.closed(now)
                && let Ok(change) = decide(indexed.case.as_deref(), indexed.agent.as_deref(), now)
                && !change.is_noop()
                && indexed.covered_by(&change)
            {
                match self.commit(change, now).await {
                    Ok(out) => return Ok(out),
                    Err(StoreError::Conflict(what)) => debug!(%what, "the index was stale, reading the records"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
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
        let Change { case, agent, events, timers, disarm } = change.settle(now, &self.inner.policy);
        let counters: Vec<(Counter, i64)> = events.iter().flat_map(Event::counters).collect();
        let segment = match case.as_ref() {
            Some(c) => self.segment_write(c, &events, now),
            None => dispatch_domain::demand::invitation_counts(&events).map(|(segment, counts)| {
                crate::store::SegmentWrite { bucket: dispatch_domain::demand::bucket_of(now), segment, counts }
            }),
        };
        let commit = Commit { case, agent, timers, disarm, counters, segment };
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
