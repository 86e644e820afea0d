//! Engine settings that are not dispatch rules (those are the domain's `Policy`).

use serde::{Deserialize, Serialize};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How often the sweeper looks for due timers.
    pub sweep_interval_ms: u64,
    /// How often every waiting case is tried again (a safety net for lost triggers).
    pub rescan_interval_ms: u64,
    /// Outbound messages buffered per agent device; a device that lets it fill is disconnected.
    pub agent_outbound_buffer: usize,
    /// Attempts at a compare-and-set before giving up with a contention error.
    pub conflict_retries: u32,
    /// Seed for offer and session ids (`None`: from the operating system).
    pub id_seed: Option<u64>,
    /// How often the store's change log is read (other dispatchers' commits).
    pub change_feed_interval_ms: u64,
    /// How often the store is pinged for health.
    pub health_interval_ms: u64,
    /// Matching tasks working the queue concurrently (with a remote store each offer waits on
    /// round trips; compare-and-set keeps concurrent matchers correct).
    pub matcher_workers: usize,
    /// After the store restarted (and may have lost its latest writes), writes other than the
    /// dispatchers' restores are refused (UNAVAILABLE, retry) for this long, so that every
    /// dispatcher puts back what it knows before anything new is decided.
    pub reconcile_window_ms: u64,
    /// Closed cases are remembered this long (store clock) to be put back after such a loss:
    /// at least the most a failover may lose (see `deploy/redis.conf`: writes stop when no
    /// replica is within 10 s; about 1 s with AOF `everysec` alone), with margin.
    pub reconcile_memory_ms: u64,
    /// ... and at most about this many bytes of them (slim copies); a loss reaching back past
    /// what the bound kept is reported.
    pub reconcile_memory_bytes: usize,
    /// Case watches open at once in this process; more are refused (RESOURCE_EXHAUSTED).
    pub max_watches: usize,
    /// Languages that get a label of their own in the metrics (the rest count as `other`):
    /// the markets' main ones, a handful, to keep the label set bounded.
    pub metric_languages: Vec<String>,
    /// Who the policy in force is from, as the weights' change log records it (who deployed
    /// this configuration).
    pub policy_author: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sweep_interval_ms: 100,
            rescan_interval_ms: 5_000,
            agent_outbound_buffer: 64,
            conflict_retries: 8,
            id_seed: None,
            change_feed_interval_ms: 100,
            health_interval_ms: 1_000,
            matcher_workers: 4,
            reconcile_window_ms: 2_000,
            reconcile_memory_ms: 60_000,
            reconcile_memory_bytes: 64 * 1024 * 1024,
            max_watches: 100_000,
            metric_languages: ["en", "es", "de", "fr", "pt", "it", "nl", "pl", "tr", "ar", "hi", "ja"]
                .map(str::to_owned)
                .to_vec(),
            policy_author: "deployment configuration".to_owned(),
        }
    }
}

impl EngineConfig {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("engine.sweep_interval_ms", self.sweep_interval_ms),
            ("engine.rescan_interval_ms", self.rescan_interval_ms),
            ("engine.agent_outbound_buffer", self.agent_outbound_buffer as u64),
            ("engine.conflict_retries", u64::from(self.conflict_retries)),
            ("engine.change_feed_interval_ms", self.change_feed_interval_ms),
            ("engine.health_interval_ms", self.health_interval_ms),
            ("engine.matcher_workers", self.matcher_workers as u64),
            ("engine.max_watches", self.max_watches as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be above 0"));
        }
        if self.metric_languages.len() > 50 {
            return Err("engine.metric_languages: at most 50 (each is a label value of several metrics)".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_zero_is_named() {
        assert_eq!(EngineConfig::default().validate(), Ok(()));
        let bad = EngineConfig { agent_outbound_buffer: 0, ..EngineConfig::default() };
        assert_eq!(bad.validate(), Err("engine.agent_outbound_buffer must be above 0".to_owned()));
    }
}
