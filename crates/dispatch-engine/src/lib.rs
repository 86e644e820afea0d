//! The async shell around `dispatch_domain`: it reads records from a [`Store`], lets the
//! domain decide, commits with compare-and-set, and carries out the effects (index updates,
//! agent notices, watcher events, timers, matching).
//!
//! Layout (each `impl Engine` file is one concern; the leaf structs hold their own state):
//! - [`engine`]: the [`Engine`] handle and its state, grouped by concern;
//! - `lifecycle`: start (index, background tasks), health, graceful shutdown;
//! - [`api`]: roster, cases ([`CaseWatch`]), agent sessions ([`AgentNotices`],
//!   [`AgentCommands`]) and planner;
//! - `write`: the one write path (read → decide → compare-and-set, one gate for every write);
//! - `delivery`: the one delivery path (index, notices, watch events, planners' signal, work),
//!   for this process's commits and other replicas' alike;
//! - `matcher`, `timers`: matching workers and the rescan; the sweeper and lease renewal;
//! - `follow`, `reconcile`: the change log and index rebuilds; restores after a store restart;
//! - `fence`, `work`, [`sessions`], [`watchers`]: the epoch fence and closed-case memory, the
//!   work queue and id mint, device sessions, case watchers;
//! - [`config`], [`error`]: settings and errors; [`metrics`]: what the process measures of
//!   itself (Prometheus), and the store timed;
//! - [`store`]: the persistence port ([`Store`], [`Commit`]); [`memory`]: the embedded store;
//! - [`index`]: the live pool index (agents by language and skill, waiting cases in order);
//! - [`callin`]: call-in rounds, invitations and the notification service's feed;
//! - [`demand`]: segment counts with each commit, wait estimates, and planners' segment view;
//! - [`clock`]: system or manual time;
//! - `conformance` (feature `test-util`): the one test suite every store must pass.

pub mod api;
pub mod callin;
pub mod clock;
pub mod config;
#[cfg(feature = "test-util")]
pub mod conformance;
mod delivery;
pub mod demand;
pub mod engine;
pub mod error;
mod fence;
mod follow;
pub mod index;
mod lifecycle;
mod matcher;
pub mod memory;
pub mod metrics;
mod reconcile;
pub mod sessions;
pub mod store;
mod telemetry;
mod timers;
pub mod watchers;
mod work;
mod write;

pub use api::agents::{AgentCommand, AgentCommands, AgentNotices, CommandSource, Inbound, StreamLimits};
pub use api::cases::CaseWatch;
pub use api::planner::{QueueStats, WaitingGroup};
pub use clock::Clock;
pub use config::EngineConfig;
pub use engine::Engine;
pub use error::EngineError;
pub use lifecycle::ShutdownReport;
pub use memory::MemoryStore;
pub use metrics::Metrics;
pub use sessions::{AgentNotice, StreamEnd};
pub use store::{
    ChangeBatch, ChangeRef, Commit, Committed, Counter, Epoch, Marks, Read, Restore, Snapshot, Store, StoreError,
};
pub use watchers::{CaseEvent, CaseEventKind};
