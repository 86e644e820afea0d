//! The key layout. Every key of one pool carries the hash tag `{pool}`, so every Function call
//! touches one Redis Cluster slot, and pools spread across slots.

/// Keys of one pool.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Sorted set of agent ids (score 0: ordered by id for paging).
    pub agents: String,
    /// Set of ids of cases that are not terminal.
    pub live: String,
    /// Hash offer id → case id.
    pub offers: String,
    /// Sorted set timer → due time (ms on the store clock).
    pub timers: String,
    /// Hash counter → total.
    pub counters: String,
    /// Stream: the change log (`k` = `a` agent / `c` case, `id`, `v` the version written, `s`
    /// the high-water mark after the write).
    pub log: String,
    /// String: the store's epoch (`<epoch>:<run id>:<began at>:<mark found>:<wait until>:<pending>`,
    /// see `dispatch.lua`).
    pub epoch: String,
    /// Hash dispatcher id → when its probe last saw it (store clock).
    pub members: String,
    /// String: the high-water mark, bumped by every write.
    pub seq: String,
    /// List: changes of the scoring weights, oldest first (`<weights>\t<json>`).
    pub weights: String,
    /// Hash case id → the version some dispatcher saw it closed at, during a reconcile after a
    /// loss (expires after ten minutes): restores never revive those cases.
    pub closed: String,
}

impl Keys {
    /// Keys of pool `pool`.
    pub fn new(pool: &str) -> Self {
        let prefix = format!("dispatch:{{{pool}}}:");
        Self {
            agents: format!("{prefix}agents"),
            live: format!("{prefix}live"),
            offers: format!("{prefix}offers"),
            timers: format!("{prefix}timers"),
            counters: format!("{prefix}counters"),
            log: format!("{prefix}log"),
            epoch: format!("{prefix}epoch"),
            members: format!("{prefix}members"),
            seq: format!("{prefix}seq"),
            closed: format!("{prefix}closed"),
            weights: format!("{prefix}weights"),
            prefix,
        }
    }

    /// String `<version>:<json>` of one agent.
    pub fn agent(&self, id: &str) -> String {
        format!("{}agent:{id}", self.prefix)
    }

    /// Hash `<segment>|<counter>` → total: the demand-segment counts of the minute starting at
    /// `bucket` (ms).
    pub fn segments(&self, bucket: i64) -> String {
        format!("{}seg:{bucket}", self.prefix)
    }

    /// String `<version>:<body>`: a shared state record (the call-in rounds').
    pub fn state(&self, name: &str) -> String {
        format!("{}state:{name}", self.prefix)
    }

    /// String `<version>:<json>` of one case.
    pub fn case(&self, id: &str) -> String {
        format!("{}case:{id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_pool_tag() {
        let k = Keys::new("eu-1");
        for key in [
            &k.agents,
            &k.live,
            &k.offers,
            &k.timers,
            &k.counters,
            &k.log,
            &k.epoch,
            &k.seq,
            &k.weights,
            &k.agent("a"),
            &k.case("c"),
        ] {
            assert!(key.starts_with("dispatch:{eu-1}:"), "{key}");
        }
    }
}
