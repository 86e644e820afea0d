//! Demand: the segment counts each commit adds (in its atomic step), the counts read back for
//! estimates (cached for a few seconds of store time), a waiting case's estimated wait, and a
//! planner's view of segments: rates, supply, waits and staffing advice. The rules are the
//! domain's ([`dispatch_domain::demand`]); this gathers their inputs from the store and the
//! index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use dispatch_domain::demand::{
    self, ARRIVAL_WINDOW_MS, Advice, BucketCount, EstimateSources, Rates, SERVICE_WINDOW_MS, Segment, SegmentFilter,
    ServiceTarget, Supply, Totals, WINDOWS_MS, WaitEstimate, WaitInputs,
};
use dispatch_domain::{Case, Event, Millis};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::SegmentWrite;

/// How long counts read for estimates are reused (store time).
const CACHE_MS: Millis = 5_000;
/// How deep the queue is looked at for the cases ahead of one.
const AHEAD_LIMIT: usize = 10_000;

/// How many minutes before the current one a bucket may still be written to (a commit counts
/// into the minute its write began in): older buckets are closed and read once.
const OPEN_BUCKETS: Millis = 2;

type ByBucket = HashMap<Segment, BTreeMap<Millis, Totals>>;

fn add_counts(by_segment: &mut ByBucket, counts: Vec<BucketCount>) {
    for c in counts {
        if let Some(segment) = Segment::parse_key(&c.segment) {
            by_segment.entry(segment).or_default().entry(c.bucket).or_default().add(c.counter, c.total);
        }
    }
}

/// Segment counts by segment and bucket: the closed buckets (shared from the cache, read from
/// the store once) and the open ones (read again each time).
#[derive(Debug, Default)]
pub struct SegmentCounts {
    closed: Arc<ByBucket>,
    open: ByBucket,
}

impl SegmentCounts {
    fn parts(&self) -> impl Iterator<Item = (&Segment, &BTreeMap<Millis, Totals>)> {
        self.closed.iter().chain(self.open.iter())
    }

    /// The totals of the segments `filter` matches over the window ending at `now`.
    pub fn totals(&self, filter: &SegmentFilter, now: Millis, window_ms: Millis) -> Totals {
        // Only the matching segments' buckets inside the window go to the domain's sum (which
        // checks both again): a rate costs the segments asked for, not every bucket kept.
        let from = demand::bucket_of(now - window_ms + 1);
        let flat = self
            .parts()
            .filter(|(s, _)| filter.matches(s))
            .flat_map(|(s, buckets)| buckets.range(from..=now).map(move |(b, t)| (s, *b, t)));
        demand::window_totals(flat, filter, now, window_ms)
    }

    /// The rates of the segments `filter` matches over the window ending at `now`.
    pub fn rates(&self, filter: &SegmentFilter, now: Millis, window_ms: Millis) -> Rates {
        Rates::of(&self.totals(filter, now, window_ms), window_ms)
    }

    /// The segments counted.
    pub(crate) fn segment_keys(&self) -> impl Iterator<Item = &Segment> {
        let mut keys: Vec<&Segment> = self.closed.keys().chain(self.open.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
    }
}

/// The counts last read, and when (store clock); and the closed buckets read so far, with the
/// first bucket not yet closed.
#[derive(Default)]
pub(crate) struct DemandCache {
    cached: Mutex<Option<(Millis, Arc<SegmentCounts>)>>,
    closed: Mutex<(Millis, Arc<ByBucket>)>,
}

/// One segment as a planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDemand {
    /// The segment.
    pub segment: Segment,
    /// Rates over each of [`WINDOWS_MS`].
    pub rates: Vec<Rates>,
    /// Its tier's target.
    pub target: ServiceTarget,
    /// The agents who could take its cases now.
    pub supply: Supply,
    /// Its cases waiting now.
    pub waiting: u32,
    /// The longest wait among them, ms.
    pub oldest_wait_ms: u64,
    /// The estimated wait of a case of the segment submitted now.
    pub estimate: WaitEstimate,
    /// Agents needed now against those serving.
    pub advice: Advice,
    /// Invitations of the segment open now.
    pub invitations_pending: u32,
}

impl Engine {
    /// The segment counts a commit of `case` with `events` adds.
    pub(crate) fn segment_write(&self, case: &Case, events: &[Event], now: Millis) -> Option<SegmentWrite> {
        let policy = &self.inner.policy;
        let (tier, channel) = (case.spec.tier, case.spec.channel);
        let counts = demand::segment_counts(case, events, policy.demand.target(tier), policy.wrap_up_ms.get(channel));
        (!counts.is_empty()).then(|| SegmentWrite {
            bucket: demand::bucket_of(now),
            segment: Segment::of(&case.spec).key(),
            counts,
        })
    }

    /// The segment counts of the last hour: read from the store when `fresh` or when the cached
    /// read is older than a few seconds.
    pub(crate) async fn segment_counts(&self, now: Millis, fresh: bool) -> Result<Arc<SegmentCounts>, EngineError> {
        if !fresh {
            let cached = self.inner.demand.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, counts)) = cached.as_ref()
                && (*at..*at + CACHE_MS).contains(&now)
            {
                return Ok(Arc::clone(counts));
            }
        }
        let longest = WINDOWS_MS.iter().copied().max().unwrap_or(SERVICE_WINDOW_MS).max(SERVICE_WINDOW_MS);
        let oldest = demand::bucket_of(now - longest);
        let first_open = demand::bucket_of(now) - OPEN_BUCKETS * demand::BUCKET_MS;
        let (read_from, closed) = {
            let c = self.inner.demand.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (c.0.max(oldest), Arc::clone(&c.1))
        };
        let read = self.inner.store.segment_counts(read_from).await?;
        let (newly_closed, open): (Vec<BucketCount>, Vec<BucketCount>) =
            read.into_iter().partition(|c| c.bucket < first_open);
        let closed = if newly_closed.is_empty() && read_from >= first_open {
            closed
        } else {
            // Buckets that closed since the last read join the closed ones; those past the
            // longest window leave.
            let mut next: ByBucket = (*closed).clone();
            for buckets in next.values_mut() {
                buckets.retain(|b, _| *b >= oldest);
            }
            next.retain(|_, buckets| !buckets.is_empty());
            add_counts(&mut next, newly_closed);
            let next = Arc::new(next);
            let mut c = self.inner.demand.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if first_open > c.0 {
                *c = (first_open, Arc::clone(&next));
            }
            next
        };
        let mut open_counts = ByBucket::new();
        add_counts(&mut open_counts, open);
        let counts = Arc::new(SegmentCounts { closed, open: open_counts });
        *self.inner.demand.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((now, Arc::clone(&counts)));
        Ok(counts)
    }

    /// What `case`'s estimate is computed from at `now`: the competing cases ahead of it, the
    /// agents who could take it, and its segment's measured rates.
    fn wait_inputs(&self, case: &Case, counts: &SegmentCounts, now: Millis) -> WaitInputs {
        let policy = &self.inner.policy;
        let index = &self.inner.index;
        let segment = Segment::of(&case.spec);
        let sources = EstimateSources::of(&segment);
        let supply = index.supply_for(case, now, policy);
        let (ahead, _) = index.ahead_of(case, policy, AHEAD_LIMIT);
        EstimateSources::inputs(
            ahead,
            supply,
            &counts.rates(&sources.segment, now, SERVICE_WINDOW_MS),
            &counts.rates(&sources.around, now, SERVICE_WINDOW_MS),
            sources.overtaking.map(|f| counts.rates(&f, now, ARRIVAL_WINDOW_MS)).as_ref(),
            demand::expected_handle_ms(policy, segment.channel),
        )
    }

    /// The estimate for `case` (waiting, or about to be submitted) at `now`. Counts that cannot
    /// be read leave the measured rates out (the configured expectations stand in): an estimate
    /// never fails a submission.
    pub(crate) async fn estimate_for(&self, case: &Case, now: Millis) -> WaitInputs {
        let counts = match self.segment_counts(now, false).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "segment counts unreadable; estimating from configured handle times");
                Arc::new(SegmentCounts::default())
            }
        };
        self.wait_inputs(case, &counts, now)
    }

    /// The staffing advice for `segment` (its tier's goal, its arrival and service rates, the
    /// configured handle time until it measured one) against `serving` agents: what planners
    /// and the call-in rounds both see.
    pub(crate) fn advice_for(
        &self,
        segment: &Segment,
        counts: &SegmentCounts,
        serving: u32,
        now: Millis,
    ) -> Result<Advice, EngineError> {
        let policy = &self.inner.policy;
        let exact = SegmentFilter::exactly(segment);
        let goal = policy.demand.goal(segment.tier).map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(demand::advise(
            &counts.rates(&exact, now, ARRIVAL_WINDOW_MS),
            &counts.rates(&exact, now, SERVICE_WINDOW_MS),
            goal,
            serving,
            demand::expected_handle_ms(policy, segment.channel),
        ))
    }

    /// The segments `filter` names, each with its rates, supply, waits and advice, read fresh.
    /// A fully named segment is reported even before anything was counted in it.
    pub async fn segment_demand(&self, filter: &SegmentFilter) -> Result<(Vec<SegmentDemand>, Millis), EngineError> {
        let now = self.now().await?;
        let counts = self.segment_counts(now, true).await?;
        let policy = &self.inner.policy;
        let waiting = self.inner.index.waiting_in(&[filter.language.as_str()], usize::MAX);
        let mut segments: BTreeSet<Segment> = counts.segment_keys().filter(|s| filter.matches(s)).cloned().collect();
        segments.extend(waiting.iter().map(|c| Segment::of(&c.spec)).filter(|s| filter.matches(s)));
        if let (Some(tier), Some(channel)) = (filter.tier, filter.channel) {
            segments.insert(Segment {
                language: filter.language.clone(),
                tier,
                channel,
                skills: filter.skills.clone(),
            });
        }
        let mut out = Vec::new();
        for segment in segments {
            let Some(sample) = segment.sample_case(policy, now) else { continue };
            let exact = SegmentFilter::exactly(&segment);
            let rates: Vec<Rates> = WINDOWS_MS.iter().map(|w| counts.rates(&exact, now, *w)).collect();
            let inputs = self.wait_inputs(&sample, &counts, now);
            let mine: Vec<&Arc<Case>> = waiting.iter().filter(|c| Segment::of(&c.spec) == segment).collect();
            let oldest_wait_ms = mine.iter().map(|c| c.waited_ms(now)).max().unwrap_or(0);
            let advice = self.advice_for(&segment, &counts, inputs.supply.serving, now)?;
            out.push(SegmentDemand {
                target: policy.demand.target(segment.tier),
                rates,
                supply: inputs.supply,
                waiting: u32::try_from(mine.len()).unwrap_or(u32::MAX),
                oldest_wait_ms,
                estimate: WaitEstimate::of(&inputs, now),
                advice,
                invitations_pending: u32::try_from(self.inner.index.invited_for(&segment.key(), now).len())
                    .unwrap_or(u32::MAX),
                segment,
            });
        }
        Ok((out, now))
    }
}
