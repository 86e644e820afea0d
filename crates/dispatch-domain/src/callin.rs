//! Calling in offline agents when a segment's shortfall persists.
//!
//! Agents opt in through their profile ([`CallInPrefs`]): the languages they would come online
//! for, how many invitations a day at most, and quiet hours in their own time (a fixed offset
//! from UTC). Every round ([`CallInPolicy::round_ms`]) one dispatcher (the one whose write of
//! the round's [`CallInState`] wins) looks at each segment's Erlang A shortfall: a shortfall
//! that held for [`CallInPolicy::hold_ms`] (hysteresis: one spike invites nobody) is met by
//! inviting the best offline candidates ([`plan`]) until their expected responses, learned per
//! agent ([`CallInLog::response_rate`]), cover the shortfall less what the invitations still
//! pending are expected to bring (a closed loop: it does not over-invite). Candidates rotate:
//! the one invited longest ago first. An invitation lives on the agent's record (written with
//! compare-and-set, so each is issued once and every replica sees it); it closes as
//! `came_online` when the agent signs in before it expires, `declined` when the notification
//! service reports a refusal, `ignored` when it expires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{AgentId, FieldError, Language, Millis};
use crate::policy::Policy;
use crate::scoring;
use crate::state::{Agent, AgentStatus, Case};

const DAY_MS: Millis = 86_400_000;

/// An agent's opt-in to call-ins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInPrefs {
    /// Primary subtags of the languages the agent would come online for (empty: any it speaks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// The most invitations per local day, 1 to 20.
    pub max_per_day: u32,
    /// Quiet hours, minutes after local midnight: from (inclusive) to (exclusive), wrapping past
    /// midnight when `quiet_from_min > quiet_to_min`; equal: no quiet hours.
    #[serde(default)]
    pub quiet_from_min: u16,
    /// See `quiet_from_min`.
    #[serde(default)]
    pub quiet_to_min: u16,
    /// The agent's local time's offset from UTC, minutes (-720 to 840).
    #[serde(default)]
    pub utc_offset_min: i16,
}

/// The raw opt-in, before validation.
#[derive(Debug, Clone, Default)]
pub struct CallInInput<'a> {
    /// Language tags.
    pub languages: Vec<&'a str>,
    /// 1 to 20.
    pub max_per_day: u32,
    /// 0 to 1439.
    pub quiet_from_min: u32,
    /// 0 to 1439.
    pub quiet_to_min: u32,
    /// -720 to 840.
    pub utc_offset_min: i32,
}

impl CallInPrefs {
    /// Validates an opt-in; fields are named under `field` (`call_in`).
    pub fn parse(field: &str, input: CallInInput<'_>) -> Result<Self, FieldError> {
        let mut languages = Vec::new();
        for (i, l) in input.languages.iter().enumerate() {
            let p = Language::parse(&format!("{field}.languages[{i}]"), l)?.primary().to_owned();
            if !languages.contains(&p) {
                languages.push(p);
            }
        }
        if !(1..=20).contains(&input.max_per_day) {
            return Err(FieldError::new(format!("{field}.max_per_day"), "must be 1 to 20"));
        }
        let minute = |name: &str, v: u32| {
            u16::try_from(v)
                .ok()
                .filter(|m| *m < 1440)
                .ok_or_else(|| FieldError::new(format!("{field}.{name}"), "must be a minute of the day, 0 to 1439"))
        };
        let quiet_from_min = minute("quiet_from_min", input.quiet_from_min)?;
        let quiet_to_min = minute("quiet_to_min", input.quiet_to_min)?;
        let utc_offset_min = i16::try_from(input.utc_offset_min)
            .ok()
            .filter(|o| (-720..=840).contains(o))
            .ok_or_else(|| FieldError::new(format!("{field}.utc_offset_min"), "must be -720 to 840 minutes"))?;
        Ok(Self { languages, max_per_day: input.max_per_day, quiet_from_min, quiet_to_min, utc_offset_min })
    }

    fn local(&self, now: Millis) -> Millis {
        now + Millis::from(self.utc_offset_min) * 60_000
    }

    /// The agent's local day number at `now`.
    pub fn local_day(&self, now: Millis) -> i64 {
        self.local(now).div_euclid(DAY_MS)
    }

    /// Whether `now` falls in the agent's quiet hours.
    pub fn quiet_at(&self, now: Millis) -> bool {
        let minute = (self.local(now).rem_euclid(DAY_MS) / 60_000) as u16;
        let (from, to) = (self.quiet_from_min, self.quiet_to_min);
        if from == to {
            false
        } else if from < to {
            (from..to).contains(&minute)
        } else {
            minute >= from || minute < to
        }
    }

    /// Whether the agent would come online for a case in `language` (primary subtag).
    pub fn admits_language(&self, language: &str) -> bool {
        self.languages.is_empty() || self.languages.iter().any(|l| l == language)
    }
}

/// How an invitation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationOutcome {
    /// Sent, not answered yet.
    Pending,
    /// The agent signed in before it expired.
    CameOnline,
    /// The agent said no (through the notification service).
    Declined,
    /// It expired unanswered.
    Ignored,
}

impl InvitationOutcome {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationOutcome::Pending => "pending",
            InvitationOutcome::CameOnline => "came_online",
            InvitationOutcome::Declined => "declined",
            InvitationOutcome::Ignored => "ignored",
        }
    }
}

/// An invitation to come online, on the agent's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Stable id: `inv-<round>-<agent>`; the notification service deduplicates on it.
    pub id: String,
    /// The segment key it was sent for.
    pub segment: String,
    /// When it was sent (store clock).
    pub sent_at: Millis,
    /// When it lapses.
    pub expires_at: Millis,
    /// How it ended.
    pub outcome: InvitationOutcome,
    /// When it ended (0 while pending).
    #[serde(default)]
    pub answered_at: Millis,
    /// When the notification service acknowledged it (0: not yet; it is sent again).
    #[serde(default)]
    pub delivered_at: Millis,
    /// The incentive label for the shortfall it was sent in (empty: none), for the pay system.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incentive: String,
}

impl Invitation {
    /// Still open at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.outcome == InvitationOutcome::Pending && now < self.expires_at
    }
}

/// An agent's call-in history, on its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInLog {
    /// The local day `sent_today` counts.
    pub day: i64,
    /// Invitations sent on that day.
    pub sent_today: u32,
    /// Invitations sent in all.
    pub sent: u32,
    /// Of those, answered by coming online.
    pub came_online: u32,
    /// When the last was sent (0: never).
    pub last_sent_at: Millis,
}

impl CallInLog {
    /// The probability this agent answers an invitation by coming online: its own record shrunk
    /// toward the policy's prior (a newcomer is at the prior).
    pub fn response_rate(&self, p: &CallInPolicy) -> f64 {
        (f64::from(self.came_online) + p.prior_response * p.prior_weight) / (f64::from(self.sent) + p.prior_weight)
    }

    /// Invitations sent on the local day of `now`.
    pub fn sent_on(&self, prefs: &CallInPrefs, now: Millis) -> u32 {
        if self.day == prefs.local_day(now) { self.sent_today } else { 0 }
    }
}

/// An incentive label for shortfalls of at least `min_shortfall` agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incentive {
    /// The smallest shortfall it applies to.
    pub min_shortfall: u32,
    /// The label the pay system reads ("x1.5", "hot-block").
    pub label: String,
}

/// The call-in rules' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallInPolicy {
    /// Whether offline agents are called in at all.
    pub enabled: bool,
    /// How often the shortfall is looked at.
    pub round_ms: u64,
    /// How long a shortfall must hold before anyone is invited.
    pub hold_ms: u64,
    /// How long an invitation stays open.
    pub invitation_ttl_ms: u64,
    /// The response rate assumed of an agent never invited.
    pub prior_response: f64,
    /// How many invitations' worth of weight the prior has.
    pub prior_weight: f64,
    /// The most invitations one round sends per segment.
    pub max_per_round: u32,
    /// Incentive labels by shortfall level (the highest level reached applies).
    pub incentives: Vec<Incentive>,
}

impl Default for CallInPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            round_ms: 15_000,
            hold_ms: 60_000,
            invitation_ttl_ms: 600_000,
            prior_response: 0.3,
            prior_weight: 2.0,
            max_per_round: 20,
            incentives: Vec::new(),
        }
    }
}

impl CallInPolicy {
    /// The incentive label for a shortfall of `n` agents.
    pub fn incentive(&self, n: u32) -> String {
        self.incentives
            .iter()
            .filter(|i| n >= i.min_shortfall)
            .max_by_key(|i| i.min_shortfall)
            .map(|i| i.label.clone())
            .unwrap_or_default()
    }
}

/// One segment's hysteresis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentWatch {
    /// Since when the shortfall has held (store clock).
    pub short_since: Millis,
    /// The shortfall at the last round.
    pub shortfall: u32,
}

/// The call-in rounds' shared state (one record in the store, written with compare-and-set:
/// the dispatcher whose write wins runs the round).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInState {
    /// Rounds run so far.
    pub round: u64,
    /// When the next round is due.
    pub next_round_at: Millis,
    /// Segments in shortfall, by key.
    pub segments: BTreeMap<String, SegmentWatch>,
}

/// Moves the hysteresis on by one round with each segment's shortfall now; returns the
/// segments to act on (their shortfall held for `hold_ms`), with the shortfall.
pub fn track(
    state: &mut CallInState,
    shortfalls: &[(String, u32)],
    now: Millis,
    p: &CallInPolicy,
) -> Vec<(String, u32)> {
    state.round += 1;
    state.next_round_at = now + p.round_ms as i64;
    let mut next = BTreeMap::new();
    let mut act = Vec::new();
    for (segment, n) in shortfalls.iter().filter(|(_, n)| *n > 0) {
        let since = state.segments.get(segment).map_or(now, |w| w.short_since);
        next.insert(segment.clone(), SegmentWatch { short_since: since, shortfall: *n });
        if now - since >= p.hold_ms as i64 {
            act.push((segment.clone(), *n));
        }
    }
    state.segments = next;
    act
}

/// Why an agent is not a call-in candidate for `case` (standing for its segment) at `now`;
/// `None` when it is.
pub fn not_candidate(agent: &Agent, case: &Case, now: Millis, policy: &Policy) -> Option<&'static str> {
    let Some(prefs) = agent.profile.call_in.as_ref() else { return Some("not opted in") };
    if agent.session.is_some() && agent.status != AgentStatus::Offline {
        return Some("already signed in");
    }
    if !prefs.admits_language(case.spec.language.primary()) {
        return Some("not for this language");
    }
    if agent.invitation.as_ref().is_some_and(|i| i.live(now)) {
        return Some("holds a live invitation");
    }
    if agent.call_in.sent_on(prefs, now) >= prefs.max_per_day {
        return Some("daily invitation cap reached");
    }
    if prefs.quiet_at(now) {
        return Some("quiet hours");
    }
    if scoring::matches_requirements(case, agent, case.relaxed(policy, now), now).is_err() {
        return Some("cannot take the segment's cases");
    }
    None
}

/// The agents a call-in round seeks for a segment: the Erlang A shortfall of its advice, and at
/// least one while its cases wait with nobody serving it (no arrivals measured yet, or a goal
/// the maths calls out of reach, must not leave them stranded).
pub fn call_in_need(advice: &crate::demand::Advice, cases_wait: bool) -> u32 {
    if cases_wait && advice.serving == 0 { advice.shortfall_a.max(1) } else { advice.shortfall_a }
}

/// The agents to invite for a segment short of `shortfall` agents, whose pending invitations
/// are expected to bring `pending_expected`: candidates ([`not_candidate`]) invited longest ago
/// first (then the likelier to answer, then by id), until their expected responses cover the
/// rest, at most `max_per_round`.
pub fn plan<'a>(
    shortfall: u32,
    pending_expected: f64,
    agents: impl IntoIterator<Item = &'a Agent>,
    case: &Case,
    now: Millis,
    policy: &Policy,
) -> Vec<AgentId> {
    let p = &policy.call_in;
    let mut need = f64::from(shortfall) - pending_expected;
    if need <= 0.0 {
        return Vec::new();
    }
    let mut candidates: Vec<(&Agent, f64)> = agents
        .into_iter()
        .filter(|a| not_candidate(a, case, now, policy).is_none())
        .map(|a| (a, a.call_in.response_rate(p)))
        .collect();
    candidates.sort_by(|(a, ra), (b, rb)| {
        a.call_in.last_sent_at.cmp(&b.call_in.last_sent_at).then(rb.total_cmp(ra)).then(a.id().cmp(b.id()))
    });
    let mut out = Vec::new();
    for (a, rate) in candidates {
        if need <= 0.0 || out.len() >= p.max_per_round as usize {
            break;
        }
        out.push(a.id().clone());
        need -= rate.max(0.01);
    }
    out
}

/// The invitation id for `agent` in round `round`.
pub fn invitation_id(round: u64, agent: &AgentId) -> String {
    format!("inv-{round}-{agent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(from: u32, to: u32, offset: i32) -> CallInPrefs {
        CallInPrefs::parse(
            "call_in",
            CallInInput {
                languages: vec!["de-CH", "de"],
                max_per_day: 2,
                quiet_from_min: from,
                quiet_to_min: to,
                utc_offset_min: offset,
            },
        )
        .unwrap()
    }

    #[test]
    fn quiet_hours_are_local_and_may_wrap_past_midnight() {
        // 22:00 to 07:00 local, UTC+2.
        let p = prefs(22 * 60, 7 * 60, 120);
        assert_eq!(p.languages, vec!["de"]);
        let utc = |h: i64, m: i64| (h * 60 + m) * 60_000;
        assert!(p.quiet_at(utc(20, 0)), "22:00 local");
        assert!(p.quiet_at(utc(4, 59)), "06:59 local");
        assert!(!p.quiet_at(utc(5, 0)), "07:00 local");
        assert!(!p.quiet_at(utc(19, 59)), "21:59 local");
        assert!(!prefs(0, 0, 0).quiet_at(utc(3, 0)), "no quiet hours");
        // Local day turns at local midnight.
        assert_eq!(p.local_day(utc(21, 59)), 0);
        assert_eq!(p.local_day(utc(22, 0)), 1);
    }

    #[test]
    fn a_bad_opt_in_names_its_field() {
        let bad = |i: CallInInput<'_>| CallInPrefs::parse("call_in", i).unwrap_err().field;
        let ok = CallInInput { max_per_day: 3, ..Default::default() };
        assert_eq!(bad(CallInInput { max_per_day: 0, ..ok.clone() }), "call_in.max_per_day");
        assert_eq!(bad(CallInInput { quiet_from_min: 1440, ..ok.clone() }), "call_in.quiet_from_min");
        assert_eq!(bad(CallInInput { utc_offset_min: 900, ..ok.clone() }), "call_in.utc_offset_min");
        assert_eq!(bad(CallInInput { languages: vec!["??"], ..ok }), "call_in.languages[0]");
    }

    #[test]
    fn hysteresis_acts_only_on_a_shortfall_that_held() {
        let p = CallInPolicy { hold_ms: 60_000, round_ms: 15_000, ..CallInPolicy::default() };
        let mut s = CallInState::default();
        let short = |n| vec![("de/vip/chat/-".to_owned(), n)];
        assert!(track(&mut s, &short(3), 0, &p).is_empty());
        assert!(track(&mut s, &short(2), 45_000, &p).is_empty());
        assert_eq!(track(&mut s, &short(2), 60_000, &p), short(2));
        assert_eq!((s.round, s.next_round_at), (3, 75_000));
        // A spike that clears resets the clock.
        assert!(track(&mut s, &short(0), 75_000, &p).is_empty());
        assert!(s.segments.is_empty());
        assert!(track(&mut s, &short(4), 90_000, &p).is_empty());
    }

    #[test]
    fn cases_waiting_with_nobody_serving_need_at_least_one_agent() {
        let none = crate::demand::Advice { serving: 0, shortfall_a: 0, ..crate::demand::Advice::default() };
        assert_eq!(call_in_need(&none, true), 1);
        assert_eq!(call_in_need(&none, false), 0);
        let short = crate::demand::Advice { serving: 2, shortfall_a: 3, ..none };
        assert_eq!((call_in_need(&short, true), call_in_need(&short, false)), (3, 3));
        assert_eq!(call_in_need(&crate::demand::Advice { serving: 2, shortfall_a: 0, ..none }, true), 0);
    }

    #[test]
    fn the_response_rate_starts_at_the_prior_and_learns() {
        let p = CallInPolicy::default();
        assert!((CallInLog::default().response_rate(&p) - 0.3).abs() < 1e-12);
        let keen = CallInLog { sent: 10, came_online: 9, ..CallInLog::default() };
        let never = CallInLog { sent: 10, came_online: 0, ..CallInLog::default() };
        // (9 + 0.3 × 2) / (10 + 2) and (0 + 0.6) / 12: the record, shrunk towards the prior.
        assert!((keen.response_rate(&p) - 0.8).abs() < 1e-12 && (never.response_rate(&p) - 0.05).abs() < 1e-12);
        let p = CallInPolicy {
            incentives: vec![
                Incentive { min_shortfall: 1, label: "x1.2".into() },
                Incentive { min_shortfall: 5, label: "x1.5".into() },
            ],
            ..p
        };
        assert_eq!((p.incentive(0), p.incentive(3), p.incentive(9)), (String::new(), "x1.2".into(), "x1.5".into()));
    }
}
