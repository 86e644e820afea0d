//! The checker: from the history and the final Redis state, the four invariants.
//!
//! - I1 no lost case: every case the store holds, and every case a router saw confirmed, ends
//!   completed (the scenario waits for the work to drain first).
//! - I2 no double assignment: no case was confirmed as assigned to two agents (clients' view),
//!   and no case record holds two accepted offers (store's view).
//! - I3 capacity never exceeded: no agent ever held more assigned cases than its capacity.
//! - I4 no stale accept honoured: an accept that succeeded names an offer the store recorded
//!   as accepted by that agent, decided by its deadline, and the agent had not been told it
//!   was revoked before.
//! - I5 no work stuck with a vanished agent: a case whose agent vanished holding it is handed
//!   back (its accepted offer marked so in the store) and completed by someone else. A case
//!   accepted twice is a double assignment unless every earlier assignment was handed back.

use std::collections::{HashMap, HashSet};

use dispatch_domain::state::OfferOutcome;
use dispatch_domain::{Case, CaseState};

use crate::sim::{Entry, Op};

#[derive(Debug, Default)]
pub struct Verdict {
    pub cases: usize,
    pub confirmed: usize,
    pub assigned: usize,
    pub completed: usize,
    pub lost: Vec<String>,
    /// Cases left open (waiting, offered or assigned) when the work had drained.
    pub stuck: Vec<String>,
    pub double: Vec<String>,
    pub over_capacity: usize,
    pub stale_accepts: Vec<String>,
    /// Cases an agent was told it completed that the store does not hold completed.
    pub erased: Vec<String>,
    /// Cases completed by two different agents.
    pub completed_twice: Vec<String>,
    pub submit_retries: usize,
    pub accepts_refused: usize,
    /// Cases whose assignment the store handed back (I5).
    pub handed_back: usize,
    /// Cases held by an agent that vanished that were not handed back and completed (I5).
    pub stuck_with_vanished: Vec<String>,
}

impl Verdict {
    pub fn line(&self, scenario: &str, faults: usize, extra: &str) -> String {
        format!(
            "scenario={scenario} cases={} confirmed={} assigned={} completed={} lost={} stuck={} double={} over_capacity={} \
             stale_accepts={} erased={} completed_twice={} handed_back={} stuck_with_vanished={} faults={faults} \
             submit_retries={} accepts_refused={}{extra}",
            self.cases,
            self.confirmed,
            self.assigned,
            self.completed,
            self.lost.len(),
            self.stuck.len(),
            self.double.len(),
            self.over_capacity,
            self.stale_accepts.len(),
            self.erased.len(),
            self.completed_twice.len(),
            self.handed_back,
            self.stuck_with_vanished.len(),
            self.submit_retries,
            self.accepts_refused,
        )
    }

    pub fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.stuck.is_empty()
            && self.double.is_empty()
            && self.over_capacity == 0
            && self.stale_accepts.is_empty()
            && self.erased.is_empty()
            && self.completed_twice.is_empty()
            && self.stuck_with_vanished.is_empty()
    }
}

pub fn check(ids: &[String], history: &[Entry], finals: &HashMap<String, Option<Case>>) -> Verdict {
    let mut v = Verdict { cases: ids.len(), ..Verdict::default() };
    let mut confirmed: HashSet<&str> = HashSet::new();
    let mut holders: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut revoked_seen: HashSet<(&str, &str)> = HashSet::new();
    let mut completers: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut vanished: HashMap<&str, &str> = HashMap::new();
    for e in history {
        match &e.op {
            Op::SubmitOk { case } => {
                confirmed.insert(case);
            }
            Op::SubmitFail { .. } => v.submit_retries += 1,
            Op::Revoked { offer, .. } => {
                revoked_seen.insert((&e.actor, offer));
            }
            Op::AcceptOk { offer, case } => {
                holders.entry(case).or_default().insert(&e.actor);
                if revoked_seen.contains(&(e.actor.as_str(), offer.as_str())) {
                    v.stale_accepts.push(format!("{} accepted {offer} after being told it was revoked", e.actor));
                }
                match finals
                    .get(case)
                    .and_then(|c| c.as_ref())
                    .and_then(|c| c.offers.iter().find(|o| o.id.as_str() == offer))
                {
                    Some(o) if o.outcome != OfferOutcome::Accepted || o.agent_id.as_str() != e.actor => {
                        v.stale_accepts.push(format!(
                            "{} was told {offer} was accepted; the store says {:?} by {}",
                            e.actor, o.outcome, o.agent_id
                        ))
                    }
                    Some(o) if o.decided_at > o.deadline => v
                        .stale_accepts
                        .push(format!("{offer} accepted at {} after its deadline {}", o.decided_at, o.deadline)),
                    _ => {}
                }
            }
            Op::AcceptFail { .. } => v.accepts_refused += 1,
            Op::Assigned { case, .. } => {
                holders.entry(case).or_default().insert(&e.actor);
            }
            Op::OverCapacity { .. } => v.over_capacity += 1,
            Op::Vanished { case } => {
                vanished.insert(case, &e.actor);
            }
            Op::CompleteOk { case } => {
                completers.entry(case).or_default().insert(&e.actor);
            }
            _ => {}
        }
    }
    v.confirmed = confirmed.len();
    for id in ids {
        let fin = finals.get(id).and_then(|c| c.as_ref());
        // Agents whose assignment of this case the store handed back.
        let mut handed_back_from: HashSet<&str> = HashSet::new();
        if let Some(c) = fin {
            let accepted = || c.offers.iter().filter(|o| o.outcome == OfferOutcome::Accepted);
            if accepted().filter(|o| o.handed_back_at == 0).count() > 1 {
                v.double.push(format!("{id}: the store holds two accepted offers not handed back"));
            }
            if accepted().next().is_some() {
                v.assigned += 1;
            }
            handed_back_from.extend(accepted().filter(|o| o.handed_back_at > 0).map(|o| o.agent_id.as_str()));
            if !handed_back_from.is_empty() {
                v.handed_back += 1;
            }
        }
        if let Some(agent) = vanished.get(id.as_str())
            && !(handed_back_from.contains(agent) && matches!(fin.map(|c| &c.state), Some(CaseState::Completed)))
        {
            v.stuck_with_vanished
                .push(format!("{id}: {agent} vanished holding it; the store holds {:?}", fin.map(|c| c.state.name())));
        }
        match fin.map(|c| &c.state) {
            Some(CaseState::Completed) => v.completed += 1,
            Some(other) => v.stuck.push(format!("{id}: stuck {}", other.name())),
            None if confirmed.contains(id.as_str()) => v.lost.push(format!("{id}: confirmed, then missing")),
            None => {}
        }
        if let Some(h) = holders.get(id.as_str())
            && h.iter().filter(|a| !handed_back_from.contains(*a)).count() > 1
        {
            v.double.push(format!("{id}: assigned to {h:?}"));
        }
        if let Some(by) = completers.get(id.as_str()) {
            if by.len() > 1 {
                v.completed_twice.push(format!("{id}: completed by {by:?}"));
            }
            if !matches!(fin.map(|c| &c.state), Some(CaseState::Completed)) {
                v.erased.push(format!("{id}: completed by {by:?}, the store holds {:?}", fin.map(|c| c.state.name())));
            }
        }
    }
    v
}
