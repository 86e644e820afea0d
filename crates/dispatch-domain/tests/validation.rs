//! Property tests of input validation: no input panics, accepted values meet their invariants,
//! and a rejection always names a field of the message.

use dispatch_domain::limits::Limits;
use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::{AgentId, Channel, Language, Level, Skill, Tier};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._:@-]{0,140}",
        "[a-z]{2,3}(-[A-Za-z0-9]{1,9}){0,3}",
        ".{0,40}",
        Just(String::new()),
        Just("\u{0}\u{7}".to_owned()),
    ]
}

proptest! {
    #[test]
    fn ids_accept_exactly_the_documented_form(s in text()) {
        let ok = !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:_@-".contains(c));
        match AgentId::parse("agent_id", &s) {
            Ok(id) => { prop_assert!(ok); prop_assert_eq!(id.as_str(), s.as_str()); }
            Err(e) => { prop_assert!(!ok); prop_assert_eq!(e.field, "agent_id"); }
        }
    }

    #[test]
    fn language_tags_are_canonical_and_stable(s in text()) {
        if let Ok(l) = Language::parse("language", &s) {
            let again = Language::parse("language", l.as_str()).expect("a canonical tag parses");
            prop_assert_eq!(&again, &l);
            prop_assert!((2..=3).contains(&l.primary().len()));
            prop_assert!(l.primary().chars().all(|c| c.is_ascii_lowercase()));
            prop_assert!(l.as_str().eq_ignore_ascii_case(&s));
        }
    }

    #[test]
    fn same_primary_is_equal_primary_subtags(a in text(), b in text()) {
        if let (Ok(x), Ok(y)) = (Language::parse("language", &a), Language::parse("language", &b)) {
            prop_assert_eq!(x.same_primary(&y), x.primary() == y.primary());
            prop_assert!(x.same_primary(&x));
        }
    }

    #[test]
    fn levels_are_one_to_five(n in any::<u32>()) {
        prop_assert_eq!(Level::parse("level", n).is_ok(), (1..=5).contains(&n));
    }

    #[test]
    fn skills_are_lower_case_and_bounded(s in text()) {
        if let Ok(k) = Skill::parse("skill", &s) {
            prop_assert!(!k.as_str().is_empty() && k.as_str().len() <= 64);
            prop_assert_eq!(k.as_str(), s.to_ascii_lowercase());
        }
    }

    #[test]
    fn case_specs_never_panic_and_name_the_field(
        id in text(), lang in text(), minp in 0u32..8, tier in 0u8..3, prio in 0u32..14, channel in 0u8..4,
        skills in proptest::collection::vec((text(), 0u32..7), 0..40), summary_len in 0usize..9000,
        sentiment in -2.0f64..2.0, ttl in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let summary = "s".repeat(summary_len);
        let skill_refs: Vec<(&str, u32)> = skills.iter().map(|(s, l)| (s.as_str(), *l)).collect();
        let input = CaseSpecInput {
            id: &id, language: &lang, min_proficiency: minp, required_skills: skill_refs,
            tier: [None, Some(Tier::Standard), Some(Tier::Vip)][tier as usize], priority: prio,
            channel: [None, Some(Channel::Voice), Some(Channel::Chat), Some(Channel::Email)][channel as usize],
            summary: &summary, sentiment, ttl_ms: ttl, ..Default::default()
        };
        let limits = Limits::default();
        match CaseSpec::parse(input, Level::MIN, &limits) {
            Ok(spec) => {
                prop_assert!(spec.required_skills.len() <= limits.max_skills);
                prop_assert!(spec.summary.len() <= limits.max_summary_len);
                prop_assert!(spec.priority <= 10);
                prop_assert!(spec.ttl_ms.is_none_or(|t| t <= limits.max_ttl_ms));
                prop_assert!((-1.0..=1.0).contains(&spec.sentiment));
            }
            Err(e) => {
                let fields = ["case_id", "language", "min_language_proficiency", "required_skills", "preferred_skills", "tier", "priority", "channel", "summary", "sentiment", "customer_id", "previous_agent_id", "ttl_ms"];
                prop_assert!(fields.iter().any(|f| e.field.starts_with(f)), "unknown field {}", e.field);
            }
        }
    }

    #[test]
    fn profiles_never_panic_and_are_consistent(
        id in text(), langs in proptest::collection::vec((text(), 0u32..7), 0..20),
        skills in proptest::collection::vec((text(), 0u32..7), 0..40), caps in proptest::collection::vec((0u8..4, 0u32..60), 0..5),
        rating in -1.0f64..6.0,
    ) {
        let limits = Limits::default();
        let input = AgentProfileInput {
            id: &id, display_name: "x",
            languages: langs.iter().map(|(s, l)| (s.as_str(), *l)).collect(),
            skills: skills.iter().map(|(s, l)| (s.as_str(), *l)).collect(),
            vip_certified: false,
            capacity: caps.iter().map(|(c, n)| ([None, Some(Channel::Voice), Some(Channel::Chat), Some(Channel::Email)][*c as usize], *n)).collect(),
            rating,
            ..Default::default()
        };
        match AgentProfile::parse(input, &limits) {
            Ok(p) => {
                prop_assert!(!p.languages.is_empty() && p.languages.len() <= limits.max_languages);
                prop_assert!(p.languages.windows(2).all(|w| w[0].language < w[1].language), "sorted, unique");
                prop_assert!(p.skills.len() <= limits.max_skills);
                prop_assert!(p.capacity.values().any(|c| *c > 0) && p.capacity.values().all(|c| *c <= limits.max_capacity));
                prop_assert!((0.0..=5.0).contains(&p.rating));
            }
            Err(e) => {
                let fields = ["agent_id", "display_name", "languages", "skills", "capacity", "rating"];
                prop_assert!(fields.iter().any(|f| e.field.starts_with(f)), "unknown field {}", e.field);
            }
        }
    }
}
