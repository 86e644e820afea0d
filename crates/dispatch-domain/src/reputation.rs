//! Earned reputation: customers rate completed cases (1–5) and say whether the agent could
//! influence the rating (a shipping delay or a policy complaint is not the agent's doing). The
//! rating term of selection is the mean of the agent's last N controllable ratings shrunk
//! toward a prior (a Bayesian average): a newcomer starts at the prior, not at zero, and a few
//! ratings move it only a little.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::FieldError;

/// `[policy.reputation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReputationPolicy {
    /// How many of the latest controllable ratings count (SimplrFlex counts 50).
    pub window: usize,
    /// The prior a newcomer starts at, 1.0 to 5.0.
    pub prior_mean: f64,
    /// How many ratings the prior weighs (0: none, the plain mean; a newcomer with no
    /// ratings is then at the prior).
    pub prior_strength: f64,
}

impl Default for ReputationPolicy {
    fn default() -> Self {
        Self { window: 50, prior_mean: 4.0, prior_strength: 5.0 }
    }
}

impl ReputationPolicy {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.window) {
            return Err("window must be 1 to 1000".into());
        }
        if !(1.0..=5.0).contains(&self.prior_mean) {
            return Err("prior_mean must be 1.0 to 5.0".into());
        }
        if !(self.prior_strength.is_finite() && (0.0..=1000.0).contains(&self.prior_strength)) {
            return Err("prior_strength must be 0 to 1000".into());
        }
        Ok(())
    }
}

/// A customer's rating of one completed case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRating {
    /// 1 to 5 stars.
    pub stars: u8,
    /// Whether the agent could influence it (only those count toward the agent's reputation).
    pub controllable: bool,
    /// When it was given.
    pub at: crate::model::Millis,
}

impl CaseRating {
    /// Validates stars 1 to 5.
    pub fn parse(stars: u32, controllable: bool, at: crate::model::Millis) -> Result<CaseRating, FieldError> {
        match u8::try_from(stars) {
            Ok(s @ 1..=5) => Ok(CaseRating { stars: s, controllable, at }),
            _ => Err(FieldError::new("rating", format!("rating {stars} is outside 1 to 5"))),
        }
    }
}

/// An agent's ratings, part of its record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratings {
    /// The latest controllable ratings, oldest first (at most the policy's window).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub recent: VecDeque<u8>,
    /// Every rating received (controllable or not).
    #[serde(default)]
    pub total: u64,
    /// Of those, the controllable ones.
    #[serde(default)]
    pub controllable: u64,
    /// The sum of `recent` (kept so that scoring a candidate reads no list).
    #[serde(default)]
    pub recent_sum: u32,
}

impl Ratings {
    /// Adds one rating; only a controllable one enters the window.
    pub fn add(&mut self, rating: CaseRating, policy: &ReputationPolicy) {
        self.total += 1;
        if rating.controllable {
            self.controllable += 1;
            self.recent.push_back(rating.stars);
            self.recent_sum += u32::from(rating.stars);
            while self.recent.len() > policy.window {
                self.recent_sum -= self.recent.pop_front().map_or(0, u32::from);
            }
        }
    }

    /// The shrunk mean, 1.0 to 5.0: (prior × strength + sum of the window) / (strength + n).
    /// A window longer than the policy's (the window was shortened) counts whole until the next
    /// rating trims it.
    pub fn score(&self, policy: &ReputationPolicy) -> f64 {
        let n = self.recent.len();
        let sum = f64::from(self.recent_sum);
        let weight = policy.prior_strength + n as f64;
        if weight == 0.0 { policy.prior_mean } else { (policy.prior_mean * policy.prior_strength + sum) / weight }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(stars: u8, controllable: bool) -> CaseRating {
        CaseRating { stars, controllable, at: 0 }
    }

    #[test]
    fn ratings_outside_one_to_five_are_refused() {
        assert_eq!(CaseRating::parse(0, true, 0).unwrap_err().field, "rating");
        assert_eq!(CaseRating::parse(6, true, 0).unwrap_err().field, "rating");
        assert!(CaseRating::parse(5, false, 0).is_ok());
    }

    #[test]
    fn only_controllable_ratings_count_and_the_window_slides() {
        let p = ReputationPolicy { window: 3, prior_mean: 4.0, prior_strength: 0.0 };
        let mut rs = Ratings::default();
        rs.add(r(1, false), &p);
        assert_eq!((rs.total, rs.controllable, rs.score(&p)), (1, 0, 4.0), "not the agent's doing");
        for s in [5, 5, 5, 1] {
            rs.add(r(s, true), &p);
        }
        assert_eq!(rs.recent, [5, 5, 1]);
        assert!((rs.score(&p) - 11.0 / 3.0).abs() < 1e-12);
    }

    proptest! {
        /// A newcomer's score is the prior; N controllable fives move it toward 5, never past.
        #[test]
        fn a_newcomer_starts_at_the_prior_and_fives_move_it_toward_five(
            prior in 1.0f64..=5.0,
            strength in 0.5f64..50.0,
            n in 1usize..200,
            window in 1usize..100,
        ) {
            let p = ReputationPolicy { window, prior_mean: prior, prior_strength: strength };
            let mut rs = Ratings::default();
            prop_assert!((rs.score(&p) - prior).abs() < 1e-12);
            let mut last = rs.score(&p);
            for _ in 0..n {
                rs.add(r(5, true), &p);
                let s = rs.score(&p);
                prop_assert!(s >= last - 1e-12 && s <= 5.0 + 1e-12, "{} then {}", last, s);
                last = s;
            }
            let k = n.min(window) as f64;
            prop_assert!((last - (prior * strength + 5.0 * k) / (strength + k)).abs() < 1e-9);
            if prior < 5.0 {
                prop_assert!(last > prior, "moved toward 5");
            }
        }
    }
}
