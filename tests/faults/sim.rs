//! Simulated clients over real gRPC: agents (each with its own connection and stream) and
//! routers. Every client operation goes to the history: invoke, then ok / fail (with the code;
//! UNAVAILABLE and timeouts are "unknown": the operation may or may not have happened).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatch_grpc::client;
use dispatch_proto::v1 as pb;
use pb::agent_message::Command as C;
use pb::dispatcher_message::Event;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// One client operation or observation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    SubmitInvoke {
        case: String,
    },
    SubmitOk {
        case: String,
    },
    SubmitFail {
        case: String,
        code: i32,
    },
    Connected {
        replica: usize,
    },
    Disconnected {
        replica: usize,
        why: String,
    },
    OfferSeen {
        offer: String,
        case: String,
        remaining_ms: u64,
    },
    Revoked {
        offer: String,
        case: String,
        reason: String,
    },
    AcceptInvoke {
        offer: String,
        case: String,
    },
    AcceptOk {
        offer: String,
        case: String,
    },
    AcceptFail {
        offer: String,
        case: String,
        code: i32,
    },
    Assigned {
        offer: String,
        case: String,
    },
    CompleteInvoke {
        case: String,
    },
    CompleteOk {
        case: String,
    },
    CompleteFail {
        case: String,
        code: i32,
    },
    /// The agent held more cases than its capacity (I3).
    OverCapacity {
        held: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub at_ms: u64,
    pub actor: String,
    pub op: Op,
}

/// What the clients share: the replicas' addresses, the history, the stop signal.
pub struct World {
    pub addrs: Vec<String>,
    pub t0: Instant,
    history: Mutex<Vec<Entry>>,
    stop: watch::Sender<bool>,
    /// Each agent's replica now (`None`: not connected).
    pub agent_replica: Mutex<HashMap<String, usize>>,
    /// Each agent's offer seen and not yet answered.
    pub outstanding: Mutex<HashMap<String, (String, String)>>,
}

impl World {
    pub fn new(addrs: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            addrs,
            t0: Instant::now(),
            history: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            agent_replica: Mutex::new(HashMap::new()),
            outstanding: Mutex::new(HashMap::new()),
        })
    }

    pub fn record(&self, actor: &str, op: Op) {
        let at_ms = self.t0.elapsed().as_millis() as u64;
        self.history.lock().unwrap().push(Entry { at_ms, actor: actor.to_owned(), op });
    }

    pub fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    pub fn history(&self) -> Vec<Entry> {
        self.history.lock().unwrap().clone()
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Agents connected to `replica` now, with the offer each holds unanswered.
    pub fn offers_held_on(&self, replica: usize) -> Vec<(String, String, String)> {
        let on = self.agent_replica.lock().unwrap();
        let out = self.outstanding.lock().unwrap();
        on.iter()
            .filter(|(_, r)| **r == replica)
            .filter_map(|(a, _)| out.get(a).map(|(o, c)| (a.clone(), o.clone(), c.clone())))
            .collect()
    }
}

/// How a simulated agent behaves.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// Accept this long after an offer arrives (uniform in the range).
    pub accept_delay_ms: (u64, u64),
    /// Complete this long after the assignment.
    pub handle_ms: (u64, u64),
    /// Probability of cutting the stream right after an offer arrives (then reconnecting).
    pub cut_after_offer: f64,
    /// Probability of sending the accept at the offer's deadline ± 5 ms.
    pub accept_at_deadline: f64,
    /// Probability of sending the accept and cutting the stream before its result, then
    /// sending the same accept again after reconnecting.
    pub drop_reply: f64,
    /// Opens its stream, goes available, and never reads it again.
    pub never_read: bool,
    /// The first offer is held this long before it is accepted.
    pub first_offer_hold_ms: Option<u64>,
    /// Wait before reconnecting after the stream ends.
    pub reconnect_ms: (u64, u64),
    /// The replica tried first.
    pub home: usize,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            accept_delay_ms: (0, 20),
            handle_ms: (20, 80),
            cut_after_offer: 0.0,
            accept_at_deadline: 0.0,
            drop_reply: 0.0,
            never_read: false,
            first_offer_hold_ms: None,
            reconnect_ms: (100, 300),
            home: 0,
        }
    }
}

pub fn agent_profile(id: &str, rng: &mut SmallRng) -> pb::AgentProfile {
    pb::AgentProfile {
        agent_id: id.into(),
        display_name: id.into(),
        languages: vec![pb::LanguageProficiency { language: "en".into(), proficiency: rng.random_range(3..=5) }],
        skills: vec![],
        vip_certified: rng.random_bool(0.3),
        capacity: vec![pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 1 }],
        rating: 4.0,
    }
}

pub fn case_spec(id: &str, rng: &mut SmallRng) -> pb::CaseSpec {
    pb::CaseSpec {
        case_id: id.into(),
        language: "en".into(),
        tier: if rng.random_bool(0.1) { pb::Tier::Vip } else { pb::Tier::Standard } as i32,
        channel: pb::Channel::Chat as i32,
        summary: "the bot could not settle a refund dispute".into(),
        ..Default::default()
    }
}

fn lazy_channel(addr: &str) -> Channel {
    Endpoint::from_shared(addr.to_owned())
        .expect("address")
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy()
}

/// Registers the agents (retrying until a replica answers).
pub async fn register(world: &World, profiles: Vec<pb::AgentProfile>) {
    let ch = lazy_channel(&world.addrs[0]);
    for p in profiles {
        let mut roster = pb::roster_service_client::RosterServiceClient::new(ch.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = roster.upsert_agent(pb::UpsertAgentRequest { profile: Some(p.clone()) }).await;
            if r.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "registering {}: {r:?}", p.agent_id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Submits every case (open loop at `rate_per_s`), each retried with the same id until a
/// replica confirms it (the router contract). Returns when all are confirmed or the world stops.
pub async fn route(world: Arc<World>, ids: Vec<String>, rate_per_s: u64, seed: u64) {
    let channels: Arc<Vec<Channel>> = Arc::new(world.addrs.iter().map(|a| lazy_channel(a)).collect());
    let gate = Arc::new(Semaphore::new(128));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tasks = tokio::task::JoinSet::new();
    let tick = Duration::from_micros(1_000_000 / rate_per_s.max(1));
    let mut next = tokio::time::Instant::now();
    for (n, id) in ids.into_iter().enumerate() {
        next += tick;
        tokio::time::sleep_until(next).await;
        let permit = Arc::clone(&gate).acquire_owned().await.expect("gate");
        let spec = case_spec(&id, &mut rng);
        let (world, channels) = (Arc::clone(&world), Arc::clone(&channels));
        tasks.spawn(async move {
            let _permit = permit;
            let stop = world.stopping();
            for attempt in 0usize.. {
                if *stop.borrow() {
                    return;
                }
                let ch = channels[(n + attempt) % channels.len()].clone();
                let mut esc = pb::escalation_service_client::EscalationServiceClient::new(ch);
                world.record("router", Op::SubmitInvoke { case: id.clone() });
                let call = esc.submit_case(pb::SubmitCaseRequest { spec: Some(spec.clone()) });
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(Ok(_)) => {
                        world.record("router", Op::SubmitOk { case: id.clone() });
                        return;
                    }
                    Ok(Err(s)) => world.record("router", Op::SubmitFail { case: id.clone(), code: s.code() as i32 }),
                    Err(_) => world.record(
                        "router",
                        Op::SubmitFail { case: id.clone(), code: tonic::Code::DeadlineExceeded as i32 },
                    ),
                }
                // Back off (100 ms doubling to 1 s), as a router should.
                tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(4)).min(1_000))).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

enum Action {
    Accept { offer: String, case: String, tries: u32 },
    Complete { case: String, tries: u32 },
}

/// Runs one agent until the world stops.
pub async fn agent(world: Arc<World>, id: String, behavior: Behavior, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stop = world.stopping();
    let n = world.addrs.len();
    let mut replica = behavior.home % n;
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut resend: Option<(String, String)> = None;
    let mut first_offer = true;
    while !*stop.borrow() {
        let mut endpoint = Endpoint::from_shared(world.addrs[replica].clone())
            .expect("address")
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        if behavior.never_read {
            // A tiny receive window: what the agent does not read backs up to the server.
            endpoint = endpoint.initial_stream_window_size(1024).initial_connection_window_size(1024);
        }
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
        let opened = async {
            let ch = endpoint.connect().await.map_err(|e| e.to_string())?;
            let req = client::as_agent(&id, ReceiverStream::new(rx)).map_err(|e| e.to_string())?;
            let resp = pb::agent_service_client::AgentServiceClient::new(ch).connect(req).await;
            resp.map(|r| r.into_inner()).map_err(|e| e.to_string())
        };
        let mut inbound = match tokio::time::timeout(Duration::from_secs(5), opened).await {
            Ok(Ok(s)) => s,
            _ => {
                replica = (replica + 1) % n;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        world.record(&id, Op::Connected { replica });
        world.agent_replica.lock().unwrap().insert(id.clone(), replica);
        let mut seq = 0u64;
        let mut pending: HashMap<String, Action> = HashMap::new();
        let mut send = |tx: &mpsc::Sender<pb::AgentMessage>, command: C| {
            seq += 1;
            let request_id = format!("{id}-{seq}");
            let ok = tx.try_send(pb::AgentMessage { request_id: request_id.clone(), command: Some(command) }).is_ok();
            ok.then_some(request_id)
        };
        send(&tx, C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }));
        if behavior.never_read {
            let _ = stop.changed().await;
            return;
        }
        if let Some((offer, case)) = resend.take() {
            world.record(&id, Op::AcceptInvoke { offer: offer.clone(), case: case.clone() });
            if let Some(r) = send(&tx, C::Accept(pb::Accept { offer_id: offer.clone() })) {
                pending.insert(r, Action::Accept { offer, case, tries: 0 });
            }
        }
        // Scheduled actions: (when, action).
        let mut due: Vec<(tokio::time::Instant, Action)> = Vec::new();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
        let why = loop {
            let next_due = due.iter().map(|(t, _)| *t).min();
            let wake = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => {
                        let Some(ev) = m.event else { continue };
                        match ev {
                            Event::Offer(o) => {
                                let case = o.case.map(|c| c.case_id).unwrap_or_default();
                                world.record(&id, Op::OfferSeen { offer: o.offer_id.clone(), case: case.clone(), remaining_ms: o.remaining_ms });
                                world.outstanding.lock().unwrap().insert(id.clone(), (o.offer_id.clone(), case.clone()));
                                if rng.random_bool(behavior.cut_after_offer) {
                                    break "cut after an offer".to_owned();
                                }
                                if rng.random_bool(behavior.drop_reply) {
                                    world.record(&id, Op::AcceptInvoke { offer: o.offer_id.clone(), case: case.clone() });
                                    send(&tx, C::Accept(pb::Accept { offer_id: o.offer_id.clone() }));
                                    resend = Some((o.offer_id, case));
                                    break "reply dropped".to_owned();
                                }
                                                                let hold = first_offer && replica == behavior.home % n;
                                let delay = if let (true, Some(h)) = (hold, behavior.first_offer_hold_ms) {
                                    h
                                } else if rng.random_bool(behavior.accept_at_deadline) {
                                    (o.remaining_ms + rng.random_range(0..=10)).saturating_sub(5)
                                } else {
                                    rng.random_range(behavior.accept_delay_ms.0..=behavior.accept_delay_ms.1)
                                };
                                first_offer = false;
                                let at = tokio::time::Instant::now() + Duration::from_millis(delay);
                                due.push((at, Action::Accept { offer: o.offer_id, case, tries: 0 }));
                            }
                            Event::OfferRevoked(r) => {
                                world.record(&id, Op::Revoked { offer: r.offer_id.clone(), case: r.case_id, reason: r.reason });
                                let mut out = world.outstanding.lock().unwrap();
                                if out.get(&id).is_some_and(|(o, _)| *o == r.offer_id) {
                                    out.remove(&id);
                                }
                            }
                            Event::Assignment(a) => {
                                let case = a.case.map(|c| c.case_id).unwrap_or_default();
                                world.record(&id, Op::Assigned { offer: a.offer_id, case: case.clone() });
                                if held.insert(case.clone()) {
                                    if held.len() > 1 {
                                        world.record(&id, Op::OverCapacity { held: held.len() });
                                    }
                                    let h = rng.random_range(behavior.handle_ms.0..=behavior.handle_ms.1);
                                    due.push((tokio::time::Instant::now() + Duration::from_millis(h), Action::Complete { case, tries: 0 }));
                                }
                            }
                                                        Event::Status(s) => {
                                if s.status == pb::AgentStatus::Away as i32 {
                                    // Set away after missed offers: the agent says it is back.
                                    send(&tx, C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }));
                                }
                                                                let now_held: BTreeSet<String> = s.assigned_case_ids.into_iter().collect();
                                // Work on every held case not already under way on this connection
                                // (what was scheduled on a previous one died with it).
                                let underway: BTreeSet<String> = due
                                    .iter()
                                    .map(|(_, a)| a)
                                    .chain(pending.values())
                                    .filter_map(|a| match a { Action::Complete { case, .. } => Some(case.clone()), _ => None })
                                    .collect();
                                for c in now_held.difference(&underway) {
                                    let h = rng.random_range(behavior.handle_ms.0..=behavior.handle_ms.1);
                                    due.push((tokio::time::Instant::now() + Duration::from_millis(h), Action::Complete { case: c.clone(), tries: 0 }));
                                }
                                held = now_held;
                            }
                            Event::Result(r) => {
                                let Some(action) = pending.remove(&r.request_id) else { continue };
                                let ok = r.code == tonic::Code::Ok as i32;
                                let retry = r.code == tonic::Code::Unavailable as i32;
                                match action {
                                    Action::Accept { offer, case, tries } => {
                                        if ok {
                                            world.record(&id, Op::AcceptOk { offer, case: case.clone() });
                                            world.outstanding.lock().unwrap().remove(&id);
                                            if held.insert(case.clone()) {
                                                if held.len() > 1 {
                                                    world.record(&id, Op::OverCapacity { held: held.len() });
                                                }
                                                let h = rng.random_range(behavior.handle_ms.0..=behavior.handle_ms.1);
                                                due.push((tokio::time::Instant::now() + Duration::from_millis(h), Action::Complete { case, tries: 0 }));
                                            }
                                        } else {
                                            world.record(&id, Op::AcceptFail { offer: offer.clone(), case: case.clone(), code: r.code });
                                            if retry && tries < 5 {
                                                due.push((tokio::time::Instant::now() + Duration::from_millis(200), Action::Accept { offer, case, tries: tries + 1 }));
                                            }
                                        }
                                    }
                                    Action::Complete { case, tries } => {
                                        if ok {
                                            world.record(&id, Op::CompleteOk { case: case.clone() });
                                            held.remove(&case);
                                        } else {
                                            world.record(&id, Op::CompleteFail { case: case.clone(), code: r.code });
                                            if retry || tries < 20 && r.code != tonic::Code::PermissionDenied as i32 && r.code != tonic::Code::NotFound as i32 {
                                                due.push((tokio::time::Instant::now() + Duration::from_millis(200), Action::Complete { case, tries: tries + 1 }));
                                            } else {
                                                held.remove(&case);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Some(Err(status)) => break format!("{:?}: {}", status.code(), status.message()),
                    None => break "stream ended".to_owned(),
                },
                () = wake => {
                    let now = tokio::time::Instant::now();
                    let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(t, _)| *t <= now);
                    due = later;
                    for (_, action) in ready {
                        match &action {
                            Action::Accept { offer, case, .. } => {
                                world.record(&id, Op::AcceptInvoke { offer: offer.clone(), case: case.clone() });
                                if let Some(r) = send(&tx, C::Accept(pb::Accept { offer_id: offer.clone() })) {
                                    pending.insert(r, action);
                                }
                            }
                            Action::Complete { case, .. } => {
                                world.record(&id, Op::CompleteInvoke { case: case.clone() });
                                let cmd = C::Complete(pb::Complete { case_id: case.clone(), outcome: "resolved".into() });
                                if let Some(r) = send(&tx, cmd) {
                                    pending.insert(r, action);
                                }
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    send(&tx, C::Heartbeat(pb::Heartbeat {}));
                }
                _ = stop.changed() => return,
            }
        };
        world.record(&id, Op::Disconnected { replica, why });
        // Held offers are only for the first connection.
        first_offer = false;
        world.agent_replica.lock().unwrap().remove(&id);
        world.outstanding.lock().unwrap().remove(&id);
        drop(tx);
        let wait = rng.random_range(behavior.reconnect_ms.0..=behavior.reconnect_ms.1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = stop.changed() => return,
        }
        // Reconnect through the load balancer: any replica.
        replica = rng.random_range(0..n);
    }
}
