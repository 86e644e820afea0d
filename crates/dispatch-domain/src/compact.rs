//! Compact summaries of agents, for scans over many of them (the supply of a segment): what the
//! eligibility rule reads of a profile, with every name interned to a number by the caller, and
//! what supply counts of the record ([`Standing`]), inline in one value of fixed size, so that a
//! scan walks one array instead of chasing each record's maps. The rule that reads them is the
//! one the records are checked by ([`scoring::check_requirements`] over [`Qualifications`]); a
//! profile that does not fit inline has no summary and is read from its record.

use crate::model::{Level, Millis};
use crate::scoring::{self, CaseNeeds, Compiled, Qualifications};
use crate::state::{Agent, Case, Standing};

/// Languages kept inline.
pub const LANGUAGES: usize = 4;
/// Skills kept inline.
pub const SKILLS: usize = 8;
/// Markets kept inline.
pub const MARKETS: usize = 4;
/// Data regions kept inline.
pub const REGIONS: usize = 2;
/// Certifications kept inline.
pub const CERTIFICATIONS: usize = 4;

/// The id no interned name has: what a name no summary holds compiles to.
pub const UNKNOWN: u32 = u32::MAX;

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// What supply counts of the agent.
    pub standing: Standing,
    languages: [(u32, Level); LANGUAGES],
    skills: [(u32, Level); SKILLS],
    markets: [u32; MARKETS],
    regions: [u32; REGIONS],
    certifications: [(u32, Millis); CERTIFICATIONS],
    /// How many of each of the five arrays are in use.
    used: [u8; 5],
    clearance: u8,
}

/// Copies `items` into a fixed array, or `None` when they do not fit.
fn inline<T: Copy, const N: usize>(fill: T, items: impl ExactSizeIterator<Item = T>) -> Option<([T; N], u8)> {
    let n = items.len();
    if n > N {
        return None;
    }
    let mut out = [fill; N];
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = item;
    }
    Some((out, u8::try_from(n).ok()?))
}

impl Summary {
    /// The summary of `agent`, its names interned by `intern` (which must never return
    /// [`UNKNOWN`]); `None` when its profile holds more than fits inline.
    pub fn of(agent: &Agent, mut intern: impl FnMut(&str) -> u32) -> Option<Summary> {
        let p = &agent.profile;
        let (languages, l) =
            inline((0, Level::MIN), p.languages.iter().map(|l| (l.language.primary_code(), l.proficiency)))?;
        let (skills, s) = inline((UNKNOWN, Level::MIN), p.skills.iter().map(|(k, v)| (intern(k.as_str()), *v)))?;
        let (markets, m) = inline(UNKNOWN, p.markets.iter().map(|m| intern(m.as_str())))?;
        let (regions, r) = inline(UNKNOWN, p.data_regions.iter().map(|r| intern(r.as_str())))?;
        let (certifications, c) = inline((UNKNOWN, 0), p.certifications.iter().map(|(k, v)| (intern(k.as_str()), *v)))?;
        Some(Summary {
            standing: agent.standing(),
            languages,
            skills,
            markets,
            regions,
            certifications,
            used: [l, s, m, r, c],
            clearance: p.clearance,
        })
    }

    fn languages(&self) -> &[(u32, Level)] {
        &self.languages[..usize::from(self.used[0])]
    }
    fn skills(&self) -> &[(u32, Level)] {
        &self.skills[..usize::from(self.used[1])]
    }
    fn markets(&self) -> &[u32] {
        &self.markets[..usize::from(self.used[2])]
    }
    fn regions(&self) -> &[u32] {
        &self.regions[..usize::from(self.used[3])]
    }
    fn certifications(&self) -> &[(u32, Millis)] {
        &self.certifications[..usize::from(self.used[4])]
    }
}

impl Qualifications<u32> for Summary {
    fn proficiency(&self, language: u32) -> Option<Level> {
        self.languages().iter().filter(|(l, _)| *l == language).map(|(_, p)| *p).max()
    }

    fn skill(&self, skill: &u32) -> Option<Level> {
        self.skills().iter().find(|(s, _)| s == skill).map(|(_, l)| *l)
    }

    fn serves(&self, market: &u32) -> bool {
        self.markets().contains(market)
    }

    fn cleared_for(&self, region: &u32) -> bool {
        self.regions().contains(region)
    }

    fn clearance(&self) -> u8 {
        self.clearance
    }

    fn certified_until(&self, name: &u32) -> Option<Millis> {
        self.certifications().iter().find(|(c, _)| c == name).map(|(_, until)| *until)
    }
}

/// An agent as a scan holds it: its summary, or its record when it has none.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// The compact summary.
    Summary(&'a Summary),
    /// The record (a profile too large to fit inline).
    Record(&'a Agent),
}

/// A case's needs ready for a scan: as read from the case (for records) and compiled to the
/// interned ids (for summaries).
#[derive(Debug)]
pub struct Query<'a> {
    needs: CaseNeeds<'a>,
    compiled: Compiled<u32>,
}

impl<'a> Query<'a> {
    /// The needs of `case` under the relaxation in force at `now`, its names looked up by `id`
    /// (`None`: no summary holds it).
    pub fn of(case: &'a Case, relaxed: crate::policy::Relaxed, mut id: impl FnMut(&str) -> Option<u32>) -> Self {
        let needs = CaseNeeds { case, relaxed };
        let compiled = Compiled::of(&needs, |name| id(name).unwrap_or(UNKNOWN));
        Query { needs, compiled }
    }

    /// Whether `agent` is connected and meets the needs at `now` ([`scoring::matches_requirements`]),
    /// with its standing.
    pub fn matches(&self, agent: Held<'_>, now: Millis) -> Option<Standing> {
        match agent {
            Held::Summary(s) => (s.standing.readiness.connected
                && scoring::check_requirements(&self.compiled, s, now).is_ok())
            .then_some(s.standing),
            Held::Record(a) => (a.connected() && scoring::check_requirements(&self.needs, &a.profile, now).is_ok())
                .then(|| a.standing()),
        }
    }
}
