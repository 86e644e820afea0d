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
use tonic::Streaming;
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
    /// The agent was told a case it held was handed back.
    HandedBack {
        offer: String,
        case: String,
    },
    /// The agent dropped its stream holding `case` and never came back.
    Vanished {
        case: String,
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
    /// Probability of dropping the stream right after an assignment and never coming back.
    pub vanish_after_accept: f64,
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
            vanish_after_accept: 0.0,
            home: 0,
        }
    }
}

/// An English chat agent of random proficiency, VIP-certified three times in ten.
pub fn agent_profile(id: &str, rng: &mut SmallRng) -> pb::AgentProfile {
    dispatch_tests::profile(id, &[("en", rng.random_range(3..=5))], &[], rng.random_bool(0.3))
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

/// One open stream: its command queue, the commands awaiting their results, and the actions
/// scheduled on it (all of which die with it).
struct Stream {
    replica: usize,
    tx: mpsc::Sender<pb::AgentMessage>,
    seq: u64,
    pending: HashMap<String, Action>,
    due: Vec<(tokio::time::Instant, Action)>,
}

impl Stream {
    /// Queues a command; its request id (`None`: the stream is gone or full).
    fn send(&mut self, agent: &str, command: C) -> Option<String> {
        self.seq += 1;
        let request_id = format!("{agent}-{}", self.seq);
        let msg = pb::AgentMessage { request_id: request_id.clone(), command: Some(command) };
        self.tx.try_send(msg).is_ok().then_some(request_id)
    }

    fn schedule(&mut self, after_ms: u64, action: Action) {
        self.due.push((tokio::time::Instant::now() + Duration::from_millis(after_ms), action));
    }

    /// Resolves when the earliest scheduled action is due.
    async fn next_due(&self) {
        match self.due.iter().map(|(t, _)| *t).min() {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    }

    /// Cases whose completion is scheduled or awaiting its result here.
    fn completing(&self) -> BTreeSet<String> {
        self.due
            .iter()
            .map(|(_, a)| a)
            .chain(self.pending.values())
            .filter_map(|a| match a {
                Action::Complete { case, .. } => Some(case.clone()),
                Action::Accept { .. } => None,
            })
            .collect()
    }
}

/// One simulated agent: what it keeps across reconnects.
struct Agent {
    world: Arc<World>,
    id: String,
    behavior: Behavior,
    rng: SmallRng,
    /// Cases the agent believes it holds.
    held: BTreeSet<String>,
    /// Cases the agent finished: never held again (a late, idempotent answer to an accept of
    /// a case already worked on says OK once more, as it should).
    finished: BTreeSet<String>,
    /// Held cases whose completion was answered UNAVAILABLE: it may well have gone through
    /// (outcome unknown), so the server may rightly see the agent free; they do not count
    /// against capacity until the retry settles them.
    in_doubt: BTreeSet<String>,
    /// An accept whose reply was dropped, to send again after reconnecting.
    resend: Option<(String, String)>,
    /// The first offer of the first connection may be held (`Behavior::first_offer_hold_ms`).
    first_offer: bool,
    /// The agent is gone for good (`Behavior::vanish_after_accept`).
    vanished: bool,
}

impl Agent {
    fn record(&self, op: Op) {
        self.world.record(&self.id, op);
    }

    fn handle_ms(&mut self) -> u64 {
        self.rng.random_range(self.behavior.handle_ms.0..=self.behavior.handle_ms.1)
    }

    /// The agent now holds `case` (assignment confirmed or accept answered): work on it.
    fn hold(&mut self, s: &mut Stream, case: String) {
        // Known to be ours now: a retry of its accept still waiting is moot.
        s.due.retain(|(_, a)| !matches!(a, Action::Accept { case: c, .. } if *c == case));
        if self.finished.contains(&case) {
            return;
        }
        if self.held.insert(case.clone()) {
            if self.rng.random_bool(self.behavior.vanish_after_accept) {
                self.record(Op::Vanished { case });
                self.vanished = true;
                return;
            }
            let counted = self.held.difference(&self.in_doubt).count();
            if counted > 1 {
                self.record(Op::OverCapacity { held: counted });
            }
            let h = self.handle_ms();
            s.schedule(h, Action::Complete { case, tries: 0 });
        }
    }

    /// Sends an action now; its result is matched by request id.
    fn act(&mut self, s: &mut Stream, action: Action) {
        let command = match &action {
            Action::Accept { offer, case, .. } => {
                self.record(Op::AcceptInvoke { offer: offer.clone(), case: case.clone() });
                C::Accept(pb::Accept { offer_id: offer.clone() })
            }
            Action::Complete { case, .. } => {
                self.record(Op::CompleteInvoke { case: case.clone() });
                C::Complete(pb::Complete { case_id: case.clone(), outcome: "resolved".into() })
            }
        };
        if let Some(r) = s.send(&self.id, command) {
            s.pending.insert(r, action);
        }
    }

    /// Handles one message; `Some(why)` when the agent cuts the stream.
    fn on_event(&mut self, s: &mut Stream, ev: Event) -> Option<String> {
        match ev {
            Event::Offer(o) => return self.on_offer(s, o),
            Event::OfferRevoked(r) => {
                let mut out = self.world.outstanding.lock().unwrap();
                if out.get(&self.id).is_some_and(|(o, _)| *o == r.offer_id) {
                    out.remove(&self.id);
                }
                drop(out);
                self.record(Op::Revoked { offer: r.offer_id, case: r.case_id, reason: r.reason });
            }
            Event::Assignment(a) => {
                let case = a.case.map(|c| c.case_id).unwrap_or_default();
                self.record(Op::Assigned { offer: a.offer_id, case: case.clone() });
                self.hold(s, case);
            }
            Event::Status(st) => {
                if st.status == pb::AgentStatus::Away as i32 {
                    // Set away after missed offers: the agent says it is back.
                    s.send(&self.id, C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }));
                }
                let now_held: BTreeSet<String> = st.assigned_case_ids.into_iter().collect();
                // Work on every held case not already under way on this connection (what was
                // scheduled on a previous one died with it).
                for case in now_held.difference(&s.completing()) {
                    let h = self.handle_ms();
                    s.schedule(h, Action::Complete { case: case.clone(), tries: 0 });
                }
                self.in_doubt.retain(|c| now_held.contains(c));
                self.held = now_held;
            }
            Event::HandedBack(h) => {
                self.record(Op::HandedBack { offer: h.offer_id, case: h.case_id.clone() });
                self.held.remove(&h.case_id);
                s.due.retain(|(_, a)| !matches!(a, Action::Complete { case, .. } if *case == h.case_id));
            }
            Event::Explanation(_)
            | Event::WorkingTime(_)
            | Event::Explained(_)
            | Event::AllocationPolicy(_)
            | Event::Opened(_) => {}
            Event::ActivityWarning(w) => {
                s.send(&self.id, C::ReportActivity(pb::ReportActivity { case_id: w.case_id }));
            }
            Event::Result(r) => self.on_result(s, r),
            Event::Ended(e) => return Some(format!("session ended: {:?}", e.reason())),
        }
        None
    }

    fn on_offer(&mut self, s: &mut Stream, o: pb::OfferMade) -> Option<String> {
        let case = o.case.map(|c| c.case_id).unwrap_or_default();
        self.record(Op::OfferSeen { offer: o.offer_id.clone(), case: case.clone(), remaining_ms: o.remaining_ms });
        self.world.outstanding.lock().unwrap().insert(self.id.clone(), (o.offer_id.clone(), case.clone()));
        let b = &self.behavior;
        if self.rng.random_bool(b.cut_after_offer) {
            return Some("cut after an offer".to_owned());
        }
        if self.rng.random_bool(b.drop_reply) {
            self.record(Op::AcceptInvoke { offer: o.offer_id.clone(), case: case.clone() });
            s.send(&self.id, C::Accept(pb::Accept { offer_id: o.offer_id.clone() }));
            self.resend = Some((o.offer_id, case));
            return Some("reply dropped".to_owned());
        }
        let hold = self.first_offer && s.replica == b.home % self.world.addrs.len();
        let delay = match b.first_offer_hold_ms {
            Some(h) if hold => h,
            _ if self.rng.random_bool(b.accept_at_deadline) => {
                (o.remaining_ms + self.rng.random_range(0..=10)).saturating_sub(5)
            }
            _ => self.rng.random_range(b.accept_delay_ms.0..=b.accept_delay_ms.1),
        };
        self.first_offer = false;
        s.schedule(delay, Action::Accept { offer: o.offer_id, case, tries: 0 });
        None
    }

    fn on_result(&mut self, s: &mut Stream, r: pb::CommandResult) {
        let Some(action) = s.pending.remove(&r.request_id) else { return };
        let ok = r.code == tonic::Code::Ok as i32;
        let retry = r.code == tonic::Code::Unavailable as i32;
        match action {
            Action::Accept { offer, case, .. } if ok => {
                self.record(Op::AcceptOk { offer, case: case.clone() });
                self.world.outstanding.lock().unwrap().remove(&self.id);
                self.hold(s, case);
            }
            Action::Accept { offer, case, tries } => {
                self.record(Op::AcceptFail { offer: offer.clone(), case: case.clone(), code: r.code });
                if retry && tries < 5 {
                    s.schedule(200, Action::Accept { offer, case, tries: tries + 1 });
                }
            }
            Action::Complete { case, .. } if ok => {
                self.record(Op::CompleteOk { case: case.clone() });
                self.held.remove(&case);
                self.in_doubt.remove(&case);
                self.finished.insert(case);
            }
            Action::Complete { case, tries } => {
                self.record(Op::CompleteFail { case: case.clone(), code: r.code });
                if retry {
                    self.in_doubt.insert(case.clone());
                }
                let final_refusal =
                    r.code == tonic::Code::PermissionDenied as i32 || r.code == tonic::Code::NotFound as i32;
                if retry || (tries < 20 && !final_refusal) {
                    s.schedule(200, Action::Complete { case, tries: tries + 1 });
                } else {
                    self.held.remove(&case);
                    self.in_doubt.remove(&case);
                }
            }
        }
    }

    /// Sends every action that is due.
    fn run_due(&mut self, s: &mut Stream) {
        let now = tokio::time::Instant::now();
        let (ready, later): (Vec<_>, Vec<_>) = s.due.drain(..).partition(|(t, _)| *t <= now);
        s.due = later;
        for (_, action) in ready {
            self.act(s, action);
        }
    }

    /// Opens a stream to `replica` (5 s at most).
    async fn open(&self, replica: usize) -> Option<(Stream, Streaming<pb::DispatcherMessage>)> {
        let mut endpoint = Endpoint::from_shared(self.world.addrs[replica].clone())
            .expect("address")
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        if self.behavior.never_read {
            // A tiny receive window: what the agent does not read backs up to the server.
            endpoint = endpoint.initial_stream_window_size(1024).initial_connection_window_size(1024);
        }
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
        let opened = async {
            let ch = endpoint.connect().await.ok()?;
            let req = client::as_agent(&self.id, ReceiverStream::new(rx)).ok()?;
            pb::agent_service_client::AgentServiceClient::new(ch).connect(req).await.ok().map(|r| r.into_inner())
        };
        let inbound = tokio::time::timeout(Duration::from_secs(5), opened).await.ok()??;
        Some((Stream { replica, tx, seq: 0, pending: HashMap::new(), due: Vec::new() }, inbound))
    }
}

/// Runs one agent until the world stops.
pub async fn agent(world: Arc<World>, id: String, behavior: Behavior, seed: u64) {
    let mut stop = world.stopping();
    let n = world.addrs.len();
    let mut replica = behavior.home % n;
    let mut a = Agent {
        world,
        id,
        behavior,
        rng: SmallRng::seed_from_u64(seed),
        held: BTreeSet::new(),
        finished: BTreeSet::new(),
        in_doubt: BTreeSet::new(),
        resend: None,
        first_offer: true,
        vanished: false,
    };
    while !*stop.borrow() {
        let Some((mut s, mut inbound)) = a.open(replica).await else {
            replica = (replica + 1) % n;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        a.record(Op::Connected { replica });
        a.world.agent_replica.lock().unwrap().insert(a.id.clone(), replica);
        s.send(&a.id, C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }));
        if a.behavior.never_read {
            let _ = stop.changed().await;
            return;
        }
        if let Some((offer, case)) = a.resend.take() {
            a.act(&mut s, Action::Accept { offer, case, tries: 0 });
        }
        let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
        let why = loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(m)) => {
                        if let Some(why) = m.event.and_then(|ev| a.on_event(&mut s, ev)) {
                            break why;
                        }
                        if a.vanished {
                            break "vanished".to_owned();
                        }
                    }
                    Some(Err(status)) => break format!("{:?}: {}", status.code(), status.message()),
                    None => break "stream ended".to_owned(),
                },
                () = s.next_due() => a.run_due(&mut s),
                _ = heartbeat.tick() => {
                    s.send(&a.id, C::Heartbeat(pb::Heartbeat {}));
                }
                _ = stop.changed() => return,
            }
        };
        a.record(Op::Disconnected { replica, why });
        if a.vanished {
            a.world.agent_replica.lock().unwrap().remove(&a.id);
            a.world.outstanding.lock().unwrap().remove(&a.id);
            return;
        }
        // Held offers are only for the first connection.
        a.first_offer = false;
        a.world.agent_replica.lock().unwrap().remove(&a.id);
        a.world.outstanding.lock().unwrap().remove(&a.id);
        drop(s);
        let wait = a.rng.random_range(a.behavior.reconnect_ms.0..=a.behavior.reconnect_ms.1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = stop.changed() => return,
        }
        // Reconnect through the load balancer: any replica.
        replica = a.rng.random_range(0..n);
    }
}
