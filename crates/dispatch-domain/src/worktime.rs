//! Working time: how long an agent has been engaged — holding an offer or an assigned case, and
//! optionally signed in and available — per continuous stretch, per day and over the last seven
//! days, counted on the store's clock in the agent's record (so it survives restarts and
//! replica changes); and the limits that stop new offers in time (a visa's weekly cap, a
//! platform's "12 hours, then 6 off").
//!
//! Days are UTC days. The rolling week is today and the six days before it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Millis};
use crate::policy::{ChannelDurations, Policy};
use crate::state::Agent;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// How many days the rolling window covers.
pub const WEEK_DAYS: i64 = 7;

/// Engagement limits; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkLimits {
    /// Most engaged time without a break of `break_ms`.
    pub max_continuous_ms: u64,
    /// A break at least this long (free of work) ends a continuous stretch.
    pub break_ms: u64,
    /// Most engaged time per (UTC) day.
    pub max_per_day_ms: u64,
    /// Most engaged time over the last seven days.
    pub max_per_week_ms: u64,
}

impl WorkLimits {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_continuous_ms == 0 && self.max_per_day_ms == 0 && self.max_per_week_ms == 0
    }

    /// The stricter of two sets of limits, limit by limit (0 is none; the longer break).
    pub fn stricter(self, other: WorkLimits) -> WorkLimits {
        let min = |a: u64, b: u64| match (a, b) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        WorkLimits {
            max_continuous_ms: min(self.max_continuous_ms, other.max_continuous_ms),
            break_ms: self.break_ms.max(other.break_ms),
            max_per_day_ms: min(self.max_per_day_ms, other.max_per_day_ms),
            max_per_week_ms: min(self.max_per_week_ms, other.max_per_week_ms),
        }
    }

    /// Checks ranges (`field` names the table).
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.max_continuous_ms > 0 && self.break_ms == 0 {
            return Err(format!("{field}: max_continuous_ms needs a break_ms above 0"));
        }
        let week = u64::try_from(WEEK_DAYS * DAY_MS).unwrap_or(u64::MAX);
        if self.max_per_day_ms > u64::try_from(DAY_MS).unwrap_or(u64::MAX) || self.max_per_week_ms > week {
            return Err(format!("{field}: a daily limit is at most a day, a weekly one at most a week"));
        }
        Ok(())
    }
}

/// `[policy.working_time]`: the limits by market, what counts as engaged, and how long a new
/// offer is expected to keep the agent engaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkingTimePolicy {
    /// Limits for agents of markets without their own.
    pub default: WorkLimits,
    /// Limits per market (ISO 3166-1 alpha-2): an agent serving several gets the strictest.
    pub markets: BTreeMap<String, WorkLimits>,
    /// Whether signed-in, available time counts as engaged too (not only offers and cases).
    pub count_available: bool,
    /// What a new offer is expected to keep the agent engaged, per channel: near a limit, no
    /// offer is made that would be expected to run past it.
    pub expected_handle_ms: ChannelDurations,
}

impl Default for WorkingTimePolicy {
    fn default() -> Self {
        Self {
            default: WorkLimits::default(),
            markets: BTreeMap::new(),
            count_available: false,
            expected_handle_ms: ChannelDurations { voice: 480_000, chat: 600_000, email: 900_000 },
        }
    }
}

impl WorkingTimePolicy {
    /// The limits that apply to `agent`: its own (a visa's cap) over the strictest of its
    /// markets', or the default.
    pub fn limits_for(&self, agent: &Agent) -> WorkLimits {
        let own = agent.profile.work_limits;
        let markets = agent
            .profile
            .markets
            .iter()
            .filter_map(|m| self.markets.get(m.as_str()).copied())
            .reduce(WorkLimits::stricter)
            .unwrap_or(self.default);
        match own {
            Some(own) => own.stricter(markets),
            None => markets,
        }
    }
}

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Continuous engaged time.
    Continuous,
    /// Engaged time today.
    Day,
    /// Engaged time over seven days.
    Week,
}

impl Limit {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Continuous => "continuous",
            Limit::Day => "day",
            Limit::Week => "week",
        }
    }
}

/// An agent at a working-time limit: no offers until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped {
    /// The limit reached.
    pub limit: Limit,
    /// When the agent may take work again.
    pub until: Millis,
}

/// What one agent did on one day: engaged time and offers by outcome (an agent's own figures,
/// and the planners' fairness figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayFigures {
    /// Engaged milliseconds.
    #[serde(rename = "e", default)]
    pub engaged_ms: u64,
    /// Offers received.
    #[serde(rename = "o", default)]
    pub offers: u32,
    /// Offers accepted.
    #[serde(rename = "a", default)]
    pub accepted: u32,
    /// Offers declined.
    #[serde(rename = "d", default)]
    pub declined: u32,
    /// Offers missed (not answered in time).
    #[serde(rename = "m", default)]
    pub missed: u32,
    /// Cases completed.
    #[serde(rename = "h", default)]
    pub handled: u32,
}

impl DayFigures {
    /// The sum of two.
    pub fn plus(self, o: DayFigures) -> DayFigures {
        DayFigures {
            engaged_ms: self.engaged_ms + o.engaged_ms,
            offers: self.offers + o.offers,
            accepted: self.accepted + o.accepted,
            declined: self.declined + o.declined,
            missed: self.missed + o.missed,
            handled: self.handled + o.handled,
        }
    }
}

/// The agent's engagement log, part of its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkLog {
    /// Engaged since then (`None`: not engaged now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engaged_since: Option<Millis>,
    /// Closed engaged time and offers per UTC day number (`ms / DAY_MS`), the last seven days.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub days: BTreeMap<i64, DayFigures>,
    /// Closed engaged time in the current continuous stretch.
    #[serde(default)]
    pub stretch_ms: u64,
    /// When the agent last stopped being engaged (0: never engaged).
    #[serde(default)]
    pub free_since: Millis,
    /// The limit the agent reached, until when (set when an engagement ends at a limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped: Option<Capped>,
}

/// Engaged time used at `now`, per limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// In the current continuous stretch.
    pub continuous_ms: u64,
    /// Today.
    pub day_ms: u64,
    /// Over the last seven days.
    pub week_ms: u64,
}

fn day_of(t: Millis) -> i64 {
    t.div_euclid(DAY_MS)
}

impl WorkLog {
    /// Engaged time used at `now` (the open engagement counted up to `now`).
    /// Read for every candidate of a selection when limits are set: nothing is copied.
    pub fn used(&self, now: Millis, limits: &WorkLimits) -> Used {
        let today = day_of(now);
        let closed = |from_day: i64| -> u64 { self.days.range(from_day..=today).map(|(_, d)| d.engaged_ms).sum() };
        // The open engagement's part since `from` (a day's or the window's start).
        let open =
            |from: Millis| self.engaged_since.map_or(0, |since| u64::try_from(now - since.max(from)).unwrap_or(0));
        let week_from = today - WEEK_DAYS + 1;
        let continuous_ms = match self.engaged_since {
            Some(since) => self.stretch_ms + u64::try_from(now - since).unwrap_or(0),
            None if self.free_since > 0 && now - self.free_since >= limits.break_ms as i64 => 0,
            None => self.stretch_ms,
        };
        Used {
            continuous_ms,
            day_ms: closed(today) + open(today * DAY_MS),
            week_ms: closed(week_from) + open(week_from * DAY_MS),
        }
    }

    /// The agent's figures today and over the last `days` days (1 to 7) at `now`, the open
    /// engagement counted up to `now`.
    pub fn figures(&self, now: Millis, days: i64) -> DayFigures {
        let today = day_of(now);
        let mut all = self.days.clone();
        if let Some(since) = self.engaged_since {
            add_span(&mut all, since, now);
        }
        all.range(today - days.clamp(1, WEEK_DAYS) + 1..=today).fold(DayFigures::default(), |acc, (_, d)| acc.plus(*d))
    }

    /// Counts what happened to the agent at `now` in today's figures.
    pub fn count(&mut self, now: Millis, f: impl FnOnce(&mut DayFigures)) {
        f(self.days.entry(day_of(now)).or_default());
    }
}

fn add_span(days: &mut BTreeMap<i64, DayFigures>, from: Millis, to: Millis) {
    let mut t = from;
    while t < to {
        let end = ((day_of(t) + 1) * DAY_MS).min(to);
        days.entry(day_of(t)).or_default().engaged_ms += u64::try_from(end - t).unwrap_or(0);
        t = end;
    }
}

/// Whether the agent counts as engaged in its present state at `now`: holding an offer or a
/// case, or (with `count_available`) signed in and available, unless capped (a capped agent
/// cannot work, so waiting out the cap is a break).
pub fn engaged(agent: &Agent, policy: &WorkingTimePolicy, now: Millis) -> bool {
    holds_work(agent)
        || (policy.count_available
            && agent.connected()
            && agent.status == crate::state::AgentStatus::Available
            && agent.work.capped.is_none_or(|c| now >= c.until))
}

fn holds_work(agent: &Agent) -> bool {
    agent.pending_offer.is_some() || !agent.assignments.is_empty()
}

/// The shortest time any case the agent can take is expected to last (its channels').
fn shortest_case_ms(agent: &Agent, wt: &WorkingTimePolicy) -> u64 {
    Channel::ALL
        .into_iter()
        .filter(|c| agent.profile.capacity_for(*c) > 0)
        .map(|c| wt.expected_handle_ms.get(c))
        .min()
        .unwrap_or(0)
}

/// Brings the agent's log up to its present state at `now`: an engagement starts (a break of
/// `break_ms` since the last one starts a new stretch) or ends (its time is added to the days
/// and the stretch); an agent that holds no work is capped if a limit leaves no room for the
/// shortest expected case (one counted while available stops being engaged then). Every
/// transition's agent passes here before it is written ([`crate::transition::Change::settle`]).
/// Returns when to look again through time alone: the moment an agent counted while merely
/// available will have no room left (its engagement runs on without any transition).
pub fn settle(agent: &mut Agent, now: Millis, policy: &Policy) -> Option<Millis> {
    let wt = &policy.working_time;
    let limits = wt.limits_for(agent);
    if agent.work.capped.is_some_and(|c| now >= c.until) {
        agent.work.capped = None;
    }
    let now_engaged = engaged(agent, wt, now);
    let log = &mut agent.work;
    match (log.engaged_since, now_engaged) {
        (None, true) => {
            if log.free_since > 0 && now - log.free_since >= limits.break_ms as i64 {
                log.stretch_ms = 0;
            }
            log.engaged_since = Some(now);
        }
        (Some(_), false) => end_engagement(log, now),
        _ => {}
    }
    if holds_work(agent) || agent.work.capped.is_some() || limits.is_unlimited() {
        return None;
    }
    let shortest = shortest_case_ms(agent, wt);
    let (room, _) = room_ms(&agent.work, now, &limits)?;
    if room >= shortest {
        // Counted while available: look again when the room runs out (a case that just fits
        // may still be offered; a millisecond later none does).
        return agent.work.engaged_since.map(|_| now + i64::try_from(room - shortest).unwrap_or(i64::MAX - now) + 1);
    }
    if agent.work.engaged_since.is_some() {
        end_engagement(&mut agent.work, now);
    }
    agent.work.capped = cap(&agent.work, now, &limits, shortest);
    None
}

fn end_engagement(log: &mut WorkLog, now: Millis) {
    if let Some(since) = log.engaged_since.take() {
        add_span(&mut log.days, since, now);
        log.stretch_ms += u64::try_from(now - since).unwrap_or(0);
        log.free_since = now;
        let today = day_of(now);
        log.days.retain(|d, _| *d > today - WEEK_DAYS);
    }
}

/// Room left at `now` under `limits` before the first limit: `None` when unlimited.
pub fn room_ms(log: &WorkLog, now: Millis, limits: &WorkLimits) -> Option<(u64, Limit)> {
    let used = log.used(now, limits);
    [
        (limits.max_continuous_ms, used.continuous_ms, Limit::Continuous),
        (limits.max_per_day_ms, used.day_ms, Limit::Day),
        (limits.max_per_week_ms, used.week_ms, Limit::Week),
    ]
    .into_iter()
    .filter(|(max, _, _)| *max > 0)
    .map(|(max, used, l)| (max.saturating_sub(used), l))
    .min_by_key(|(room, _)| *room)
}

/// Whether an offer of `channel` at `now` would be expected to run past a limit; the limit.
pub fn would_cross(agent: &Agent, channel: Channel, now: Millis, policy: &Policy) -> Option<Limit> {
    let wt = &policy.working_time;
    if wt.default.is_unlimited() && wt.markets.is_empty() && agent.profile.work_limits.is_none() {
        return None;
    }
    let limits = wt.limits_for(agent);
    let expected = wt.expected_handle_ms.get(channel);
    room_ms(&agent.work, now, &limits).filter(|(room, _)| *room < expected).map(|(_, l)| l)
}

/// The cap of a free agent whose room is below `needed`: the limit, and when enough room is
/// back (the break's end, the next day, or the day old time drops out of the week).
fn cap(log: &WorkLog, now: Millis, limits: &WorkLimits, needed: u64) -> Option<Capped> {
    let (room, limit) = room_ms(log, now, limits)?;
    if room >= needed {
        return None;
    }
    let today = day_of(now);
    let until = match limit {
        Limit::Continuous => log.free_since + limits.break_ms as i64,
        Limit::Day => (today + 1) * DAY_MS,
        Limit::Week => {
            // The first day on which the last seven days leave `needed` of room.
            let mut d = today + 1;
            loop {
                let week: u64 = log.days.range(d - WEEK_DAYS + 1..=d).map(|(_, f)| f.engaged_ms).sum();
                if limits.max_per_week_ms.saturating_sub(week) >= needed || d > today + WEEK_DAYS {
                    break d * DAY_MS;
                }
                d += 1;
            }
        }
    };
    Some(Capped { limit, until: until.max(now + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentProfile, AgentProfileInput, CaseId};
    use crate::state::PendingOffer;

    const H: i64 = 3_600_000;
    /// Midnight UTC, day 20,000.
    const D0: i64 = 20_000 * DAY_MS;

    fn agent() -> Agent {
        let p = AgentProfile::parse(
            AgentProfileInput {
                id: "w",
                languages: vec![("en", 5)],
                capacity: vec![(Some(Channel::Chat), 2)],
                ..Default::default()
            },
            &crate::limits::Limits::default(),
        )
        .unwrap();
        Agent::new(p, D0)
    }

    fn policy(limits: WorkLimits) -> Policy {
        Policy {
            working_time: WorkingTimePolicy { default: limits, ..WorkingTimePolicy::default() },
            ..Policy::default()
        }
    }

    /// The agent takes a case at `from` and finishes it at `to`.
    fn work(a: &mut Agent, from: Millis, to: Millis, p: &Policy) {
        a.assignments.insert(CaseId::parse("c", &format!("c{from}")).unwrap(), Channel::Chat);
        settle(a, from, p);
        a.assignments.clear();
        settle(a, to, p);
    }

    #[test]
    fn engaged_time_is_counted_per_day_across_midnight_and_per_week() {
        let p = policy(WorkLimits::default());
        let mut a = agent();
        work(&mut a, D0 + 22 * H, D0 + 26 * H, &p); // 2 h before midnight, 2 h after
        let used = a.work.used(D0 + 27 * H, &WorkLimits::default());
        assert_eq!((used.day_ms, used.week_ms), (2 * H as u64, 4 * H as u64));
        assert_eq!(a.work.days.get(&20_000).map(|d| d.engaged_ms), Some(2 * H as u64));
        // Eight days later the old days have dropped out of the week.
        work(&mut a, D0 + 8 * DAY_MS, D0 + 8 * DAY_MS + H, &p);
        assert_eq!(a.work.used(D0 + 8 * DAY_MS + H, &WorkLimits::default()).week_ms, H as u64);
        assert!(a.work.days.keys().all(|d| *d > 20_001), "old days are not kept: {:?}", a.work.days);
        // An engagement under way counts up to now.
        a.pending_offer = Some(PendingOffer {
            offer_id: crate::model::OfferId::parse("o", "o1").unwrap(),
            case_id: CaseId::parse("c", "c9").unwrap(),
            channel: Channel::Chat,
            deadline: 0,
        });
        settle(&mut a, D0 + 9 * DAY_MS, &p);
        assert_eq!(a.work.used(D0 + 9 * DAY_MS + 1_000, &WorkLimits::default()).day_ms, 1_000);
    }

    #[test]
    fn a_break_ends_the_continuous_stretch() {
        let limits = WorkLimits { max_continuous_ms: 4 * H as u64, break_ms: H as u64, ..WorkLimits::default() };
        let p = policy(limits);
        let mut a = agent();
        work(&mut a, D0, D0 + 2 * H, &p);
        work(&mut a, D0 + 2 * H + 30 * 60_000, D0 + 3 * H, &p); // a 30 min pause is no break
        assert_eq!(a.work.used(D0 + 3 * H, &limits).continuous_ms, 2 * H as u64 + 30 * 60_000);
        assert_eq!(a.work.used(D0 + 4 * H, &limits).continuous_ms, 0, "an hour off is a break");
        work(&mut a, D0 + 4 * H, D0 + 5 * H, &p);
        assert_eq!(a.work.used(D0 + 5 * H, &limits).continuous_ms, H as u64);
    }

    #[test]
    fn near_a_limit_no_offer_that_would_run_past_it_and_at_it_a_cap_until_the_limit_allows() {
        // 8 h a day; a chat case is expected to take 10 min.
        let limits = WorkLimits { max_per_day_ms: 8 * H as u64, ..WorkLimits::default() };
        let p = policy(limits);
        let mut a = agent();
        work(&mut a, D0 + H, D0 + 8 * H + 55 * 60_000, &p); // 7 h 55 min
        assert_eq!(would_cross(&a, Channel::Chat, D0 + 10 * H, &p), Some(Limit::Day), "5 min left < 10 min");
        let capped = a.work.capped.expect("capped when the engagement ended");
        assert_eq!((capped.limit, capped.until), (Limit::Day, D0 + DAY_MS), "until the next day");
        assert_eq!(would_cross(&a, Channel::Chat, D0 + DAY_MS, &p), None, "a new day");
        // A weekly cap (a visa's 20 h): until old days drop out.
        let weekly = WorkLimits { max_per_week_ms: 20 * H as u64, ..WorkLimits::default() };
        let p = policy(weekly);
        let mut b = agent();
        for d in 0..3 {
            work(&mut b, D0 + d * DAY_MS, D0 + d * DAY_MS + 7 * H, &p); // 7 h, three days
        }
        let c = b.work.capped.expect("21 h ≥ 20 h");
        assert_eq!(c.limit, Limit::Week);
        assert_eq!(c.until, D0 + 7 * DAY_MS, "the day the first day's 7 h leave the window");
        // The agent's own limit applies over the market's: the stricter one.
        let mut own = agent();
        own.profile.work_limits = Some(WorkLimits { max_per_day_ms: H as u64, ..WorkLimits::default() });
        assert_eq!(p.working_time.limits_for(&own).max_per_day_ms, H as u64);
        assert_eq!(p.working_time.limits_for(&own).max_per_week_ms, 20 * H as u64);
    }

    #[test]
    fn available_time_counts_when_configured() {
        let p = Policy {
            working_time: WorkingTimePolicy { count_available: true, ..WorkingTimePolicy::default() },
            ..Policy::default()
        };
        let mut a = agent();
        a = crate::transition::connect(&a, crate::model::SessionId::parse("s", "s1").unwrap(), D0, &p).agent.unwrap();
        a.status = crate::state::AgentStatus::Available;
        settle(&mut a, D0, &p);
        assert_eq!(a.work.engaged_since, Some(D0));
        a.status = crate::state::AgentStatus::Away;
        settle(&mut a, D0 + H, &p);
        assert_eq!(a.work.used(D0 + 2 * H, &WorkLimits::default()).day_ms, H as u64);
        // With a limit, an agent merely available is looked at again when its room runs out
        // (an hour a day, a chat expected to take 10 min: after 50 min), and capped then.
        let limited = Policy {
            working_time: WorkingTimePolicy {
                count_available: true,
                default: WorkLimits { max_per_day_ms: H as u64, ..WorkLimits::default() },
                ..WorkingTimePolicy::default()
            },
            ..Policy::default()
        };
        let mut b = agent();
        b = crate::transition::connect(&b, crate::model::SessionId::parse("s", "s1").unwrap(), D0, &limited)
            .agent
            .unwrap();
        b.status = crate::state::AgentStatus::Available;
        let runs_out = D0 + 50 * 60_000 + 1;
        assert_eq!(settle(&mut b, D0, &limited), Some(runs_out));
        assert_eq!(settle(&mut b, D0 + 20 * 60_000, &limited), Some(runs_out), "the same moment, asked again");
        assert_eq!(settle(&mut b, runs_out, &limited), None);
        let c = b.work.capped.expect("capped when the room ran out");
        assert_eq!((c.limit, c.until), (Limit::Day, D0 + DAY_MS));
        assert_eq!(b.work.engaged_since, None, "a capped agent is not engaged");
        assert_eq!(b.work.used(D0 + 2 * H, &WorkLimits::default()).day_ms, 50 * 60_000 + 1);
    }

    #[test]
    fn stricter_takes_the_smaller_limit_and_the_longer_break() {
        let a = WorkLimits { max_continuous_ms: 10, break_ms: 5, max_per_day_ms: 0, max_per_week_ms: 7 };
        let b = WorkLimits { max_continuous_ms: 0, break_ms: 9, max_per_day_ms: 3, max_per_week_ms: 8 };
        let s = a.stricter(b);
        assert_eq!((s.max_continuous_ms, s.break_ms, s.max_per_day_ms, s.max_per_week_ms), (10, 9, 3, 7));
        assert!(WorkLimits { max_continuous_ms: 1, ..WorkLimits::default() }.validate("x").is_err());
    }
}
