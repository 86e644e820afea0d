//! Cases: what routers submit, read, cancel and watch.

use std::collections::VecDeque;
use std::sync::Arc;

use dispatch_domain::demand::WaitEstimate;
use dispatch_domain::model::CaseSpec;
use dispatch_domain::{Case, CaseId, Change, FieldError, Millis, Rejection, TenantId, transition};
use tokio::sync::broadcast;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::watchers::{CaseEvent, CaseEventKind};
use crate::write::Load;

/// A case as seen by a caller scoped to `tenant` (`None`: every case). Another tenant's case
/// is NOT_FOUND: a router never learns that it exists.
fn scoped<'a>(case: Option<&'a Case>, id: &CaseId, tenant: Option<&TenantId>) -> Result<&'a Case, Rejection> {
    case.filter(|c| c.visible_to(tenant)).ok_or_else(|| Rejection::not_found("case", id))
}

/// The stored id of the case that a caller scoped to `tenant` names `id`: that tenant's own
/// (`<tenant>/<id>`), so that two tenants may use the same id without learning of each other.
/// Unscoped callers (operators, development mode) name cases as stored.
fn stored_id(id: &CaseId, tenant: Option<&TenantId>) -> Result<CaseId, Rejection> {
    match tenant {
        None => Ok(id.clone()),
        Some(_) if id.is_scoped() => {
            Err(FieldError::new("case_id", "a router names its cases by its own ids, without a tenant prefix").into())
        }
        Some(t) => Ok(CaseId::scoped(t, id)),
    }
}

impl Engine {
    /// Reads the case that a caller scoped to `tenant` names `id`: its stored id and record. A
    /// record stored before case ids were scoped by tenant (under the plain id, naming the
    /// tenant) is read as it is.
    async fn read_case(
        &self,
        id: &CaseId,
        tenant: Option<&TenantId>,
    ) -> Result<(CaseId, Option<Case>, Millis), EngineError> {
        let key = stored_id(id, tenant)?;
        let read = self.inner.store.read(Some(&key), None).await?;
        if read.case.is_some() || tenant.is_none() {
            return Ok((key, read.case, read.now));
        }
        let legacy = self.inner.store.read(Some(id), None).await?;
        match legacy.case.filter(|c| c.visible_to(tenant)) {
            Some(c) => Ok((id.clone(), Some(c), legacy.now)),
            None => Ok((key, None, read.now)),
        }
    }

    /// The stored id a submission of `id` by a caller scoped to `tenant` is filed under: the
    /// tenant's own ([`stored_id`]), unless a record stored before case ids were scoped (under
    /// the plain id, naming the tenant) exists. Whether the case itself exists is left to the
    /// submission's compare-and-set, so only a scoped caller's id the index does not hold costs
    /// a read (of the plain id).
    async fn submission_id(&self, id: &CaseId, tenant: Option<&TenantId>) -> Result<CaseId, EngineError> {
        let key = stored_id(id, tenant)?;
        if tenant.is_none() || self.inner.index.case(&key).is_some() {
            return Ok(key);
        }
        let legacy = match self.inner.index.case(id) {
            Some(c) => c.visible_to(tenant),
            None => self.inner.store.read(Some(id), None).await?.case.is_some_and(|c| c.visible_to(tenant)),
        };
        Ok(if legacy { id.clone() } else { key })
    }

    /// Submits a case for `tenant`; a retry with the same payload returns the existing case
    /// (`false`). With the store's time. The stored case's id is the tenant's own (see
    /// [`CaseId::scoped`]).
    pub async fn submit(
        &self,
        mut spec: CaseSpec,
        tenant: Option<TenantId>,
    ) -> Result<(Case, bool, Millis), EngineError> {
        let id = self.submission_id(&spec.id, tenant.as_ref()).await?;
        let at = self.now().await?;
        spec.id = id.clone();
        // The estimate's inputs, gathered once (the index and the cached rates); the estimate is
        // made at the store time the submission is decided.
        let inputs = self.estimate_for(&Case::new(spec.clone(), at), at).await;
        let mut existing: Option<Case> = None;
        let out = self
            .transact(Load::Case(&id), |case, _, now| match case {
                Some(c) => {
                    transition::resubmit(c, &spec, tenant.as_ref())?;
                    existing = Some(c.clone());
                    Ok(Change::default())
                }
                None => {
                    let policy = &self.inner.policy;
                    let mut change = transition::submit(spec.clone(), tenant.clone(), now, policy);
                    if let Some(c) = change.case.as_mut() {
                        c.trace = crate::telemetry::current_traceparent();
                    }
                    if let Some(c) = change.case.clone() {
                        let estimate = WaitEstimate::of(&inputs, now);
                        transition::estimate(&c, &mut change, estimate, now, policy);
                    }
                    Ok(change)
                }
            })
            .await?;
        match (out.committed.case, existing) {
            (Some(c), _) => Ok((c, true, out.now)),
            (None, Some(c)) => Ok((c, false, out.now)),
            (None, None) => Err(EngineError::Internal("submit stored no case".into())),
        }
    }

    /// A case, as seen by a caller scoped to `tenant` (who names it by its own id), and the
    /// store's time.
    pub async fn get_case(&self, id: &CaseId, tenant: Option<&TenantId>) -> Result<(Case, Millis), EngineError> {
        let (_, case, now) = self.read_case(id, tenant).await?;
        match scoped(case.as_ref(), id, tenant) {
            Ok(c) => Ok((c.clone(), now)),
            Err(rejection) => Err(self.refusal(rejection, now).await),
        }
    }

    /// Cancels a case, revoking its offer or releasing its agent.
    pub async fn cancel(
        &self,
        id: &CaseId,
        reason: &str,
        tenant: Option<&TenantId>,
    ) -> Result<(Case, Millis), EngineError> {
        let (key, _, _) = self.read_case(id, tenant).await?;
        let mut unchanged: Option<Case> = None;
        let out = self
            .transact(Load::CaseAndItsAgent(&key), |case, agent, now| {
                let case = scoped(case, id, tenant)?;
                unchanged = Some(case.clone());
                transition::cancel(case, agent, reason, now, &self.inner.policy)
            })
            .await?;
        out.committed
            .case
            .or(unchanged)
            .map(|c| (c, out.now))
            .ok_or_else(|| EngineError::Internal("cancel read no case".into()))
    }

    /// The customer's rating of a completed case (1–5; `controllable`: the agent could
    /// influence it), for the agent's reputation. Idempotent per case.
    pub async fn rate_case(
        &self,
        id: &CaseId,
        rating: dispatch_domain::reputation::CaseRating,
        tenant: Option<&TenantId>,
    ) -> Result<(Case, Millis), EngineError> {
        let (key, _, _) = self.read_case(id, tenant).await?;
        let mut unchanged: Option<Case> = None;
        let out = self
            .transact(Load::CaseAndItsLastAgent(&key), |case, agent, now| {
                let case = scoped(case, id, tenant)?;
                unchanged = Some(case.clone());
                let rating = dispatch_domain::reputation::CaseRating { at: now, ..rating };
                transition::rate(case, agent, rating, &self.inner.policy)
            })
            .await?;
        out.committed
            .case
            .or(unchanged)
            .map(|c| (c, out.now))
            .ok_or_else(|| EngineError::Internal("rate read no case".into()))
    }

    /// Watches a case: its snapshot first, then its events; the watch ends after a terminal
    /// event (at once after the snapshot of a case that is over).
    pub async fn watch_case(&self, id: &CaseId, tenant: Option<&TenantId>) -> Result<CaseWatch, EngineError> {
        let (case, now) = self.get_case(id, tenant).await?;
        let mut watch = CaseWatch {
            engine: self.clone(),
            id: id.clone(),
            key: case.id().clone(),
            tenant: tenant.cloned(),
            pending: VecDeque::from([CaseEvent::snapshot(&case, now)]),
            rx: None,
            seen: case.clone(),
            done: false,
        };
        if case.state.is_terminal() {
            return Ok(watch);
        }
        let rx = self
            .inner
            .delivery
            .watchers
            .subscribe(case.id())
            .map_err(|l| EngineError::Exhausted(format!("{} case watches are open; watch again later", l.0)))?;
        watch.rx = Some(rx);
        // Read again after subscribing: nothing between the two reads is missed.
        if let Ok((case, now)) = self.get_case(id, tenant).await {
            watch.pending = VecDeque::from([CaseEvent::snapshot(&case, now)]);
            watch.seen = case;
        }
        Ok(watch)
    }
}

/// One router's watch of one case (see [`Engine::watch_case`]). Its state is freed when it is
/// dropped, and the case's entry with its last watcher.
pub struct CaseWatch {
    engine: Engine,
    /// As the watcher named it.
    id: CaseId,
    /// As stored (the watchers' key).
    key: CaseId,
    tenant: Option<TenantId>,
    /// Events derived and not yet taken (the snapshot first).
    pending: VecDeque<CaseEvent>,
    /// New versions of the case, from the one delivery path.
    rx: Option<broadcast::Receiver<Arc<Case>>>,
    /// The version this watch has reported up to: new events are derived from it.
    seen: Case,
    done: bool,
}

impl CaseWatch {
    /// The next event; `None` after a terminal one.
    pub async fn next(&mut self) -> Option<CaseEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.done = ev.kind.is_terminal() || (ev.kind == CaseEventKind::Snapshot && ev.state.is_terminal());
                return Some(ev);
            }
            if self.done {
                return None;
            }
            match self.rx.as_mut()?.recv().await {
                Ok(after) if after.version <= self.seen.version => {}
                Ok(after) => {
                    let events = transition::case_events(Some(&self.seen), &after);
                    self.pending.extend(events.iter().filter_map(|ev| CaseEvent::of(ev, &after)));
                    if events.is_empty() && after.estimate != self.seen.estimate {
                        self.pending.extend(CaseEvent::estimated(&after));
                    }
                    self.seen = Arc::unwrap_or_clone(after);
                }
                // Too slow: resynchronise with a fresh snapshot.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (case, now) = self.engine.get_case(&self.id, self.tenant.as_ref()).await.ok()?;
                    self.pending.push_back(CaseEvent::snapshot(&case, now));
                    self.seen = case;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for CaseWatch {
    fn drop(&mut self) {
        if self.rx.take().is_some() {
            self.engine.inner.delivery.watchers.release(&self.key);
        }
    }
}
