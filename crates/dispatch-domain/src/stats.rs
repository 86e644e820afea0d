//! Planner counts: agents filtered by language, skill and VIP certification, grouped by any of
//! language, skill, tier eligibility and activity.

use std::collections::BTreeMap;

use crate::model::{Language, Level, Millis, SkillLevel};
use crate::state::{Activity, Agent};

/// Cumulative counters for the planner, moved by events ([`crate::Event::counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Cases submitted (new, not retries).
    Submitted,
    /// Offers made.
    OffersMade,
    /// Offers accepted.
    OffersAccepted,
    /// Offers declined.
    OffersDeclined,
    /// Offers timed out.
    OffersTimedOut,
    /// Offers revoked (disconnect, away, cancel).
    OffersRevoked,
    /// Sum of offer → accept times, in milliseconds.
    AcceptMillisTotal,
    /// Cases completed.
    Completed,
    /// Cases cancelled.
    Cancelled,
    /// Cases expired.
    Expired,
    /// Assigned cases handed back to the queue (their agent vanished or went quiet).
    HandedBack,
    /// Accepts of VIP cases.
    AssignedVip,
    /// Sum of VIP customers' waits from submission to accept, milliseconds.
    WaitMillisVip,
    /// Accepts of standard cases.
    AssignedStandard,
    /// Sum of standard customers' waits from submission to accept, milliseconds.
    WaitMillisStandard,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 15] = [
        Counter::Submitted,
        Counter::OffersMade,
        Counter::OffersAccepted,
        Counter::OffersDeclined,
        Counter::OffersTimedOut,
        Counter::OffersRevoked,
        Counter::AcceptMillisTotal,
        Counter::Completed,
        Counter::Cancelled,
        Counter::Expired,
        Counter::HandedBack,
        Counter::AssignedVip,
        Counter::WaitMillisVip,
        Counter::AssignedStandard,
        Counter::WaitMillisStandard,
    ];
}

/// The Gini coefficient of `values` (0: all equal; toward 1: one holds everything), by the
/// sorted formula G = 2 Σ i·x₍ᵢ₎ / (n Σ x) − (n + 1) / n. 0 for no values or a zero sum.
pub fn gini(values: &mut [f64]) -> f64 {
    let n = values.len();
    let sum: f64 = values.iter().sum();
    if n == 0 || sum <= 0.0 {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let weighted: f64 = values.iter().enumerate().map(|(i, x)| (i as f64 + 1.0) * x).sum();
    let n = n as f64;
    (2.0 * weighted / (n * sum) - (n + 1.0) / n).max(0.0)
}

/// How a quantity spreads over agents: its total, the Gini coefficient, and the share of the
/// top tenth of the agents (at least one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// The sum.
    pub total: f64,
    /// See [`gini`].
    pub gini: f64,
    /// The share of the total held by the top tenth.
    pub top_decile_share: f64,
}

/// The spread of `values` (one per agent).
pub fn spread(mut values: Vec<f64>) -> Spread {
    let total: f64 = values.iter().sum();
    let gini = gini(&mut values); // sorts ascending
    let top = values.len().div_ceil(10);
    let top_decile_share = if total > 0.0 { values.iter().rev().take(top).sum::<f64>() / total } else { 0.0 };
    Spread { total, gini, top_decile_share }
}

/// The fairness window in UTC days: 1 to 7, 0 meaning the whole week.
pub fn fairness_days(days: u32) -> Result<i64, crate::model::FieldError> {
    match days {
        0 => Ok(crate::worktime::WEEK_DAYS),
        d @ 1..=7 => Ok(i64::from(d)),
        d => Err(crate::model::FieldError::new("days", format!("{d} days is outside 1 to 7"))),
    }
}

/// The mean of a total over a count (0 for none): mean waits and handle times from counters.
pub fn mean(total: u64, count: u64) -> f64 {
    if count > 0 { total as f64 / count as f64 } else { 0.0 }
}

/// Mean offer → accept time from the counters (0 before any accept).
pub fn mean_time_to_accept_ms(accepted: i64, accept_millis_total: i64) -> f64 {
    let positive = |v: i64| u64::try_from(v).unwrap_or(0);
    mean(positive(accept_millis_total), positive(accepted))
}

/// Which agents to count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AvailabilityFilter {
    /// Agents speaking at least one of these (primary subtag) at `min_proficiency`; empty: any.
    pub languages: Vec<Language>,
    /// Proficiency for `languages`.
    pub min_proficiency: Option<Level>,
    /// Agents with each of these at or above its level.
    pub skills: Vec<SkillLevel>,
    /// Only VIP-certified agents (certification valid now).
    pub vip_certified_only: bool,
    /// Agents contracted for at least one of these markets; empty: any.
    pub markets: Vec<crate::model::Market>,
}

impl AvailabilityFilter {
    /// Whether `agent` is counted.
    pub fn admits(&self, agent: &Agent, now: Millis) -> bool {
        let p = &agent.profile;
        let min = self.min_proficiency.unwrap_or(Level::MIN);
        (self.languages.is_empty() || self.languages.iter().any(|l| p.proficiency(l).is_some_and(|x| x >= min)))
            && self.skills.iter().all(|s| p.skills.get(&s.skill).is_some_and(|l| *l >= s.level))
            && (!self.vip_certified_only || p.vip_certified(now))
            && (self.markets.is_empty() || self.markets.iter().any(|m| p.markets.contains(m)))
    }
}

/// A grouping dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    /// Primary language subtag; an agent counts once per language spoken.
    Language,
    /// Skill; an agent counts once per skill held.
    Skill,
    /// `vip` (certified) or `standard`.
    Tier,
    /// Offline / available / busy / away / reconnecting.
    Activity,
}

/// The key of one group: the dimensions grouped by are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Language (primary subtag).
    pub language: Option<String>,
    /// Skill.
    pub skill: Option<String>,
    /// `vip` or `standard`.
    pub tier: Option<&'static str>,
    /// Activity.
    pub activity: Option<Activity>,
}

/// Counts of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every agent counted.
    pub registered: u64,
    /// Signed in: available + busy + away + reconnecting.
    pub online: u64,
    /// Can take an offer now.
    pub available: u64,
    /// Available by status but occupied.
    pub busy: u64,
    /// Away.
    pub away: u64,
    /// Not signed in.
    pub offline: u64,
    /// Signed in, device stream dropped, within the reconnect grace period: cannot take an
    /// offer (counted neither available nor busy).
    pub reconnecting: u64,
}

impl Counts {
    fn add(&mut self, activity: Activity) {
        self.registered += 1;
        match activity {
            Activity::Offline => self.offline += 1,
            Activity::Available => self.available += 1,
            Activity::Busy => self.busy += 1,
            Activity::Away => self.away += 1,
            Activity::Reconnecting => self.reconnecting += 1,
        }
        if activity != Activity::Offline {
            self.online += 1;
        }
    }
}

/// Totals and groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// Over every counted agent.
    pub total: Counts,
    /// Per group, in key order (empty when not grouping).
    pub groups: BTreeMap<GroupKey, Counts>,
}

/// Counts `agents` at `now`.
pub fn availability<'a>(
    agents: impl IntoIterator<Item = &'a Agent>,
    filter: &AvailabilityFilter,
    group_by: &[GroupBy],
    now: Millis,
) -> Availability {
    let mut out = Availability::default();
    for agent in agents.into_iter().filter(|a| filter.admits(a, now)) {
        let activity = agent.activity(now);
        out.total.add(activity);
        if group_by.is_empty() {
            continue;
        }
        let mut keys = vec![GroupKey::default()];
        for dim in group_by {
            keys = match dim {
                GroupBy::Language => {
                    let mut langs: Vec<String> =
                        agent.profile.languages.iter().map(|l| l.language.primary().to_owned()).collect();
                    langs.dedup();
                    keys.iter()
                        .flat_map(|k| langs.iter().map(move |l| GroupKey { language: Some(l.clone()), ..k.clone() }))
                        .collect()
                }
                GroupBy::Skill => keys
                    .iter()
                    .flat_map(|k| {
                        agent
                            .profile
                            .skills
                            .keys()
                            .map(move |s| GroupKey { skill: Some(s.as_str().to_owned()), ..k.clone() })
                    })
                    .collect(),
                GroupBy::Tier => {
                    let tier = if agent.profile.vip_certified(now) { "vip" } else { "standard" };
                    keys.into_iter().map(|k| GroupKey { tier: Some(tier), ..k }).collect()
                }
                GroupBy::Activity => keys.into_iter().map(|k| GroupKey { activity: Some(activity), ..k }).collect(),
            };
        }
        for key in keys {
            out.groups.entry(key).or_default().add(activity);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::gini;

    #[test]
    fn gini_is_zero_for_equal_shares_and_grows_with_concentration() {
        assert_eq!(gini(&mut []), 0.0);
        assert_eq!(gini(&mut [0.0, 0.0]), 0.0);
        assert!(gini(&mut [5.0, 5.0, 5.0, 5.0]).abs() < 1e-12);
        // One of four holds everything: (n − 1) / n.
        assert!((gini(&mut [0.0, 0.0, 0.0, 8.0]) - 0.75).abs() < 1e-12);
        // The textbook case 1, 2, 3, 4: 0.25.
        assert!((gini(&mut [4.0, 1.0, 3.0, 2.0]) - 0.25).abs() < 1e-12);
        assert!(gini(&mut [1.0, 1.0, 1.0, 5.0]) > gini(&mut [1.0, 2.0, 2.0, 3.0]));
        let s = super::spread(vec![3.0, 0.0]);
        assert_eq!((s.total, s.gini, s.top_decile_share), (3.0, 0.5, 1.0));
        assert_eq!(super::fairness_days(0), Ok(7));
        assert_eq!(super::fairness_days(8).unwrap_err().field, "days");
    }
}
