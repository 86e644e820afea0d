//! Benchmark support: the echo service used as the gRPC floor, and the synthetic pools the
//! selection benchmarks share. The benchmarks themselves are in `benches/*.rs` (`micro.rs` with
//! criterion; the others print percentiles) and `src/bin/loadgen.rs`.

pub mod cost;

/// The `bench.v1` echo service.
#[allow(clippy::all, missing_docs)]
pub mod echo {
    tonic::include_proto!("bench.v1");
}

/// A skewed (Zipf-like) index in `0..n`: index `i` with weight `1 / (i + 1)`, so the first
/// languages and skills are the common ones, as in real support traffic.
pub fn zipf(rng: &mut impl rand::Rng, n: usize) -> usize {
    let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut x = rng.random::<f64>() * total;
    for i in 0..n {
        x -= 1.0 / (i + 1) as f64;
        if x <= 0.0 {
            return i;
        }
    }
    n - 1
}

/// Synthetic pools for the selection benchmarks.
pub mod pool {
    use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
    use dispatch_domain::{Agent, AgentStatus, Case, Channel, Level, Policy, SessionId, Tier, transition};
    use rand::Rng;
    use rand::rngs::SmallRng;

    /// Languages, most common first.
    pub const LANGS: [&str; 20] = [
        "en", "es", "de", "fr", "pt", "it", "nl", "pl", "tr", "ru", "ja", "ko", "zh", "ar", "hi", "sv", "da", "fi",
        "cs", "el",
    ];
    /// The benchmarks' `now`.
    pub const T0: i64 = 1_800_000_000_000;

    use crate::zipf as skewed;

    /// Agent `i`: one of 20 languages (skewed) plus English, 0–4 skills of 30 with levels 1–5, 8%
    /// VIP-certified, chat capacity 2; 10% signed in and available.
    pub fn agent(rng: &mut SmallRng, i: usize, policy: &Policy) -> Agent {
        let lang = LANGS[skewed(rng, LANGS.len())];
        let skills: Vec<(String, u32)> = (0..rng.random_range(0..5))
            .map(|_| (format!("skill{}", rng.random_range(0..30)), rng.random_range(1..=5)))
            .collect();
        let mut uniq: Vec<(String, u32)> = Vec::new();
        for s in skills {
            if !uniq.iter().any(|u| u.0 == s.0) {
                uniq.push(s);
            }
        }
        let id = format!("agent-{i}");
        let profile = AgentProfile::parse(
            AgentProfileInput {
                id: &id,
                display_name: "",
                languages: vec![(lang, rng.random_range(2..=5)), ("en", 3)].into_iter().fold(Vec::new(), |mut v, l| {
                    if !v.iter().any(|x: &(&str, u32)| x.0 == l.0) {
                        v.push(l);
                    }
                    v
                }),
                skills: uniq.iter().map(|(s, l)| (s.as_str(), *l)).collect(),
                vip_certified: rng.random_bool(0.08),
                capacity: vec![(Some(Channel::Chat), 2)],
                rating: rng.random_range(2.0..5.0),
                ..Default::default()
            },
            &dispatch_domain::limits::Limits::default(),
        )
        .expect("valid profile");
        let mut a = Agent::new(profile, T0 - rng.random_range(0..600_000));
        a.version = 1;
        if rng.random_bool(0.10) {
            let sid = SessionId::parse("s", &format!("ss-{i}")).unwrap();
            a = transition::connect(&a, sid.clone(), T0, policy).agent.unwrap();
            a = transition::set_status(&a, None, &sid, AgentStatus::Available, T0, policy).unwrap().agent.unwrap();
            a.version = 2;
        }
        a
    }

    /// Case `i`: a skewed language, 70% with one required skill (level 1–3), 10% VIP, chat.
    pub fn case(rng: &mut SmallRng, i: usize) -> Case {
        let lang = LANGS[skewed(rng, LANGS.len())];
        let skill = format!("skill{}", rng.random_range(0..30));
        let skills = if rng.random_bool(0.7) { vec![(skill.as_str(), rng.random_range(1..=3))] } else { vec![] };
        let id = format!("case-{i}");
        let spec = CaseSpec::parse(
            CaseSpecInput {
                id: &id,
                language: lang,
                required_skills: skills,
                tier: Some(if rng.random_bool(0.1) { Tier::Vip } else { Tier::Standard }),
                channel: Some(Channel::Chat),
                ..Default::default()
            },
            Level::parse("", 2).unwrap(),
            &dispatch_domain::limits::Limits::default(),
        )
        .unwrap();
        Case::new(spec, T0)
    }

    /// The markets of gated pools, most common first (23, as the product's).
    pub const MARKETS: [&str; 23] = [
        "US", "GB", "DE", "FR", "ES", "IT", "BR", "MX", "NL", "PL", "SE", "TR", "JP", "KR", "IN", "CA", "AU", "AT",
        "CH", "BE", "PT", "IE", "DK",
    ];

    /// Gates agent `i` (its own random stream, so the ungated pool stays the same): 1–3 markets
    /// (skewed), data region `eu` (60 %) or `us`, clearance 0–3, `pci` for 40 % (one in eight of
    /// them expired), `disputes-l2` for 20 %.
    pub fn gate_agent(a: &mut Agent, i: usize) {
        use dispatch_domain::model::{Certification, DataRegion, Market};
        let mut rng = <SmallRng as rand::SeedableRng>::seed_from_u64(0x9e37_79b9 ^ i as u64);
        let p = &mut a.profile;
        for _ in 0..rng.random_range(1..=3) {
            p.markets.insert(Market::parse("m", MARKETS[skewed(&mut rng, MARKETS.len())]).unwrap());
        }
        p.data_regions.insert(DataRegion::parse("r", if rng.random_bool(0.6) { "eu" } else { "us" }).unwrap());
        p.clearance = rng.random_range(0..=3);
        if rng.random_bool(0.4) {
            let until = if rng.random_bool(0.125) { T0 - 1 } else { T0 + 86_400_000 };
            p.certifications.insert(Certification::parse("c", "pci").unwrap(), until);
        }
        if rng.random_bool(0.2) {
            p.certifications.insert(Certification::parse("c", "disputes-l2").unwrap(), i64::MAX);
        }
    }

    /// Gates case `i`: a market (skewed), data region `eu` for half, clearance 0–2, `pci` for
    /// 15 %.
    pub fn gate_case(c: &mut Case, i: usize) {
        use dispatch_domain::model::{Certification, DataRegion, Market};
        let mut rng = <SmallRng as rand::SeedableRng>::seed_from_u64(0x85eb_ca6b ^ i as u64);
        let s = &mut c.spec;
        s.market = Some(Market::parse("m", MARKETS[skewed(&mut rng, MARKETS.len())]).unwrap());
        s.data_region = rng.random_bool(0.5).then(|| DataRegion::parse("r", "eu").unwrap());
        s.required_clearance = rng.random_range(0..=2);
        if rng.random_bool(0.15) {
            s.required_certifications.push(Certification::parse("c", "pci").unwrap());
        }
    }

    /// `n` agents (see [`agent`]; gated by [`gate_agent`] when `GATES` is set) and the live
    /// index over them.
    pub fn indexed_agents(
        rng: &mut SmallRng,
        n: usize,
        policy: &Policy,
    ) -> (Vec<Agent>, dispatch_engine::index::PoolIndex) {
        let gated = std::env::var_os("GATES").is_some();
        let agents: Vec<Agent> = (0..n)
            .map(|i| {
                let mut a = agent(rng, i, policy);
                if gated {
                    gate_agent(&mut a, i);
                }
                a
            })
            .collect();
        let index = dispatch_engine::index::PoolIndex::new();
        for a in &agents {
            index.apply_agent(a.clone());
        }
        (agents, index)
    }
}
