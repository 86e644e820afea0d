//! Input limits. Requests above them are refused with INVALID_ARGUMENT naming the field.

/// Longest id (agent, case, offer, customer), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest skill name, in bytes.
pub const MAX_SKILL_LEN: usize = 64;
/// Longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Longest bot summary, in bytes.
pub const MAX_SUMMARY_LEN: usize = 8 * 1024;
/// Longest decline reason, cancel reason or completion outcome, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Most skills on a profile, and most required or preferred skills on a case.
pub const MAX_SKILLS: usize = 32;
/// Most languages on a profile.
pub const MAX_LANGUAGES: usize = 16;
/// Highest capacity for one channel.
pub const MAX_CAPACITY: u32 = 50;
/// Highest case priority.
pub const MAX_PRIORITY: u8 = 10;
/// Longest case time-to-live: 7 days.
pub const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest page of `ListAgents`.
pub const MAX_PAGE_SIZE: u32 = 1000;
