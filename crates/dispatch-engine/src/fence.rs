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
    /// From the start of a reconcile until its restore is written (or it found nothing lost):
    /// the index is what the restore is made of, and a record missing from the store may be
    /// one the store lost and the restore is about to put back.
    putting_back: AtomicBool,
    /// Reconciles begun and restores written: a read that straddles either cannot tell a record
    /// gone from one lost.
    steps: AtomicU64,
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
    /// When marks were seen (mark, store time), oldest first, one a tenth of a second at most:
    /// maps the mark a lossy store still had to the time its loss began.
    timeline: Mutex<VecDeque<(u64, Millis)>>,
    /// Losses that reached beyond what this dispatcher remembers, and the ids it can name.
    beyond: Mutex<(u64, Vec<dispatch_domain::CaseId>)>,
}

/// How many (mark, time) samples the timeline keeps: ten minutes at one every 100 ms.
const TIMELINE: usize = 6_000;

impl Fence {
    pub(crate) fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            window_until: AtomicI64::new(Millis::MIN),
            reconciling: AtomicBool::new(false),
            putting_back: AtomicBool::new(false),
            steps: AtomicU64::new(0),
            wake: Notify::new(),
            reconciles: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(0).0,
            seen: Mutex::new(Marks::default()),
            restored_epoch: AtomicU64::new(0),
            timeline: Mutex::new(VecDeque::new()),
            beyond: Mutex::new((0, Vec::new())),
        }
    }

    /// Notes when a mark was seen (store time).
    pub(crate) fn saw_at(&self, high_water: u64, now: Millis) {
        if high_water == 0 {
            return;
        }
        let mut t = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.back().is_some_and(|(m, at)| *m >= high_water || now - *at < 100) {
            return;
        }
        if t.len() == TIMELINE {
            t.pop_front();
        }
        t.push_back((high_water, now));
    }

    /// Since when writes are missing from a store that still had mark `found`: the time of the
    /// last sample at or below it (the first write above it came after); the beginning of time
    /// if even the oldest sample is above it (the loss reaches past the timeline).
    pub(crate) fn lost_since(&self, found: u64) -> Millis {
        let t = self.timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match t.iter().position(|(m, _)| *m > found) {
            Some(0) => Millis::MIN,
            Some(i) => t[i - 1].1,
            None => t.back().map_or(Millis::MIN, |(_, at)| *at),
        }
    }

    /// Records a loss beyond memory, with the case ids it can name.
    pub(crate) fn lost_beyond_memory(&self, ids: Vec<dispatch_domain::CaseId>) {
        let mut b = self.beyond.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.0 += 1;
        b.1 = ids;
    }

    /// Losses beyond memory so far, and the ids named by the last one.
    pub(crate) fn losses_beyond_memory(&self) -> (u64, Vec<dispatch_domain::CaseId>) {
        self.beyond.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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
    /// knows for it (a restore that failed is made again).
    pub(crate) fn needs_restore(&self, epoch: Epoch) -> bool {
        epoch.began_after_restart_at.is_some() && self.restored_epoch.load(Ordering::SeqCst) < epoch.number
    }

    /// This dispatcher's restore for `epoch` is in.
    pub(crate) fn restored(&self, epoch: Epoch) {
        self.restored_epoch.fetch_max(epoch.number, Ordering::SeqCst);
        self.putting_back.store(false, Ordering::SeqCst);
        self.steps.fetch_add(1, Ordering::SeqCst);
    }

    /// A mark to take before reading a record that the index holds: see [`Fence::may_be_lost`].
    pub(crate) fn read_mark(&self) -> u64 {
        self.steps.load(Ordering::SeqCst)
    }

    /// Whether a record that a read begun at `mark` found missing may be one the store lost
    /// rather than one that is gone: a reconcile began or wrote its restore since (the read may
    /// have seen the store before the restore), or one is making its restore from the index
    /// right now. Such a
    /// record stays in the index, so that this dispatcher's restore still puts it back. (That
    /// the store did not restart since this dispatcher joined its epoch is for the store to
    /// say: [`Store::check_epoch`](crate::store::Store::check_epoch).)
    pub(crate) fn may_be_lost(&self, mark: u64) -> bool {
        self.putting_back.load(Ordering::SeqCst) || self.steps.load(Ordering::SeqCst) != mark
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
        // Flag first, then the count: a read marked after the count still sees the flag.
        self.putting_back.store(on, Ordering::SeqCst);
        if on {
            self.steps.fetch_add(1, Ordering::SeqCst);
        }
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

/// Cases that closed lately, oldest first, to put back after a loss: kept for `keep_ms` (store
/// clock) and at most `max_bytes` (approximately). Copies are slim: offers without their
/// explanations (what a restore needs is the state and the history, not why each offer went
/// where it went). Cases pushed out by the byte bound before their time are listed as
/// forgotten, so that a loss reaching back to them can be reported by id.
pub(crate) struct ClosedMemory {
    keep_ms: u64,
    max_bytes: usize,
    inner: Mutex<Closed>,
}

#[derive(Default)]
struct Closed {
    /// (closed at, slim copy, approximate bytes).
    recent: VecDeque<(Millis, Case, usize)>,
    bytes: usize,
    /// Cases pushed out by the byte bound before `keep_ms` had passed: (closed at, id).
    forgotten: VecDeque<(Millis, dispatch_domain::CaseId)>,
}

/// How many forgotten ids are kept for a report.
const FORGOTTEN: usize = 10_000;

fn approx_bytes(c: &Case) -> usize {
    256 + c.spec.summary.len() + c.close_reason.len() + 128 * c.offers.len() + 64 * c.excluded.len()
}

impl ClosedMemory {
    pub(crate) fn new(keep_ms: u64, max_bytes: usize) -> Self {
        Self { keep_ms, max_bytes, inner: Mutex::new(Closed::default()) }
    }

    /// Remembers a case that closed at `now`.
    pub(crate) fn remember(&self, case: &Case, now: Millis) {
        let mut slim = case.clone();
        for o in &mut slim.offers {
            o.explanation = dispatch_domain::state::Explanation::default();
        }
        let bytes = approx_bytes(&slim);
        let mut m = self.pruned(now);
        m.bytes += bytes;
        m.recent.push_back((now, slim, bytes));
        while m.bytes > self.max_bytes {
            let Some((at, gone, b)) = m.recent.pop_front() else { break };
            m.bytes -= b;
            if m.forgotten.len() == FORGOTTEN {
                m.forgotten.pop_front();
            }
            m.forgotten.push_back((at, gone.id().clone()));
        }
    }

    /// Cases closed within `keep_ms` of `now` (those the byte bound left).
    pub(crate) fn recent(&self, now: Millis) -> Vec<Case> {
        self.pruned(now).recent.iter().map(|(_, c, _)| c.clone()).collect()
    }

    /// From when on this memory holds every case that closed (store clock): `keep_ms` before
    /// `now`, or later if the byte bound pushed younger cases out.
    pub(crate) fn covered_from(&self, now: Millis) -> Millis {
        let m = self.pruned(now);
        let by_time = now - self.keep_ms as i64;
        m.forgotten.back().map_or(by_time, |(at, _)| by_time.max(*at + 1))
    }

    /// Ids of cases closed at or after `since` that the byte bound pushed out.
    pub(crate) fn forgotten_since(&self, since: Millis) -> Vec<dispatch_domain::CaseId> {
        let m = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.forgotten.iter().filter(|(at, _)| *at >= since).map(|(_, id)| id.clone()).collect()
    }

    fn pruned(&self, now: Millis) -> std::sync::MutexGuard<'_, Closed> {
        // A poisoned lock still holds a consistent queue: every mutation keeps `bytes` in step.
        let mut m = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let horizon = now - self.keep_ms as i64;
        while m.recent.front().is_some_and(|(at, _, _)| *at < horizon) {
            if let Some((_, _, b)) = m.recent.pop_front() {
                m.bytes -= b;
            }
        }
        while m.forgotten.front().is_some_and(|(at, _)| *at < horizon) {
            m.forgotten.pop_front();
        }
        m
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
        f.joined(Epoch { number: 1, ..Epoch::default() });
        assert!(!f.closed(0), "a first epoch opens no window");
        f.joined(Epoch { number: 2, began_after_restart_at: Some(10_000), lost_after: Some(0) });
        assert!(f.closed(11_999));
        assert!(!f.closed(12_000));
        // An older epoch's news never shortens the window.
        f.joined(Epoch { number: 2, began_after_restart_at: Some(5_000), lost_after: Some(0) });
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
            Marks { high_water: 10, counters: vec![(Counter::Submitted, 5), (Counter::Completed, 1)], closed: vec![] }
        );
        f.started_in(Epoch { number: 1, ..Epoch::default() });
        assert!(!f.needs_restore(Epoch { number: 2, ..Epoch::default() }), "nothing was lost");
        let lossy = Epoch { number: 3, began_after_restart_at: Some(5), lost_after: Some(0) };
        assert!(f.needs_restore(lossy));
        assert!(f.needs_restore(lossy), "until it is done");
        f.restored(lossy);
        assert!(!f.needs_restore(lossy), "once");
    }

    #[test]
    fn closed_cases_are_kept_for_the_configured_time() {
        let m = ClosedMemory::new(1_000, usize::MAX);
        m.remember(&case("a"), 0);
        m.remember(&case("b"), 600);
        assert_eq!(m.recent(1_000).len(), 2);
        let left: Vec<String> = m.recent(1_500).iter().map(|c| c.id().to_string()).collect();
        assert_eq!(left, ["b"]);
        assert_eq!(m.covered_from(1_500), 500);
    }

    #[test]
    fn the_byte_bound_forgets_the_oldest_and_says_so() {
        let one = approx_bytes(&case("a"));
        let m = ClosedMemory::new(60_000, 2 * one);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            m.remember(&case(id), 1_000 * i as i64);
        }
        let kept: Vec<String> = m.recent(3_000).iter().map(|c| c.id().to_string()).collect();
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(m.covered_from(3_000), 1, "complete only after the forgotten case closed");
        assert_eq!(m.forgotten_since(0).iter().map(ToString::to_string).collect::<Vec<_>>(), ["a"]);
        assert!(m.forgotten_since(1).is_empty());
    }

    #[test]
    fn a_loss_is_dated_by_the_first_mark_seen_above_what_the_store_kept() {
        let f = Fence::new(0);
        for (mark, at) in [(10, 1_000), (20, 2_000), (30, 3_000)] {
            f.saw_at(mark, at);
        }
        assert_eq!(f.lost_since(25), 2_000, "writes after mark 25 were seen from after 2 s on");
        assert_eq!(f.lost_since(5), Millis::MIN, "before what the timeline reaches: unknown");
        assert_eq!(f.lost_since(30), 3_000, "after the last sample");
    }
}
