//! The epoch fence: while a reconcile after a store restart is under way (this dispatcher
//! restoring, or the window every dispatcher waits out so that all restores land first), writes
//! and refusals wait; a write the store fenced wakes the change-log follower to reconcile at
//! once. Also the memory of lately closed cases that a reconcile puts back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use dispatch_domain::{Case, Millis};
use tokio::sync::Notify;

use crate::store::{Counter, Epoch, Marks, StoreError};

/// See the module docs.
pub(crate) struct Fence {
    /// How long writes wait after a restart (store clock).
    window_ms: u64,
    /// Until then (store clock) only restores are written.
    window_until: AtomicI64,
    /// This dispatcher is restoring right now (set before it joins the new epoch).
    reconciling: AtomicBool,
    /// Wakes the follower to reconcile at once (a write was fenced).
    wake: Notify,
    /// Reconciles done (for tests and logs).
    reconciles: AtomicU64,
    /// Bumped when the fence closes or opens (readiness follows at once).
    changed: tokio::sync::watch::Sender<u64>,
    /// What this dispatcher saw written: the highest high-water mark and counter totals (from
    /// its own commits and the change log). A store behind the mark lost writes.
    seen: Mutex<Marks>,
    /// The last epoch this dispatcher put back what it knows for (or started in).
    restored_epoch: AtomicU64,
}

impl Fence {
    pub(crate) fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            window_until: AtomicI64::new(Millis::MIN),
            reconciling: AtomicBool::new(false),
            wake: Notify::new(),
            reconciles: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(0).0,
            seen: Mutex::new(Marks::default()),
            restored_epoch: AtomicU64::new(0),
        }
    }

    /// Notes a high-water mark and counter totals seen written.
    pub(crate) fn saw(&self, high_water: u64, counters: &[(Counter, i64)]) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.high_water = seen.high_water.max(high_water);
        if counters.is_empty() {
            return;
        }
        let mut totals: BTreeMap<Counter, i64> = seen.counters.iter().copied().collect();
        for (c, total) in counters {
            let t = totals.entry(*c).or_insert(*total);
            *t = (*t).max(*total);
        }
        seen.counters = totals.into_iter().collect();
    }

    /// What this dispatcher saw written.
    pub(crate) fn seen(&self) -> Marks {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether the store lost writes in `epoch` and this dispatcher has not yet put back what it
    /// knows for it; marks it as done.
    pub(crate) fn needs_restore(&self, epoch: Epoch) -> bool {
        epoch.began_after_restart_at.is_some()
            && self.restored_epoch.fetch_max(epoch.number, Ordering::SeqCst) < epoch.number
    }

    /// Started in `epoch` (a fresh dispatcher has nothing to put back for it).
    pub(crate) fn started_in(&self, epoch: Epoch) {
        self.restored_epoch.fetch_max(epoch.number, Ordering::SeqCst);
    }

    /// A receiver that changes whenever the fence closes or opens.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// After joining `epoch`: if a restart began it, writes wait until its window has passed.
    pub(crate) fn joined(&self, epoch: Epoch) {
        if let Some(at) = epoch.began_after_restart_at {
            self.window_until.fetch_max(at + self.window_ms as i64, Ordering::SeqCst);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Whether writes (and refusals, which may rest on records not yet put back) must wait.
    pub(crate) fn closed(&self, now: Millis) -> bool {
        self.reconciling.load(Ordering::SeqCst) || now < self.window_until.load(Ordering::SeqCst)
    }

    /// A store error on its way out: a fenced one wakes the follower to reconcile at once.
    pub(crate) fn note(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::Fenced(_)) {
            self.wake.notify_one();
        }
        e
    }

    /// Resolves when a fenced write asked for a reconcile.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Marks a reconcile of this dispatcher as running (`true`) or over.
    pub(crate) fn restoring(&self, on: bool) {
        self.reconciling.store(on, Ordering::SeqCst);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Counts a reconcile that finished.
    pub(crate) fn reconciled(&self) {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
    }

    /// Reconciles finished.
    pub(crate) fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::SeqCst)
    }
}

/// What a write or a refusal answers while the fence is closed.
pub(crate) fn reconciling() -> StoreError {
    StoreError::Unavailable("reconciling after a store restart; retry shortly".into())
}

/// Cases that closed lately (store time, case), oldest first, to put back after a loss.
pub(crate) struct ClosedMemory {
    /// How long a closed case is kept (store clock).
    keep_ms: u64,
    recent: Mutex<VecDeque<(Millis, Case)>>,
}

impl ClosedMemory {
    pub(crate) fn new(keep_ms: u64) -> Self {
        Self { keep_ms, recent: Mutex::new(VecDeque::new()) }
    }

    /// Remembers a case that closed at `now`.
    pub(crate) fn remember(&self, case: &Case, now: Millis) {
        self.pruned(now).push_back((now, case.clone()));
    }

    /// Cases closed within `keep_ms` of `now`.
    pub(crate) fn recent(&self, now: Millis) -> Vec<Case> {
        self.pruned(now).iter().map(|(_, c)| c.clone()).collect()
    }

    fn pruned(&self, now: Millis) -> std::sync::MutexGuard<'_, VecDeque<(Millis, Case)>> {
        // A poisoned lock still holds a consistent queue: every mutation is one push or pop.
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let horizon = now - self.keep_ms as i64;
        while recent.front().is_some_and(|(at, _)| *at < horizon) {
            recent.pop_front();
        }
        recent
    }
}

#[cfg(test)]
mod tests {
    use dispatch_domain::model::{CaseSpec, CaseSpecInput};
    use dispatch_domain::{Channel, Level, Tier};

    use super::*;

    fn case(id: &str) -> Case {
        let input = CaseSpecInput {
            id,
            language: "en",
            tier: Some(Tier::Standard),
            channel: Some(Channel::Chat),
            ..Default::default()
        };
        let spec = CaseSpec::parse(input, Level::MIN, &dispatch_domain::limits::Limits::default()).expect("spec");
        Case::new(spec, 0)
    }

    #[test]
    fn writes_wait_out_the_window_after_a_restart_only() {
        let f = Fence::new(2_000);
        f.joined(Epoch { number: 1, began_after_restart_at: None });
        assert!(!f.closed(0), "a first epoch opens no window");
        f.joined(Epoch { number: 2, began_after_restart_at: Some(10_000) });
        assert!(f.closed(11_999));
        assert!(!f.closed(12_000));
        // An older epoch's news never shortens the window.
        f.joined(Epoch { number: 2, began_after_restart_at: Some(5_000) });
        assert!(f.closed(11_999));
    }

    #[test]
    fn a_restore_closes_the_fence_until_it_ends() {
        let f = Fence::new(0);
        f.restoring(true);
        assert!(f.closed(0));
        f.restoring(false);
        assert!(!f.closed(0));
        f.reconciled();
        assert_eq!(f.reconciles(), 1);
    }

    #[tokio::test]
    async fn a_fenced_error_wakes_the_follower_and_others_do_not() {
        let f = Fence::new(0);
        let _ = f.note(StoreError::Unavailable("down".into()));
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), f.woken()).await;
        assert!(quiet.is_err(), "an unavailable store is no reason to reconcile");
        let _ = f.note(StoreError::Fenced("restarted".into()));
        tokio::time::timeout(std::time::Duration::from_secs(5), f.woken()).await.expect("woken");
    }

    #[test]
    fn the_marks_seen_only_grow_and_a_restore_is_owed_once_per_lossy_epoch() {
        let f = Fence::new(0);
        f.saw(10, &[(Counter::Submitted, 5)]);
        f.saw(7, &[(Counter::Submitted, 3), (Counter::Completed, 1)]);
        assert_eq!(
            f.seen(),
            Marks { high_water: 10, counters: vec![(Counter::Submitted, 5), (Counter::Completed, 1)] }
        );
        f.started_in(Epoch { number: 1, began_after_restart_at: None });
        assert!(!f.needs_restore(Epoch { number: 2, began_after_restart_at: None }), "nothing was lost");
        let lossy = Epoch { number: 3, began_after_restart_at: Some(5) };
        assert!(f.needs_restore(lossy));
        assert!(!f.needs_restore(lossy), "once");
    }

    #[test]
    fn closed_cases_are_kept_for_the_configured_time() {
        let m = ClosedMemory::new(1_000);
        m.remember(&case("a"), 0);
        m.remember(&case("b"), 600);
        assert_eq!(m.recent(1_000).len(), 2);
        let left: Vec<String> = m.recent(1_500).iter().map(|c| c.id().to_string()).collect();
        assert_eq!(left, ["b"]);
    }
}
