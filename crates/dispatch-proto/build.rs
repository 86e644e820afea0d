//! Compiles `proto/dispatch/v1/*.proto` with protox (pure Rust, no system `protoc`) and writes the
//! file descriptor set used by server reflection.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("dispatch/v1/dispatch.proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("dispatch_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `AgentService.Connect` would collide with the generated `Client::connect(dst)`; clients
        // are built from a `Channel` instead (see `dispatch_grpc::client`).
        .build_transport(false)
        // Small per-call buffers (see `Codec`).
        .codec_path("crate::Codec")
        // For `dispatchctl --json`.
        .type_attribute(".dispatch.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
