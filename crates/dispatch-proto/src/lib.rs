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

/// The protobuf codec of every `dispatch.v1` service: tonic's prost codec with small buffers.
///
/// tonic allocates its codec buffer up front for every call, 8 KiB by default, and a
/// bidirectional agent stream holds two of them (one each way) for as long as the device stays
/// connected. Our messages are mostly a few hundred bytes, so 512-byte buffers (grown in
/// 512-byte steps for a larger message) take 15 KiB less per connected agent. Batching of
/// ready messages into one write is unchanged (the 32 KiB yield threshold).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Codec<T, U> {
    /// Per-call buffer: initial size and growth step, and the streaming batch threshold.
    pub const BUFFERS: (usize, usize) = (512, 32 * 1024);

    fn settings() -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(Self::BUFFERS.0, Self::BUFFERS.1)
    }
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(Self::settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(Self::settings())
    }
}

/// Request metadata key carrying the calling agent's id on `AgentService.Connect`.
pub const AGENT_ID_HEADER: &str = "agent-id";
