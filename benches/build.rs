//! Compiles the benchmark-only echo service (the gRPC floor) with protox.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let file = root.join("bench/v1/echo.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure().build_transport(false).compile_fds(fds)?;
    Ok(())
}
