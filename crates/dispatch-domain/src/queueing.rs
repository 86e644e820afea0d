//! Queueing maths for staffing, pure: Erlang C (M/M/n: customers wait as long as it takes) and
//! Erlang A (M/M/n+M: customers give up after an exponential patience). Given a load (arrivals
//! and handle time), a number of agents and an answer-time target, each gives the probability of
//! waiting, the service level (the share of arrivals answered within the target), the average
//! wait over all arrivals, the occupancy and (Erlang A) the share who give up; and the agents
//! needed for a service-level target.
//!
//! Numerics: Erlang B by its recurrence (no factorials, stable at hundreds of agents); Erlang A
//! by its birth-death chain in log space (truncated where the tail is below 1e-17 of the peak)
//! and the answer-time distribution by uniformization, so that large loads neither overflow
//! nor cancel.

use crate::model::FieldError;

/// Offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Arrivals per second (λ), above 0.
    pub arrivals_per_s: f64,
    /// Mean handle time in seconds (1/μ), above 0.
    pub handle_s: f64,
}

impl Load {
    /// Checks the figures; errors name the field.
    pub fn new(arrivals_per_s: f64, handle_s: f64) -> Result<Self, FieldError> {
        if !(arrivals_per_s.is_finite() && arrivals_per_s > 0.0) {
            return Err(FieldError::new("arrivals", "must be a number above 0"));
        }
        if !(handle_s.is_finite() && handle_s > 0.0) {
            return Err(FieldError::new("handle_time_seconds", "must be a number above 0"));
        }
        Ok(Self { arrivals_per_s, handle_s })
    }

    /// Traffic intensity in Erlangs (λ/μ): agents busy on average if nobody gave up.
    pub fn erlangs(&self) -> f64 {
        self.arrivals_per_s * self.handle_s
    }
}

/// What a number of agents achieves under a load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Agents on the queue.
    pub agents: u32,
    /// Probability that an arrival waits at all.
    pub p_wait: f64,
    /// Share of arrivals answered within the target (those who give up first are not).
    pub service_level: f64,
    /// Mean wait over all arrivals (answered or not, zero waits included), seconds;
    /// infinite when the queue is unstable (Erlang C with agents ≤ load).
    pub average_wait_s: f64,
    /// Share of agents' time busy with customers.
    pub occupancy: f64,
    /// Share of arrivals who give up (Erlang C: 0).
    pub p_abandon: f64,
}

/// Erlang B: the probability that all `n` servers are busy with load `a` Erlangs and no queue.
pub fn erlang_b(n: u32, a: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    b
}

/// Erlang C: the probability of waiting with `n` agents and load `a` Erlangs (1 when `n ≤ a`:
/// the queue grows without bound).
pub fn erlang_c(n: u32, a: f64) -> f64 {
    let n_f = f64::from(n);
    if n_f <= a {
        return 1.0;
    }
    let b = erlang_b(n, a);
    n_f * b / (n_f - a * (1.0 - b))
}

/// Erlang C with `n` agents: the outcome for an answer-time target of `target_s` seconds.
pub fn erlang_c_outcome(n: u32, load: Load, target_s: f64) -> Outcome {
    let a = load.erlangs();
    let n_f = f64::from(n);
    let p_wait = erlang_c(n, a);
    let (service_level, average_wait_s) = if n_f <= a {
        (0.0, f64::INFINITY)
    } else {
        let sl = 1.0 - p_wait * (-(n_f - a) * target_s / load.handle_s).exp();
        (sl.clamp(0.0, 1.0), p_wait * load.handle_s / (n_f - a))
    };
    Outcome {
        agents: n,
        p_wait,
        service_level,
        average_wait_s,
        occupancy: if n == 0 { 1.0 } else { (a / n_f).min(1.0) },
        p_abandon: 0.0,
    }
}

/// log(e^x + e^y) without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return y;
    }
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    hi + (lo - hi).exp().ln_1p()
}

/// Mean patience, in handle times, beyond which Erlang A is taken as Erlang C.
pub const PATIENT: f64 = 1_000.0;
/// The shortest mean patience Erlang A computes with, seconds.
pub const MIN_PATIENCE_S: f64 = 1.0;

/// Erlang A with `n` agents and customers whose patience averages `patience_s` seconds: the
/// outcome for an answer-time target of `target_s` seconds.
///
/// Customers whose patience averages more than [`PATIENT`] handle times practically never give
/// up: the answer is Erlang C's, which Erlang A tends to as patience grows. (Without that, an
/// overloaded segment whose customers hardly ever abandon — a measured patience of days — has its
/// queue's peak a patience's worth of arrivals out, millions of states to walk.)
///
/// A patience under [`MIN_PATIENCE_S`] is taken as that: a measured patience of 0 (customers who
/// left the moment they came) would make the uniformization's rate infinite and its steps
/// endless.
pub fn erlang_a_outcome(n: u32, load: Load, patience_s: f64, target_s: f64) -> Outcome {
    if patience_s.is_nan() || patience_s > PATIENT * load.handle_s {
        // Beyond the bound, or not a number: customers who do not give up.
        return erlang_c_outcome(n, load, target_s);
    }
    let patience_s = patience_s.max(MIN_PATIENCE_S);
    let lambda = load.arrivals_per_s;
    let mu = 1.0 / load.handle_s;
    let theta = 1.0 / patience_s;
    let n_f = f64::from(n);
    // The stationary distribution of the number in the system, in log space: p_k ∝ Π λ / d_i,
    // d_i = min(i, n) μ + max(i − n, 0) θ.
    let mut logs: Vec<f64> = vec![0.0];
    let mut peak = 0.0_f64;
    let mut k = 0u64;
    loop {
        k += 1;
        let kf = k as f64;
        let death = kf.min(n_f) * mu + (kf - n_f).max(0.0) * theta;
        let next = logs[logs.len() - 1] + (lambda / death).ln();
        logs.push(next);
        peak = peak.max(next);
        let past_peak = kf > n_f && lambda < death;
        if past_peak && next < peak - 40.0 {
            break;
        }
        if logs.len() > 5_000_000 {
            break;
        }
    }
    let total = logs.iter().fold(f64::NEG_INFINITY, |acc, l| log_add(acc, *l));
    let p: Vec<f64> = logs.iter().map(|l| (l - total).exp()).collect();
    let n_us = n as usize;
    let p_wait: f64 = p.iter().skip(n_us).sum();
    let queue_len: f64 = p.iter().enumerate().skip(n_us).map(|(k, pk)| (k - n_us) as f64 * pk).sum();
    let p_abandon = (theta * queue_len / lambda).min(1.0);
    let average_wait_s = queue_len / lambda;
    let busy: f64 = p.iter().enumerate().map(|(k, pk)| (k.min(n_us)) as f64 * pk).sum();
    let occupancy = if n == 0 { 1.0 } else { busy / n_f };
    // Answered within the target: an arrival finding j waiting ahead reaches an agent after
    // phases at rates nμ + iθ (i = j … 0: a server frees, or one ahead gives up), unless its own
    // patience runs out first (rate θ). Uniformized at Λ = nμ + (J + 1)θ, u_m(i) is the chance
    // to be answered within m steps from phase i; the answer by the target is the Poisson(Λt)
    // mixture of u_m. Phases whose probability is below 1e-15 add nothing the answer can show
    // and are left out; u_m(i) is 0 for i ≥ m (i + 1 steps are needed), so step m updates only
    // phases below it, in place from the top (each reads its lower neighbour's previous value).
    let mut waiting: Vec<f64> = p.iter().skip(n_us).copied().collect();
    while waiting.len() > 1 && waiting.last().is_some_and(|w| *w < 1e-15) {
        waiting.pop();
    }
    let within = if n == 0 || waiting.is_empty() {
        0.0
    } else {
        let j_max = waiting.len() - 1;
        let big = n_f * mu + (j_max as f64 + 1.0) * theta;
        let lt = big * target_s;
        let m_max = (lt + 12.0 * lt.sqrt() + 20.0).ceil() as usize;
        let advance: Vec<f64> = (0..=j_max).map(|i| (n_f * mu + i as f64 * theta) / big).collect();
        let stay: Vec<f64> = advance.iter().map(|a| 1.0 - a - theta / big).collect();
        let mut u = vec![0.0; j_max + 1];
        let mut acc = vec![0.0; j_max + 1];
        let mut log_pois = -lt;
        let mut log_fact = 0.0;
        for m in 0..=m_max {
            if m > 0 {
                for i in (0..=j_max.min(m - 1)).rev() {
                    let ahead = if i == 0 { 1.0 } else { u[i - 1] };
                    u[i] = advance[i] * ahead + stay[i] * u[i];
                }
                log_fact += (m as f64).ln();
                log_pois = -lt + m as f64 * lt.ln() - log_fact;
            }
            let w = log_pois.exp();
            if w > 0.0 {
                for i in 0..=j_max.min(m) {
                    acc[i] += w * u[i];
                }
            }
        }
        waiting.iter().zip(&acc).map(|(pj, a)| pj * a).sum()
    };
    let service_level = ((1.0 - p_wait) + within).clamp(0.0, 1.0);
    Outcome { agents: n, p_wait, service_level, average_wait_s, occupancy, p_abandon }
}

/// A service-level goal: `service_level` of arrivals answered within `target_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The answer-time target, seconds (≥ 0).
    pub target_s: f64,
    /// The share to answer within it, in (0, 1].
    pub service_level: f64,
    /// The most occupancy to plan for, in (0, 1] (1: no cap).
    pub max_occupancy: f64,
    /// The share of paid time agents are not on the queue (breaks, training), in [0, 1).
    pub shrinkage: f64,
}

impl Goal {
    /// Checks the figures; errors name the field.
    pub fn new(target_s: f64, service_level: f64, max_occupancy: f64, shrinkage: f64) -> Result<Self, FieldError> {
        if !(target_s.is_finite() && target_s >= 0.0) {
            return Err(FieldError::new("target_answer_seconds", "must be 0 or more"));
        }
        if !(service_level > 0.0 && service_level <= 1.0) {
            return Err(FieldError::new("service_level", "must be above 0 and at most 1"));
        }
        if !(max_occupancy > 0.0 && max_occupancy <= 1.0) {
            return Err(FieldError::new("max_occupancy", "must be above 0 and at most 1"));
        }
        if !(0.0..1.0).contains(&shrinkage) {
            return Err(FieldError::new("shrinkage", "must be 0 or more and below 1"));
        }
        Ok(Self { target_s, service_level, max_occupancy, shrinkage })
    }
}

/// The agents a goal needs: on the queue, and scheduled (with shrinkage), with what they achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Staffing {
    /// Agents needed on the queue.
    pub on_queue: u32,
    /// Agents to schedule so that `on_queue` remain after shrinkage.
    pub scheduled: u32,
    /// What `on_queue` agents achieve.
    pub outcome: Outcome,
}

/// The most agents a staffing search considers.
pub const MAX_AGENTS: u32 = 100_000;

/// The fewest agents meeting `goal` under the model `outcome_of` (agents → outcome), searched
/// upwards from the load (no fewer can serve it). `None` if even [`MAX_AGENTS`] do not.
pub fn agents_needed(load: Load, goal: Goal, outcome_of: impl Fn(u32) -> Outcome) -> Option<Staffing> {
    let start = (load.erlangs() * goal.max_occupancy.min(1.0)).floor().max(0.0) as u32;
    let mut n = start.max(1);
    while n <= MAX_AGENTS {
        let o = outcome_of(n);
        if o.service_level >= goal.service_level && o.occupancy <= goal.max_occupancy + 1e-12 {
            let scheduled = (f64::from(n) / (1.0 - goal.shrinkage)).ceil() as u32;
            return Some(Staffing { on_queue: n, scheduled, outcome: o });
        }
        n += 1;
    }
    None
}

/// The largest load a what-if computes, in Erlangs (its cost grows with the load).
pub const MAX_ERLANGS: f64 = 5_000.0;

/// A planner's forecast for one interval, and the goal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// The load.
    pub load: Load,
    /// Mean patience in seconds, for Erlang A (`None`: Erlang C only).
    pub patience_s: Option<f64>,
    /// The goal.
    pub goal: Goal,
}

/// A forecast as a planner gives it (the `WhatIfStaffing` fields), before validation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ForecastInput {
    /// Contacts per interval.
    pub arrivals: f64,
    /// The interval, seconds.
    pub interval_s: f64,
    /// Mean handle time, seconds.
    pub handle_s: f64,
    /// Mean patience, seconds (0: none, Erlang C only).
    pub patience_s: f64,
    /// Answer-time target, seconds.
    pub target_s: f64,
    /// Share to answer within the target.
    pub service_level: f64,
    /// Share of paid time off the queue.
    pub shrinkage: f64,
    /// Most occupancy to plan for (0 means 1).
    pub max_occupancy: f64,
}

impl Forecast {
    /// Validates a planner's forecast; errors name the field.
    pub fn parse(input: ForecastInput) -> Result<Self, FieldError> {
        let ForecastInput {
            arrivals,
            interval_s,
            handle_s,
            patience_s,
            target_s,
            service_level,
            shrinkage,
            max_occupancy,
        } = input;
        if !(interval_s.is_finite() && interval_s > 0.0) {
            return Err(FieldError::new("interval_seconds", "must be a number above 0"));
        }
        let load = Load::new(arrivals / interval_s, handle_s)?;
        if load.erlangs() > MAX_ERLANGS {
            return Err(FieldError::new(
                "arrivals",
                format!("the load is {:.0} Erlangs; at most {MAX_ERLANGS:.0} per forecast", load.erlangs()),
            ));
        }
        if !(patience_s.is_finite() && patience_s >= 0.0) {
            return Err(FieldError::new("patience_seconds", "must be 0 (none) or more"));
        }
        let max_occupancy = if max_occupancy == 0.0 { 1.0 } else { max_occupancy };
        let goal = Goal::new(target_s, service_level, max_occupancy, shrinkage)?;
        Ok(Self { load, patience_s: (patience_s > 0.0).then_some(patience_s), goal })
    }
}

/// What a forecast needs under each model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhatIf {
    /// Offered load in Erlangs.
    pub erlangs: f64,
    /// Erlang C (`None`: not reachable with [`MAX_AGENTS`]).
    pub erlang_c: Option<Staffing>,
    /// Erlang A, when the forecast has a patience (inner `None`: not reachable).
    pub erlang_a: Option<Option<Staffing>>,
}

/// Staffing for `f` under Erlang C and, with a patience, Erlang A.
pub fn what_if(f: &Forecast) -> WhatIf {
    let (load, goal) = (f.load, f.goal);
    WhatIf {
        erlangs: load.erlangs(),
        erlang_c: agents_needed(load, goal, |n| erlang_c_outcome(n, load, goal.target_s)),
        erlang_a: f.patience_s.map(|p| agents_needed(load, goal, |n| erlang_a_outcome(n, load, p, goal.target_s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook case: 100 contacts per 30 minutes, 3-minute handle time, 80 % in 20 s.
    fn textbook() -> (Load, Goal) {
        (Load::new(100.0 / 1800.0, 180.0).unwrap(), Goal::new(20.0, 0.8, 1.0, 0.0).unwrap())
    }

    #[test]
    fn erlang_c_matches_the_textbook() {
        let (load, goal) = textbook();
        assert!((load.erlangs() - 10.0).abs() < 1e-12);
        let s = agents_needed(load, goal, |n| erlang_c_outcome(n, load, goal.target_s)).unwrap();
        assert_eq!(s.on_queue, 14);
        assert!((s.outcome.p_wait - 0.174).abs() < 0.001, "{:?}", s.outcome);
        assert!((s.outcome.service_level - 0.888).abs() < 0.001, "{:?}", s.outcome);
        assert!((s.outcome.average_wait_s - 7.84).abs() < 0.01, "{:?}", s.outcome);
        assert!((s.outcome.occupancy - 10.0 / 14.0).abs() < 1e-12);
        // 13 agents fall short (0.796).
        assert!(erlang_c_outcome(13, load, 20.0).service_level < 0.8);
        let with_shrinkage = Goal { shrinkage: 0.3, ..goal };
        let s = agents_needed(load, with_shrinkage, |n| erlang_c_outcome(n, load, 20.0)).unwrap();
        assert_eq!((s.on_queue, s.scheduled), (14, 20));
    }

    #[test]
    fn erlang_b_and_c_are_stable_at_large_loads() {
        // 800 Erlangs on 850 agents: factorials would overflow long before.
        let c = erlang_c(850, 800.0);
        assert!(c.is_finite() && c > 0.0 && c < 1.0, "{c}");
        let load = Load::new(800.0 / 180.0, 180.0).unwrap();
        let s =
            agents_needed(load, Goal::new(20.0, 0.8, 1.0, 0.0).unwrap(), |n| erlang_c_outcome(n, load, 20.0)).unwrap();
        assert!(s.on_queue > 800 && s.on_queue < 850, "{s:?}");
        let a = erlang_a_outcome(s.on_queue, load, 120.0, 20.0);
        assert!(a.service_level.is_finite() && a.p_wait.is_finite(), "{a:?}");
    }

    #[test]
    fn erlang_a_just_below_the_patient_bound_is_already_erlang_c() {
        // At the bound (1000 handle times of patience) Erlang A computed in full is within a
        // hair of Erlang C, so answering C beyond it changes no staffing figure.
        let (load, _) = textbook();
        let c = erlang_c_outcome(14, load, 20.0);
        let a = erlang_a_outcome(14, load, PATIENT * load.handle_s * 0.999, 20.0);
        assert!((a.service_level - c.service_level).abs() < 2e-3, "{a:?} {c:?}");
        assert!((a.p_wait - c.p_wait).abs() < 2e-3, "{a:?} {c:?}");
        // Customers who left the instant they came (a measured patience of 0) answer at once too.
        let gone = erlang_a_outcome(3, load, 0.0, 20.0);
        assert!(gone.service_level.is_finite() && gone.p_abandon > 0.0, "{gone:?}");
        // An overloaded segment with patience of days answers at once.
        let over = Load { arrivals_per_s: 10.0, handle_s: 180.0 };
        let o = erlang_a_outcome(100, over, 1e7, 20.0);
        assert!(o.service_level < 0.01, "{o:?}");
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_as_patience_grows() {
        let (load, _) = textbook();
        let c = erlang_c_outcome(14, load, 20.0);
        let a = erlang_a_outcome(14, load, 1e9, 20.0);
        assert!((a.p_wait - c.p_wait).abs() < 1e-4, "{a:?} {c:?}");
        assert!((a.service_level - c.service_level).abs() < 1e-4, "{a:?} {c:?}");
        assert!((a.average_wait_s - c.average_wait_s).abs() < 0.01, "{a:?} {c:?}");
        assert!(a.p_abandon < 1e-6);
    }

    #[test]
    fn impatient_customers_make_erlang_a_need_fewer_agents_than_c() {
        let (load, goal) = textbook();
        let a = erlang_a_outcome(14, load, 60.0, 20.0);
        let c = erlang_c_outcome(14, load, 20.0);
        assert!(a.p_wait < c.p_wait && a.average_wait_s < c.average_wait_s, "{a:?} {c:?}");
        assert!(a.p_abandon > 0.0 && a.p_abandon < 0.1, "{a:?}");
        let need_a = agents_needed(load, goal, |n| erlang_a_outcome(n, load, 60.0, 20.0)).unwrap();
        assert!(need_a.on_queue <= 14, "{need_a:?}");
        // Erlang A stays defined when agents are fewer than the load: the impatient leave.
        let over = erlang_a_outcome(8, load, 60.0, 20.0);
        assert!(over.p_abandon > 0.1 && over.occupancy <= 1.0 && over.average_wait_s.is_finite(), "{over:?}");
    }

    #[test]
    fn more_agents_never_hurt() {
        let load = Load::new(0.2, 240.0).unwrap();
        let mut last_c = erlang_c_outcome(49, load, 30.0);
        let mut last_a = erlang_a_outcome(40, load, 90.0, 30.0);
        for n in 50..80 {
            let c = erlang_c_outcome(n, load, 30.0);
            assert!(c.service_level >= last_c.service_level && c.p_wait <= last_c.p_wait, "C at {n}");
            last_c = c;
        }
        for n in 41..80 {
            let a = erlang_a_outcome(n, load, 90.0, 30.0);
            assert!(
                a.service_level + 1e-9 >= last_a.service_level && a.p_abandon <= last_a.p_abandon + 1e-12,
                "A at {n}"
            );
            last_a = a;
        }
    }

    #[test]
    fn littles_law_holds_in_erlang_a() {
        // Served throughput = λ (1 − P(abandon)) = busy agents × μ.
        let load = Load::new(0.1, 300.0).unwrap();
        for n in [20, 28, 30, 35] {
            let a = erlang_a_outcome(n, load, 120.0, 20.0);
            let served = load.arrivals_per_s * (1.0 - a.p_abandon);
            let busy = a.occupancy * f64::from(n) / load.handle_s;
            assert!((served - busy).abs() / served < 1e-6, "n={n}: {served} vs {busy}");
        }
    }

    /// An FCFS M/M/n+M queue simulated customer by customer (a seeded xorshift; a customer
    /// waits for the earliest free agent, and gives up, occupying no one, if that is beyond
    /// its patience): Erlang A agrees with it.
    #[test]
    fn erlang_a_agrees_with_a_simulation() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut exp = |mean: f64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -mean * u.ln()
        };
        let (arrival_gap, handle, patience, target) = (18.0, 180.0, 60.0, 20.0);
        for n in [10usize, 12, 14] {
            let mut free = vec![0.0_f64; n];
            let (mut at, mut waited, mut within, mut gave_up) = (0.0, 0u32, 0u32, 0u32);
            let customers = 300_000;
            for _ in 0..customers {
                at += exp(arrival_gap);
                let p = exp(patience);
                let (i, f) = free.iter().copied().enumerate().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap();
                let wait = (f - at).max(0.0);
                waited += u32::from(wait > 0.0);
                if wait > p {
                    gave_up += 1;
                    continue;
                }
                within += u32::from(wait <= target);
                free[i] = at + wait + exp(handle);
            }
            let share = |x: u32| f64::from(x) / f64::from(customers);
            let load = Load::new(1.0 / arrival_gap, handle).unwrap();
            let a = erlang_a_outcome(n as u32, load, patience, target);
            assert!((a.p_wait - share(waited)).abs() < 0.01, "n={n}: {a:?} vs {}", share(waited));
            assert!((a.service_level - share(within)).abs() < 0.01, "n={n}: {a:?} vs {}", share(within));
            assert!((a.p_abandon - share(gave_up)).abs() < 0.005, "n={n}: {a:?} vs {}", share(gave_up));
        }
    }

    #[test]
    fn a_forecast_answers_under_both_models() {
        let textbook = ForecastInput {
            arrivals: 100.0,
            interval_s: 1800.0,
            handle_s: 180.0,
            patience_s: 60.0,
            target_s: 20.0,
            service_level: 0.8,
            shrinkage: 0.0,
            max_occupancy: 0.0,
        };
        let w = what_if(&Forecast::parse(textbook).unwrap());
        assert_eq!(w.erlang_c.unwrap().on_queue, 14);
        let a = w.erlang_a.unwrap().unwrap();
        assert!(a.on_queue <= 14 && a.outcome.service_level >= 0.8, "{a:?}");
        let refused = |f: ForecastInput| Forecast::parse(f).unwrap_err().field;
        assert_eq!(refused(ForecastInput { interval_s: 0.0, ..textbook }), "interval_seconds");
        assert_eq!(refused(ForecastInput { arrivals: 1e9, interval_s: 1.0, ..textbook }), "arrivals");
        assert_eq!(refused(ForecastInput { patience_s: -1.0, ..textbook }), "patience_seconds");
        let erlang_c_only = Forecast::parse(ForecastInput { patience_s: 0.0, ..textbook }).unwrap();
        assert!(what_if(&erlang_c_only).erlang_a.is_none());
    }

    #[test]
    fn bad_figures_are_refused_naming_the_field() {
        assert_eq!(Load::new(-1.0, 60.0).unwrap_err().field, "arrivals");
        assert_eq!(Load::new(1.0, 0.0).unwrap_err().field, "handle_time_seconds");
        assert_eq!(Goal::new(20.0, 0.0, 1.0, 0.0).unwrap_err().field, "service_level");
        assert_eq!(Goal::new(20.0, 1.5, 1.0, 0.0).unwrap_err().field, "service_level");
        assert_eq!(Goal::new(-1.0, 0.8, 1.0, 0.0).unwrap_err().field, "target_answer_seconds");
        assert_eq!(Goal::new(20.0, 0.8, 1.0, 1.0).unwrap_err().field, "shrinkage");
        assert_eq!(Goal::new(20.0, 0.8, 0.0, 0.0).unwrap_err().field, "max_occupancy");
    }
}
