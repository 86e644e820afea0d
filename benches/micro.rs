//! Criterion micro benchmarks of selection, each against a naive linear scan over the same data
//! in the same run:
//!
//! - `best_agent_for_case/{index,linear_scan}/N`: the best agent for a case in a pool of N
//!   agents, 10% available (`PoolIndex::rank_for_case` against `scoring::rank` over every agent);
//! - `best_case_for_agent/{index,linear_scan}/N`: the first waiting case in queue order that a
//!   free agent may take, among N waiting cases (`PoolIndex::best_case_for` against a scan of
//!   every waiting case for the eligible one with the best queue rank).
//!
//! - `supply_of_segment/{index,records,cloned_records}/N`: the supply of an English case (every
//!   agent of the pool speaks English) among N signed-in agents: the index's walk of compact
//!   summaries (`PoolIndex::supply_for`), the domain's rule over the records
//!   (`demand::supply_of`), and that rule over a fresh copy of the signed-in handles (the path
//!   estimates took before the summaries).
//!
//! `cargo bench -p dispatch-benches --bench micro` (criterion's report in target/criterion;
//! add `-- --quick` for a short run). `benches/run.sh` runs it and copies the medians into
//! BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dispatch_benches::pool::{T0, agent, case, indexed_agents};
use dispatch_domain::{Agent, Case, CaseState, Policy, demand, scoring};
use dispatch_engine::index::PoolIndex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn best_agent_for_case(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("best_agent_for_case");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let mut rng = SmallRng::seed_from_u64(42);
        let (agents, index) = indexed_agents(&mut rng, n, &policy);
        let cases: Vec<Case> = (0..256).map(|i| case(&mut rng, i)).collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(index.rank_for_case(&cases[i], T0, &policy))
            })
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(scoring::rank(&cases[i], agents.iter(), T0, &policy))
            })
        });
    }
    group.finish();
}

/// The scan: every waiting case, the eligible one first in queue order.
fn scan_best_case<'a>(cases: &'a [Case], agent: &Agent, policy: &Policy) -> Option<&'a Case> {
    cases
        .iter()
        .filter(|c| c.state == CaseState::Queued && scoring::eligibility(c, agent, T0, policy).is_ok())
        .min_by_key(|c| (c.queue_rank(policy), c.id().clone()))
}

fn best_case_for_agent(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("best_case_for_agent");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for n in [1_000usize, 10_000, 100_000] {
        let mut rng = SmallRng::seed_from_u64(7);
        // Waiting for up to ten minutes.
        let cases: Vec<Case> = (0..n)
            .map(|i| {
                let mut c = case(&mut rng, i);
                c.created_at -= rng.random_range(0..600_000);
                c
            })
            .collect();
        let index = PoolIndex::new();
        for c in &cases {
            index.apply_case(c.clone(), &policy);
        }
        // Free agents (the generator makes 10% of them available).
        let free: Vec<Agent> =
            (0..5_000).map(|i| agent(&mut rng, i, &policy)).filter(|a| a.unready_reason(T0).is_none()).collect();
        assert!(!free.is_empty());
        // Both find a case of the same queue rank (the index is exact here).
        for a in free.iter().take(50) {
            let x = index.best_case_for(a, T0, &policy).map(|c| c.queue_rank(&policy));
            let y = scan_best_case(&cases, a, &policy).map(|c| c.queue_rank(&policy));
            assert_eq!(x, y, "the index and the scan agree");
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % free.len();
                black_box(index.best_case_for(&free[i], T0, &policy))
            })
        });
        group.bench_with_input(BenchmarkId::new("linear_scan", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % free.len();
                black_box(scan_best_case(&cases, &free[i], &policy))
            })
        });
    }
    group.finish();
}

fn supply_of_segment(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("supply_of_segment");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for n in [1_000usize, 10_000] {
        let mut rng = SmallRng::seed_from_u64(11);
        // The generator signs in one agent in ten.
        let (agents, index) = indexed_agents(&mut rng, n * 10, &policy);
        let signed_in: Vec<Agent> = agents.into_iter().filter(|a| a.session.is_some()).collect();
        let cases: Vec<Case> =
            (0..2_000).map(|i| case(&mut rng, i)).filter(|c| c.spec.language.primary() == "en").take(64).collect();
        for c in &cases {
            assert_eq!(index.supply_for(c, T0, &policy), demand::supply_of(c, signed_in.iter(), T0, &policy));
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(index.supply_for(&cases[i], T0, &policy))
            })
        });
        group.bench_with_input(BenchmarkId::new("records", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cases.len();
                black_box(demand::supply_of(&cases[i], signed_in.iter(), T0, &policy))
            })
        });
        group.bench_with_input(BenchmarkId::new("cloned_records", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cases.len();
                let handles = index.signed_in("en");
                black_box(demand::supply_of(&cases[i], handles.iter().map(|a| a.as_ref()), T0, &policy))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, best_agent_for_case, best_case_for_agent, supply_of_segment);
criterion_main!(benches);
