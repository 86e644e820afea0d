//! The vocabulary: identifiers, languages, skills, tiers, channels, agent profiles and case specs,
//! each constructed only through validation so that the rest of the crate can trust them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{self, Limits};

/// Milliseconds since the Unix epoch. Time is always passed in; this crate never reads a clock.
pub type Millis = i64;

/// A rejected input, naming the field (dotted path, e.g. `spec.required_skills[2].level`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The offending field, as the API names it.
    pub field: String,
    /// What is wrong with it, lower case.
    pub reason: String,
}

impl FieldError {
    /// A field error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }

    /// The same error nested under `prefix` (`spec` + `case_id` → `spec.case_id`).
    pub fn under(self, prefix: &str) -> Self {
        Self { field: format!("{prefix}.{}", self.field), ..self }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates an identifier: 1 to 128 characters of `[A-Za-z0-9._:@-]`.
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
                validate_id(field, value, $what).map(|()| Self(value.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An agent, as registered in the roster.
    AgentId, "agent id"
);
id_type!(
    /// A case, as supplied by the routing service (the idempotency key of `SubmitCase`).
    CaseId, "case id"
);
id_type!(
    /// One offer of one case to one agent; minted by the dispatcher before the offer is stored.
    OfferId, "offer id"
);
id_type!(
    /// One connection of one agent device.
    SessionId, "session id"
);
id_type!(
    /// A customer, for affinity to the agent who helped them before.
    CustomerId, "customer id"
);
id_type!(
    /// A routing service's tenant (a customer company). Taken from the caller's credentials,
    /// never from a message body.
    TenantId, "tenant id"
);

impl CaseId {
    /// The dispatcher's own id of a tenant's case: `<tenant>/<case id>`. A router names its
    /// cases by its own ids; two tenants may use the same one, and neither learns of the other's
    /// (`/` is in no id, so the two parts never run into each other).
    pub fn scoped(tenant: &TenantId, id: &CaseId) -> CaseId {
        CaseId(format!("{tenant}/{id}"))
    }

    /// A case id as the dispatcher knows it (agents and operators see these): a plain id, or
    /// `<tenant>/<case id>`.
    pub fn parse_qualified(field: &str, value: &str) -> Result<CaseId, FieldError> {
        match value.split_once('/') {
            Some((tenant, id)) => {
                TenantId::parse(field, tenant)?;
                CaseId::parse(field, id)?;
                Ok(CaseId(value.to_owned()))
            }
            None => CaseId::parse(field, value),
        }
    }

    /// The id as the router of `tenant` named it (the tenant's prefix taken off); the whole id
    /// for anyone else.
    pub fn as_seen_by(&self, tenant: Option<&TenantId>) -> &str {
        tenant.and_then(|t| self.0.strip_prefix(t.as_str()).and_then(|rest| rest.strip_prefix('/'))).unwrap_or(&self.0)
    }

    /// Whether this is a tenant's case id (`<tenant>/<case id>`).
    pub fn is_scoped(&self) -> bool {
        self.0.contains('/')
    }
}

fn validate_id(field: &str, value: &str, what: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, format!("{what} is required")));
    }
    if value.len() > limits::MAX_ID_LEN {
        return Err(FieldError::new(field, format!("{what} is longer than {} bytes", limits::MAX_ID_LEN)));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'))) {
        return Err(FieldError::new(field, format!("{what} has character {c:?}; allowed are A-Z a-z 0-9 . _ - : @")));
    }
    Ok(())
}

/// A BCP 47 language tag in canonical case (`de`, `de-CH`, `zh-Hant-TW`, `pt-BR`).
///
/// Matching uses the primary language subtag: an agent speaking `de-CH` serves a case in `de`.
///
/// The primary subtag is also kept packed in an integer: selection compares it for every
/// candidate, and comparing two integers reads no string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language {
    tag: String,
    primary: u32,
}

impl TryFrom<String> for Language {
    type Error = FieldError;

    fn try_from(tag: String) -> Result<Self, FieldError> {
        Self::parse("language", &tag)
    }
}

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.tag
    }
}

impl Language {
    /// Parses the BCP 47 form `language[-script][-region][-variant]*`: a 2–3 letter primary
    /// subtag, a 4-letter script, a 2-letter or 3-digit region, 5–8 character variants.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let bad = |why: &str| FieldError::new(field, format!("{value:?} is not a BCP 47 language tag: {why}"));
        if value.is_empty() {
            return Err(FieldError::new(field, "language is required"));
        }
        if value.len() > 35 {
            return Err(bad("longer than 35 characters"));
        }
        let mut parts = value.split('-');
        let primary = parts.next().unwrap_or_default();
        if !(2..=3).contains(&primary.len()) || !primary.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(bad("the primary subtag must be 2 or 3 letters"));
        }
        let mut out = primary.to_ascii_lowercase();
        let mut stage = 0; // 0: script may follow, 1: region may follow, 2: only variants
        for part in parts {
            let alpha = part.chars().all(|c| c.is_ascii_alphabetic());
            let digits = part.chars().all(|c| c.is_ascii_digit());
            out.push('-');
            if stage == 0 && part.len() == 4 && alpha {
                let mut s = part.to_ascii_lowercase();
                s[..1].make_ascii_uppercase();
                out.push_str(&s);
                stage = 1;
            } else if stage <= 1 && ((part.len() == 2 && alpha) || (part.len() == 3 && digits)) {
                out.push_str(&part.to_ascii_uppercase());
                stage = 2;
            } else if (5..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())
                || (part.len() == 4 && part.starts_with(|c: char| c.is_ascii_digit()))
            {
                out.push_str(&part.to_ascii_lowercase());
                stage = 2;
            } else {
                return Err(bad(&format!("subtag {part:?} is not a script, region or variant")));
            }
        }
        let primary = out.bytes().take_while(|b| *b != b'-').fold(0u32, |code, b| code << 8 | u32::from(b));
        Ok(Self { tag: out, primary })
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.tag
    }

    /// The primary language subtag (`de` for `de-CH`): the unit of matching and indexing.
    pub fn primary(&self) -> &str {
        self.tag.split('-').next().unwrap_or_default()
    }

    /// Whether both tags have the same primary subtag (`de-CH` and `de`), without reading
    /// either string.
    pub fn same_primary(&self, other: &Language) -> bool {
        self.primary == other.primary
    }

    /// The primary subtag packed into a number (its bytes, big-endian): what
    /// [`same_primary`](Language::same_primary) compares, and what a compact summary keeps.
    pub fn primary_code(&self) -> u32 {
        self.primary
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

/// A skill name: 1 to 64 characters of `[a-z0-9_.-]`, lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Skill(String);

impl Skill {
    /// Validates a skill name (lower-cased first).
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = value.to_ascii_lowercase();
        if v.is_empty() {
            return Err(FieldError::new(field, "skill is required"));
        }
        if v.len() > limits::MAX_SKILL_LEN {
            return Err(FieldError::new(field, format!("skill is longer than {} bytes", limits::MAX_SKILL_LEN)));
        }
        if let Some(c) = v.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(FieldError::new(field, format!("skill has character {c:?}; allowed are a-z 0-9 _ - .")));
        }
        Ok(Self(v))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Skill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ordered and compared as its text: maps keyed by it are looked up by `&str`.
impl std::borrow::Borrow<str> for Skill {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The ISO 3166-1 alpha-2 codes (2026), sorted: the markets a case may come from.
const ISO_3166_ALPHA_2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES \
    ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO \
    IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK \
    ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR \
    PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK \
    TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A market: the ISO 3166-1 alpha-2 country a case comes from, or one an agent is contracted
/// to serve. Upper case (`DE`, `BR`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Market(String);

impl Market {
    /// Validates a country code (case-insensitive) against ISO 3166-1 alpha-2.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let code = value.to_ascii_uppercase();
        if code.is_empty() {
            return Err(FieldError::new(field, "market is required"));
        }
        if code.len() != 2 || ISO_3166_ALPHA_2.split_ascii_whitespace().all(|c| c != code) {
            return Err(FieldError::new(field, format!("{value:?} is not an ISO 3166-1 alpha-2 country code")));
        }
        Ok(Self(code))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ordered and compared as its text: sets of it are looked up by `&str`.
impl std::borrow::Borrow<str> for Market {
    fn borrow(&self) -> &str {
        &self.0
    }
}

macro_rules! token_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates a name as a skill name is validated (lower-cased, `[a-z0-9_.-]`, 1 to
            /// 64 bytes).
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
                Skill::parse(field, value)
                    .map(|s| Self(s.0))
                    .map_err(|e| FieldError::new(e.field, e.reason.replace("skill", $what)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Ordered and compared as its text: maps keyed by it are looked up by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

token_type!(
    /// A data region whose personal data an agent is cleared to see (`eu`, `us`, `apac`).
    DataRegion, "data region"
);
token_type!(
    /// A certification an agent holds until its expiry (`vip`, `pci`, `disputes-l2`).
    Certification, "certification"
);

impl Certification {
    /// The certification VIP cases require.
    pub fn vip() -> Certification {
        Certification(VIP_CERTIFICATION.to_owned())
    }
}

/// The name of the certification VIP cases require (what `vip_certified` was).
pub const VIP_CERTIFICATION: &str = "vip";

/// The highest personal-data clearance level (0: none).
pub const MAX_CLEARANCE: u8 = 5;

/// A level from 1 to 5: skill level or language proficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Level(u8);

impl Level {
    /// The lowest level.
    pub const MIN: Level = Level(1);
    /// The highest level.
    pub const MAX: Level = Level(5);

    /// Validates a level: 1 to 5.
    pub fn parse(field: &str, value: u32) -> Result<Self, FieldError> {
        match u8::try_from(value) {
            Ok(v @ 1..=5) => Ok(Self(v)),
            _ => Err(FieldError::new(field, format!("level {value} is outside 1 to 5"))),
        }
    }

    /// The level as a number, 1 to 5.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The level lowered by `steps`, never below 1.
    pub fn lowered(self, steps: u8) -> Level {
        Level(self.0.saturating_sub(steps).max(1))
    }
}

/// Customer tier: VIP cases go first and only to VIP-certified agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Everyone else.
    Standard,
    /// VIP customers.
    Vip,
}

impl Tier {
    /// Every tier.
    pub const ALL: [Tier; 2] = [Tier::Standard, Tier::Vip];

    /// Lower-case name, as used in explanations and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Vip => "vip",
        }
    }
}

/// The medium of a case; agents have a capacity per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone or voice-over-IP call.
    Voice,
    /// A chat conversation.
    Chat,
    /// An e-mail thread.
    Email,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::Voice, Channel::Chat, Channel::Email];

    /// Its position in [`Channel::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Channel::Voice => 0,
            Channel::Chat => 1,
            Channel::Email => 2,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }
}

/// A skill at a level.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SkillLevel {
    /// The skill.
    pub skill: Skill,
    /// The level held (profile) or required (case).
    pub level: Level,
}

/// A language with the agent's proficiency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LanguageProficiency {
    /// The language.
    pub language: Language,
    /// 1 (basic) to 5 (native).
    pub proficiency: Level,
}

/// What the roster knows about an agent; changed only by `UpsertAgent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredProfile")]
pub struct AgentProfile {
    /// The agent.
    pub id: AgentId,
    /// Shown to planners.
    pub display_name: String,
    /// Languages spoken, sorted by tag, one entry per tag.
    pub languages: Vec<LanguageProficiency>,
    /// Skills with levels.
    pub skills: BTreeMap<Skill, Level>,
    /// How many cases of each channel the agent can hold at once; a missing channel is 0.
    pub capacity: BTreeMap<Channel, u32>,
    /// 0.0 to 5.0, from the customers' ratings.
    pub rating: f64,
    /// The markets the agent is contracted to serve (a case with a market goes only to them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub markets: BTreeSet<Market>,
    /// The data regions whose personal data the agent is cleared for.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub data_regions: BTreeSet<DataRegion>,
    /// Personal-data clearance, 0 (none) to [`MAX_CLEARANCE`].
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub clearance: u8,
    /// Certifications held, each valid until its expiry ([`Millis::MAX`]: none). VIP cases
    /// need [`VIP_CERTIFICATION`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certifications: BTreeMap<Certification, Millis>,
    /// The agent's own working-time limits (a student visa's weekly cap), over its markets'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_limits: Option<crate::worktime::WorkLimits>,
    /// Whether and how the agent may be invited to come online when its segments are short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_in: Option<crate::callin::CallInPrefs>,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

/// A profile as stored, before and after certifications: records written with the old
/// `vip_certified` flag are read as holding the `vip` certification without expiry.
#[derive(Deserialize)]
struct StoredProfile {
    id: AgentId,
    display_name: String,
    languages: Vec<LanguageProficiency>,
    skills: BTreeMap<Skill, Level>,
    #[serde(default)]
    vip_certified: bool,
    capacity: BTreeMap<Channel, u32>,
    rating: f64,
    #[serde(default)]
    markets: BTreeSet<Market>,
    #[serde(default)]
    data_regions: BTreeSet<DataRegion>,
    #[serde(default)]
    clearance: u8,
    #[serde(default)]
    certifications: BTreeMap<Certification, Millis>,
    #[serde(default)]
    work_limits: Option<crate::worktime::WorkLimits>,
    #[serde(default)]
    call_in: Option<crate::callin::CallInPrefs>,
}

impl From<StoredProfile> for AgentProfile {
    fn from(s: StoredProfile) -> Self {
        let mut certifications = s.certifications;
        if s.vip_certified {
            certifications.entry(Certification::vip()).or_insert(Millis::MAX);
        }
        Self {
            id: s.id,
            display_name: s.display_name,
            languages: s.languages,
            skills: s.skills,
            capacity: s.capacity,
            rating: s.rating,
            markets: s.markets,
            data_regions: s.data_regions,
            clearance: s.clearance,
            certifications,
            work_limits: s.work_limits,
            call_in: s.call_in,
        }
    }
}

/// The raw parts of a profile, before validation.
#[derive(Debug, Clone, Default)]
pub struct AgentProfileInput<'a> {
    /// The agent id.
    pub id: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// (tag, proficiency) pairs.
    pub languages: Vec<(&'a str, u32)>,
    /// (skill, level) pairs.
    pub skills: Vec<(&'a str, u32)>,
    /// Shorthand for the `vip` certification without expiry.
    pub vip_certified: bool,
    /// (channel, capacity) pairs; `None` channel means the caller sent an unknown channel.
    pub capacity: Vec<(Option<Channel>, u32)>,
    /// Rating.
    pub rating: f64,
    /// ISO 3166-1 alpha-2 codes.
    pub markets: Vec<&'a str>,
    /// Data region names.
    pub data_regions: Vec<&'a str>,
    /// 0 to 5.
    pub clearance: u32,
    /// (name, expiry in epoch milliseconds; 0: none). An expiry in the past is refused when
    /// the profile is stored ([`crate::transition::upsert_profile`]), which knows the time.
    pub certifications: Vec<(&'a str, i64)>,
    /// The agent's own working-time limits, if any.
    pub work_limits: Option<crate::worktime::WorkLimits>,
    /// The call-in opt-in, if any (validated with [`crate::callin::CallInPrefs::parse`]).
    pub call_in: Option<crate::callin::CallInPrefs>,
}

impl AgentProfile {
    /// The primary subtags of the languages spoken, each once, in profile order.
    pub fn primary_languages(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(self.languages.len());
        for l in &self.languages {
            let p = l.language.primary();
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Validates a profile; field names follow the `AgentProfile` message.
    pub fn parse(input: AgentProfileInput<'_>, limits: &Limits) -> Result<Self, FieldError> {
        let id = AgentId::parse("agent_id", input.id)?;
        let display_name = bounded_text("display_name", input.display_name, limits.max_name_len)?.to_owned();
        if input.languages.is_empty() {
            return Err(FieldError::new("languages", "at least one language is required"));
        }
        if input.languages.len() > limits.max_languages {
            return Err(FieldError::new("languages", format!("more than {} languages", limits.max_languages)));
        }
        let mut languages: Vec<LanguageProficiency> = Vec::with_capacity(input.languages.len());
        for (i, (tag, prof)) in input.languages.iter().enumerate() {
            let language = Language::parse(&format!("languages[{i}].language"), tag)?;
            let proficiency = Level::parse(&format!("languages[{i}].proficiency"), *prof)?;
            if languages.iter().any(|l| l.language == language) {
                return Err(FieldError::new(format!("languages[{i}].language"), format!("{language} is listed twice")));
            }
            languages.push(LanguageProficiency { language, proficiency });
        }
        languages.sort();
        if input.skills.len() > limits.max_skills {
            return Err(FieldError::new("skills", format!("more than {} skills", limits.max_skills)));
        }
        let mut skills = BTreeMap::new();
        for (i, (name, level)) in input.skills.iter().enumerate() {
            let skill = Skill::parse(&format!("skills[{i}].skill"), name)?;
            let level = Level::parse(&format!("skills[{i}].level"), *level)?;
            if skills.insert(skill.clone(), level).is_some() {
                return Err(FieldError::new(format!("skills[{i}].skill"), format!("{skill} is listed twice")));
            }
        }
        let mut capacity = BTreeMap::new();
        for (i, (channel, cap)) in input.capacity.iter().enumerate() {
            let channel =
                channel.ok_or_else(|| FieldError::new(format!("capacity[{i}].channel"), "channel is required"))?;
            if *cap > limits.max_capacity {
                return Err(FieldError::new(
                    format!("capacity[{i}].capacity"),
                    format!("capacity {cap} is above {}", limits.max_capacity),
                ));
            }
            if capacity.insert(channel, *cap).is_some() {
                return Err(FieldError::new(
                    format!("capacity[{i}].channel"),
                    format!("{} is listed twice", channel.as_str()),
                ));
            }
        }
        if capacity.values().all(|c| *c == 0) {
            return Err(FieldError::new("capacity", "at least one channel needs a capacity above 0"));
        }
        if !(0.0..=5.0).contains(&input.rating) {
            return Err(FieldError::new("rating", format!("rating {} is outside 0.0 to 5.0", input.rating)));
        }
        let markets = parse_set("markets", &input.markets, limits, Market::parse)?;
        let data_regions = parse_set("data_regions", &input.data_regions, limits, DataRegion::parse)?;
        let clearance = match u8::try_from(input.clearance) {
            Ok(c) if c <= MAX_CLEARANCE => c,
            _ => {
                return Err(FieldError::new(
                    "clearance",
                    format!("clearance {} is outside 0 to {MAX_CLEARANCE}", input.clearance),
                ));
            }
        };
        if input.certifications.len() > limits.max_skills {
            return Err(FieldError::new("certifications", format!("more than {} certifications", limits.max_skills)));
        }
        let mut certifications = BTreeMap::new();
        for (i, (name, expires)) in input.certifications.iter().enumerate() {
            let c = Certification::parse(&format!("certifications[{i}].name"), name)?;
            let until = match *expires {
                0 => Millis::MAX,
                t if t < 0 => {
                    return Err(FieldError::new(
                        format!("certifications[{i}].expires_at_ms"),
                        format!("expiry {t} is negative; 0 means none"),
                    ));
                }
                t => t,
            };
            if certifications.insert(c.clone(), until).is_some() {
                return Err(FieldError::new(format!("certifications[{i}].name"), format!("{c} is listed twice")));
            }
        }
        if input.vip_certified {
            certifications.entry(Certification::vip()).or_insert(Millis::MAX);
        }
        if let Some(w) = &input.work_limits {
            w.validate("work_limits").map_err(|r| FieldError::new("work_limits", r))?;
        }
        Ok(Self {
            id,
            display_name,
            languages,
            skills,
            capacity,
            rating: input.rating,
            markets,
            data_regions,
            clearance,
            certifications,
            work_limits: input.work_limits.filter(|w| !w.is_unlimited()),
            call_in: input.call_in,
        })
    }

    /// Whether the agent holds `certification` valid at `now` (expired from its expiry instant).
    pub fn certified(&self, certification: &str, now: Millis) -> bool {
        self.certifications.get(certification).is_some_and(|until| now < *until)
    }

    /// Whether the agent holds the VIP certification valid at `now`.
    pub fn vip_certified(&self, now: Millis) -> bool {
        self.certified(VIP_CERTIFICATION, now)
    }

    /// Whether the agent holds the VIP certification at all (expired or not): the index files
    /// such agents with the certified ones, and the filter rejects the expired at selection.
    pub fn holds_vip(&self) -> bool {
        self.certifications.contains_key(VIP_CERTIFICATION)
    }

    /// The agent's proficiency in the primary language of `language`, if spoken.
    pub fn proficiency(&self, language: &Language) -> Option<Level> {
        self.languages.iter().filter(|l| l.language.same_primary(language)).map(|l| l.proficiency).max()
    }

    /// Capacity for `channel` (0 when not listed).
    pub fn capacity_for(&self, channel: Channel) -> u32 {
        self.capacity.get(&channel).copied().unwrap_or(0)
    }
}

/// What a routing service submitted: the case's immutable part, compared as a whole to decide
/// whether a repeated submission is a retry (equal) or a conflict (different).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSpec {
    /// Caller-supplied id.
    pub id: CaseId,
    /// The customer's language.
    pub language: Language,
    /// Minimum proficiency in `language`.
    pub min_proficiency: Level,
    /// Each at or above its level, always.
    pub required_skills: Vec<SkillLevel>,
    /// Required until relaxation drops them.
    pub preferred_skills: Vec<SkillLevel>,
    /// Customer tier.
    pub tier: Tier,
    /// 0 to 10; higher goes first within the ordering.
    pub priority: u8,
    /// Medium.
    pub channel: Channel,
    /// The bot's summary.
    pub summary: String,
    /// The bot's sentiment, -1.0 to 1.0.
    pub sentiment: f64,
    /// The customer, if known.
    pub customer: Option<CustomerId>,
    /// The agent who last helped this customer, if known.
    pub previous_agent: Option<AgentId>,
    /// Expire after this long without assignment; `None` waits for ever.
    pub ttl_ms: Option<u64>,
    /// The customer's market (ISO 3166-1 alpha-2): only agents contracted for it may take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<Market>,
    /// The data region of the customer's personal data: only agents cleared for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_region: Option<DataRegion>,
    /// The personal-data clearance the case needs (0: none).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub required_clearance: u8,
    /// Certifications the agent must hold, valid, besides `vip` for VIP cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_certifications: Vec<Certification>,
}

/// The raw parts of a case spec, before validation.
#[derive(Debug, Clone, Default)]
pub struct CaseSpecInput<'a> {
    /// Case id.
    pub id: &'a str,
    /// Language tag.
    pub language: &'a str,
    /// 0 for the default.
    pub min_proficiency: u32,
    /// (skill, level).
    pub required_skills: Vec<(&'a str, u32)>,
    /// (skill, level).
    pub preferred_skills: Vec<(&'a str, u32)>,
    /// `None` when the caller sent an unknown tier.
    pub tier: Option<Tier>,
    /// 0 to 10.
    pub priority: u32,
    /// `None` when the caller sent no or an unknown channel.
    pub channel: Option<Channel>,
    /// Bot summary.
    pub summary: &'a str,
    /// Sentiment.
    pub sentiment: f64,
    /// Empty for none.
    pub customer_id: &'a str,
    /// Empty for none.
    pub previous_agent_id: &'a str,
    /// 0 for none.
    pub ttl_ms: u64,
    /// Empty for none.
    pub market: &'a str,
    /// Empty for none.
    pub data_region: &'a str,
    /// 0 to 5.
    pub required_clearance: u32,
    /// Certification names.
    pub required_certifications: Vec<&'a str>,
}

impl CaseSpec {
    /// Validates a submission; field names follow the `CaseSpec` message.
    pub fn parse(
        input: CaseSpecInput<'_>,
        default_min_proficiency: Level,
        limits: &Limits,
    ) -> Result<Self, FieldError> {
        let id = CaseId::parse("case_id", input.id)?;
        let language = Language::parse("language", input.language)?;
        let min_proficiency = match input.min_proficiency {
            0 => default_min_proficiency,
            p => Level::parse("min_language_proficiency", p)?,
        };
        let required_skills = parse_skill_list("required_skills", &input.required_skills, limits)?;
        let preferred_skills = parse_skill_list("preferred_skills", &input.preferred_skills, limits)?;
        if let Some(s) = preferred_skills.iter().find(|p| required_skills.iter().any(|r| r.skill == p.skill)) {
            return Err(FieldError::new("preferred_skills", format!("{} is already a required skill", s.skill)));
        }
        let tier = input.tier.ok_or_else(|| FieldError::new("tier", "tier is required (STANDARD or VIP)"))?;
        let priority = match u8::try_from(input.priority) {
            Ok(p) if p <= limits::MAX_PRIORITY => p,
            _ => {
                return Err(FieldError::new(
                    "priority",
                    format!("priority {} is outside 0 to {}", input.priority, limits::MAX_PRIORITY),
                ));
            }
        };
        let channel =
            input.channel.ok_or_else(|| FieldError::new("channel", "channel is required (VOICE, CHAT or EMAIL)"))?;
        let summary = bounded_text("summary", input.summary, limits.max_summary_len)?.to_owned();
        if !(-1.0..=1.0).contains(&input.sentiment) {
            return Err(FieldError::new("sentiment", format!("sentiment {} is outside -1.0 to 1.0", input.sentiment)));
        }
        let customer = optional(input.customer_id, |v| CustomerId::parse("customer_id", v))?;
        let previous_agent = optional(input.previous_agent_id, |v| AgentId::parse("previous_agent_id", v))?;
        if input.ttl_ms > limits.max_ttl_ms {
            return Err(FieldError::new("ttl_ms", format!("ttl_ms is above {}", limits.max_ttl_ms)));
        }
        let ttl_ms = (input.ttl_ms > 0).then_some(input.ttl_ms);
        let market = optional(input.market, |v| Market::parse("market", v))?;
        let data_region = optional(input.data_region, |v| DataRegion::parse("data_region", v))?;
        let required_clearance = match u8::try_from(input.required_clearance) {
            Ok(c) if c <= MAX_CLEARANCE => c,
            _ => {
                return Err(FieldError::new(
                    "required_clearance",
                    format!("clearance {} is outside 0 to {MAX_CLEARANCE}", input.required_clearance),
                ));
            }
        };
        let required_certifications: Vec<Certification> =
            parse_set("required_certifications", &input.required_certifications, limits, Certification::parse)?
                .into_iter()
                .collect();
        Ok(Self {
            id,
            language,
            min_proficiency,
            required_skills,
            preferred_skills,
            tier,
            priority,
            channel,
            summary,
            sentiment: input.sentiment,
            customer,
            previous_agent,
            ttl_ms,
            market,
            data_region,
            required_clearance,
            required_certifications,
        })
    }
}

fn optional<T>(v: &str, parse: impl FnOnce(&str) -> Result<T, FieldError>) -> Result<Option<T>, FieldError> {
    if v.is_empty() { Ok(None) } else { parse(v).map(Some) }
}

/// A list of names parsed into a set; a name listed twice is refused.
fn parse_set<T: Ord + fmt::Display>(
    field: &str,
    items: &[&str],
    limits: &Limits,
    parse: impl Fn(&str, &str) -> Result<T, FieldError>,
) -> Result<BTreeSet<T>, FieldError> {
    if items.len() > limits.max_skills {
        return Err(FieldError::new(field, format!("more than {} entries", limits.max_skills)));
    }
    let mut out = BTreeSet::new();
    for (i, v) in items.iter().enumerate() {
        let item = parse(&format!("{field}[{i}]"), v)?;
        if out.contains(&item) {
            return Err(FieldError::new(format!("{field}[{i}]"), format!("{item} is listed twice")));
        }
        out.insert(item);
    }
    Ok(out)
}

fn parse_skill_list(field: &str, items: &[(&str, u32)], limits: &Limits) -> Result<Vec<SkillLevel>, FieldError> {
    if items.len() > limits.max_skills {
        return Err(FieldError::new(field, format!("more than {} skills", limits.max_skills)));
    }
    let mut out: Vec<SkillLevel> = Vec::with_capacity(items.len());
    for (i, (name, level)) in items.iter().enumerate() {
        let skill = Skill::parse(&format!("{field}[{i}].skill"), name)?;
        let level = Level::parse(&format!("{field}[{i}].level"), *level)?;
        if out.iter().any(|s| s.skill == skill) {
            return Err(FieldError::new(format!("{field}[{i}].skill"), format!("{skill} is listed twice")));
        }
        out.push(SkillLevel { skill, level });
    }
    out.sort();
    Ok(out)
}

/// Checks a free-text field's length (in bytes) and refuses control characters other than
/// newline and tab.
pub fn bounded_text<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, FieldError> {
    if value.len() > max {
        return Err(FieldError::new(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(FieldError::new(field, "control characters are not allowed"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_are_canonicalised() {
        let ok = [
            ("DE", "de"),
            ("de-ch", "de-CH"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("sl-rozaj", "sl-rozaj"),
        ];
        for (input, want) in ok {
            assert_eq!(Language::parse("language", input).unwrap().as_str(), want, "{input}");
        }
        assert_eq!(Language::parse("l", "de-CH").unwrap().primary(), "de");
        let l = |s| Language::parse("l", s).unwrap();
        assert!(l("de-CH").same_primary(&l("DE")));
        assert!(l("zh-Hant-TW").same_primary(&l("zh")));
        assert!(!l("de").same_primary(&l("dsb")));
        assert!(!l("en").same_primary(&l("eng")));
        for bad in ["", "d", "german", "de_CH", "de-", "12", "de-CH-DE"] {
            let err = Language::parse("language", bad).unwrap_err();
            assert_eq!(err.field, "language", "{bad}");
        }
    }

    #[test]
    fn ids_are_bounded_and_plain() {
        assert!(AgentId::parse("agent_id", "agent-7@eu.west").is_ok());
        assert_eq!(AgentId::parse("agent_id", "").unwrap_err().reason, "agent id is required");
        assert!(AgentId::parse("agent_id", &"a".repeat(129)).is_err());
        assert!(CaseId::parse("case_id", "a b").is_err());
        assert!(CaseId::parse("case_id", "acme/c1").is_err(), "routers' ids carry no tenant");
        let acme = TenantId::parse("t", "acme").unwrap();
        let scoped = CaseId::scoped(&acme, &CaseId::parse("case_id", "c1").unwrap());
        assert_eq!(scoped.as_str(), "acme/c1");
        assert_eq!(CaseId::parse_qualified("case_id", "acme/c1").unwrap(), scoped);
        assert!(CaseId::parse_qualified("case_id", "acme/c1/x").is_err());
        assert!(CaseId::parse_qualified("case_id", "/c1").is_err());
        assert_eq!(scoped.as_seen_by(Some(&acme)), "c1");
        assert_eq!(scoped.as_seen_by(None), "acme/c1", "operators see the whole id");
        assert_eq!(scoped.as_seen_by(Some(&TenantId::parse("t", "acm").unwrap())), "acme/c1");
    }

    #[test]
    fn levels_are_one_to_five() {
        assert!(Level::parse("level", 0).is_err());
        assert!(Level::parse("level", 6).is_err());
        assert_eq!(Level::parse("level", 5).unwrap(), Level::MAX);
        assert_eq!(Level::MAX.lowered(9), Level::MIN);
    }

    #[test]
    fn profile_validation_names_the_field() {
        let base = || AgentProfileInput {
            id: "a1",
            display_name: "Ana",
            languages: vec![("de", 5)],
            skills: vec![("disputes", 3)],
            capacity: vec![(Some(Channel::Chat), 3)],
            rating: 4.5,
            ..Default::default()
        };
        assert!(AgentProfile::parse(base(), &Limits::default()).is_ok());
        let e = AgentProfile::parse(AgentProfileInput { skills: vec![("disputes", 7)], ..base() }, &Limits::default())
            .unwrap_err();
        assert_eq!(e.field, "skills[0].level");
        let e = AgentProfile::parse(
            AgentProfileInput { languages: vec![("de", 5), ("DE", 3)], ..base() },
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "languages[1].language");
        let e = AgentProfile::parse(
            AgentProfileInput { capacity: vec![(Some(Channel::Chat), 0)], ..base() },
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "capacity");
        let e = AgentProfile::parse(AgentProfileInput { rating: 9.0, ..base() }, &Limits::default()).unwrap_err();
        assert_eq!(e.field, "rating");
        let e = AgentProfile::parse(AgentProfileInput { markets: vec!["DE", "xx"], ..base() }, &Limits::default())
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("markets[1]", "\"xx\" is not an ISO 3166-1 alpha-2 country code")
        );
        let e = AgentProfile::parse(AgentProfileInput { markets: vec!["de", "DE"], ..base() }, &Limits::default())
            .unwrap_err();
        assert_eq!(e.field, "markets[1]", "listed twice");
        let e = AgentProfile::parse(AgentProfileInput { clearance: 6, ..base() }, &Limits::default()).unwrap_err();
        assert_eq!(e.field, "clearance");
        let e = AgentProfile::parse(
            AgentProfileInput { certifications: vec![("pci", 5), ("P CI", 0)], ..base() },
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "certifications[1].name");
        let e =
            AgentProfile::parse(AgentProfileInput { certifications: vec![("pci", -1)], ..base() }, &Limits::default())
                .unwrap_err();
        assert_eq!(e.field, "certifications[0].expires_at_ms");
        let p = AgentProfile::parse(
            AgentProfileInput { vip_certified: true, certifications: vec![("vip", 99)], ..base() },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            p.certifications.get(&Certification::vip()),
            Some(&99),
            "an explicit expiry wins over the shorthand"
        );
        let many: Vec<(&str, u32)> = (0..=limits::MAX_SKILLS).map(|_| ("x", 1)).collect();
        let e = AgentProfile::parse(AgentProfileInput { skills: many, ..base() }, &Limits::default()).unwrap_err();
        assert_eq!(e.field, "skills");
    }

    #[test]
    fn a_profile_stored_with_the_vip_flag_reads_as_holding_the_vip_certification() {
        let old = r#"{"id":"a1","display_name":"Ana","languages":[{"language":"de","proficiency":5}],"skills":{},"vip_certified":true,"capacity":{"chat":1},"rating":4.5}"#;
        let p: AgentProfile = serde_json::from_str(old).unwrap();
        assert_eq!(p.certifications.get(&Certification::vip()), Some(&Millis::MAX));
        assert!(p.vip_certified(i64::MAX - 1));
        let again: AgentProfile = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p, "written back once, as a certification");
        assert!(!serde_json::to_string(&p).unwrap().contains("vip_certified"));
    }

    #[test]
    fn case_gates_are_validated() {
        let base = || CaseSpecInput {
            id: "c1",
            language: "de",
            tier: Some(Tier::Standard),
            channel: Some(Channel::Chat),
            ..Default::default()
        };
        let parse = |i| CaseSpec::parse(i, Level::MIN, &Limits::default());
        let ok = parse(CaseSpecInput {
            market: "de",
            data_region: "EU",
            required_clearance: 2,
            required_certifications: vec!["pci"],
            ..base()
        })
        .unwrap();
        assert_eq!((ok.market.unwrap().as_str(), ok.data_region.unwrap().as_str()), ("DE", "eu"));
        assert_eq!(parse(CaseSpecInput { market: "Germany", ..base() }).unwrap_err().field, "market");
        assert_eq!(parse(CaseSpecInput { required_clearance: 9, ..base() }).unwrap_err().field, "required_clearance");
        let e = parse(CaseSpecInput { required_certifications: vec!["pci", "pci"], ..base() }).unwrap_err();
        assert_eq!(e.field, "required_certifications[1]");
        assert_eq!(parse(CaseSpecInput { data_region: "e u", ..base() }).unwrap_err().field, "data_region");
        assert!(parse(base()).unwrap().market.is_none(), "no market: any agent");
    }
}
