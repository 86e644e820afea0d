//! Input limits. Requests above them are refused with INVALID_ARGUMENT naming the field.
//! Identifier length and priority range are fixed (they are part of the data model); the caps on
//! list sizes and text lengths are configurable in [`Limits`] (`[policy.limits]`).

use serde::{Deserialize, Serialize};

/// Longest id (agent, case, offer, customer, tenant), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest skill name, in bytes.
pub const MAX_SKILL_LEN: usize = 64;
/// Highest case priority.
pub const MAX_PRIORITY: u8 = 10;
/// Default: longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Default: longest bot summary, in bytes.
pub const MAX_SUMMARY_LEN: usize = 8 * 1024;
/// Default: longest decline reason, cancel reason or completion outcome, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Default: most skills on a profile, and most required or preferred skills on a case.
pub const MAX_SKILLS: usize = 32;
/// Default: most languages on a profile.
pub const MAX_LANGUAGES: usize = 16;
/// Default: highest capacity for one channel.
pub const MAX_CAPACITY: u32 = 50;
/// Default: longest case time-to-live, 7 days.
pub const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Default: largest page of `ListAgents`.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// A page of agents when the request asks for no size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// How often a live availability stream may and must report, in milliseconds.
pub const WATCH_INTERVAL_MS: std::ops::RangeInclusive<u32> = 250..=60_000;
/// A live availability stream's interval when the request sets none.
pub const DEFAULT_WATCH_INTERVAL_MS: u32 = 1_000;

/// The configurable caps, with safe defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest display name, in bytes.
    pub max_name_len: usize,
    /// Longest bot summary, in bytes.
    pub max_summary_len: usize,
    /// Longest reason or outcome text, in bytes.
    pub max_reason_len: usize,
    /// Most skills per profile, and required / preferred skills per case.
    pub max_skills: usize,
    /// Most languages per profile (and per availability filter).
    pub max_languages: usize,
    /// Highest capacity per channel.
    pub max_capacity: u32,
    /// Longest case time-to-live, in milliseconds.
    pub max_ttl_ms: u64,
    /// Largest `ListAgents` page.
    pub max_page_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_name_len: MAX_NAME_LEN,
            max_summary_len: MAX_SUMMARY_LEN,
            max_reason_len: MAX_REASON_LEN,
            max_skills: MAX_SKILLS,
            max_languages: MAX_LANGUAGES,
            max_capacity: MAX_CAPACITY,
            max_ttl_ms: MAX_TTL_MS,
            max_page_size: MAX_PAGE_SIZE,
        }
    }
}
