//! The store port: what the engine needs from persistence. Records are written with
//! compare-and-set on their `version` (the fencing token); a commit is all-or-nothing.
//!
//! Implementations: [`crate::memory::MemoryStore`] (embedded, the zero-setup default) and
//! `dispatch_redis::RedisStore`.

use async_trait::async_trait;
use dispatch_domain::demand::{BucketCount, SegmentCounter};
use dispatch_domain::transparency::WeightChange;
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

/// A period of the store's life on one server process. Every write carries the epoch its
/// writer joined; a write from an older epoch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epoch {
    /// Increases by one each time the store changes under the dispatchers (a restart, a
    /// failover, a slot moved to another node).
    pub number: u64,
    /// When the epoch began because the store had lost writes (store clock): the dispatchers
    /// put back what they know, and writes wait a reconcile window from then. `None` when
    /// nothing was lost (the store's first epoch, a clean restart, a slot moved intact).
    pub began_after_restart_at: Option<Millis>,
    /// With a loss: the store's high-water mark when it was found (what it still had; the
    /// writes after it are lost).
    pub lost_after: Option<u64>,
}

pub use dispatch_domain::stats::Counter;

/// One atomic write. Each record is written only if the stored version equals the record's
/// `version` (0: the record must not exist); the store then stores it at [`next_version`].
/// Timers are disarmed and armed (moved if armed already) and counters added in the same step.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The case to write.
    pub case: Option<Case>,
    /// The agent to write.
    pub agent: Option<Agent>,
    /// Timers to arm: (key, due).
    pub timers: Vec<(TimerKey, Millis)>,
    /// Timers to disarm, whatever their due time (before `timers` are armed, so a key in both
    /// stays armed).
    pub disarm: Vec<TimerKey>,
    /// Counter increments.
    pub counters: Vec<(Counter, i64)>,
    /// The case's demand-segment counts, added to their bucket.
    pub segment: Option<SegmentWrite>,
}

/// The counts one commit adds to one demand segment's bucket (see [`dispatch_domain::demand`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentWrite {
    /// The bucket's start (store clock; a multiple of [`BUCKET_MS`](dispatch_domain::demand::BUCKET_MS)).
    pub bucket: Millis,
    /// The segment's key.
    pub segment: String,
    /// Increments.
    pub counts: Vec<(SegmentCounter, i64)>,
}

/// What a successful commit stored, with the new versions.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The case as stored.
    pub case: Option<Case>,
    /// The agent as stored.
    pub agent: Option<Agent>,
    /// The store's high-water mark after the commit (every write bumps it; 0: the store keeps
    /// none, as one that never loses writes need not).
    pub seq: u64,
    /// The counters the commit moved, with their new totals.
    pub counters: Vec<(Counter, i64)>,
}

/// How far the store's versions of one epoch start above the previous epoch's: the epoch is
/// carried in the version's upper bits.
pub const EPOCH_SHIFT: u32 = 32;

/// The version a record is written at over the version `read`, by a writer of `epoch`: one
/// more, and at least the first version of the epoch. So versions written after a loss never
/// equal versions written before it: a dispatcher holding a record from before cannot win a
/// compare-and-set over one rewritten since at the same number.
pub fn next_version(read: u64, epoch: u64) -> u64 {
    (read + 1).max((epoch.saturating_sub(1) << EPOCH_SHIFT) | 1)
}

/// What a dispatcher saw written, put back with its records after the store lost writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// The highest high-water mark it saw.
    pub high_water: u64,
    /// The highest total of each counter it saw.
    pub counters: Vec<(Counter, i64)>,
    /// Cases it saw closed since the loss began, with the version they closed at: no restore
    /// (by any dispatcher) may bring one of them back open in an older version.
    pub closed: Vec<(CaseId, u64)>,
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
    /// The highest high-water mark among the changes read (0: none).
    pub high_water: u64,
    /// When the oldest change read was logged (store clock), if the log says.
    pub oldest_at: Option<Millis>,
}

/// A record to put back after the store lost writes, with the timers it implies.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "built once per record in a rare reconcile, moved into the write")]
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
    /// The demand-segment counts of the buckets starting at or after `since` (kept for
    /// [`RETENTION_MS`](dispatch_domain::demand::RETENTION_MS)).
    async fn segment_counts(&self, since: Millis) -> Result<Vec<BucketCount>, StoreError>;
    /// Appends a change of the scoring weights to the log unless the latest entry has the same
    /// weights (atomically: replicas starting together log a change once); the log keeps the
    /// last [`WEIGHT_LOG`](dispatch_domain::transparency::WEIGHT_LOG). Whether it was appended.
    async fn log_weights(&self, change: &WeightChange) -> Result<bool, StoreError>;
    /// A shared state record: its version and body (`None`: never written).
    async fn get_state(&self, name: &str) -> Result<Option<(u64, String)>, StoreError>;
    /// Writes a shared state record if its version is still `expected` (0: never written), at
    /// the next version; whether it was written. Refused while fenced, like every write.
    async fn put_state(&self, name: &str, expected: u64, body: &str) -> Result<bool, StoreError>;
    /// The weight changes, newest first, at most `limit`.
    async fn weight_log(&self, limit: usize) -> Result<Vec<WeightChange>, StoreError>;
    /// Every agent and live case, to build the index.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Joins the store's current epoch, beginning a new one first if the store is not the
    /// process the last one began on, or if it is behind `high_water` (the highest mark the
    /// caller saw written: it lost writes, and the new epoch opens a reconcile window). Later
    /// writes carry it. A new epoch takes writes only once every dispatcher seen lately has
    /// joined it (and, after a loss, checked in with [`Store::restored`]), or a deadline passed:
    /// a write only one of them saw may be what the store lost.
    async fn join_epoch(&self, high_water: u64) -> Result<Epoch, StoreError> {
        let _ = high_water;
        Ok(Epoch { number: 1, began_after_restart_at: None, lost_after: None })
    }
    /// [`StoreError::Fenced`] if the store restarted or its epoch moved since this handle
    /// joined: what was just read may predate writes the store lost.
    async fn check_epoch(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Puts records back after a loss: each is written (with its version, its index entries and
    /// its timers) only where the stored version is older or the record is missing, so that
    /// restores from several dispatchers converge on the newest version any of them knew; the
    /// high-water mark and the counters are raised to what the caller saw. Returns how many
    /// records were written.
    async fn restore(&self, records: Vec<Restore>, marks: &Marks) -> Result<usize, StoreError>;
    /// After a loss, once this dispatcher's restore is in: the store stops waiting for it
    /// (writes resume when every dispatcher it waits for has checked in).
    async fn restored(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A graceful shutdown: the store no longer counts this dispatcher among those it waits
    /// for after a restart.
    async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_after_a_new_epoch_never_equal_versions_before_it() {
        assert_eq!(next_version(0, 1), 1);
        assert_eq!(next_version(41, 1), 42);
        let first_of_2 = next_version(41, 2);
        assert_eq!(first_of_2, (1 << EPOCH_SHIFT) | 1);
        assert!(first_of_2 > 41 && next_version(first_of_2, 2) == first_of_2 + 1);
        // A record restored from epoch 1 at a higher number than epoch 2 began with is still
        // written above it.
        assert_eq!(next_version((1 << EPOCH_SHIFT) + 7, 2), (1 << EPOCH_SHIFT) + 8);
        assert_eq!(next_version(5, 3), (2 << EPOCH_SHIFT) | 1);
    }
}
