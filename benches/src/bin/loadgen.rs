//! `loadgen`: drives a running dispatcher (development mode) with simulated agents and routers
//! over real gRPC, and measures the floors of the same machine in the same run.
//!
//! - `loadgen run`: registers N agents (35 languages, skewed; skills with levels; VIP share),
//!   opens one gRPC connection and stream per agent (spread over several 127.0.0.x source
//!   addresses), accepts offers with a probability after a delay, declines the rest, completes
//!   after a handling time; routers submit at a fixed rate (open loop) or keep C cases in flight
//!   (closed loop). Reports throughput and HdrHistogram percentiles of submit → offer delivered,
//!   submit → assigned, accept → confirmed; and the dispatcher's RSS per connected agent.
//! - `loadgen grpc-floor`: a trivial tonic unary echo with a submission-sized payload.
//! - `loadgen redis-floor`: the round trip of one Redis Function call.
//!
//! Every mode prints one JSON line (for `benches/run.sh`) after its table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use dashmap::DashMap;
use dispatch_benches::echo;
use dispatch_grpc::client::{self, ClientTls};
use dispatch_proto::v1 as pb;
use hdrhistogram::Histogram;
use pb::agent_message::Command as C;
use pb::dispatcher_message::Event;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Load generator and floors for the dispatcher")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Agents and routers against a dispatcher.
    Run(RunArgs),
    /// The gRPC floor: a unary echo server and client in this process.
    GrpcFloor(FloorArgs),
    /// The Redis floor: FCALL round trips.
    RedisFloor(RedisFloorArgs),
    /// An OTLP/gRPC trace receiver that counts and drops spans (to measure tracing on); prints
    /// the count when stopped (SIGINT or SIGTERM).
    OtlpSink(OtlpSinkArgs),
}

#[derive(Args)]
struct OtlpSinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: String,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Dispatcher address (development mode: plaintext, no tokens).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Simulated agents, each with its own connection.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents sharing one connection (1: each its own, as devices are). More than one measures
    /// the dispatcher's per-agent cost beyond the per-process file limit (see `ulimit -Hn`);
    /// the dispatcher allows `server.max_concurrent_streams` streams per connection.
    #[arg(long, default_value_t = 1)]
    agents_per_connection: usize,
    /// Source addresses 127.0.0.1 .. 127.0.0.N (about 28k connections per address).
    #[arg(long, default_value_t = 1)]
    source_ips: u8,
    /// Open loop: cases per second (0 with --concurrency for closed loop).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Closed loop: cases kept in flight (used when --rate is 0).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Seconds of submitting.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Probability that an agent accepts an offer (else declines).
    #[arg(long, default_value_t = 1.0)]
    accept_prob: f64,
    /// Delay before answering an offer.
    #[arg(long, default_value_t = 0)]
    accept_delay_ms: u64,
    /// Handling time before completing an assigned case.
    #[arg(long, default_value_t = 50)]
    handle_ms: u64,
    /// Share of VIP-certified agents.
    #[arg(long, default_value_t = 0.07)]
    vip_share: f64,
    /// Only connect the agents, report RSS per connection, and exit (no cases).
    #[arg(long)]
    connect_only: bool,
    /// The dispatcher's PID, to read its RSS (`/proc/PID/status`).
    #[arg(long)]
    dispatcher_pid: Option<u32>,
    /// A label for the JSON line.
    #[arg(long, default_value = "run")]
    label: String,
    /// The dispatcher's operations address (`host:port` of `server.health_listen`), to read
    /// its store operations and conflicts per case from `/metrics`.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// The Redis the dispatcher writes to, to read Redis's commands, CPU, bytes and
    /// persistence work per case (`INFO`; the statistics are reset when submitting begins).
    #[arg(long)]
    redis_url: Option<String>,
    /// Router connections (submissions round-robin over them; the dispatcher sheds beyond
    /// `max_requests_per_connection` in flight on one connection).
    #[arg(long, default_value_t = 8)]
    router_connections: usize,
    /// Only cases every English-speaking agent can take (English, no skill, standard tier):
    /// for throughput runs, where an unmatchable case would hold a closed-loop slot for ever.
    #[arg(long)]
    simple_cases: bool,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Args)]
struct FloorArgs {
    /// Calls kept in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Payload bytes (about a case submission).
    #[arg(long, default_value_t = 160)]
    payload: usize,
}

#[derive(Args)]
struct RedisFloorArgs {
    #[arg(long)]
    redis_url: String,
    /// Calls kept in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
}

const LANGS: [&str; 35] = [
    "en", "es", "de", "fr", "pt", "it", "nl", "pl", "tr", "ru", "ja", "ko", "zh", "ar", "hi", "sv", "da", "fi", "cs",
    "el", "he", "hu", "id", "ms", "no", "ro", "sk", "th", "uk", "vi", "bg", "hr", "lt", "lv", "et",
];
const SKILLS: [&str; 12] = [
    "billing", "refunds", "disputes", "shipping", "returns", "tech", "account", "fraud", "loyalty", "orders", "sales",
    "legal",
];

use dispatch_benches::zipf;

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn pcts(h: &Histogram<u64>) -> serde_json::Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(), "p50_ms": us(0.5), "p90_ms": us(0.9), "p99_ms": us(0.99), "p999_ms": us(0.999),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

fn show(name: &str, h: &Histogram<u64>) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<24} n={:<7} p50={:>8.3}ms p90={:>8.3}ms p99={:>8.3}ms p99.9={:>8.3}ms max={:>8.3}ms",
        h.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a).await,
        Cmd::GrpcFloor(a) => grpc_floor(a).await,
        Cmd::RedisFloor(a) => redis_floor(a).await,
        Cmd::OtlpSink(a) => otlp_sink(a).await,
    }
}

#[derive(Default, Clone)]
struct Sink {
    spans: Arc<std::sync::atomic::AtomicU64>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let n: usize =
            request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.spans.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

async fn otlp_sink(a: OtlpSinkArgs) -> Result<(), Box<dyn std::error::Error>> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = server => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("{{\"otlp_spans\": {}}}", sink.spans.load(std::sync::atomic::Ordering::Relaxed));
    Ok(())
}

/// Per-case timestamps (since the run's start, in microseconds).
#[derive(Default)]
struct Times {
    submitted: AtomicU64,
    offered: AtomicU64,
    assigned: AtomicU64,
}

struct Shared {
    start: Instant,
    cases: DashMap<String, Arc<Times>>,
    accept_sent: DashMap<String, u64>,
    confirm: std::sync::Mutex<Histogram<u64>>,
    offers: AtomicU64,
    assigned: AtomicU64,
    declined: AtomicU64,
    done: tokio::sync::Notify,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

async fn run(a: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let admin = client::channel(&a.addr).await?;
    let mut rng = SmallRng::seed_from_u64(a.seed);
    // Register the agents.
    let mut profiles = Vec::with_capacity(a.agents);
    for i in 0..a.agents {
        let lang = LANGS[zipf(&mut rng, LANGS.len())];
        let mut languages =
            vec![pb::LanguageProficiency { language: lang.into(), proficiency: rng.random_range(3..=5) }];
        if lang != "en" && rng.random_bool(0.6) {
            languages.push(pb::LanguageProficiency { language: "en".into(), proficiency: rng.random_range(3..=5) });
        }
        let mut skills: Vec<pb::SkillLevel> = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let s = SKILLS[zipf(&mut rng, SKILLS.len())];
            if !skills.iter().any(|x| x.skill == s) {
                skills.push(pb::SkillLevel { skill: s.into(), level: rng.random_range(1..=5) });
            }
        }
        profiles.push(pb::AgentProfile {
            agent_id: format!("lg-{i:06}"),
            display_name: format!("Load agent {i}"),
            languages,
            skills,
            vip_certified: rng.random_bool(a.vip_share),
            capacity: vec![
                pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 2 },
                pb::ChannelCapacity { channel: pb::Channel::Voice as i32, capacity: 1 },
            ],
            rating: rng.random_range(3.0..5.0),
            ..Default::default()
        });
    }
    let started = Instant::now();
    let chunks: Vec<Vec<pb::AgentProfile>> =
        profiles.chunks(a.agents.div_ceil(16).max(1)).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let ch = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut roster = pb::roster_service_client::RosterServiceClient::new(ch);
            for p in chunk {
                roster.upsert_agent(pb::UpsertAgentRequest { profile: Some(p) }).await.expect("register an agent");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!("registered {} agents in {:.1}s", a.agents, started.elapsed().as_secs_f64());
    let rss_before = a.dispatcher_pid.and_then(rss_kib);

    let shared = Arc::new(Shared {
        start: Instant::now(),
        cases: DashMap::new(),
        accept_sent: DashMap::new(),
        confirm: std::sync::Mutex::new(hist()),
        offers: AtomicU64::new(0),
        assigned: AtomicU64::new(0),
        declined: AtomicU64::new(0),
        done: tokio::sync::Notify::new(),
    });
    // Connect every agent on its own connection (or `agents_per_connection` to one).
    let connected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_connection = a.agents_per_connection.max(1);
    let mut ch: Option<Channel> = None;
    for (i, p) in profiles.iter().enumerate() {
        if i % per_connection == 0 {
            let n = i / per_connection;
            let ip =
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1 + (n % a.source_ips.max(1) as usize) as u8));
            let endpoint = client::endpoint(&a.addr, &ClientTls::default())?.local_address(Some(ip));
            ch = Some(endpoint.connect().await?);
        }
        let ch = ch.clone().expect("a connection is open");
        let id = p.agent_id.clone();
        let shared = Arc::clone(&shared);
        let connected = Arc::clone(&connected);
        let args = a.clone();
        let seed = a.seed ^ i as u64;
        tokio::spawn(async move {
            if let Err(e) = agent(ch, id, shared, connected, args, seed).await {
                eprintln!("agent failed: {e}");
            }
        });
    }
    while connected.load(Ordering::Relaxed) < a.agents as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_secs(600) {
            return Err("agents did not all connect within 10 minutes".into());
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_after = a.dispatcher_pid.and_then(rss_kib);
    let rss_per_agent = match (rss_before, rss_after) {
        (Some(b), Some(af)) => Some((af.saturating_sub(b)) as f64 * 1024.0 / a.agents as f64),
        _ => None,
    };
    println!(
        "connected {} agent streams in {connect_secs:.1}s; dispatcher RSS {:?} KiB -> {:?} KiB ({} bytes per connected agent)",
        a.agents,
        rss_before,
        rss_after,
        rss_per_agent.map_or("n/a".into(), |v| format!("{v:.0}"))
    );
    if a.connect_only {
        println!(
            "{}",
            serde_json::json!({"label": a.label, "mode": "connect", "agents": a.agents, "connect_s": connect_secs,
                "agents_per_connection": per_connection,
                "rss_before_kib": rss_before, "rss_after_kib": rss_after, "rss_bytes_per_agent": rss_per_agent})
        );
        return Ok(());
    }

    // Routers.
    let mut rng = SmallRng::seed_from_u64(a.seed.wrapping_add(1));
    let mut routers = Vec::new();
    for _ in 0..a.router_connections.max(1) {
        routers.push(pb::escalation_service_client::EscalationServiceClient::new(client::channel(&a.addr).await?));
    }
    let submit_one = |n: u64, rng: &mut SmallRng| {
        let lang = if a.simple_cases { "en" } else { LANGS[zipf(rng, LANGS.len())] };
        let skill = SKILLS[zipf(rng, SKILLS.len())];
        let spec = pb::CaseSpec {
            case_id: format!("lc-{}-{n}", a.seed),
            language: lang.into(),
            min_language_proficiency: 3,
            required_skills: if !a.simple_cases && rng.random_bool(0.6) {
                vec![pb::SkillLevel { skill: skill.into(), level: rng.random_range(1..=2) }]
            } else {
                vec![]
            },
            tier: if !a.simple_cases && rng.random_bool(0.05) { pb::Tier::Vip } else { pb::Tier::Standard } as i32,
            channel: if rng.random_bool(0.8) { pb::Channel::Chat } else { pb::Channel::Voice } as i32,
            summary: "customer was charged twice for order 1182 and wants a refund to the original card".into(),
            sentiment: -0.4,
            ..Default::default()
        };
        let times = Arc::new(Times::default());
        times.submitted.store(shared.now_us(), Ordering::Relaxed);
        shared.cases.insert(spec.case_id.clone(), Arc::clone(&times));
        let mut esc = routers[n as usize % routers.len()].clone();
        async move {
            if let Err(e) = esc.submit_case(pb::SubmitCaseRequest { spec: Some(spec) }).await {
                eprintln!("submit failed: {e}");
            }
        }
    };
    let redis = match &a.redis_url {
        Some(url) => Some(redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?),
        None => None,
    };
    let mut probe =
        dispatch_benches::cost::Probe { dispatcher_pid: a.dispatcher_pid, metrics_addr: a.metrics_addr.clone(), redis };
    probe.reset().await;
    let cost_before = probe.snapshot().await;
    let assigned_before = shared.assigned.load(Ordering::Relaxed);
    let submit_started = Instant::now();
    let mut submitted = 0u64;
    if let Some(period_us) = 1_000_000u64.checked_div(a.rate) {
        let mut tick = tokio::time::interval(Duration::from_micros(period_us));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while submit_started.elapsed() < Duration::from_secs(a.duration) {
            tick.tick().await;
            tokio::spawn(submit_one(submitted, &mut rng));
            submitted += 1;
        }
    } else {
        let concurrency = a.concurrency.max(1) as u64;
        while submit_started.elapsed() < Duration::from_secs(a.duration) {
            let in_flight = submitted - shared.assigned.load(Ordering::Relaxed);
            if in_flight < concurrency {
                tokio::spawn(submit_one(submitted, &mut rng));
                submitted += 1;
            } else {
                let _ = tokio::time::timeout(Duration::from_millis(5), shared.done.notified()).await;
            }
        }
    }
    let submit_secs = submit_started.elapsed().as_secs_f64();
    // Let the tail settle (bounded).
    let settle = Instant::now();
    while shared.assigned.load(Ordering::Relaxed) < submitted && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cost = probe.snapshot().await.per_case(&cost_before, shared.assigned.load(Ordering::Relaxed) - assigned_before);
    println!("cost per case: {cost}");
    let (mut offer_h, mut assign_h) = (hist(), hist());
    let mut waiting = 0u64;
    for e in shared.cases.iter() {
        let t = e.value();
        let s = t.submitted.load(Ordering::Relaxed);
        let o = t.offered.load(Ordering::Relaxed);
        let x = t.assigned.load(Ordering::Relaxed);
        if o > 0 {
            let _ = offer_h.record(o.saturating_sub(s).max(1));
        }
        if x > 0 {
            let _ = assign_h.record(x.saturating_sub(s).max(1));
        } else {
            waiting += 1;
        }
    }
    let assigned = shared.assigned.load(Ordering::Relaxed);
    let throughput = assign_h.len() as f64 / submit_secs;
    println!(
        "submitted {submitted} cases in {submit_secs:.1}s; assigned {assigned}; not assigned at the end {waiting}; declined offers {}; throughput {throughput:.0} assigned/s",
        shared.declined.load(Ordering::Relaxed)
    );
    show("submit -> offer", &offer_h);
    show("submit -> assigned", &assign_h);
    let confirm = shared.confirm.lock().unwrap().clone();
    show("accept -> confirmed", &confirm);
    println!(
        "{}",
        serde_json::json!({
            "label": a.label, "mode": if a.rate > 0 { "open" } else { "closed" }, "agents": a.agents, "rate": a.rate,
            "agents_per_connection": per_connection,
            "concurrency": a.concurrency, "submitted": submitted, "assigned": assigned, "unassigned": waiting,
            "throughput_per_s": throughput, "submit_to_offer": pcts(&offer_h), "submit_to_assigned": pcts(&assign_h),
            "accept_to_confirmed": pcts(&confirm), "rss_bytes_per_agent": rss_per_agent, "cost": cost,
        })
    );
    Ok(())
}

async fn agent(
    ch: Channel,
    id: String,
    shared: Arc<Shared>,
    connected: Arc<AtomicU64>,
    a: RunArgs,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(16);
    let msg = |c: C| pb::AgentMessage { request_id: String::new(), command: Some(c) };
    tx.send(msg(C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }))).await?;
    let req = client::as_agent(&id, tokio_stream::wrappers::ReceiverStream::new(rx))?;
    let mut inbound = pb::agent_service_client::AgentServiceClient::new(ch).connect(req).await?.into_inner();
    let mut counted = false;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(15));
    loop {
        let m = tokio::select! {
            m = inbound.next() => match m { Some(Ok(m)) => m, _ => return Ok(()) },
            _ = heartbeat.tick() => { let _ = tx.try_send(msg(C::Heartbeat(pb::Heartbeat {}))); continue; }
        };
        match m.event {
            Some(Event::Status(s)) if s.status == pb::AgentStatus::Available as i32 && !counted => {
                counted = true;
                connected.fetch_add(1, Ordering::Relaxed);
            }
            Some(Event::Offer(o)) => {
                let case_id = o.case.map(|c| c.case_id).unwrap_or_default();
                if let Some(t) = shared.cases.get(&case_id) {
                    let _ = t.offered.compare_exchange(0, shared.now_us(), Ordering::Relaxed, Ordering::Relaxed);
                }
                shared.offers.fetch_add(1, Ordering::Relaxed);
                if a.accept_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(a.accept_delay_ms)).await;
                }
                if rng.random_bool(a.accept_prob.clamp(0.0, 1.0)) {
                    shared.accept_sent.insert(o.offer_id.clone(), shared.now_us());
                    tx.send(msg(C::Accept(pb::Accept { offer_id: o.offer_id }))).await?;
                } else {
                    shared.declined.fetch_add(1, Ordering::Relaxed);
                    tx.send(msg(C::Decline(pb::Decline { offer_id: o.offer_id, reason: "busy".into() }))).await?;
                }
            }
            Some(Event::Assignment(x)) => {
                let now = shared.now_us();
                if let Some((_, sent)) = shared.accept_sent.remove(&x.offer_id) {
                    let _ = shared.confirm.lock().unwrap().record(now.saturating_sub(sent).max(1));
                }
                let case_id = x.case.map(|c| c.case_id).unwrap_or_default();
                if let Some(t) = shared.cases.get(&case_id) {
                    t.assigned.store(now, Ordering::Relaxed);
                }
                shared.assigned.fetch_add(1, Ordering::Relaxed);
                shared.done.notify_waiters();
                let tx = tx.clone();
                let handle = Duration::from_millis(a.handle_ms);
                tokio::spawn(async move {
                    tokio::time::sleep(handle).await;
                    let _ = tx.send(msg(C::Complete(pb::Complete { case_id, outcome: "resolved".into() }))).await;
                });
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct EchoServer;

#[tonic::async_trait]
impl echo::echo_server::Echo for EchoServer {
    async fn echo(
        &self,
        r: tonic::Request<echo::EchoMessage>,
    ) -> Result<tonic::Response<echo::EchoMessage>, tonic::Status> {
        Ok(tonic::Response::new(r.into_inner()))
    }
}

async fn grpc_floor(a: FloorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(echo::echo_server::EchoServer::new(EchoServer))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
    });
    let ch = client::channel(&addr).await?;
    let (h, n, secs) = closed_loop(a.concurrency, a.duration, move || {
        let mut c = echo::echo_client::EchoClient::new(ch.clone());
        let payload = vec![7u8; a.payload];
        async move { c.echo(echo::EchoMessage { payload }).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await;
    println!("gRPC unary echo floor: {:.0} calls/s ({n} calls, concurrency {})", n as f64 / secs, a.concurrency);
    show("echo round trip", &h);
    println!("{}", serde_json::json!({"mode": "grpc_floor", "calls_per_s": n as f64 / secs, "latency": pcts(&h)}));
    Ok(())
}

async fn redis_floor(a: RedisFloorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(a.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let lib = "#!lua name=benchfloor\nredis.register_function('bench_floor', function(keys, args) return args[1] end)";
    let _: String = redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(lib).query_async(&mut conn).await?;
    let (h, n, secs) = closed_loop(a.concurrency, a.duration, move || {
        let mut c = conn.clone();
        async move {
            redis::cmd("FCALL")
                .arg("bench_floor")
                .arg(0)
                .arg("x")
                .query_async::<String>(&mut c)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    println!("Redis FCALL floor: {:.0} calls/s ({n} calls, concurrency {})", n as f64 / secs, a.concurrency);
    show("FCALL round trip", &h);
    println!("{}", serde_json::json!({"mode": "redis_floor", "calls_per_s": n as f64 / secs, "latency": pcts(&h)}));
    Ok(())
}

/// Runs `call` with `concurrency` in flight for `secs`; latency histogram (µs), calls, seconds.
async fn closed_loop<F, Fut>(concurrency: usize, secs: u64, call: F) -> (Histogram<u64>, u64, f64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            while Instant::now() < end {
                let t = Instant::now();
                if call().await.is_ok() {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
            }
            h
        }));
    }
    let mut all = hist();
    for t in tasks {
        all.add(t.await.expect("floor task")).expect("same bounds");
    }
    let n = all.len();
    (all, n, start.elapsed().as_secs_f64())
}
