//! The Redis store: the live pool kept in Redis, so that a dispatcher can be killed and
//! replaced, several can share one pool, and operators can inspect it with their own tools.
//!
//! Layout:
//! - [`store`]: [`RedisStore`] (the `dispatch_engine::Store` port) and [`RedisConfig`];
//! - [`keys`]: the key layout (one hash tag per pool);
//! - `dispatch.lua`: the Redis Functions — version checks and writes, no dispatch rules;
//! - [`testing`]: a `redis-server` owned by a test (free port, temporary directory, killed on
//!   drop), behind the `test-util` feature.

pub mod keys;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;

pub use store::{OpenError, RedisConfig, RedisStore};
