//! Selection: the index (`PoolIndex::rank_for_case`: smallest posting list, longest idle first,
//! bounded to `selection_candidate_limit` eligible agents) against an exact linear scan over
//! every agent, on the same pool, in the same run; with how often both pick the same agent and
//! the mean score the bounded choice gives up.
//!
//! `cargo bench -p dispatch-benches --bench selection` (add `-- --quick` for a short run).
//! Pools of 1k, 10k, 100k and 1M agents, 10% routable (signed in and available), 20 languages
//! with a skewed distribution, 0–4 skills from 30 with levels 1–5, 8% VIP-certified; 1,000 cases.
//! With `GATES=1` agents and cases carry markets, data regions, clearance and certifications
//! (`pool::gate_agent`, `pool::gate_case`): the cost of the eligibility gates.

use std::time::{Duration, Instant};

use dispatch_domain::{Case, Policy, scoring};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use dispatch_benches::pool::{T0, case, gate_case, indexed_agents};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // GATES=1: markets, data regions, clearance and certifications on agents and cases.
    let gated = std::env::var_os("GATES").is_some();
    let mut policy = Policy::default();
    if let Some(limit) = std::env::var("SELECTION_LIMIT").ok().and_then(|v| v.parse().ok()) {
        policy.selection_candidate_limit = limit;
    }
    let sizes: &[usize] = if quick { &[1_000, 10_000] } else { &[1_000, 10_000, 100_000, 1_000_000] };
    println!(
        "best agent for a case: the index (bounded to {} eligible, longest idle first) vs an exact linear scan",
        policy.selection_candidate_limit
    );
    println!(
        "{:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9} {:>10} {:>9}",
        "agents", "index p50", "index p99", "index max", "scan p50", "scan p99", "speed-up", "same pick", "score gap"
    );
    for &n in sizes {
        let mut rng = SmallRng::seed_from_u64(42);
        let (agents, index) = indexed_agents(&mut rng, n, &policy);
        let cases: Vec<Case> = (0..1_000)
            .map(|i| {
                let mut c = case(&mut rng, i);
                if gated {
                    gate_case(&mut c, i);
                }
                c
            })
            .collect();
        let mut idx_times = Vec::with_capacity(cases.len());
        let mut scan_times = Vec::with_capacity(cases.len());
        let (mut same, mut gap_sum, mut compared) = (0usize, 0.0f64, 0usize);
        for c in &cases {
            let t = Instant::now();
            let a = index.rank_for_case(c, T0, &policy);
            idx_times.push(t.elapsed());
            let t = Instant::now();
            let b = scoring::rank(c, agents.iter(), T0, &policy);
            scan_times.push(t.elapsed());
            if let (Some(x), Some(y)) = (a.candidates.first(), b.candidates.first()) {
                compared += 1;
                if x.agent_id == y.agent_id {
                    same += 1;
                }
                gap_sum += (y.total - x.total) / y.total.max(1e-9);
            }
            assert_eq!(a.candidates.is_empty(), b.candidates.is_empty(), "the index finds someone iff the scan does");
        }
        idx_times.sort();
        scan_times.sort();
        let speedup = percentile(&scan_times, 0.5).as_secs_f64() / percentile(&idx_times, 0.5).as_secs_f64().max(1e-12);
        println!(
            "{:>9} {:>11?} {:>11?} {:>11?} {:>11?} {:>11?} {:>8.0}x {:>9.1}% {:>8.2}%",
            n,
            percentile(&idx_times, 0.5),
            percentile(&idx_times, 0.99),
            idx_times.last().unwrap(),
            percentile(&scan_times, 0.5),
            percentile(&scan_times, 0.99),
            speedup,
            100.0 * same as f64 / compared.max(1) as f64,
            100.0 * gap_sum / compared.max(1) as f64
        );
    }
}
