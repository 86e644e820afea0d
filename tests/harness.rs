//! Test support for every test crate of the workspace: starts the real server (embedded store or
//! Redis, manual clock) on `127.0.0.1:0` and drives it over gRPC with the generated clients
//! (agent devices with [`AgentConn`], in development mode or with a token), builds profiles and
//! cases, mints tokens, and finds free ports. Every wait is bounded; no fixed sleeps.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatch_domain::Policy;
use dispatch_engine::{Clock, Engine, EngineConfig, MemoryStore, Store};
use dispatch_grpc::auth::Authenticator;
use dispatch_grpc::{ServerConfig, client};
use dispatch_proto::v1 as pb;
use dispatch_redis::testing::RedisServer;
pub use dispatch_redis::testing::free_port;
use dispatch_redis::{RedisConfig, RedisStore};
use pb::agent_message::Command;
use pb::dispatcher_message::Event;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic::transport::Channel;

/// How long any single wait may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(10);

/// Start of the manual clock (an arbitrary fixed instant).
pub const T0: i64 = 1_800_000_000_000;

/// Awaits `f` for at most [`BOUND`], panicking with `what` otherwise.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.unwrap_or_else(|_| panic!("timed out after {BOUND:?} waiting for {what}"))
}

/// Polls `check` until it returns `Some`, for at most [`BOUND`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// A real `redis-server` started for the test (with the manual clock standing in for
    /// Redis's `TIME`, so that tests drive time by hand).
    Redis,
    /// Two dispatchers on one Redis: routers and planners call the first, agent devices
    /// connect to the second, and either may decide (match, time out). What a router or a
    /// device sees must not depend on where the decision was taken.
    Replicas,
}

/// Runs each named scenario `async fn name(b: Backend)` on every backend: `memory::name`,
/// `redis::name` and `replicas::name` (routers on one dispatcher, devices on another).
#[macro_export]
macro_rules! on_every_backend {
    ($($t:ident),* $(,)?) => {
        $crate::on_both_stores!($($t),*);
        mod replicas {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    super::$t($crate::Backend::Replicas).await
                }
            )*
        }
    };
}

/// Runs each named scenario `async fn name(b: Backend)` as two tests, `memory::name` and
/// `redis::name`.
#[macro_export]
macro_rules! on_both_stores {
    ($($t:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    super::$t($crate::Backend::Memory).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    super::$t($crate::Backend::Redis).await
                }
            )*
        }
    };
}

/// A running dispatcher.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The manual clock the engine and store run on.
    pub clock: Clock,
    /// The engine (for assertions that need no RPC).
    pub engine: Engine,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The Redis server, for [`Backend::Redis`].
    pub redis: Option<RedisServer>,
    /// The dispatcher devices connect to, for [`Backend::Replicas`].
    pub devices: Option<Box<TestServer>>,
}

impl TestServer {
    /// Starts a server on `backend` with `policy` (sweeper driven by the manual clock), in
    /// development mode (plaintext, no authentication: the agent names itself with `agent-id`).
    pub async fn start(backend: Backend, policy: Policy) -> Self {
        Self::start_with(backend, policy, ServerConfig { plaintext: true, ..ServerConfig::default() }).await
    }

    /// Starts a second dispatcher on the Redis of `other` (same pool, same manual clock).
    pub async fn start_beside(other: &TestServer, policy: Policy) -> Self {
        Self::start_beside_on(other, policy, other.clock.clone()).await
    }

    /// Starts a second dispatcher on the Redis of `other` with a clock of its own: a clock
    /// that is not advanced keeps this replica's sweeper from firing the timers that `other`'s
    /// clock makes due, so that `other` is the one that decides them.
    pub async fn start_beside_on(other: &TestServer, policy: Policy, clock: Clock) -> Self {
        let url = other.redis.as_ref().expect("a redis backend").url();
        let config = RedisConfig { url, ..RedisConfig::default() };
        let store = RedisStore::open(&config, Some(clock.clone())).await.expect("open the redis store");
        let dev = ServerConfig { plaintext: true, ..ServerConfig::default() };
        Self::serve(Arc::new(store), clock, None, policy, dev, Arc::new(Authenticator::dev())).await
    }

    /// Starts a second dispatcher on the Redis of `other` (same pool, same manual clock) with
    /// engine settings of the test's.
    pub async fn start_beside_with_engine(other: &TestServer, policy: Policy, engine: EngineConfig) -> Self {
        let url = other.redis.as_ref().expect("a redis backend").url();
        let config = RedisConfig { url, ..RedisConfig::default() };
        let store = RedisStore::open(&config, Some(other.clock.clone())).await.expect("open the redis store");
        let dev = ServerConfig { plaintext: true, ..ServerConfig::default() };
        Self::serve_engine(
            Arc::new(store),
            other.clock.clone(),
            None,
            policy,
            engine,
            dev,
            Arc::new(Authenticator::dev()),
        )
        .await
    }

    /// Opens a watch of a case.
    pub async fn watch(&self, id: &str) -> Streaming<pb::CaseEvent> {
        self.escalation().watch_case(pb::WatchCaseRequest { case_id: id.to_owned() }).await.expect("watch").into_inner()
    }

    /// Starts a server on `backend` with `policy` and transport settings.
    pub async fn start_with(backend: Backend, policy: Policy, server: ServerConfig) -> Self {
        let clock = Clock::manual(T0);
        let (store, redis): (Arc<dyn Store>, Option<RedisServer>) = match backend {
            Backend::Memory => (Arc::new(MemoryStore::new(clock.clone())), None),
            Backend::Replicas => {
                // A test's clock jumps; the devices' replica renews their presence leases as its
                // sweeper runs, and the other replica's sweeper may fire a lease the jump made due
                // first. Real clocks do not jump: a long lease keeps the jumps out of the story.
                let policy = Policy { presence_lease_ms: policy.presence_lease_ms.max(600_000), ..policy };
                let mut routers = Box::pin(Self::start_with(Backend::Redis, policy.clone(), server)).await;
                let devices = Self::start_beside(&routers, policy).await;
                routers.devices = Some(Box::new(devices));
                return routers;
            }
            Backend::Redis => {
                let r = RedisServer::start();
                let config = RedisConfig { url: r.url(), ..RedisConfig::default() };
                let store = RedisStore::open(&config, Some(clock.clone())).await.expect("open the redis store");
                (Arc::new(store), Some(r))
            }
        };
        Self::serve(store, clock, redis, policy, server, Arc::new(Authenticator::dev())).await
    }

    /// Starts a server on the memory store with transport settings and an authenticator of the
    /// caller's (TLS and tokens). Its `channel()` is a plaintext one: give TLS servers your own.
    pub async fn start_secure(policy: Policy, server: ServerConfig, auth: Authenticator) -> Self {
        let clock = Clock::manual(T0);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(clock.clone()));
        Self::serve(store, clock, None, policy, server, Arc::new(auth)).await
    }

    async fn serve(
        store: Arc<dyn Store>,
        clock: Clock,
        redis: Option<RedisServer>,
        policy: Policy,
        server: ServerConfig,
        auth: Arc<Authenticator>,
    ) -> Self {
        Self::serve_engine(store, clock, redis, policy, EngineConfig::default(), server, auth).await
    }

    /// Starts a server on Redis with engine settings of the test's.
    pub async fn start_redis_with_engine(policy: Policy, engine: EngineConfig) -> Self {
        let clock = Clock::manual(T0);
        let r = RedisServer::start();
        let config = RedisConfig { url: r.url(), ..RedisConfig::default() };
        let store = RedisStore::open(&config, Some(clock.clone())).await.expect("open the redis store");
        let dev = ServerConfig { plaintext: true, ..ServerConfig::default() };
        Self::serve_engine(Arc::new(store), clock, Some(r), policy, engine, dev, Arc::new(Authenticator::dev())).await
    }

    async fn serve_engine(
        store: Arc<dyn Store>,
        clock: Clock,
        redis: Option<RedisServer>,
        policy: Policy,
        engine: EngineConfig,
        server: ServerConfig,
        auth: Arc<Authenticator>,
    ) -> Self {
        // Seeded ids repeat from run to run, but differ between the servers of one test (two
        // replicas minting the same session id would take each other's sessions).
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);
        let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = EngineConfig { id_seed: Some(seed), ..engine };
        let engine = Engine::start(store, clock.clone(), policy, config).await.expect("engine starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let e = engine.clone();
        let task = tokio::spawn(async move {
            dispatch_grpc::serve(listener, e, server, auth, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        // A lazy channel: a TLS server's tests connect with their own credentials.
        let channel = tonic::transport::Endpoint::from_shared(addr.clone()).expect("address").connect_lazy();
        Self { addr, clock, engine, channel, stop: Some(stop), task: Some(task), redis, devices: None }
    }

    /// Graceful shutdown (what SIGTERM does to `dispatchd`); returns when the server has drained.
    pub async fn shutdown(&mut self) {
        if let Some(d) = self.devices.as_mut() {
            Box::pin(d.shutdown()).await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            bounded("the server to drain", t).await.expect("the server task");
        }
    }

    /// Moves the clock; the sweeper wakes at once.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    /// A fresh channel to the server.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Escalation client.
    pub fn escalation(&self) -> pb::escalation_service_client::EscalationServiceClient<Channel> {
        pb::escalation_service_client::EscalationServiceClient::new(self.channel())
    }

    /// Roster client.
    pub fn roster(&self) -> pb::roster_service_client::RosterServiceClient<Channel> {
        pb::roster_service_client::RosterServiceClient::new(self.channel())
    }

    /// Planner client.
    pub fn planner(&self) -> pb::planner_service_client::PlannerServiceClient<Channel> {
        pb::planner_service_client::PlannerServiceClient::new(self.channel())
    }

    /// Registers an agent.
    pub async fn register(&self, profile: pb::AgentProfile) -> pb::Agent {
        self.roster()
            .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile) })
            .await
            .expect("upsert agent")
            .into_inner()
            .agent
            .expect("agent")
    }

    /// Submits a case.
    pub async fn submit(&self, spec: pb::CaseSpec) -> pb::Case {
        self.escalation()
            .submit_case(pb::SubmitCaseRequest { spec: Some(spec) })
            .await
            .expect("submit case")
            .into_inner()
            .case
            .expect("case")
    }

    /// Reads a case.
    pub async fn case(&self, id: &str) -> pb::Case {
        self.escalation()
            .get_case(pb::GetCaseRequest { case_id: id.to_owned() })
            .await
            .expect("get case")
            .into_inner()
            .case
            .expect("case")
    }

    /// Reads an agent.
    pub async fn agent(&self, id: &str) -> pb::Agent {
        self.roster()
            .get_agent(pb::GetAgentRequest { agent_id: id.to_owned() })
            .await
            .expect("get agent")
            .into_inner()
            .agent
            .expect("agent")
    }

    /// A channel to the dispatcher agent devices connect to (another one, for
    /// [`Backend::Replicas`]).
    pub fn device_channel(&self) -> Channel {
        self.devices.as_ref().map_or_else(|| self.channel(), |d| d.channel())
    }

    /// Connects as an agent (signed in as away), to the devices' dispatcher.
    pub async fn connect(&self, id: &str) -> AgentConn {
        AgentConn::open(self.device_channel(), id).await.expect("agent connects")
    }

    /// Connects as an agent and goes available.
    pub async fn available(&self, id: &str) -> AgentConn {
        let mut a = self.connect(id).await;
        a.expect_status(pb::AgentStatus::Away).await;
        let r = a.command(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 })).await;
        assert_eq!(r.code, 0, "going available: {}", r.message);
        a
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// One agent device: the outbound command queue and the inbound stream.
pub struct AgentConn {
    /// The agent's id.
    pub id: String,
    tx: Option<mpsc::Sender<pb::AgentMessage>>,
    rx: Streaming<pb::DispatcherMessage>,
    seq: u64,
    backlog: VecDeque<Event>,
}

impl AgentConn {
    /// Opens the stream with `agent-id` metadata (development mode).
    pub async fn open(channel: Channel, id: &str) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(32);
        let req = client::as_agent(id, tokio_stream::wrappers::ReceiverStream::new(rx))?;
        let stream = pb::agent_service_client::AgentServiceClient::new(channel).connect(req).await?.into_inner();
        Ok(Self { id: id.to_owned(), tx: Some(tx), rx: stream, seq: 0, backlog: VecDeque::new() })
    }

    /// Opens the stream with a bearer token (the agent is the token's subject, `id` names it in
    /// failures).
    pub async fn open_with_token(channel: Channel, id: &str, token: &str) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(32);
        let bearer = client::Bearer::new(Some(token))?;
        let mut agents = pb::agent_service_client::AgentServiceClient::with_interceptor(channel, bearer);
        let stream = agents.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { id: id.to_owned(), tx: Some(tx), rx: stream, seq: 0, backlog: VecDeque::new() })
    }

    /// Goes available; the command's result.
    pub async fn go_available(&mut self) -> pb::CommandResult {
        self.command(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 })).await
    }

    /// Sends a command without waiting for its answer; returns its request id.
    pub async fn send(&mut self, command: Command) -> String {
        self.seq += 1;
        let request_id = format!("{}-{}", self.id, self.seq);
        let msg = pb::AgentMessage { request_id: request_id.clone(), command: Some(command) };
        self.tx.as_ref().expect("stream open").send(msg).await.expect("send command");
        request_id
    }

    /// Sends a command and waits for its result.
    pub async fn command(&mut self, command: Command) -> pb::CommandResult {
        let id = self.send(command).await;
        self.result(&id).await
    }

    /// Waits for the first message (backlog first) that `pick` accepts; others stay queued.
    pub async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        if let Some(pos) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let ev = self.backlog.remove(pos).expect("present");
            return pick(&ev).expect("picked");
        }
        let id = self.id.clone();
        bounded(&format!("{what} on agent {id}"), async {
            loop {
                let msg =
                    self.rx.next().await.unwrap_or_else(|| panic!("agent {id}: stream ended while waiting for {what}"));
                let ev = msg.unwrap_or_else(|e| panic!("agent {id}: stream failed: {e}")).event.expect("event set");
                if let Some(v) = pick(&ev) {
                    return v;
                }
                self.backlog.push_back(ev);
            }
        })
        .await
    }

    /// The result of request `id`.
    pub async fn result(&mut self, id: &str) -> pb::CommandResult {
        self.next(&format!("result of {id}"), |e| match e {
            Event::Result(r) if r.request_id == id => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// The next offer.
    pub async fn offer(&mut self) -> pb::OfferMade {
        self.next("an offer", |e| match e {
            Event::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// The latest offer received so far, without waiting (older ones are dropped from the
    /// backlog); for tests that act on whatever is there.
    pub async fn offer_now(&mut self) -> Option<pb::OfferMade> {
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::ZERO, self.rx.next()).await {
            if let Some(ev) = msg.event {
                self.backlog.push_back(ev);
            }
        }
        let mut latest = None;
        self.backlog.retain(|e| match e {
            Event::Offer(o) => {
                latest = Some(o.clone());
                false
            }
            _ => true,
        });
        latest
    }

    /// The next revocation.
    pub async fn revoked(&mut self) -> pb::OfferRevoked {
        self.next("a revocation", |e| match e {
            Event::OfferRevoked(r) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// The next assignment confirmation.
    pub async fn assigned(&mut self) -> pb::AssignmentConfirmed {
        self.next("an assignment", |e| match e {
            Event::Assignment(a) => Some(a.clone()),
            _ => None,
        })
        .await
    }

    /// The next status change to `status`.
    pub async fn expect_status(&mut self, status: pb::AgentStatus) -> pb::StatusChanged {
        self.next(&format!("status {status:?}"), |e| match e {
            Event::Status(s) if s.status == status as i32 => Some(s.clone()),
            _ => None,
        })
        .await
    }

    /// Accepts an offer and returns the result.
    pub async fn accept(&mut self, offer_id: &str) -> pb::CommandResult {
        self.command(Command::Accept(pb::Accept { offer_id: offer_id.to_owned() })).await
    }

    /// Declines an offer and returns the result.
    pub async fn decline(&mut self, offer_id: &str, reason: &str) -> pb::CommandResult {
        self.command(Command::Decline(pb::Decline { offer_id: offer_id.to_owned(), reason: reason.to_owned() })).await
    }

    /// Completes a case and returns the result.
    pub async fn complete(&mut self, case_id: &str) -> pb::CommandResult {
        self.command(Command::Complete(pb::Complete { case_id: case_id.to_owned(), outcome: "resolved".to_owned() }))
            .await
    }

    /// Waits for the stream to end with an error status; returns it (skipping messages).
    pub async fn expect_error(&mut self) -> tonic::Status {
        let id = self.id.clone();
        bounded(&format!("agent {id}'s stream to fail"), async {
            loop {
                match self.rx.next().await {
                    Some(Err(status)) => return status,
                    Some(Ok(m)) => {
                        if let Some(e) = m.event {
                            self.backlog.push_back(e);
                        }
                    }
                    None => panic!("agent {id}'s stream ended without a status"),
                }
            }
        })
        .await
    }

    /// Waits for the stream's `SessionEnded` message; its reason.
    pub async fn ended(&mut self) -> pb::SessionEndReason {
        self.next("the stream's end", |e| match e {
            Event::Ended(e) => Some(e.reason()),
            _ => None,
        })
        .await
    }

    /// Waits for the server to end the stream.
    pub async fn expect_end(&mut self) {
        let id = self.id.clone();
        bounded(&format!("end of agent {id}'s stream"), async {
            while let Some(m) = self.rx.next().await {
                if m.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// The events of a watch up to and including its terminal one (or its end).
pub async fn watch_to_end(watch: &mut Streaming<pb::CaseEvent>) -> Vec<pb::CaseEvent> {
    bounded("the watch to end", async {
        let mut out = Vec::new();
        while let Some(ev) = watch.next().await {
            let ev = ev.expect("watch event");
            let kind = ev.kind();
            out.push(ev);
            if matches!(kind, pb::CaseEventKind::Completed | pb::CaseEventKind::Cancelled | pb::CaseEventKind::Expired)
            {
                break;
            }
        }
        out
    })
    .await
}

/// An HS256 token for `sub` in `role` (key id `dev`), valid for `ttl_s` seconds.
pub fn token(secret: &[u8], role: &str, sub: &str, tenant: Option<&str>, ttl_s: u64) -> String {
    client::mint_token(secret, "dev", &client::TokenClaims::new(role, sub, tenant, ttl_s)).expect("a token")
}

/// A profile: `langs` as (tag, proficiency), `skills` as (name, level), chat capacity 1.
pub fn profile(id: &str, langs: &[(&str, u32)], skills: &[(&str, u32)], vip: bool) -> pb::AgentProfile {
    pb::AgentProfile {
        agent_id: id.to_owned(),
        display_name: format!("Agent {id}"),
        languages: langs
            .iter()
            .map(|(l, p)| pb::LanguageProficiency { language: (*l).to_owned(), proficiency: *p })
            .collect(),
        skills: skills.iter().map(|(s, l)| pb::SkillLevel { skill: (*s).to_owned(), level: *l }).collect(),
        vip_certified: vip,
        capacity: vec![pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 1 }],
        rating: 4.0,
        ..Default::default()
    }
}

/// A chat case in `lang` requiring `skills`.
pub fn case(id: &str, lang: &str, skills: &[(&str, u32)], tier: pb::Tier) -> pb::CaseSpec {
    pb::CaseSpec {
        case_id: id.to_owned(),
        language: lang.to_owned(),
        required_skills: skills.iter().map(|(s, l)| pb::SkillLevel { skill: (*s).to_owned(), level: *l }).collect(),
        tier: tier as i32,
        channel: pb::Channel::Chat as i32,
        summary: format!("summary of {id}"),
        ..Default::default()
    }
}

/// Asserts that `err` is an INVALID_ARGUMENT naming `field` in its message and, as its one
/// `google.rpc.BadRequest` field violation, in its details.
pub fn assert_field(err: &tonic::Status, field: &str) {
    use tonic_types::StatusExt;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {}", err.message());
    assert!(err.message().starts_with(field), "expected {field} in {:?}", err.message());
    let details = err.get_error_details();
    let fields: Option<Vec<&str>> =
        details.bad_request().map(|b| b.field_violations.iter().map(|v| v.field.as_str()).collect());
    assert_eq!(fields, Some(vec![field]), "the status details name the field");
}

/// Asserts that `err` is an INVALID_ARGUMENT whose one `BadRequest` field violation names the
/// field its message begins with.
pub fn assert_violation(err: &tonic::Status) {
    use tonic_types::StatusExt;
    let details = err.get_error_details();
    let fields: Vec<String> =
        details.bad_request().map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect()).unwrap_or_default();
    assert_eq!(fields.len(), 1, "one field violation: {fields:?} ({})", err.message());
    assert_field(err, &fields[0]);
}

/// The retry delay an UNAVAILABLE or RESOURCE_EXHAUSTED status carries (`google.rpc.RetryInfo`).
pub fn retry_delay(err: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    err.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

/// The `google.rpc.ErrorInfo` reason of a status, if it carries one.
pub fn error_reason(err: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    err.get_error_details().error_info().map(|i| i.reason.clone())
}
