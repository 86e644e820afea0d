//! The five `dispatch.v1` services, one file each. Each handler validates the request
//! (`requests`), calls the engine, and converts the answer back; streams are the engine's
//! objects ([`dispatch_engine::AgentCommands`], [`dispatch_engine::CaseWatch`]) forwarded as
//! protobuf.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_engine::Engine;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::Status;

use crate::auth::Principal;

mod agent;
mod escalation;
mod notifier;
mod planner;
mod roster;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Settings of the transport edge that handlers need.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// A device that sends nothing (not even a heartbeat) for this long is disconnected.
    pub heartbeat_timeout: Duration,
    /// Buffer of server-stream messages for watchers.
    pub watch_buffer: usize,
    /// Long-lived streams end after this long (`None`: no bound, development mode).
    pub max_stream_age: Option<Duration>,
    /// Case watches one connection may hold open at once.
    pub max_watches_per_connection: usize,
}

/// Shared by every service: the engine, edge settings, and the shutdown signal that ends
/// long-lived streams.
#[derive(Clone)]
pub struct Services {
    engine: Engine,
    edge: EdgeConfig,
    shutdown: watch::Receiver<bool>,
    /// Open watches per connection (by the peer's address).
    watches: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    /// Browser sessions held by this process (`OpenSession`), for `SendCommand`.
    browser: agent::BrowserSessions,
}

/// One open watch of one connection; counted until dropped.
struct WatchSlot {
    watches: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    peer: Option<SocketAddr>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        let mut w = self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = w.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                w.remove(&peer);
            }
        }
    }
}

impl Services {
    /// Services over `engine`; long-lived streams end when `shutdown` turns true.
    pub fn new(engine: Engine, edge: EdgeConfig, shutdown: watch::Receiver<bool>) -> Self {
        Self { engine, edge, shutdown, watches: Arc::default(), browser: agent::BrowserSessions::default() }
    }

    /// Counts a watch for the connection `peer`; RESOURCE_EXHAUSTED beyond the bound.
    fn watch_slot(&self, peer: Option<SocketAddr>) -> Result<WatchSlot, Status> {
        if let Some(p) = peer {
            // A poisoned lock still holds consistent counts: each update is one entry.
            let mut w = self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = w.entry(p).or_insert(0);
            if *n >= self.edge.max_watches_per_connection {
                return Err(crate::error::exhausted(format!(
                    "{} case watches are open on this connection; close some or use another connection",
                    self.edge.max_watches_per_connection
                )));
            }
            *n += 1;
        }
        Ok(WatchSlot { watches: Arc::clone(&self.watches), peer })
    }

    /// How long a stream of `principal` may stay open: until its credentials expire, and at most
    /// the configured stream age.
    fn stream_age(&self, principal: &Principal) -> Duration {
        let mut age = self.edge.max_stream_age.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        if let Some(exp) = principal.expires_at {
            // Token lifetimes are wall-clock time (as their validation is), not the store's clock.
            let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
            age = age.min(Duration::from_secs(left));
        }
        age
    }

    /// Resolves when the server shuts down.
    fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }
    }
}
