//! The gRPC edge of the dispatcher. Handlers validate and convert requests, call the engine and
//! convert answers; no dispatch rule lives here.
//!
//! Layout:
//! - [`server`]: server assembly ([`serve`]) with limits, health and reflection;
//! - [`services`]: the four `dispatch.v1` services;
//! - [`convert`]: proto ↔ domain conversions (exhaustive destructuring);
//! - [`error`]: the one engine error → gRPC status mapping;
//! - [`identity`]: the interceptor that reads the agent's identity from metadata;
//! - [`client`]: client construction for tools and tests.

pub mod client;
pub mod convert;
pub mod error;
pub mod identity;
pub mod server;
pub mod services;

pub use server::{ServerConfig, serve};
