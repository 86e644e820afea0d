//! The day's workload, drawn once from the seed before the engine runs, so that two runs of
//! one seed (call-in off and on) see the same customers, the same gig agents and the same
//! offline agents: arrivals by a daily curve over 35 languages with a surge, handle times
//! (lognormal), customer patience (exponential), gig agents' shifts, and how each offline agent
//! answers an invitation.

use dispatch_domain::{Channel, Tier};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::SimConfig;

/// The languages of the simulated market, most spoken first (demand and supply both follow a
/// Zipf law over this order).
pub const LANGUAGES: [&str; 35] = [
    "en", "es", "de", "fr", "pt", "it", "nl", "pl", "tr", "ar", "ru", "ja", "zh", "ko", "hi", "sv", "da", "nb", "fi",
    "cs", "hu", "ro", "el", "he", "th", "vi", "id", "ms", "uk", "bg", "hr", "sk", "sl", "lt", "tl",
];

/// Skills a case may require and an agent may hold.
pub const SKILLS: [&str; 3] = ["billing", "refunds", "technical"];

const MIN: u64 = 60_000;

/// One customer escalation.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Since the start of the run, ms.
    pub at: u64,
    /// Case id.
    pub id: String,
    /// Language tag.
    pub language: &'static str,
    /// Tier.
    pub tier: Tier,
    /// Channel.
    pub channel: Channel,
    /// A required skill, if any.
    pub skill: Option<&'static str>,
    /// How long the customer waits before giving up, ms.
    pub patience_ms: u64,
    /// How long the agent takes once assigned, ms.
    pub handle_ms: u64,
    /// Whether this arrival is part of the surge.
    pub surge: bool,
}

/// One agent of the pool.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// Agent id.
    pub id: String,
    /// Languages spoken (primary first), with proficiency.
    pub languages: Vec<(&'static str, u32)>,
    /// Skills held, with levels.
    pub skills: Vec<(&'static str, u32)>,
    /// Holds the VIP certification.
    pub vip: bool,
    /// Takes voice calls too (every agent takes chats).
    pub voice: bool,
    /// Gig agents: when they sign in and out by themselves, ms since the start.
    pub shift: Option<(u64, u64)>,
    /// Offline agents (opted in to call-ins): the chance they come online when invited, how
    /// long they take to, and how long they then stay.
    pub answer: Option<Answer>,
}

/// How an offline agent answers invitations.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Chance of coming online on an invitation.
    pub p: f64,
    /// Chance of saying no (in the notification) when not coming.
    pub p_decline: f64,
    /// Median time from the invitation to signing in, ms.
    pub delay_median_ms: f64,
    /// How long it stays once online, ms.
    pub stay_ms: u64,
}

/// The whole day.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Arrivals, by time.
    pub arrivals: Vec<Arrival>,
    /// Gig agents and offline agents.
    pub agents: Vec<AgentPlan>,
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A lognormal draw with the given median and shape.
pub fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// An exponential draw with the given mean.
pub fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

/// A Poisson draw (Knuth; the means here are small, well under 30 per step).
fn poisson(rng: &mut SmallRng, mean: f64) -> u32 {
    let l = (-mean).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

/// Index into `weights` drawn by weight.
fn pick(rng: &mut SmallRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// The Zipf weight of each language.
pub fn language_weights() -> Vec<f64> {
    (1..=LANGUAGES.len()).map(|r| 1.0 / r as f64).collect()
}

/// The daily curve of arrivals: the share of the peak rate at local hour `h` (fractional).
pub fn daily_curve(h: f64) -> f64 {
    // A morning rise, a lunch plateau and an evening peak, low at night.
    let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
    (0.08 + 0.6 * bump(10.5, 2.5) + 0.5 * bump(14.0, 2.0) + 1.0 * bump(19.5, 2.2)).min(1.0)
}

impl Workload {
    /// Draws the day of `config`.
    pub fn draw(config: &SimConfig) -> Workload {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let weights = language_weights();
        let mut arrivals = Vec::new();
        let step = 1_000u64;
        let span = config.hours * 60 * MIN;
        let mut t = 0;
        let mut n = 0;
        while t < span {
            let hour = config.start_hour as f64 + t as f64 / (60.0 * MIN as f64);
            let per_ms = config.peak_per_hour * daily_curve(hour) / (60.0 * MIN as f64);
            let mut draws: Vec<bool> = (0..poisson(&mut rng, per_ms * step as f64)).map(|_| false).collect();
            if let Some(s) = &config.surge
                && (s.from_hour..s.to_hour).contains(&hour)
            {
                let extra = poisson(&mut rng, s.per_hour / (60.0 * MIN as f64) * step as f64);
                draws.extend((0..extra).map(|_| true));
            }
            for surge in draws {
                let (language, tier) = match (&config.surge, surge) {
                    (Some(s), true) => (s.language, Tier::Vip),
                    _ => (
                        LANGUAGES[pick(&mut rng, &weights)],
                        if rng.random::<f64>() < config.vip_share { Tier::Vip } else { Tier::Standard },
                    ),
                };
                let channel = if rng.random::<f64>() < 0.25 { Channel::Voice } else { Channel::Chat };
                let skill = (rng.random::<f64>() < 0.3).then(|| SKILLS[rng.random_range(0..SKILLS.len())]);
                let patience_mean = match tier {
                    Tier::Vip => config.patience_vip_ms,
                    Tier::Standard => config.patience_standard_ms,
                };
                let handle = match channel {
                    Channel::Voice => lognormal(&mut rng, 6.0 * MIN as f64, 0.5),
                    _ => lognormal(&mut rng, 4.0 * MIN as f64, 0.6),
                };
                n += 1;
                arrivals.push(Arrival {
                    at: t + rng.random_range(0..step),
                    id: format!("case-{n:06}"),
                    language,
                    tier,
                    channel,
                    skill,
                    patience_ms: exponential(&mut rng, patience_mean as f64) as u64,
                    handle_ms: handle.clamp(30_000.0, 60.0 * MIN as f64) as u64,
                    surge,
                });
            }
            t += step;
        }
        arrivals.sort_by_key(|a| a.at);
        let mut agents = Vec::new();
        let agent = |rng: &mut SmallRng, id: String, primary: Option<&'static str>| {
            let lang = primary.unwrap_or_else(|| LANGUAGES[pick(rng, &weights)]);
            let mut languages = vec![(lang, rng.random_range(4..=5))];
            if lang != "en" && rng.random::<f64>() < 0.4 {
                languages.push(("en", rng.random_range(3..=4)));
            }
            // Many gig workers (students, people abroad) speak a third language.
            let third = LANGUAGES[pick(rng, &weights)];
            if rng.random::<f64>() < 0.35 && languages.iter().all(|(l, _)| *l != third) {
                languages.push((third, rng.random_range(3..=5)));
            }
            let mut skills = Vec::new();
            for s in SKILLS {
                if rng.random::<f64>() < 0.6 {
                    skills.push((s, rng.random_range(3..=5)));
                }
            }
            AgentPlan {
                id,
                languages,
                skills,
                vip: rng.random::<f64>() < 0.35,
                voice: rng.random::<f64>() < 0.5,
                shift: None,
                answer: None,
            }
        };
        for i in 0..config.gig_agents {
            let mut a = agent(&mut rng, format!("gig-{i:04}"), None);
            // Shifts start around the morning, lunch and evening, and last 2 to 6 hours.
            // Shifts start around 08:00, 12:00 and 17:00 local, and last 2 to 6 hours; those
            // wholly outside the run are left out.
            let centre = [8.0, 12.0, 17.0][pick(&mut rng, &[0.35, 0.3, 0.35])] + normal(&mut rng) * 1.5;
            let length = rng.random_range(2.0..=6.0);
            let from = (centre - f64::from(config.start_hour)) * 60.0 * MIN as f64;
            let to = from + length * 60.0 * MIN as f64;
            if to <= 0.0 || from >= span as f64 {
                continue;
            }
            a.shift = Some((from.max(0.0) as u64, to as u64));
            agents.push(a);
        }
        for i in 0..config.offline_agents {
            // The offline pool leans towards the surge's language: the agents a planner would
            // have on a call-in list for it.
            let primary = config.surge.as_ref().filter(|_| rng.random::<f64>() < 0.4).map(|s| s.language);
            let mut a = agent(&mut rng, format!("off-{i:04}"), primary);
            a.vip = a.vip || primary.is_some();
            a.answer = Some(Answer {
                p: rng.random_range(0.15..0.7),
                p_decline: 0.4,
                delay_median_ms: lognormal(&mut rng, 4.0 * MIN as f64, 0.4),
                stay_ms: rng.random_range(45 * MIN..=120 * MIN),
            });
            agents.push(a);
        }
        Workload { arrivals, agents }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_day() {
        let c = SimConfig::short_day(7);
        let (a, b) = (Workload::draw(&c), Workload::draw(&c));
        assert_eq!(a.arrivals.len(), b.arrivals.len());
        assert!(a.arrivals.iter().zip(&b.arrivals).all(|(x, y)| x.id == y.id && x.at == y.at));
        assert_ne!(Workload::draw(&SimConfig::short_day(8)).arrivals.len(), a.arrivals.len());
    }

    #[test]
    fn draws_have_their_medians_and_means() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut v: Vec<f64> = (0..20_000).map(|_| lognormal(&mut rng, 100.0, 0.6)).collect();
        v.sort_by(f64::total_cmp);
        assert!((v[10_000] - 100.0).abs() < 3.0, "median {}", v[10_000]);
        let mean = (0..20_000).map(|_| exponential(&mut rng, 50.0)).sum::<f64>() / 20_000.0;
        assert!((mean - 50.0).abs() < 1.5, "mean {mean}");
        let mean = (0..20_000).map(|_| f64::from(poisson(&mut rng, 3.0))).sum::<f64>() / 20_000.0;
        assert!((mean - 3.0).abs() < 0.1, "mean {mean}");
    }
}
