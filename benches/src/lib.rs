//! Benchmarks live in `benches/*.rs` (see `README.md`); this library is empty.
