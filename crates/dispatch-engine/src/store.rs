//! The store port: what the engine needs from persistence. Records are written with
//! compare-and-set on their `version` (the fencing token); a commit is all-or-nothing.
//!
//! Implementations: [`crate::memory::MemoryStore`] (embedded, the zero-setup default) and
//! `dispatch_redis::RedisStore`.

use async_trait::async_trait;
use dispatch_domain::{Agent, AgentId, Case, CaseId, Millis, OfferId, TimerKey};

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A record's version moved since it was read; re-read and decide again.
    #[error("version conflict on {0}")]
    Conflict(String),
    /// The store cannot be reached or did not answer in time (the outcome may be unknown).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something it cannot decode.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// Nothing was written: the store restarted since this dispatcher joined its epoch (it may
    /// have lost its latest writes), or another dispatcher began a new epoch. Reconcile, then
    /// retry.
    #[error("store fenced: {0}")]
    Fenced(String),
}

/// A period of the store's life between two restarts that may have lost writes. Every write
/// carries the epoch its writer joined; a write from an older epoch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epoch {
    /// Increases by one at each restart.
    pub number: u64,
    /// When a restart began it (store clock); `None` for the store's first epoch (nothing to
    /// reconcile).
    pub began_after_restart_at: Option<Millis>,
}

pub use dispatch_domain::stats::Counter;

/// One atomic write. Each record is written only if the stored version equals the record's
/// `version` (0: the record must not exist); the store then stores it with `version + 1`.
/// Timers are armed (moved if armed already) and counters added in the same step.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The case to write.
    pub case: Option<Case>,
    /// The agent to write.
    pub agent: Option<Agent>,
    /// Timers to arm: (key, due).
    pub timers: Vec<(TimerKey, Millis)>,
    /// Counter increments.
    pub counters: Vec<(Counter, i64)>,
}

/// What a successful commit stored, with the new versions.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The case as stored.
    pub case: Option<Case>,
    /// The agent as stored.
    pub agent: Option<Agent>,
}

/// Everything the live index is built from.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every registered agent.
    pub agents: Vec<Agent>,
    /// Every case that is not terminal.
    pub live_cases: Vec<Case>,
}

/// Records read together with the store's time, in one round trip where the store allows.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// The case asked for, if it exists.
    pub case: Option<Case>,
    /// The agent asked for, if it exists.
    pub agent: Option<Agent>,
    /// The store's clock when read.
    pub now: Millis,
}

/// A record that changed, as named by the change log, with the version written (`None`:
/// unknown or deleted, so the record must be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRef {
    /// An agent changed or was removed.
    Agent(AgentId, Option<u64>),
    /// A case changed or was purged.
    Case(CaseId, Option<u64>),
}

/// A page of the change log.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// Changed records, oldest first.
    pub changes: Vec<ChangeRef>,
    /// Where the next read starts.
    pub cursor: String,
    /// Entries after the given cursor were trimmed before they were read: rebuild the index.
    pub gap: bool,
    /// The store restarted or its epoch moved since this dispatcher joined: reconcile.
    pub fenced: bool,
}

/// A record to put back after the store lost writes, with the timers it implies.
#[derive(Debug, Clone)]
pub enum Restore {
    /// A case.
    Case(Case, Vec<(TimerKey, Millis)>),
    /// An agent.
    Agent(Agent, Vec<(TimerKey, Millis)>),
}

/// The persistence port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a case and/or an agent, and the store's time.
    async fn read(&self, case: Option<&CaseId>, agent: Option<&AgentId>) -> Result<Read, StoreError> {
        let case = match case {
            Some(id) => self.get_case(id).await?,
            None => None,
        };
        let agent = match agent {
            Some(id) => self.get_agent(id).await?,
            None => None,
        };
        Ok(Read { case, agent, now: self.now().await? })
    }
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deletes a terminal case (and its offers' index entries); anything else is left alone.
    async fn purge_case(&self, id: &CaseId) -> Result<(), StoreError>;
    /// The change log's current end, to tail from after a snapshot.
    async fn change_cursor(&self) -> Result<String, StoreError>;
    /// Changes after `cursor`, at most `limit`.
    async fn changes(&self, cursor: &str, limit: usize) -> Result<ChangeBatch, StoreError>;
    /// The store's clock, in epoch milliseconds: offer deadlines and leases are computed on it.
    async fn now(&self) -> Result<Millis, StoreError>;
    /// An agent by id.
    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError>;
    /// A page of agents in id order, starting after `after`.
    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError>;
    /// Removes an agent if its version is still `version`.
    async fn remove_agent(&self, id: &AgentId, version: u64) -> Result<(), StoreError>;
    /// A case by id.
    async fn get_case(&self, id: &CaseId) -> Result<Option<Case>, StoreError>;
    /// The case an offer belongs to.
    async fn offer_case(&self, offer: &OfferId) -> Result<Option<CaseId>, StoreError>;
    /// Writes a commit atomically, or nothing ([`StoreError::Conflict`]).
    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError>;
    /// Timers due at `now`, earliest first, at most `limit`.
    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<(TimerKey, Millis)>, StoreError>;
    /// Disarms a timer if it is still due at `due` (a re-armed timer stays).
    async fn clear_timer(&self, key: &TimerKey, due: Millis) -> Result<(), StoreError>;
    /// The cumulative counters.
    async fn counters(&self) -> Result<Vec<(Counter, i64)>, StoreError>;
    /// Every agent and live case, to build the index.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Joins the store's current epoch, beginning a new one first if the store restarted since
    /// the last one began. Later writes carry it.
    async fn join_epoch(&self) -> Result<Epoch, StoreError> {
        Ok(Epoch { number: 1, began_after_restart_at: None })
    }
    /// [`StoreError::Fenced`] if the store restarted or its epoch moved since this handle
    /// joined: what was just read may predate writes the store lost.
    async fn check_epoch(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Puts records back after a loss: each is written (with its version, its index entries and
    /// its timers) only where the stored version is older or the record is missing, so that
    /// restores from several dispatchers converge on the newest version any of them knew.
    /// Returns how many were written.
    async fn restore(&self, records: Vec<Restore>) -> Result<usize, StoreError>;
}
