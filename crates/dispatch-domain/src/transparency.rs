//! What the workers are told about automated allocation (EU Platform Work Directive 2024/2831,
//! art. 9): why they get no offers now, and the main parameters of allocation with their
//! relative importance, in words and structured. Computed from the agent, the waiting cases
//! and the policy; nothing here reads a pool.

use std::collections::BTreeMap;

use crate::model::Millis;
use crate::policy::Policy;
use crate::scoring::{self, Ineligible};
use crate::state::{Agent, AgentStatus, Case};

/// One reason an agent gets no offers now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoOfferReason {
    /// Stable: `not_connected`, `away`, `holding_offer`, `wrap_up`, `cool_down`,
    /// `working_time`, `at_capacity`, `certification_expired`, `no_waiting_case`,
    /// `requirements`, `none` (cases are waiting that the agent may take: the next one comes).
    pub code: &'static str,
    /// In words, for the agent.
    pub detail: String,
    /// When it ends through time alone, if it does (epoch milliseconds).
    pub until: Option<Millis>,
}

fn reason(code: &'static str, detail: String, until: Option<Millis>) -> NoOfferReason {
    NoOfferReason { code, detail, until }
}

/// Why `agent` gets no offers at `now`, given the waiting cases in its languages (the caller
/// brings them, bounded): its own state first (away, holding an offer, wrap-up, cool-down, a
/// working-time limit, at capacity), then expired certifications, then what the waiting cases
/// need that the agent lacks, counted per rule.
pub fn why_no_offers<'a>(
    agent: &Agent,
    waiting: impl IntoIterator<Item = &'a Case>,
    now: Millis,
    policy: &Policy,
) -> Vec<NoOfferReason> {
    let mut out = Vec::new();
    let mins = |until: Millis| ((until - now).max(0) + 59_999) / 60_000;
    if !agent.connected() {
        out.push(reason("not_connected", "your app is not connected".into(), None));
    } else if agent.status != AgentStatus::Available {
        let why = match agent.status_reason {
            crate::state::StatusReason::MissedOffers => "you were set away after missed offers; go available again",
            _ => "you are away; go available to get offers",
        };
        out.push(reason("away", why.into(), None));
    }
    if agent.pending_offer.is_some() {
        out.push(reason("holding_offer", "you hold an offer: accept or decline it".into(), None));
    }
    if now < agent.wrap_up_until {
        let until = agent.wrap_up_until;
        out.push(reason("wrap_up", format!("wrap-up after your last case, {} min left", mins(until)), Some(until)));
    }
    if now < agent.cool_down_until {
        let until = agent.cool_down_until;
        let after = if agent.consecutive_misses > 0 { "missed offers" } else { "a declined offer" };
        out.push(reason("cool_down", format!("cool-down after {after}, {} min left", mins(until)), Some(until)));
    }
    if let Some(c) = agent.work.capped.filter(|c| now < c.until) {
        out.push(reason(
            "working_time",
            format!(
                "you reached the {} working-time limit; you may take work again in {} min",
                c.limit.as_str(),
                mins(c.until)
            ),
            Some(c.until),
        ));
    }
    if crate::model::Channel::ALL.iter().all(|c| !agent.has_room(*c)) {
        out.push(reason("at_capacity", "you hold as many cases as you can take".into(), None));
    }
    for (c, until) in agent.profile.certifications.iter().filter(|(_, u)| now >= **u) {
        out.push(reason(
            "certification_expired",
            format!("your certification {c} expired {} min ago", (now - until).div_euclid(60_000)),
            None,
        ));
    }
    if !out.iter().any(|r| r.code != "certification_expired") {
        let mut seen = 0usize;
        let mut eligible = 0usize;
        let mut needs: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
        for case in waiting {
            seen += 1;
            let failed = scoring::why_not(case, agent, now, policy);
            if failed.is_empty() {
                eligible += 1;
            }
            for f in failed.into_iter().filter(|f| !matches!(f.rule, Ineligible::NotReady(_))) {
                needs.entry(f.rule.code()).or_insert((0, f.detail)).0 += 1;
            }
        }
        let langs = agent.profile.primary_languages().join(", ");
        if seen == 0 {
            out.push(reason("no_waiting_case", format!("no case is waiting in your languages ({langs})"), None));
        } else if eligible > 0 {
            out.push(reason(
                "none",
                format!("{eligible} waiting case(s) you may take: the next offer is on its way"),
                None,
            ));
        } else {
            let parts: Vec<String> =
                needs.iter().map(|(code, (n, example))| format!("{n} {code} (e.g. {example})")).collect();
            out.push(reason(
                "requirements",
                format!("{seen} case(s) wait in your languages, none you may take: {}", parts.join("; ")),
                None,
            ));
        }
    }
    out
}

/// A change of the scoring weights, as logged: who put them in force and when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeightChange {
    /// When they came into force (store clock).
    pub at: Millis,
    /// Who changed them (the deployment's `engine.policy_author`).
    pub by: String,
    /// The weights from then on.
    pub weights: crate::policy::Weights,
}

impl WeightChange {
    /// The weights as text: two changes with the same key are the same weights.
    pub fn key(&self) -> String {
        let w = &self.weights;
        format!(
            "language={} skill_depth={} rating={} idle={} acceptance={} affinity={}",
            w.language, w.skill_depth, w.rating, w.idle, w.acceptance, w.affinity
        )
    }
}

/// How many weight changes a store keeps.
pub const WEIGHT_LOG: usize = 100;

/// One hard filter of allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Its code (as in explanations and "why not").
    pub code: &'static str,
    /// What it checks, in words.
    pub description: &'static str,
}

/// One scoring term with its weight and relative importance.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightShare {
    /// The term.
    pub term: &'static str,
    /// The configured weight.
    pub weight: f64,
    /// Its share of all weights, 0 to 1.
    pub share: f64,
    /// What it rewards, in words.
    pub description: &'static str,
}

/// The allocation parameters in force.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationParameters {
    /// The hard filters, in the order they are checked.
    pub filters: Vec<Filter>,
    /// The scoring terms, most important first.
    pub weights: Vec<WeightShare>,
    /// Everything above, for reading.
    pub text: String,
}

/// What decides who gets a case, from the policy in force.
pub fn allocation_parameters(policy: &Policy) -> AllocationParameters {
    let filters = vec![
        Filter { code: "not_ready", description: "signed in, available, no offer held, not in wrap-up or cool-down" },
        Filter { code: "no_capacity", description: "room for one more case of the case's channel" },
        Filter { code: "working_time", description: "the case is not expected to run past a working-time limit" },
        Filter { code: "language", description: "speaks the customer's language at the required proficiency" },
        Filter {
            code: "skill",
            description: "holds each required skill at its level (and preferred ones until relaxed)",
        },
        Filter { code: "market", description: "contracted for the customer's market" },
        Filter { code: "data_region", description: "cleared for the data region of the customer's personal data" },
        Filter { code: "clearance", description: "personal-data clearance at or above the case's" },
        Filter { code: "vip_certification", description: "VIP customers: a valid VIP certification" },
        Filter { code: "certification", description: "each certification the case requires, valid (not expired)" },
        Filter {
            code: "certification_expired",
            description: "a required certification counts from its expiry instant as missing",
        },
        Filter { code: "excluded", description: "not declined or missed this case in the last minutes" },
    ];
    let w = &policy.weights;
    let total = w.language + w.skill_depth + w.rating + w.idle + w.acceptance + w.affinity;
    let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
    let mut weights = vec![
        WeightShare {
            term: "language",
            weight: w.language,
            share: share(w.language),
            description: "proficiency above the case's minimum",
        },
        WeightShare {
            term: "skill_depth",
            weight: w.skill_depth,
            share: share(w.skill_depth),
            description: "skill levels above the required ones, preferred skills held",
        },
        WeightShare {
            term: "rating",
            weight: w.rating,
            share: share(w.rating),
            description: "your earned rating: customers' ratings you could influence, averaged with a prior",
        },
        WeightShare {
            term: "idle",
            weight: w.idle,
            share: share(w.idle),
            description: "time since you last became free (longest waiting first)",
        },
        WeightShare {
            term: "acceptance",
            weight: w.acceptance,
            share: share(w.acceptance),
            description: "share of offers you accepted",
        },
        WeightShare {
            term: "affinity",
            weight: w.affinity,
            share: share(w.affinity),
            description: "you helped this customer before, or the case was taken from you moments ago",
        },
    ];
    weights.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut text = String::from(
        "Every case is offered automatically, by a program, to one agent at a time. Only agents who pass every filter \
         are considered:\n",
    );
    for f in &filters {
        text.push_str(&format!("- {}\n", f.description));
    }
    text.push_str(
        "Among them the offer goes to the highest score, the sum of these terms (each 0 to 1) times their weight:\n",
    );
    for w in &weights {
        text.push_str(&format!("- {} ({:.0} %): {}\n", w.term, 100.0 * w.share, w.description));
    }
    text.push_str(&format!(
        "VIP customers and higher priorities go first; waiting cases age, so none waits for ever. An offer not answered within \
         {} s goes to the next agent; {} missed in a row set you away. Ask \"why not\" for any case to see which filter \
         stopped it.",
        policy.offer_timeout_ms / 1000,
        policy.max_consecutive_misses
    ));
    AllocationParameters { filters, weights, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameters_name_every_filter_and_weigh_the_terms() {
        let p = allocation_parameters(&Policy::default());
        let codes: Vec<&str> = p.filters.iter().map(|f| f.code).collect();
        for rule in Ineligible::RULES {
            assert!(codes.contains(&rule.code()), "{} is explained", rule.code());
        }
        let shares: f64 = p.weights.iter().map(|w| w.share).sum();
        assert!((shares - 1.0).abs() < 1e-12);
        assert_eq!(p.weights[0].term, "idle", "the heaviest first (2.0 of 6.5)");
        assert!(p.text.contains("idle (31 %)"), "{}", p.text);
    }

    fn agent(f: impl FnOnce(&mut Agent)) -> Agent {
        use crate::model::{AgentProfile, AgentProfileInput, SessionId};
        let p = AgentProfile::parse(
            AgentProfileInput {
                id: "a",
                languages: vec![("de", 5)],
                capacity: vec![(Some(crate::model::Channel::Chat), 1)],
                ..Default::default()
            },
            &crate::limits::Limits::default(),
        )
        .unwrap();
        let policy = Policy::default();
        let mut a = crate::transition::connect(&Agent::new(p, 0), SessionId::parse("s", "s").unwrap(), 0, &policy)
            .agent
            .unwrap();
        a.status = AgentStatus::Available;
        f(&mut a);
        a
    }

    fn waiting(id: &str, f: impl FnOnce(&mut crate::model::CaseSpec)) -> Case {
        let mut spec = crate::model::CaseSpec::parse(
            crate::model::CaseSpecInput {
                id,
                language: "de",
                tier: Some(crate::model::Tier::Standard),
                channel: Some(crate::model::Channel::Chat),
                ..Default::default()
            },
            crate::model::Level::MIN,
            &crate::limits::Limits::default(),
        )
        .unwrap();
        f(&mut spec);
        Case::new(spec, 0)
    }

    #[test]
    fn every_reason_for_no_offers_is_told_in_words() {
        use crate::model::{CaseId, Certification, Channel};
        let p = Policy::default();
        let now = 1_000_000;
        let codes = |a: &Agent, cases: &[Case]| -> Vec<&'static str> {
            why_no_offers(a, cases.iter(), now, &p).into_iter().map(|r| r.code).collect()
        };
        let none: [Case; 0] = [];
        let mut offline = agent(|_| {});
        offline.session = None;
        assert_eq!(codes(&offline, &none), ["not_connected"]);
        assert_eq!(codes(&agent(|a| a.status = AgentStatus::Away), &none), ["away"]);
        let holding = agent(|a| {
            a.pending_offer = Some(crate::state::PendingOffer {
                offer_id: crate::model::OfferId::parse("o", "o").unwrap(),
                case_id: CaseId::parse("c", "c").unwrap(),
                channel: Channel::Chat,
                deadline: now + 1,
            })
        });
        assert_eq!(codes(&holding, &none), ["holding_offer", "at_capacity"]);
        let r = why_no_offers(&agent(|a| a.wrap_up_until = now + 90_000), none.iter(), now, &p);
        assert_eq!(
            (r[0].code, r[0].detail.as_str(), r[0].until),
            ("wrap_up", "wrap-up after your last case, 2 min left", Some(now + 90_000))
        );
        let r = why_no_offers(
            &agent(|a| {
                a.cool_down_until = now + 60_000;
                a.consecutive_misses = 1;
            }),
            none.iter(),
            now,
            &p,
        );
        assert_eq!((r[0].code, r[0].detail.as_str()), ("cool_down", "cool-down after missed offers, 1 min left"));
        let capped = agent(|a| {
            a.work.capped = Some(crate::worktime::Capped { limit: crate::worktime::Limit::Day, until: now + 3_600_000 })
        });
        let r = why_no_offers(&capped, none.iter(), now, &p);
        assert_eq!(
            (r[0].code, r[0].detail.as_str()),
            ("working_time", "you reached the day working-time limit; you may take work again in 60 min")
        );
        let full = agent(|a| {
            a.assignments.insert(CaseId::parse("c", "x").unwrap(), Channel::Chat);
        });
        assert_eq!(codes(&full, &none), ["at_capacity"]);
        // Ready: the queue decides.
        let ready = agent(|a| {
            a.profile.certifications.insert(Certification::parse("c", "pci").unwrap(), now - 120_000);
        });
        let r = why_no_offers(&ready, none.iter(), now, &p);
        assert_eq!(r.iter().map(|r| r.code).collect::<Vec<_>>(), ["certification_expired", "no_waiting_case"]);
        assert_eq!(r[0].detail, "your certification pci expired 2 min ago");
        assert_eq!(r[1].detail, "no case is waiting in your languages (de)");
        let needs_pci = [
            waiting("c1", |s| s.required_certifications = vec![Certification::parse("c", "pci").unwrap()]),
            waiting("c2", |s| s.required_certifications = vec![Certification::parse("c", "pci").unwrap()]),
            waiting("c3", |s| s.market = Some(crate::model::Market::parse("m", "DE").unwrap())),
        ];
        let r = why_no_offers(&ready, needs_pci.iter(), now, &p);
        assert_eq!(r[1].code, "requirements");
        assert_eq!(
            r[1].detail,
            "3 case(s) wait in your languages, none you may take: 2 certification_expired (e.g. certification pci expired 2 min ago); \
             1 market (e.g. not contracted for market DE (serves: none))"
        );
        let open = [waiting("c4", |_| {})];
        assert_eq!(codes(&ready, &open), ["certification_expired", "none"]);
    }
}
