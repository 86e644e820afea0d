//! Benchmark support: the echo service used as the gRPC floor, and the synthetic pools the
//! selection benchmarks share. The benchmarks themselves are in `benches/*.rs` (`micro.rs` with
//! criterion; the others print percentiles) and `src/bin/loadgen.rs`.

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

    /// `n` agents (see [`agent`]) and the live index over them.
    pub fn indexed_agents(
        rng: &mut SmallRng,
        n: usize,
        policy: &Policy,
    ) -> (Vec<Agent>, dispatch_engine::index::PoolIndex) {
        let agents: Vec<Agent> = (0..n).map(|i| agent(rng, i, policy)).collect();
        let index = dispatch_engine::index::PoolIndex::new();
        for a in &agents {
            index.apply_agent(a.clone());
        }
        (agents, index)
    }
}
