//! The supply of a segment read from the index's compact summaries equals the domain's rule
//! applied to the records ([`demand::supply_of`] over the signed-in agents), for random pools and
//! cases: profiles that fit inline and ones that do not, every gate, expired certifications,
//! relaxation, readiness in every state.

use dispatch_domain::demand;
use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::policy::RelaxationStep;
use dispatch_domain::state::{PendingOffer, Session};
use dispatch_domain::worktime::{Capped, Limit};
use dispatch_domain::{Agent, AgentStatus, Case, CaseId, Channel, Level, Millis, OfferId, Policy, SessionId, Tier};
use dispatch_engine::index::PoolIndex;
use proptest::prelude::*;

const NOW: Millis = 1_800_000_000_000;
const LANGS: [&str; 3] = ["en", "de", "fr"];
const SKILLS: [&str; 12] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11"];
const MARKETS: [&str; 6] = ["DE", "FR", "US", "GB", "ES", "IT"];
const REGIONS: [&str; 3] = ["eu", "us", "apac"];
const CERTS: [&str; 5] = ["vip", "pci", "disputes", "c3", "c4"];

/// One agent's draw: profile picks and live state.
#[derive(Debug, Clone)]
struct Draw {
    langs: Vec<(usize, u32)>,
    skills: Vec<(usize, u32)>,
    markets: Vec<usize>,
    regions: Vec<usize>,
    clearance: u32,
    certs: Vec<(usize, i64)>,
    capacity: u32,
    status: u8,
    connected: bool,
    offer: bool,
    assigned: u32,
    wrap_up: i64,
    cool_down: i64,
    capped: Option<i64>,
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        (
            prop::collection::vec((0..LANGS.len(), 1u32..=5), 1..4),
            prop::collection::vec((0..SKILLS.len(), 1u32..=5), 0..11),
            prop::collection::vec(0..MARKETS.len(), 0..6),
            prop::collection::vec(0..REGIONS.len(), 0..3),
            0u32..=5,
            prop::collection::vec((0..CERTS.len(), prop_oneof![Just(0i64), -5_000i64..5_000]), 0..6),
        ),
        (0u32..=3, 0u8..3, any::<bool>(), any::<bool>(), 0u32..3, -5_000i64..90_000, -5_000i64..5_000),
        prop::option::of(-5_000i64..5_000),
    )
        .prop_map(
            |(
                (langs, skills, markets, regions, clearance, certs),
                (capacity, status, connected, offer, assigned, wrap_up, cool_down),
                capped,
            )| Draw {
                langs,
                skills,
                markets,
                regions,
                clearance,
                certs,
                capacity,
                status,
                connected,
                offer,
                assigned,
                wrap_up,
                cool_down,
                capped,
            },
        )
}

fn uniq<T: PartialEq + Copy, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.iter().any(|o| key(o) == key(i)) {
            out.push(*i);
        }
    }
    out
}

fn agent(i: usize, d: &Draw) -> Agent {
    let id = format!("agent-{i}");
    let langs: Vec<(&str, u32)> = uniq(&d.langs, |l| l.0).iter().map(|(l, p)| (LANGS[*l], *p)).collect();
    let skills: Vec<(&str, u32)> = uniq(&d.skills, |s| s.0).iter().map(|(s, l)| (SKILLS[*s], *l)).collect();
    let markets: Vec<&str> = uniq(&d.markets, |m| *m).iter().map(|m| MARKETS[*m]).collect();
    let regions: Vec<&str> = uniq(&d.regions, |r| *r).iter().map(|r| REGIONS[*r]).collect();
    let certs: Vec<(&str, i64)> =
        uniq(&d.certs, |c| c.0).iter().map(|(c, e)| (CERTS[*c], if *e == 0 { 0 } else { NOW + e })).collect();
    let profile = AgentProfile::parse(
        AgentProfileInput {
            id: &id,
            languages: langs,
            skills,
            markets,
            data_regions: regions,
            clearance: d.clearance,
            certifications: certs,
            capacity: vec![(Some(Channel::Chat), d.capacity), (Some(Channel::Voice), 1)],
            rating: 4.0,
            ..Default::default()
        },
        &dispatch_domain::limits::Limits::default(),
    )
    .expect("valid profile");
    let mut a = Agent::new(profile, NOW - 60_000);
    a.version = 1;
    a.status = [AgentStatus::Offline, AgentStatus::Available, AgentStatus::Away][usize::from(d.status)];
    if a.status != AgentStatus::Offline {
        a.session = Some(Session {
            id: SessionId::parse("s", &format!("ss-{i}")).unwrap(),
            connected: d.connected,
            disconnected_at: (!d.connected).then_some(NOW - 1_000),
            lease_until: NOW + 60_000,
        });
    }
    if d.offer {
        a.pending_offer = Some(PendingOffer {
            offer_id: OfferId::parse("o", &format!("o-{i}")).unwrap(),
            case_id: CaseId::parse("c", &format!("held-{i}")).unwrap(),
            channel: Channel::Chat,
            deadline: NOW + 10_000,
        });
    }
    for k in 0..d.assigned {
        a.assignments.insert(CaseId::parse("c", &format!("a-{i}-{k}")).unwrap(), Channel::Chat);
    }
    a.wrap_up_until = NOW + d.wrap_up;
    a.cool_down_until = NOW + d.cool_down;
    a.work.capped = d.capped.map(|c| Capped { limit: Limit::Day, until: NOW + c });
    a
}

/// A case's draw.
#[derive(Debug, Clone)]
struct CaseDraw {
    lang: usize,
    min: u32,
    required: Vec<(usize, u32)>,
    preferred: Vec<(usize, u32)>,
    vip: bool,
    market: Option<usize>,
    region: Option<usize>,
    clearance: u32,
    certs: Vec<usize>,
    voice: bool,
    waited: i64,
}

fn case_draw() -> impl Strategy<Value = CaseDraw> {
    (
        (0..LANGS.len(), 1u32..=5, prop::collection::vec((0..SKILLS.len(), 1u32..=5), 0..3)),
        (prop::collection::vec((0..SKILLS.len(), 1u32..=5), 0..2), any::<bool>()),
        (prop::option::of(0..MARKETS.len()), prop::option::of(0..REGIONS.len()), 0u32..=3),
        (prop::collection::vec(1..CERTS.len(), 0..2), any::<bool>(), 0i64..200_000),
    )
        .prop_map(
            |((lang, min, required), (preferred, vip), (market, region, clearance), (certs, voice, waited))| CaseDraw {
                lang,
                min,
                required,
                preferred,
                vip,
                market,
                region,
                clearance,
                certs,
                voice,
                waited,
            },
        )
}

fn case(d: &CaseDraw) -> Case {
    let required: Vec<(&str, u32)> = uniq(&d.required, |s| s.0).iter().map(|(s, l)| (SKILLS[*s], *l)).collect();
    let preferred: Vec<(&str, u32)> = uniq(&d.preferred, |s| s.0)
        .iter()
        .filter(|p| !d.required.iter().any(|r| r.0 == p.0))
        .map(|(s, l)| (SKILLS[*s], *l))
        .collect();
    let certs: Vec<&str> = uniq(&d.certs, |c| *c).iter().map(|c| CERTS[*c]).collect();
    let spec = CaseSpec::parse(
        CaseSpecInput {
            id: "case",
            language: LANGS[d.lang],
            min_proficiency: d.min,
            required_skills: required,
            preferred_skills: preferred,
            tier: Some(if d.vip { Tier::Vip } else { Tier::Standard }),
            channel: Some(if d.voice { Channel::Voice } else { Channel::Chat }),
            market: d.market.map_or("", |m| MARKETS[m]),
            data_region: d.region.map_or("", |r| REGIONS[r]),
            required_clearance: d.clearance,
            required_certifications: certs,
            ..Default::default()
        },
        Level::parse("", 2).unwrap(),
        &dispatch_domain::limits::Limits::default(),
    )
    .expect("valid case");
    Case::new(spec, NOW - d.waited)
}

fn policy() -> Policy {
    Policy {
        relaxation: vec![
            RelaxationStep { after_ms: 30_000, drop_preferred_skills: true, ..Default::default() },
            RelaxationStep { after_ms: 60_000, lower_skill_levels_by: 1, ..Default::default() },
            RelaxationStep {
                after_ms: 120_000,
                lower_min_proficiency_by: 1,
                allow_uncertified_for_vip: true,
                ..Default::default()
            },
        ],
        ..Policy::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The index's compact scan and the record rule count the same supply.
    #[test]
    fn compact_supply_equals_the_record_rule(draws in prop::collection::vec(draw(), 0..40), cases in prop::collection::vec(case_draw(), 1..6)) {
        let policy = policy();
        let index = PoolIndex::new();
        let agents: Vec<Agent> = draws.iter().enumerate().map(|(i, d)| agent(i, d)).collect();
        for a in &agents {
            index.apply_agent(a.clone());
        }
        for d in &cases {
            let c = case(d);
            let signed_in: Vec<&Agent> = agents
                .iter()
                .filter(|a| a.session.is_some() && a.status != AgentStatus::Offline)
                .filter(|a| a.profile.primary_languages().contains(&c.spec.language.primary()))
                .collect();
            let expected = demand::supply_of(&c, signed_in, NOW, &policy);
            prop_assert_eq!(index.supply_for(&c, NOW, &policy), expected);
        }
    }
}

/// Summaries follow the agent: a change of profile, status or language moves its row, and an
/// agent signing out leaves the supply.
#[test]
fn rows_follow_the_agent() {
    let policy = policy();
    let index = PoolIndex::new();
    let base = Draw {
        langs: vec![(0, 4), (1, 4)],
        skills: vec![(0, 3)],
        markets: vec![],
        regions: vec![],
        clearance: 0,
        certs: vec![],
        capacity: 2,
        status: 1,
        connected: true,
        offer: false,
        assigned: 0,
        wrap_up: -1,
        cool_down: -1,
        capped: None,
    };
    let de = CaseDraw {
        lang: 1,
        min: 2,
        required: vec![(0, 2)],
        preferred: vec![],
        vip: false,
        market: None,
        region: None,
        clearance: 0,
        certs: vec![],
        voice: false,
        waited: 0,
    };
    let mut a = agent(0, &base);
    index.apply_agent(a.clone());
    let b = agent(1, &base);
    index.apply_agent(b);
    assert_eq!(index.supply_for(&case(&de), NOW, &policy).free_slots, 4);
    // Agent 0 drops German: only agent 1 is left for the German case.
    a.profile.languages.retain(|l| l.language.primary() != "de");
    a.version = 2;
    index.apply_agent(a.clone());
    assert_eq!(index.supply_for(&case(&de), NOW, &policy).free_slots, 2);
    let en = CaseDraw { lang: 0, ..de.clone() };
    assert_eq!(index.supply_for(&case(&en), NOW, &policy).free_slots, 4);
    // It signs out: gone from the English supply too.
    a.status = AgentStatus::Offline;
    a.session = None;
    a.version = 3;
    index.apply_agent(a);
    assert_eq!(index.supply_for(&case(&en), NOW, &policy).serving, 1);
}
