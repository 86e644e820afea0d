//! Runs a day on the engine: one step a simulated second (the clock moves, what is due in the
//! world happens, the engine's timers fire and its matching settles, the devices read their
//! notices), and records what the customers and agents saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result};
use dispatch_domain::demand::SegmentFilter;
use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::{AgentId, AgentStatus, CaseId, Channel, Policy, Tier, callin, limits::Limits};
use dispatch_engine::{
    AgentCommand, AgentCommands, AgentNotice, AgentNotices, Clock, Engine, EngineConfig, MemoryStore, Store,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::SimConfig;
use crate::report::{CaseRecord, Report};
use crate::workload::{AgentPlan, Workload, lognormal};

/// Simulated time per step.
const STEP_MS: u64 = 1_000;
/// How often the shortfall is sampled.
const SAMPLE_MS: u64 = 300_000;
/// Midnight UTC of the simulated day (2027-01-04, a Monday).
const DAY_START: i64 = 1_798_934_400_000;

/// Something due in the world.
#[derive(Debug, Clone)]
enum Due {
    SignIn(usize),
    SignOut(usize),
    Answer(usize, dispatch_domain::OfferId, bool),
    Complete(usize, CaseId),
    GiveUp(usize),
}

struct Device {
    notices: AgentNotices,
    commands: AgentCommands,
}

#[derive(Default)]
struct AgentState {
    device: Option<Device>,
    holding: HashSet<CaseId>,
    leaving: bool,
    /// When it must leave (an offline agent called in stays a while).
    until: Option<u64>,
}

/// The simulated world around the engine.
struct World {
    config: SimConfig,
    engine: Engine,
    clock: Clock,
    workload: Workload,
    agents: Vec<AgentState>,
    by_id: HashMap<String, usize>,
    cases: Vec<CaseRecord>,
    case_of: HashMap<String, usize>,
    due: BTreeMap<(u64, u64), Due>,
    seq: u64,
    rng: SmallRng,
    invitations_seen: HashSet<String>,
    report: Report,
}

/// Runs `config`'s day; the report of what happened.
pub async fn run(config: SimConfig) -> Result<Report> {
    let start = DAY_START + i64::from(config.start_hour) * 3_600_000;
    let clock = Clock::manual(start);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
    let mut policy = Policy::default();
    policy.call_in.enabled = config.call_in;
    let engine_config = EngineConfig { id_seed: Some(config.seed), matcher_workers: 1, ..EngineConfig::default() };
    let engine = Engine::start(store, clock.clone(), policy, engine_config).await.context("engine start")?;
    let workload = Workload::draw(&config);
    let mut world = World {
        engine,
        clock,
        agents: workload.agents.iter().map(|_| AgentState::default()).collect(),
        by_id: workload.agents.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect(),
        cases: Vec::new(),
        case_of: HashMap::new(),
        due: BTreeMap::new(),
        seq: 0,
        rng: SmallRng::seed_from_u64(config.seed ^ 0x5eed),
        invitations_seen: HashSet::new(),
        report: Report::new(&config),
        workload,
        config,
    };
    world.register().await?;
    world.day().await?;
    world.engine.shutdown(std::time::Duration::from_secs(5)).await;
    world.report.cases = std::mem::take(&mut world.cases);
    Ok(world.report)
}

impl World {
    fn at(&mut self, t: u64, due: Due) {
        self.seq += 1;
        self.due.insert((t, self.seq), due);
    }

    async fn register(&mut self) -> Result<()> {
        let limits = Limits::default();
        for (i, plan) in self.workload.agents.clone().iter().enumerate() {
            let call_in = plan.answer.map(|_| {
                callin::CallInPrefs::parse(
                    "call_in",
                    callin::CallInInput {
                        languages: vec![],
                        max_per_day: 3,
                        quiet_from_min: 23 * 60,
                        quiet_to_min: 7 * 60,
                        utc_offset_min: 0,
                    },
                )
            });
            let profile = profile(plan, call_in.transpose()?, &limits)?;
            self.engine.upsert_agent(profile).await?;
            if let Some((from, to)) = plan.shift {
                self.at(from, Due::SignIn(i));
                self.at(to, Due::SignOut(i));
            }
        }
        Ok(())
    }

    async fn day(&mut self) -> Result<()> {
        let span = self.config.hours * 3_600_000;
        let mut next_arrival = 0;
        let mut t = 0;
        while t < span {
            t += STEP_MS;
            self.clock.advance(STEP_MS);
            while let Some(a) = self.workload.arrivals.get(next_arrival).filter(|a| a.at < t) {
                let a = a.clone();
                next_arrival += 1;
                self.submit(&a).await?;
            }
            while let Some(((at, _), _)) = self.due.first_key_value() {
                if *at >= t {
                    break;
                }
                let (_, due) = self.due.pop_first().expect("first");
                self.happen(due).await?;
            }
            self.engine.sweep().await?;
            self.engine.settled().await;
            self.read_devices(t).await?;
            if self.config.call_in {
                self.notify(t).await?;
            }
            if t % SAMPLE_MS == 0 {
                self.sample_shortfall().await?;
            }
            let (signed_in, busy) = self
                .agents
                .iter()
                .filter(|a| a.device.is_some())
                .fold((0, 0), |(s, b), a| (s + 1, b + usize::from(!a.holding.is_empty())));
            self.report.agent_seconds += signed_in as u64;
            self.report.busy_seconds += busy as u64;
        }
        Ok(())
    }

    async fn submit(&mut self, a: &crate::workload::Arrival) -> Result<()> {
        let skills: Vec<(&str, u32)> = a.skill.map(|s| vec![(s, 3)]).unwrap_or_default();
        let spec = CaseSpec::parse(
            CaseSpecInput {
                id: &a.id,
                language: a.language,
                required_skills: skills,
                tier: Some(a.tier),
                channel: Some(a.channel),
                summary: "escalated by the assistant",
                ..CaseSpecInput::default()
            },
            self.engine.policy().default_min_level(),
            &Limits::default(),
        )?;
        let (case, _, _) = self.engine.submit(spec, None).await?;
        let estimate_ms = case.estimate.and_then(|e| e.wait_ms);
        let slots_to_free = case.estimate.map_or(0, |e| e.position.slots_to_free);
        let i = self.cases.len();
        self.cases.push(CaseRecord {
            tier: a.tier,
            surge: a.surge,
            submitted: a.at,
            estimate_ms,
            slots_to_free,
            answered: None,
            abandoned: false,
        });
        self.case_of.insert(a.id.clone(), i);
        self.at(a.at + a.patience_ms, Due::GiveUp(i));
        Ok(())
    }

    async fn happen(&mut self, due: Due) -> Result<()> {
        match due {
            Due::SignIn(i) => self.sign_in(i).await?,
            Due::SignOut(i) => {
                self.agents[i].leaving = true;
                self.leave_if_done(i).await?;
            }
            Due::Answer(i, offer, accept) => {
                if let Some(d) = &self.agents[i].device {
                    let command = if accept {
                        AgentCommand::Accept(offer)
                    } else {
                        AgentCommand::Decline(offer, "busy with something else".into())
                    };
                    // Refused when the offer is gone (the customer left, it timed out): fine.
                    let _ = d.commands.execute(command).await;
                }
            }
            Due::Complete(i, case) => {
                if let Some(d) = &self.agents[i].device {
                    let _ = d.commands.execute(AgentCommand::Complete(case.clone(), "resolved".into())).await;
                }
                self.agents[i].holding.remove(&case);
                self.leave_if_done(i).await?;
            }
            Due::GiveUp(c) => {
                if self.cases[c].answered.is_none() {
                    // The cases are submitted in arrival order: record `c` is arrival `c`.
                    let id = CaseId::parse("case_id", &self.workload.arrivals[c].id)?;
                    if self.engine.cancel(&id, "the customer left", None).await.is_ok() {
                        self.cases[c].abandoned = true;
                    }
                }
            }
        }
        Ok(())
    }

    async fn sign_in(&mut self, i: usize) -> Result<()> {
        if self.agents[i].device.is_some() {
            return Ok(());
        }
        let id = AgentId::parse("agent_id", &self.workload.agents[i].id)?;
        let (notices, commands) = self.engine.connect(&id).await?;
        commands.execute(AgentCommand::SetStatus(AgentStatus::Available)).await?;
        if self.workload.agents[i].answer.is_some() {
            // Called in: the engine closed its invitation as answered if it was still open.
            let (agent, now) = self.engine.get_agent(&id).await?;
            if let Some(inv) =
                agent.invitation.filter(|v| v.outcome == callin::InvitationOutcome::CameOnline && v.answered_at == now)
            {
                self.report.came_online += 1;
                self.report.sign_in_ms.push(u64::try_from(inv.answered_at - inv.sent_at).unwrap_or(0));
            }
        }
        self.agents[i].device = Some(Device { notices, commands });
        self.agents[i].leaving = false;
        Ok(())
    }

    async fn leave_if_done(&mut self, i: usize) -> Result<()> {
        let a = &mut self.agents[i];
        if !a.leaving {
            return Ok(());
        }
        if let Some(d) = &a.device {
            if a.holding.is_empty() {
                let _ = d.commands.execute(AgentCommand::SetStatus(AgentStatus::Offline)).await;
                a.device = None;
            } else {
                let _ = d.commands.execute(AgentCommand::SetStatus(AgentStatus::Away)).await;
            }
        }
        Ok(())
    }

    async fn read_devices(&mut self, t: u64) -> Result<()> {
        for i in 0..self.agents.len() {
            let mut notices = Vec::new();
            if let Some(d) = self.agents[i].device.as_mut() {
                while let Some(n) = d.notices.try_next() {
                    notices.push(n);
                }
            }
            for n in notices {
                match n {
                    AgentNotice::Offer { offer_id, remaining_ms, .. } => {
                        let accept = self.rng.random::<f64>() < 0.92;
                        let delay = lognormal(&mut self.rng, 3_000.0, 0.5) as u64;
                        if delay < remaining_ms {
                            self.at(t + delay, Due::Answer(i, offer_id, accept));
                        }
                    }
                    AgentNotice::Assigned { case, .. } => {
                        let key = case.id.as_str().to_owned();
                        if let Some(&c) = self.case_of.get(&key) {
                            self.cases[c].answered.get_or_insert(t);
                            let handle = self.workload.arrivals[c].handle_ms;
                            self.agents[i].holding.insert(case.id.clone());
                            self.at(t + handle, Due::Complete(i, case.id.clone()));
                        }
                    }
                    AgentNotice::HandedBack { case_id, .. } | AgentNotice::OfferRevoked { case_id, .. } => {
                        self.agents[i].holding.remove(&case_id);
                    }
                    AgentNotice::Ended { .. } => {
                        self.agents[i].device = None;
                        self.agents[i].holding.clear();
                    }
                    _ => {}
                }
            }
            if let Some(until) = self.agents[i].until
                && t >= until
            {
                self.agents[i].until = None;
                self.agents[i].leaving = true;
                self.leave_if_done(i).await?;
            }
        }
        Ok(())
    }

    /// The notification service: every new invitation is acknowledged as delivered (or declined);
    /// the agent comes online later or not, as it would.
    async fn notify(&mut self, t: u64) -> Result<()> {
        let (open, _) = self.engine.invitations(None, true).await?;
        for (inv, agent) in open {
            if !self.invitations_seen.insert(inv.id.clone()) {
                continue;
            }
            let Some(&i) = self.by_id.get(agent.id().as_str()) else { continue };
            let Some(answer) = self.workload.agents[i].answer else { continue };
            self.report.invited += 1;
            let roll: f64 = self.rng.random();
            let comes = roll < answer.p;
            let declines = !comes && self.rng.random::<f64>() < answer.p_decline;
            self.engine.acknowledge_invitation(agent.id(), &inv.id, declines).await?;
            if comes {
                let delay = lognormal(&mut self.rng, answer.delay_median_ms, 0.5) as u64;
                self.at(t + delay, Due::SignIn(i));
                self.agents[i].until = Some(t + delay + answer.stay_ms);
            } else if declines {
                self.report.declined += 1;
            }
        }
        Ok(())
    }

    /// Every few simulated minutes: which segments are short of agents, by the engine's advice
    /// (each sample counts for the minutes since the last).
    async fn sample_shortfall(&mut self) -> Result<()> {
        for language in crate::workload::LANGUAGES {
            let filter = SegmentFilter {
                language: language.to_owned(),
                tier: None,
                channel: None,
                skills: Vec::new(),
                exact_skills: false,
            };
            let (segments, _) = self.engine.segment_demand(&filter).await?;
            for tier in Tier::ALL {
                let short = segments.iter().any(|s| s.segment.tier == tier && s.advice.shortfall_a > 0);
                if short {
                    *self.report.short_minutes.entry(tier).or_default() += SAMPLE_MS / 60_000;
                }
            }
        }
        Ok(())
    }
}

fn profile(plan: &AgentPlan, call_in: Option<callin::CallInPrefs>, limits: &Limits) -> Result<AgentProfile> {
    let mut capacity = vec![(Some(Channel::Chat), 1)];
    if plan.voice {
        capacity.push((Some(Channel::Voice), 1));
    }
    Ok(AgentProfile::parse(
        AgentProfileInput {
            id: &plan.id,
            display_name: &plan.id,
            languages: plan.languages.clone(),
            skills: plan.skills.clone(),
            vip_certified: plan.vip,
            capacity,
            rating: 4.5,
            call_in,
            ..AgentProfileInput::default()
        },
        limits,
    )?)
}
