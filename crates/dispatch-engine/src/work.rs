//! The matcher's work queue ("match this case", "match this agent"), deduplicated, and the
//! minting of offer and session ids.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use dispatch_domain::{AgentId, CaseId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// One item of matching work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Work {
    /// A case is waiting: offer it to the best eligible agent.
    Case(CaseId),
    /// An agent became free: offer it the best waiting case.
    Agent(AgentId),
}

/// See the module docs. A work item queued twice before a worker takes it runs once.
pub(crate) struct WorkQueue {
    tx: mpsc::UnboundedSender<Work>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>>,
    /// Queued and not yet taken.
    pending: Mutex<HashSet<Work>>,
    /// Queued or being worked on: zero when matching has nothing left to do.
    outstanding: tokio::sync::watch::Sender<usize>,
}

impl WorkQueue {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            pending: Mutex::new(HashSet::new()),
            outstanding: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Queues `work` unless it is queued already.
    pub(crate) fn push(&self, work: Work) {
        // A poisoned lock still holds a consistent set: every mutation is one insert or remove.
        let fresh = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(work.clone());
        if fresh {
            self.outstanding.send_modify(|n| *n += 1);
            let _ = self.tx.send(work);
        }
    }

    /// A worker finished an item it took (after any work it queued).
    pub(crate) fn done(&self) {
        self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits until nothing is queued or being worked on.
    pub(crate) async fn settled(&self) {
        let mut rx = self.outstanding.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The next item (shared by every worker); `None` when the queue is closed.
    pub(crate) async fn take(&self) -> Option<Work> {
        let work = self.rx.lock().await.recv().await?;
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&work);
        Some(work)
    }
}

/// The agents (or cases) this process's matcher workers are committing an offer to right now.
/// Workers rank the same pool at the same moment and would otherwise pick the same best agent
/// (two case workers) or the same best case (two workers of agents just freed), and all but one
/// would lose the compare-and-set, read again and decide again; a worker passes over what
/// another one holds. Only a hint: the store's compare-and-set still decides.
pub(crate) struct Claims<K: Eq + std::hash::Hash + Clone> {
    held: dashmap::DashSet<K>,
}

impl<K: Eq + std::hash::Hash + Clone> Default for Claims<K> {
    fn default() -> Self {
        Self { held: dashmap::DashSet::new() }
    }
}

/// What one worker holds until dropped.
pub(crate) struct Claim<'a, K: Eq + std::hash::Hash + Clone> {
    claims: &'a Claims<K>,
    key: K,
}

impl<K: Eq + std::hash::Hash + Clone> Claims<K> {
    /// Holds `key` for the caller; `None` if another worker holds it.
    pub(crate) fn claim(&self, key: &K) -> Option<Claim<'_, K>> {
        self.held.insert(key.clone()).then(|| Claim { claims: self, key: key.clone() })
    }

    /// Whether a worker holds `key`.
    pub(crate) fn held(&self, key: &K) -> bool {
        self.held.contains(key)
    }
}

impl<K: Eq + std::hash::Hash + Clone> Drop for Claim<'_, K> {
    fn drop(&mut self) {
        self.claims.held.remove(&self.key);
    }
}

/// Offer and session ids: random, from a seeded generator in tests.
pub(crate) struct IdMint {
    rng: Mutex<SmallRng>,
}

impl IdMint {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Self { rng: Mutex::new(rng) }
    }

    /// `<prefix>-<16 hex digits>`.
    pub(crate) fn mint(&self, prefix: &str) -> String {
        let n: u64 = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random();
        format!("{prefix}-{n:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str) -> Work {
        Work::Case(CaseId::parse("c", id).unwrap())
    }

    #[tokio::test]
    async fn work_queued_twice_before_it_is_taken_runs_once() {
        let q = WorkQueue::new();
        q.push(case("a"));
        q.push(case("a"));
        q.push(case("b"));
        assert_eq!(q.take().await, Some(case("a")));
        q.push(case("a")); // taken already: queued again
        assert_eq!(q.take().await, Some(case("b")));
        assert_eq!(q.take().await, Some(case("a")));
    }

    #[test]
    fn a_claim_is_held_by_one_worker_until_dropped() {
        let claims: Claims<AgentId> = Claims::default();
        let ana = AgentId::parse("a", "ana").unwrap();
        let first = claims.claim(&ana).expect("free");
        assert!(claims.held(&ana));
        assert!(claims.claim(&ana).is_none(), "another worker passes over her");
        assert!(claims.claim(&AgentId::parse("a", "bo").unwrap()).is_some(), "others stay free");
        drop(first);
        assert!(!claims.held(&ana));
        assert!(claims.claim(&ana).is_some(), "free again once the commit is done");
    }

    #[test]
    fn seeded_ids_repeat() {
        let (a, b) = (IdMint::new(Some(7)), IdMint::new(Some(7)));
        assert_eq!(a.mint("of"), b.mint("of"));
        assert!(a.mint("ss").starts_with("ss-"));
    }
}
