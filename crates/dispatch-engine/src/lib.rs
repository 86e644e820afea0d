//! The async shell around `dispatch_domain`: it reads records from a [`Store`], lets the
//! domain decide, commits with compare-and-set, and carries out the effects (index updates,
//! agent notices, watcher events, timers, matching).
//!
//! Layout:
//! - [`engine`]: [`Engine`], the one write path, the matcher and the sweeper;
//! - [`store`]: the persistence port ([`Store`], [`Commit`]);
//! - [`memory`]: the embedded store;
//! - [`index`]: the live pool index (agents by language and skill, waiting cases in order);
//! - [`notice`]: agent sessions and case watchers;
//! - [`clock`]: system or manual time;
//! - `conformance` (feature `test-util`): the one test suite every store must pass.

pub mod clock;
#[cfg(feature = "test-util")]
pub mod conformance;
pub mod engine;
pub mod index;
pub mod memory;
pub mod notice;
pub mod store;

pub use clock::Clock;
pub use engine::{Engine, EngineConfig, EngineError, QueueStats, ShutdownReport, WaitingGroup};
pub use memory::MemoryStore;
pub use notice::{AgentNotice, AgentSession, CaseEvent, CaseEventKind};
pub use store::{
    ChangeBatch, ChangeRef, Commit, Committed, Counter, Epoch, Read, Restore, Snapshot, Store, StoreError,
};
