//! Benchmark support: the echo service used as the gRPC floor. The benchmarks themselves are in
//! `benches/*.rs` (criterion-free harnesses that print percentiles) and `src/bin/loadgen.rs`.

/// The `bench.v1` echo service.
#[allow(clippy::all, missing_docs)]
pub mod echo {
    tonic::include_proto!("bench.v1");
}
