//! The live pool index: the latest known version of every agent and live case, with posting
//! lists that let selection look only at agents who could take a case (signed in, status
//! available) and speak its language, narrowed by required skill. Updated from committed
//! records (newer versions win, so out-of-order updates are harmless) and rebuilt from a store
//! snapshot on start. It is a cache: every offer is re-checked against the store by
//! compare-and-set.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use dispatch_domain::compact::{self, Held, Summary};
use dispatch_domain::demand::{self, Supply};
use dispatch_domain::model::Market;
use dispatch_domain::scoring::{self, Ineligible};
use dispatch_domain::state::Explanation;
use dispatch_domain::{Agent, AgentId, Case, CaseId, CaseState, Millis, Policy, Skill};

/// A posting list key: a primary language, optionally a skill, whether the list holds only
/// VIP-certified agents (each agent is in both the general and, if certified, the VIP lists),
/// and optionally a market (each agent is in the lists without a market and in those of each
/// market it serves: a case with a market looks only at agents contracted for it).
type Posting = (String, Option<Skill>, bool, Option<Market>);

/// A posting list: agents longest idle first, with their handles (no map lookup per candidate).
type Postings = BTreeMap<(Millis, AgentId), Arc<Agent>>;

/// See the module docs.
#[derive(Default)]
pub struct PoolIndex {
    /// Every agent, latest version.
    agents: DashMap<AgentId, Arc<Agent>>,
    /// Routable agents (connected, available, no offer held, room in some channel) by
    /// (language) and (language, skill), longest idle first. Lock order: `postings` before any
    /// `agents` shard.
    postings: RwLock<HashMap<Posting, Postings>>,
    /// Live (not terminal) cases and the waiting order.
    cases: Mutex<CaseIndex>,
    /// Signed-in agents (status available or away, connected or not) by primary language, as
    /// compact summaries: the supply of each demand segment. Lock order: after `postings`.
    online: RwLock<HashMap<String, Roster>>,
    /// The ids the summaries hold for skill, market, region and certification names.
    names: RwLock<HashMap<String, u32>>,
    /// Agents holding an invitation (open or ended), by its segment key.
    invited: RwLock<HashMap<String, BTreeMap<AgentId, Arc<Agent>>>>,
}

fn signed_in(a: &Agent) -> bool {
    a.session.is_some() && a.status != dispatch_domain::AgentStatus::Offline
}

/// The signed-in agents of one language: their compact summaries in one array (what a scan for
/// supply walks), each with its record (read instead when the profile has no summary), and
/// each agent's place in the array.
#[derive(Default)]
struct Roster {
    rows: Vec<(Option<Summary>, Arc<Agent>)>,
    slots: HashMap<AgentId, usize>,
}

impl Roster {
    fn put(&mut self, summary: Option<Summary>, agent: &Arc<Agent>) {
        let row = (summary, Arc::clone(agent));
        match self.slots.get(agent.id()) {
            Some(i) => self.rows[*i] = row,
            None => {
                self.slots.insert(agent.id().clone(), self.rows.len());
                self.rows.push(row);
            }
        }
    }

    fn remove(&mut self, id: &AgentId) {
        let Some(i) = self.slots.remove(id) else { return };
        self.rows.swap_remove(i);
        if let Some((_, moved)) = self.rows.get(i) {
            self.slots.insert(moved.id().clone(), i);
        }
    }
}

#[derive(Default)]
struct CaseIndex {
    live: HashMap<CaseId, Arc<Case>>,
    /// Waiting cases by primary language, in queue order (rank, id).
    waiting: HashMap<String, BTreeSet<(i64, CaseId)>>,
    /// The version at which lately closed cases closed, so that reading one again (from the
    /// change log, a rebuild, a refresh) is known to be old news. Oldest first in `closed_order`;
    /// at most [`CLOSED_VERSIONS`].
    closed: HashMap<CaseId, (u64, CaseState, Millis)>,
    closed_order: VecDeque<CaseId>,
}

/// How many closed cases' versions the index keeps (about 50 bytes each).
const CLOSED_VERSIONS: usize = 100_000;

/// What applying a record to the index did.
#[derive(Debug)]
pub enum Applied<T> {
    /// It was newer than what the index knew; the version it replaced (`None`: first sight).
    Newer(Option<Arc<T>>),
    /// The index knows this version or a newer one: nothing changed.
    Stale,
}

fn postings_of(a: &Agent) -> Vec<Posting> {
    let mut out = Vec::new();
    let langs = a.profile.primary_languages();
    let tiers: &[bool] = if a.profile.holds_vip() { &[false, true] } else { &[false] };
    let markets: Vec<Option<Market>> =
        std::iter::once(None).chain(a.profile.markets.iter().cloned().map(Some)).collect();
    for l in langs {
        for vip in tiers {
            for m in &markets {
                out.push((l.to_owned(), None, *vip, m.clone()));
                out.extend(a.profile.skills.keys().map(|s| (l.to_owned(), Some(s.clone()), *vip, m.clone())));
            }
        }
    }
    out
}

impl PoolIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `agent` if it is newer than what is known.
    pub fn apply_agent(&self, agent: Agent) -> Applied<Agent> {
        let mut postings = self.postings.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.agents.get(agent.id()).map(|a| Arc::clone(a.value()));
        if old.as_ref().is_some_and(|o| o.version >= agent.version) {
            return Applied::Stale;
        }
        if let Some(o) = old.as_ref().filter(|o| o.routable()) {
            let entry = (o.idle_since, o.id().clone());
            for key in postings_of(o) {
                if let Some(set) = postings.get_mut(&key) {
                    set.remove(&entry);
                    if set.is_empty() {
                        postings.remove(&key);
                    }
                }
            }
        }
        let agent = Arc::new(agent);
        self.file_online(old.as_deref(), Some(&agent));
        if agent.routable() {
            for key in postings_of(&agent) {
                postings.entry(key).or_default().insert((agent.idle_since, agent.id().clone()), Arc::clone(&agent));
            }
        }
        self.agents.insert(agent.id().clone(), agent);
        Applied::Newer(old)
    }

    /// The id of `name` in summaries, given one if it has none.
    fn intern(&self, name: &str) -> u32 {
        if let Some(id) = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name) {
            return *id;
        }
        let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = u32::try_from(names.len()).unwrap_or(compact::UNKNOWN - 1).min(compact::UNKNOWN - 1);
        *names.entry(name.to_owned()).or_insert(next)
    }

    /// Moves an agent between the signed-in lists of its languages, with its summary.
    fn file_online(&self, old: Option<&Agent>, new: Option<&Arc<Agent>>) {
        let online_now = new.filter(|n| signed_in(n));
        let summary = online_now.and_then(|n| Summary::of(n, |name| self.intern(name)));
        let mut online = self.online.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let languages = online_now.map(|n| n.profile.primary_languages()).unwrap_or_default();
        if let Some(o) = old.filter(|o| signed_in(o)) {
            for l in o.profile.primary_languages().into_iter().filter(|l| !languages.contains(l)) {
                if let Some(m) = online.get_mut(l) {
                    m.remove(o.id());
                    if m.rows.is_empty() {
                        online.remove(l);
                    }
                }
            }
        }
        if let Some(n) = online_now {
            for l in languages {
                match online.get_mut(l) {
                    Some(m) => m.put(summary, n),
                    None => online.entry(l.to_owned()).or_default().put(summary, n),
                }
            }
        }
        drop(online);
        let mut invited = self.invited.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((o, i)) = old.and_then(|o| o.invitation.as_ref().map(|i| (o, i)))
            && let Some(m) = invited.get_mut(&i.segment)
        {
            m.remove(o.id());
            if m.is_empty() {
                invited.remove(&i.segment);
            }
        }
        if let Some((n, i)) = new.and_then(|n| n.invitation.as_ref().map(|i| (n, i))) {
            invited.entry(i.segment.clone()).or_default().insert(n.id().clone(), Arc::clone(n));
        }
    }

    /// The agents holding an invitation, with its segment key.
    pub fn invited(&self) -> Vec<(String, Arc<Agent>)> {
        let invited = self.invited.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        invited.iter().flat_map(|(s, m)| m.values().map(move |a| (s.clone(), Arc::clone(a)))).collect()
    }

    /// The agents holding an invitation of `segment` that is still open at `now`.
    pub fn invited_for(&self, segment: &str, now: Millis) -> Vec<Arc<Agent>> {
        let invited = self.invited.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        invited
            .get(segment)
            .map(|m| m.values().filter(|a| a.invitation.as_ref().is_some_and(|i| i.live(now))).cloned().collect())
            .unwrap_or_default()
    }

    /// The signed-in agents speaking `language` (primary subtag).
    pub fn signed_in(&self, language: &str) -> Vec<Arc<Agent>> {
        let online = self.online.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        online.get(language).map(|m| m.rows.iter().map(|(_, a)| Arc::clone(a)).collect()).unwrap_or_default()
    }

    /// The supply for `case` at `now` ([`demand::supply_of`] over the signed-in agents speaking
    /// its language): one walk of the language's compact summaries, the case's needs compiled
    /// once, the same rule.
    pub fn supply_for(&self, case: &Case, now: Millis, policy: &Policy) -> Supply {
        let query = {
            let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            compact::Query::of(case, case.relaxed(policy, now), |name| names.get(name).copied())
        };
        let online = self.online.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(roster) = online.get(case.spec.language.primary()) else {
            return Supply::default();
        };
        let held = roster.rows.iter().map(|(s, a)| match s {
            Some(s) => Held::Summary(s),
            None => Held::Record(a),
        });
        demand::supply_of_held(&query, case.spec.channel, held, now)
    }

    /// How many waiting cases ahead of `case` in its language's queue compete for its agents
    /// ([`demand::competes`](dispatch_domain::demand::competes)), looking at most `limit` deep,
    /// with how many of those are VIP cases ahead of a standard one; and how many wait in its
    /// language in all.
    pub fn ahead_of(&self, case: &Case, policy: &Policy, limit: usize) -> ((u32, u32), u32) {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(set) = idx.waiting.get(case.spec.language.primary()) else {
            return ((0, 0), 0);
        };
        let me = (case.queue_rank(policy), case.id().clone());
        let standard = case.spec.tier == dispatch_domain::Tier::Standard;
        let (mut ahead, mut vip) = (0u32, 0u32);
        for (_, id) in set.range(..me).take(limit) {
            if let Some(c) = idx.live.get(id).filter(|c| dispatch_domain::demand::competes(&c.spec, &case.spec)) {
                ahead += 1;
                vip += u32::from(standard && c.spec.tier == dispatch_domain::Tier::Vip);
            }
        }
        ((ahead, vip), u32::try_from(set.len()).unwrap_or(u32::MAX))
    }

    /// Forgets a removed agent.
    pub fn remove_agent(&self, id: &AgentId) {
        let mut postings = self.postings.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, o)) = self.agents.remove(id) {
            self.file_online(Some(&o), None);
            for key in postings_of(&o) {
                if let Some(set) = postings.get_mut(&key) {
                    set.remove(&(o.idle_since, id.clone()));
                }
            }
            drop(postings);
        }
    }

    /// Records `case` if it is newer than what is known; terminal cases leave the index (their
    /// closing version is remembered).
    pub fn apply_case(&self, case: Case, policy: &Policy) -> Applied<Case> {
        let mut idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = case.id().clone();
        if idx.closed.get(&id).is_some_and(|(v, _, _)| *v >= case.version) {
            return Applied::Stale;
        }
        let old = idx.live.get(&id).cloned();
        if let Some(old) = &old {
            if old.version >= case.version {
                return Applied::Stale;
            }
            if old.state == CaseState::Queued {
                let lang = old.spec.language.primary().to_owned();
                if let Some(set) = idx.waiting.get_mut(&lang) {
                    set.remove(&(old.queue_rank(policy), id.clone()));
                }
            }
        }
        if case.state.is_terminal() {
            idx.live.remove(&id);
            if idx.closed.insert(id.clone(), (case.version, case.state.clone(), case.closed_at)).is_none() {
                idx.closed_order.push_back(id);
                if idx.closed_order.len() > CLOSED_VERSIONS
                    && let Some(gone) = idx.closed_order.pop_front()
                {
                    idx.closed.remove(&gone);
                }
            }
            return Applied::Newer(old);
        }
        if case.state == CaseState::Queued {
            idx.waiting
                .entry(case.spec.language.primary().to_owned())
                .or_default()
                .insert((case.queue_rank(policy), id.clone()));
        }
        idx.live.insert(id, Arc::new(case));
        Applied::Newer(old)
    }

    /// Forgets a case that no longer exists.
    pub fn remove_case(&self, id: &CaseId, policy: &Policy) {
        let mut idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idx.closed.remove(id);
        if let Some(old) = idx.live.remove(id)
            && let Some(set) = idx.waiting.get_mut(old.spec.language.primary())
        {
            set.remove(&(old.queue_rank(policy), id.clone()));
        }
    }

    /// An agent's latest known version.
    pub fn agent(&self, id: &AgentId) -> Option<Arc<Agent>> {
        self.agents.get(id).map(|a| Arc::clone(a.value()))
    }

    /// A live case's latest known version.
    pub fn case(&self, id: &CaseId) -> Option<Arc<Case>> {
        self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).live.get(id).cloned()
    }

    /// The latest version of a case the index knows, live or lately closed.
    pub fn case_version(&self, id: &CaseId) -> Option<u64> {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idx.live.get(id).map(|c| c.version).or_else(|| idx.closed.get(id).map(|(v, _, _)| *v))
    }

    /// How and at which version a lately closed case closed, if the index remembers it.
    pub fn closed(&self, id: &CaseId) -> Option<(u64, CaseState)> {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idx.closed.get(id).map(|(v, state, _)| (*v, state.clone()))
    }

    /// The cases the index remembers closing at or after `since` (store clock), with the
    /// version they closed at.
    pub fn closed_since(&self, since: Millis) -> Vec<(CaseId, u64)> {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idx.closed.iter().filter(|(_, (_, _, at))| *at >= since).map(|(id, (v, _, _))| (id.clone(), *v)).collect()
    }

    /// Every agent (a copy of the handles, so no lock is held by the caller).
    pub fn agents(&self) -> Vec<Arc<Agent>> {
        self.agents.iter().map(|e| Arc::clone(e.value())).collect()
    }

    /// Every live case.
    pub fn live_cases(&self) -> Vec<Arc<Case>> {
        self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner).live.values().cloned().collect()
    }

    /// Ids of every waiting case.
    /// The first `limit` waiting cases in each of `languages` (primary subtags), queue order.
    pub fn waiting_in(&self, languages: &[&str], limit: usize) -> Vec<Arc<Case>> {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        languages
            .iter()
            .filter_map(|l| idx.waiting.get(*l))
            .flat_map(|set| set.iter().take(limit).filter_map(|(_, id)| idx.live.get(id).cloned()))
            .collect()
    }

    pub fn waiting_ids(&self) -> Vec<CaseId> {
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idx.waiting.values().flat_map(|s| s.iter().map(|(_, id)| id.clone())).collect()
    }

    /// The best candidates for `case` (see [`scoring::rank_first`]): the customer's previous
    /// agent and a handed-back case's last agent, then the smallest posting list among the case's language and (language, required
    /// skill) pairs, longest idle first, up to `policy.selection_candidate_limit` eligible agents.
    pub fn rank_for_case(&self, case: &Case, now: Millis, policy: &Policy) -> Explanation {
        let postings = self.postings.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lang = case.spec.language.primary().to_owned();
        // A VIP case looks only at certified agents unless relaxation has opened it up.
        let vip = case.needs_vip_certified(case.relaxed(policy, now));
        let market = case.spec.market.clone();
        let mut keys = vec![(lang.clone(), None, vip, market.clone())];
        keys.extend(
            case.spec.required_skills.iter().map(|s| (lang.clone(), Some(s.skill.clone()), vip, market.clone())),
        );
        let empty = Postings::new();
        let smallest = keys.iter().map(|k| postings.get(k).unwrap_or(&empty)).min_by_key(|s| s.len()).unwrap_or(&empty);
        // The agents the case prefers first: the customer's previous agent, and the agent a
        // handed-back case was taken from.
        let returning = case.returning.as_ref().map(|r| &r.agent_id).filter(|id| case.prefers_returning(id, now));
        let mut preferred: Vec<&AgentId> = case.spec.previous_agent.iter().chain(returning).collect();
        preferred.dedup();
        let first: Vec<Arc<Agent>> = preferred.iter().filter_map(|id| self.agent(id)).collect();
        let others = smallest.iter().filter(|((_, id), _)| !preferred.contains(&id)).map(|(_, a)| a);
        let candidates = first.iter().chain(others).map(|a| a.as_ref());
        scoring::rank_first(case, candidates, now, policy, policy.selection_candidate_limit)
    }

    /// The first waiting case in queue order that `agent` may take, across the languages it
    /// speaks.
    pub fn best_case_for(&self, agent: &Agent, now: Millis, policy: &Policy) -> Option<Arc<Case>> {
        self.best_case_skipping(agent, now, policy, |_| false)
    }

    /// [`best_case_for`](Self::best_case_for), passing over the cases `skip` names.
    pub fn best_case_skipping(
        &self,
        agent: &Agent,
        now: Millis,
        policy: &Policy,
        skip: impl Fn(&CaseId) -> bool,
    ) -> Option<Arc<Case>> {
        if agent.unready_reason(now).is_some() {
            return None;
        }
        let idx = self.cases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut best: Option<(i64, &Arc<Case>)> = None;
        let langs = agent.profile.primary_languages();
        for lang in langs {
            let Some(set) = idx.waiting.get(lang) else {
                continue;
            };
            for (rank, id) in set {
                if best.is_some_and(|(b, _)| b <= *rank) {
                    break;
                }
                if skip(id) {
                    continue;
                }
                let Some(case) = idx.live.get(id) else {
                    continue;
                };
                match scoring::eligibility(case, agent, now, policy) {
                    Ok(()) => {
                        best = Some((*rank, case));
                        break;
                    }
                    Err(Ineligible::NotReady(_)) => return None,
                    Err(_) => {}
                }
            }
        }
        best.map(|(_, c)| Arc::clone(c))
    }
}
