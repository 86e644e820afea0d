//! Generated code for the `dispatch.v1` API (see `proto/dispatch/v1/dispatch.proto`).
//!
//! Layout:
//! - [`v1`]: messages, clients (`*_client`) and servers (`*_server`);
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor set, for server reflection and for tests
//!   that enumerate the services' methods;
//! - [`AGENT_ID_HEADER`]: the metadata key that carries the agent's identity.

/// The `dispatch.v1` package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("dispatch.v1");
}

/// Encoded `FileDescriptorSet` of every `dispatch.v1` proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dispatch_descriptor.bin"));

/// Request metadata key carrying the calling agent's id on `AgentService.Connect`.
pub const AGENT_ID_HEADER: &str = "agent-id";
