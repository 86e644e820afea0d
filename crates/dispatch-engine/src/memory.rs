//! The embedded store: everything in one process, behind one mutex held only for the few
//! microseconds of a read or a commit (never across an `.await`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use dispatch_domain::demand::{BucketCount, SegmentCounter};
use dispatch_domain::{Agent, AgentId, Case, CaseId, CaseState, Millis, OfferId, TimerKey};

use crate::clock::Clock;
use crate::store::{
    ChangeBatch, Commit, Committed, Counter, Marks, Restore, Snapshot, Store, StoreError, next_version,
};

/// In-memory [`Store`].
pub struct MemoryStore {
    clock: Clock,
    inner: Mutex<Mem>,
    /// Tests: the store "restarted" and lost writes; epoch checks are fenced until it is over.
    #[cfg(test)]
    lost: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Mem {
    agents: BTreeMap<AgentId, Agent>,
    cases: HashMap<CaseId, Case>,
    /// Offer → case, for accepts and declines that name only the offer.
    offers: HashMap<OfferId, CaseId>,
    /// Timers by due time.
    timers: BTreeSet<(Millis, TimerKey)>,
    /// Each armed timer's due time.
    timer_due: HashMap<TimerKey, Millis>,
    counters: BTreeMap<Counter, i64>,
    /// Shared state records: version and body.
    states: HashMap<String, (u64, String)>,
    /// Demand-segment counts by (bucket, segment, counter).
    segments: BTreeMap<(Millis, String, SegmentCounter), i64>,
    /// Closings restores reported (see [`Marks::closed`]): never revived.
    closed: HashMap<CaseId, u64>,
    /// Changes of the scoring weights, oldest first.
    weights: Vec<dispatch_domain::transparency::WeightChange>,
}

impl Mem {
    /// Arms a timer, moving it if it is armed already.
    fn arm(&mut self, key: TimerKey, due: Millis) {
        if let Some(old) = self.timer_due.insert(key.clone(), due) {
            self.timers.remove(&(old, key.clone()));
        }
        self.timers.insert((due, key));
    }
}

impl MemoryStore {
    /// An empty store on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            inner: Mutex::new(Mem::default()),
            #[cfg(test)]
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tests: the store comes back without these records, as Redis does after a crash that lost
    /// its last second, and fences epoch checks until [`MemoryStore::end_loss`].
    #[cfg(test)]
    pub(crate) fn lose(&self, case: Option<&CaseId>, agent: Option<&AgentId>) {
        let mut mem = self.lock();
        if let Some(c) = case {
            mem.cases.remove(c);
        }
        if let Some(a) = agent {
            mem.agents.remove(a);
        }
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Tests: the dispatchers joined the store's new epoch.
    #[cfg(test)]
    pub(crate) fn end_loss(&self) {
        self.lost.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        // A panic while holding the lock cannot leave a half-written commit (every check comes
        // before the first write), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn check<T>(stored: Option<&T>, version: impl Fn(&T) -> u64, expected: u64, what: &str) -> Result<(), StoreError> {
    let actual = stored.map_or(0, version);
    if actual == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("{what}: expected version {expected}, found {actual}")))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn now(&self) -> Result<Millis, StoreError> {
        Ok(self.clock.now())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_case(&self, id: &CaseId) -> Result<(), StoreError> {
        let mut mem = self.lock();
        if mem.cases.get(id).is_some_and(|c| c.state.is_terminal())
            && let Some(c) = mem.cases.remove(id)
        {
            for o in &c.offers {
                mem.offers.remove(&o.id);
            }
        }
        Ok(())
    }

    /// One process owns the memory store and sees its own commits: the log is always empty.
    async fn change_cursor(&self) -> Result<String, StoreError> {
        Ok(String::new())
    }

    async fn changes(&self, cursor: &str, _limit: usize) -> Result<ChangeBatch, StoreError> {
        Ok(ChangeBatch {
            changes: Vec::new(),
            cursor: cursor.to_owned(),
            gap: false,
            fenced: false,
            high_water: 0,
            oldest_at: None,
        })
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.lock().agents.get(id).cloned())
    }

    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        let mem = self.lock();
        let iter: Box<dyn Iterator<Item = &Agent>> = match after {
            Some(a) => Box::new(
                mem.agents
                    .range::<AgentId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .map(|(_, v)| v),
            ),
            None => Box::new(mem.agents.values()),
        };
        Ok(iter.take(limit).cloned().collect())
    }

    async fn remove_agent(&self, id: &AgentId, version: u64) -> Result<(), StoreError> {
        let mut mem = self.lock();
        check(mem.agents.get(id), |a| a.version, version, &format!("agent {id}"))?;
        mem.agents.remove(id);
        Ok(())
    }

    async fn get_case(&self, id: &CaseId) -> Result<Option<Case>, StoreError> {
        Ok(self.lock().cases.get(id).cloned())
    }

    async fn offer_case(&self, offer: &OfferId) -> Result<Option<CaseId>, StoreError> {
        Ok(self.lock().offers.get(offer).cloned())
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        let mut mem = self.lock();
        // Every condition first: nothing is written unless all hold.
        if let Some(c) = &commit.case {
            check(mem.cases.get(c.id()), |x| x.version, c.version, &format!("case {}", c.id()))?;
        }
        if let Some(a) = &commit.agent {
            check(mem.agents.get(a.id()), |x| x.version, a.version, &format!("agent {}", a.id()))?;
        }
        let mut out = Committed::default();
        // The embedded store lives as long as its dispatcher: one epoch, never a loss.
        if let Some(mut c) = commit.case {
            c.version = next_version(c.version, 1);
            if let CaseState::Offered { offer_id, .. } = &c.state {
                mem.offers.insert(offer_id.clone(), c.id().clone());
            }
            mem.cases.insert(c.id().clone(), c.clone());
            out.case = Some(c);
        }
        if let Some(mut a) = commit.agent {
            a.version = next_version(a.version, 1);
            mem.agents.insert(a.id().clone(), a.clone());
            out.agent = Some(a);
        }
        for key in commit.disarm {
            if let Some(due) = mem.timer_due.remove(&key) {
                mem.timers.remove(&(due, key));
            }
        }
        for (key, due) in commit.timers {
            mem.arm(key, due);
        }
        for (counter, delta) in commit.counters {
            let total = mem.counters.entry(counter).or_default();
            *total += delta;
            out.counters.push((counter, *total));
        }
        if let Some(seg) = commit.segment {
            for (counter, delta) in seg.counts {
                *mem.segments.entry((seg.bucket, seg.segment.clone(), counter)).or_default() += delta;
            }
            // Buckets past retention go (the oldest first, so this stops at once).
            let horizon = seg.bucket - dispatch_domain::demand::RETENTION_MS;
            while mem.segments.first_key_value().is_some_and(|((b, _, _), _)| *b < horizon) {
                mem.segments.pop_first();
            }
        }
        Ok(out)
    }

    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<(TimerKey, Millis)>, StoreError> {
        let mem = self.lock();
        Ok(mem.timers.iter().take_while(|(due, _)| *due <= now).take(limit).map(|(d, k)| (k.clone(), *d)).collect())
    }

    async fn clear_timer(&self, key: &TimerKey, due: Millis) -> Result<(), StoreError> {
        let mut mem = self.lock();
        if mem.timer_due.get(key) == Some(&due) {
            mem.timer_due.remove(key);
            mem.timers.remove(&(due, key.clone()));
        }
        Ok(())
    }

    async fn counters(&self) -> Result<Vec<(Counter, i64)>, StoreError> {
        Ok(self.lock().counters.iter().map(|(k, v)| (*k, *v)).collect())
    }

    async fn get_state(&self, name: &str) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.lock().states.get(name).cloned())
    }

    async fn put_state(&self, name: &str, expected: u64, body: &str) -> Result<bool, StoreError> {
        let mut mem = self.lock();
        let now = mem.states.get(name).map_or(0, |(v, _)| *v);
        if now != expected {
            return Ok(false);
        }
        mem.states.insert(name.to_owned(), (now + 1, body.to_owned()));
        Ok(true)
    }

    async fn segment_counts(&self, since: Millis) -> Result<Vec<BucketCount>, StoreError> {
        let mem = self.lock();
        Ok(mem
            .segments
            .range((since, String::new(), SegmentCounter::ALL[0])..)
            .map(|((bucket, segment, counter), total)| BucketCount {
                bucket: *bucket,
                segment: segment.clone(),
                counter: *counter,
                total: *total,
            })
            .collect())
    }

    async fn log_weights(&self, change: &dispatch_domain::transparency::WeightChange) -> Result<bool, StoreError> {
        let mut mem = self.lock();
        if mem.weights.last().is_some_and(|l| l.key() == change.key()) {
            return Ok(false);
        }
        mem.weights.push(change.clone());
        let excess = mem.weights.len().saturating_sub(dispatch_domain::transparency::WEIGHT_LOG);
        mem.weights.drain(..excess);
        Ok(true)
    }

    async fn weight_log(&self, limit: usize) -> Result<Vec<dispatch_domain::transparency::WeightChange>, StoreError> {
        Ok(self.lock().weights.iter().rev().take(limit).cloned().collect())
    }

    async fn restore(&self, records: Vec<Restore>, marks: &Marks) -> Result<usize, StoreError> {
        let mut mem = self.lock();
        for (counter, total) in &marks.counters {
            let stored = mem.counters.entry(*counter).or_default();
            *stored = (*stored).max(*total);
        }
        for (id, v) in &marks.closed {
            let stored = mem.closed.entry(id.clone()).or_default();
            *stored = (*stored).max(*v);
        }
        let mut written = 0;
        for r in records {
            let timers = match r {
                Restore::Case(c, timers) => {
                    let closed_at = mem.closed.get(c.id()).copied().unwrap_or(0);
                    if mem.cases.get(c.id()).is_some_and(|s| s.version >= c.version)
                        || (closed_at >= c.version && !c.state.is_terminal())
                    {
                        continue;
                    }
                    for o in &c.offers {
                        mem.offers.insert(o.id.clone(), c.id().clone());
                    }
                    mem.cases.insert(c.id().clone(), c);
                    timers
                }
                Restore::Agent(a, timers) => {
                    if mem.agents.get(a.id()).is_some_and(|s| s.version >= a.version) {
                        continue;
                    }
                    mem.agents.insert(a.id().clone(), a);
                    timers
                }
            };
            written += 1;
            for (key, due) in timers {
                mem.arm(key, due);
            }
        }
        Ok(written)
    }

    #[cfg(test)]
    async fn check_epoch(&self) -> Result<(), StoreError> {
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Fenced("the store restarted and lost writes".into()));
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mem = self.lock();
        Ok(Snapshot {
            agents: mem.agents.values().cloned().collect(),
            live_cases: mem.cases.values().filter(|c| !c.state.is_terminal()).cloned().collect(),
        })
    }
}
