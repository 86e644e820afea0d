//! The gRPC edge of the dispatcher. Handlers validate and convert requests, call the engine and
//! convert answers; no dispatch rule lives here.
//!
//! Layout:
//! - [`server`]: server assembly ([`serve`]) with limits, health and reflection;
//! - [`services`]: the four `dispatch.v1` services, one file each;
//! - [`requests`]: one validator per request, shared with the fuzz target;
//! - [`convert`]: proto ↔ domain conversions (exhaustive destructuring);
//! - [`error`]: the one engine error → gRPC status mapping, with `google.rpc` details;
//! - [`edge`]: the outermost layer: per-connection load shedding and the RPC metrics;
//! - [`auth`]: authentication (JWT or development mode), the access rules of every method, and
//!   the tower layer that enforces them;
//! - [`client`]: client construction (TLS, bearer tokens) for tools and tests;
//! - [`fuzzing`]: the decode-and-validate entry point of the fuzz target and its replay test.

pub mod auth;
pub mod client;
pub mod convert;
pub mod edge;
pub mod error;
pub mod fuzzing;
pub mod requests;
pub mod server;
pub mod services;
pub mod web;

pub use server::{ServerConfig, TlsConfig, serve};
pub use web::WebConfig;
