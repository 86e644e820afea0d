//! Benchmark support: the echo service used as the gRPC floor. The benchmarks themselves are in
//! `benches/*.rs` (criterion-free harnesses that print percentiles) and `src/bin/loadgen.rs`.

/// The `bench.v1` echo service.
#[allow(clippy::all, missing_docs)]
pub mod echo {
    tonic::include_proto!("bench.v1");
}

/// A skewed (Zipf-like) index in `0..n`: index `i` with weight `1 / (i + 1)`, so the first
/// languages and skills are the common ones, as in real support traffic.
pub fn zipf(rng: &mut impl rand::Rng, n: usize) -> usize {
    let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut x = rng.random::<f64>() * total;
    for i in 0..n {
        x -= 1.0 / (i + 1) as f64;
        if x <= 0.0 {
            return i;
        }
    }
    n - 1
}
