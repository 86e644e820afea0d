//! [`RedisStore`]: the [`Store`] port on Redis. Reads are plain `GET`s pipelined with `TIME`;
//! every write is one Redis Function call (`dispatch.lua`) that checks record versions before
//! writing anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dispatch_domain::demand::BucketCount;
use dispatch_domain::{Agent, AgentId, Case, CaseId, CaseState, Millis, OfferId, TimerKey};
use dispatch_engine::store::{Marks, next_version};
use dispatch_engine::{
    ChangeBatch, ChangeRef, Clock, Commit, Committed, Counter, Epoch, Read, Restore, Snapshot, Store, StoreError,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::keys::Keys;

const LIBRARY: &str = include_str!("dispatch.lua");

/// Redis settings (`[redis]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; empty (and no `cluster_nodes`): the embedded store is used.
    pub url: String,
    /// Redis Cluster: seed nodes (`redis://host:port`, any few of the cluster's nodes). When
    /// set, `url` is ignored. Every key of a pool is in one slot (the `{pool}` hash tag), so
    /// each pool lives on one shard and pools spread across shards.
    pub cluster_nodes: Vec<String>,
    /// The pool's name: the hash tag of every key (`dispatch:{pool}:…`).
    pub pool: String,
    /// Each connection attempt gives up after this long.
    pub connection_timeout_ms: u64,
    /// Each command gives up after this long (the caller gets UNAVAILABLE).
    pub response_timeout_ms: u64,
    /// Approximate length the change log is trimmed to.
    pub change_log_max_len: u64,
    /// A dispatcher seen (by its probe) within this long counts as a member: when Redis comes
    /// back or fails over, writes wait for every member to rejoin (a write it alone saw may be
    /// lost). Several health intervals.
    pub member_ttl_ms: u64,
    /// ... but at most this long (store clock): a member that has not rejoined by then is
    /// presumed gone.
    pub rejoin_wait_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster_nodes: Vec::new(),
            pool: "default".to_owned(),
            connection_timeout_ms: 1_000,
            response_timeout_ms: 1_000,
            change_log_max_len: 100_000,
            member_ttl_ms: 5_000,
            rejoin_wait_ms: 5_000,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a Redis URL.
    #[error("redis.url: {0}")]
    Url(String),
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// What happened.
        reason: String,
    },
    /// Redis would evict keys under memory pressure: the pool would silently lose records.
    #[error(
        "Redis maxmemory-policy is {0}: it would evict the dispatcher's keys and lose cases; set maxmemory-policy noeviction (see deploy/redis.conf)"
    )]
    EvictionPolicy(String),
    /// Loading the Redis Functions failed.
    #[error("loading the dispatch Redis Functions failed (Redis 7.0 or newer is required): {0}")]
    Functions(String),
}

/// One Redis (a connection manager that reconnects by itself) or a Redis Cluster (a cluster
/// connection that follows the slot map).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Every text in an `INFO` reply (a cluster answers with one per primary).
fn info_texts(v: Value) -> Vec<String> {
    match v {
        Value::BulkString(b) => vec![String::from_utf8_lossy(&b).into_owned()],
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => vec![text],
        Value::Map(kv) => kv.into_iter().flat_map(|(_, v)| info_texts(v)).collect(),
        Value::Array(items) => items.into_iter().flat_map(info_texts).collect(),
        _ => Vec::new(),
    }
}

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    max_len: u64,
    /// A clock to use instead of Redis's `TIME` (tests drive time by hand); `None` in production.
    clock: Option<Clock>,
    /// The epoch this store handle joined (every write carries it).
    epoch: Arc<AtomicU64>,
    /// Redis's clock as seen from here: the last `TIME` sample, so that `now` between samples
    /// costs no round trip.
    time: Arc<TimeSample>,
    /// This handle's dispatcher id in the pool's `members` (unique per process start).
    member: String,
    /// The members the last probe saw (waited for when this handle begins a new epoch).
    peers: Arc<std::sync::Mutex<Vec<String>>>,
    member_ttl_ms: u64,
    rejoin_wait_ms: u64,
}

/// A dispatcher id unique to this store handle: its pid, a random number (the standard
/// library's per-process hash seed) and a counter, in hex.
fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("{:x}-{random:x}-{:x}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed))
}

/// Redis time minus local monotonic time (ms) at the last `TIME` answer, and when that was.
#[derive(Default)]
struct TimeSample {
    offset: AtomicI64,
    /// Local monotonic ms of the sample; 0: none yet.
    taken_at: AtomicI64,
}

/// How long a `TIME` sample stands in for Redis's clock: the drift between two machines'
/// clocks over a second is far below a millisecond; every transition's read takes a fresh one.
const TIME_SAMPLE_MS: i64 = 1_000;

fn local_ms() -> i64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed().as_millis() as i64 + 1
}

impl TimeSample {
    /// Records Redis's `TIME` answer to a request sent at local `sent` (ms) and answered now
    /// (taken to be from the middle of the round trip); returns it in milliseconds.
    fn record(&self, time: Value, sent: i64) -> Result<Millis, StoreError> {
        let (secs, micros): (i64, i64) = redis::from_redis_value(time).map_err(|e| corrupt("TIME", e))?;
        let redis_ms = secs * 1000 + micros / 1000;
        self.sample(redis_ms, sent);
        Ok(redis_ms)
    }

    fn sample(&self, redis_ms: Millis, sent: i64) {
        let now = local_ms();
        self.offset.store(redis_ms - (sent + now) / 2, Ordering::Relaxed);
        self.taken_at.store(now, Ordering::Relaxed);
    }

    fn estimate(&self) -> Option<Millis> {
        let now = local_ms();
        let at = self.taken_at.load(Ordering::Relaxed);
        (at > 0 && now - at < TIME_SAMPLE_MS).then(|| now + self.offset.load(Ordering::Relaxed))
    }
}

/// A Redis error as the engine sees it: FENCED (raised by the Functions) or unavailable.
fn unavailable(e: redis::RedisError) -> StoreError {
    if e.code() == Some("FENCED") {
        StoreError::Fenced(e.detail().unwrap_or("fenced").to_owned())
    } else if e.code() == Some("RECONCILING") {
        StoreError::Unavailable(format!("reconciling: {}", e.detail().unwrap_or("after the store changed")))
    } else if e.code() == Some("OOM") {
        StoreError::Unavailable(format!("Redis is out of memory and refuses writes: {e}"))
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

/// Whether Redis answered that a Function does not exist: the library is gone (a restart
/// without its data, `FUNCTION FLUSH`, a new node), and so, most likely, is everything else.
fn functions_missing(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Decodes a record stored as `<version>:<json>` (the JSON carries the same version).
fn decode<T: serde::de::DeserializeOwned>(what: &str, raw: Option<String>) -> Result<Option<T>, StoreError> {
    raw.map(|s| {
        let json = s.split_once(':').map(|(_, j)| j).ok_or_else(|| corrupt(what, "no version prefix"))?;
        serde_json::from_str(json).map_err(|e| corrupt(what, e))
    })
    .transpose()
}

/// Timer keys as sorted-set members: `kind:id` (ids may contain `:`, kinds do not).
fn timer_member(key: &TimerKey) -> String {
    match key {
        TimerKey::OfferDeadline(c) => format!("offer:{c}"),
        TimerKey::CaseReview(c) => format!("review:{c}"),
        TimerKey::AgentReady(a) => format!("ready:{a}"),
        TimerKey::PresenceGrace(a) => format!("grace:{a}"),
        TimerKey::PresenceLease(a) => format!("lease:{a}"),
        TimerKey::Purge(c) => format!("purge:{c}"),
        TimerKey::HandBack(c) => format!("handback:{c}"),
        TimerKey::InvitationExpiry(a) => format!("invite:{a}"),
    }
}

/// Timers as the Functions take them: `[[member, due], …]`.
fn timers_meta(timers: &[(TimerKey, Millis)]) -> Vec<(String, String)> {
    timers.iter().map(|(k, due)| (timer_member(k), due.to_string())).collect()
}

/// What the Functions need to know of one record they write (see `write_record` in
/// `dispatch.lua`). Every number is decided here; the Lua compares and writes.
#[derive(Serialize)]
struct RecordMeta<'a> {
    /// `c` (case) or `a` (agent).
    k: &'static str,
    id: &'a str,
    /// The version the record must have in Redis now (commits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<String>,
    /// The version it is written at.
    v: String,
    /// A case that is not terminal (in the `live` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<bool>,
    /// Offer ids to point at this case in the `offers` hash.
    offers: Vec<&'a str>,
    /// Timers this record implies (restores; empty for commits, whose timers are the commit's).
    t: Vec<(String, String)>,
}

impl<'a> RecordMeta<'a> {
    /// A case written at `c.version`, pointing `offers` at it.
    fn case(c: &'a Case, offers: Vec<&'a str>) -> Self {
        let v = c.version.to_string();
        Self { k: "c", id: c.id().as_str(), exp: None, v, live: Some(!c.state.is_terminal()), offers, t: Vec::new() }
    }

    /// An agent written at `a.version`.
    fn agent(a: &'a Agent) -> Self {
        let v = a.version.to_string();
        Self { k: "a", id: a.id().as_str(), exp: None, v, live: None, offers: Vec::new(), t: Vec::new() }
    }

    /// Written over version `read` (what the writer read).
    fn over(mut self, read: u64) -> Self {
        self.exp = Some(read.to_string());
        self
    }
}

/// The `dispatch_commit` meta argument.
#[derive(Serialize)]
struct CommitMeta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<RecordMeta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<RecordMeta<'a>>,
    t: Vec<(String, String)>,
    /// Timers to disarm (members), before `t` is armed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    x: Vec<String>,
    n: Vec<(&'static str, String)>,
    max: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    g: Option<Vec<(String, String)>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gx: Option<String>,
}

fn parse_timer(member: &str) -> Option<TimerKey> {
    let (kind, id) = member.split_once(':')?;
    let case = || CaseId::parse_qualified("timer", id).ok();
    let agent = || AgentId::parse("timer", id).ok();
    Some(match kind {
        "offer" => TimerKey::OfferDeadline(case()?),
        "review" => TimerKey::CaseReview(case()?),
        "ready" => TimerKey::AgentReady(agent()?),
        "grace" => TimerKey::PresenceGrace(agent()?),
        "lease" => TimerKey::PresenceLease(agent()?),
        "purge" => TimerKey::Purge(case()?),
        "handback" => TimerKey::HandBack(case()?),
        "invite" => TimerKey::InvitationExpiry(agent()?),
        _ => return None,
    })
}

fn counter_named(name: &str) -> Option<Counter> {
    Counter::ALL.into_iter().find(|c| counter_name(*c) == name)
}

fn counter_name(c: Counter) -> &'static str {
    match c {
        Counter::Submitted => "submitted",
        Counter::OffersMade => "offers_made",
        Counter::OffersAccepted => "offers_accepted",
        Counter::OffersDeclined => "offers_declined",
        Counter::OffersTimedOut => "offers_timed_out",
        Counter::OffersRevoked => "offers_revoked",
        Counter::AcceptMillisTotal => "accept_ms_total",
        Counter::Completed => "completed",
        Counter::Cancelled => "cancelled",
        Counter::Expired => "expired",
        Counter::HandedBack => "handed_back",
        Counter::AssignedVip => "assigned_vip",
        Counter::WaitMillisVip => "wait_ms_vip",
        Counter::AssignedStandard => "assigned_standard",
        Counter::WaitMillisStandard => "wait_ms_standard",
    }
}

/// Stream ids compare as (milliseconds, sequence).
fn stream_id(s: &str) -> (u64, u64) {
    let (a, b) = s.split_once('-').unwrap_or((s, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// Loads (or replaces) the dispatch Function library. On a cluster it goes to every primary.
async fn load_functions(conn: &mut Conn) -> Result<(), redis::RedisError> {
    redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(LIBRARY).query_async::<Value>(conn).await.map(drop)
}

impl RedisStore {
    /// Connects, refuses an evicting `maxmemory-policy`, and loads the Functions. Writes need an
    /// epoch: call [`Store::join_epoch`] first (the engine does at start).
    pub async fn open(config: &RedisConfig, clock: Option<Clock>) -> Result<Self, OpenError> {
        let target = if config.cluster_nodes.is_empty() { config.url.clone() } else { config.cluster_nodes.join(",") };
        let connect = |e: redis::RedisError| OpenError::Connect { url: target.clone(), reason: e.to_string() };
        let mut conn = if config.cluster_nodes.is_empty() {
            let client = redis::Client::open(config.url.as_str()).map_err(|e| OpenError::Url(e.to_string()))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(config.connection_timeout_ms)))
                .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_with_config(client, manager_config).await.map_err(connect)?)
        } else {
            let client = redis::cluster::ClusterClientBuilder::new(config.cluster_nodes.iter().map(String::as_str))
                .connection_timeout(Duration::from_millis(config.connection_timeout_ms))
                .response_timeout(Duration::from_millis(config.response_timeout_ms))
                .retries(2)
                .build()
                .map_err(|e| OpenError::Url(e.to_string()))?;
            Conn::Cluster(client.get_async_connection().await.map_err(connect)?)
        };
        let info: Value = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.map_err(connect)?;
        let policies: Vec<String> = info_texts(info)
            .iter()
            .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("maxmemory_policy:")).map(|p| p.trim().to_owned()))
            .collect();
        if let Some(p) = policies.iter().find(|p| p.starts_with("allkeys-")) {
            return Err(OpenError::EvictionPolicy(p.clone()));
        }
        let policy = policies.first().cloned().unwrap_or_else(|| "unknown".to_owned());
        load_functions(&mut conn).await.map_err(|e| OpenError::Functions(e.to_string()))?;
        let keys = Keys::new(&config.pool);
        // The change log must exist for XINFO; an entry of kind `x` is ignored by readers.
        let _: String = redis::cmd("XADD")
            .arg(&keys.log)
            .arg("MAXLEN")
            .arg("~")
            .arg(config.change_log_max_len)
            .arg("*")
            .arg("k")
            .arg("x")
            .arg("id")
            .arg("open")
            .query_async(&mut conn)
            .await
            .map_err(connect)?;
        let mode = if config.cluster_nodes.is_empty() { "single" } else { "cluster" };
        info!(redis = %target, mode, pool = %config.pool, maxmemory_policy = %policy, "redis store ready");
        // No epoch joined yet: its user (the engine at start) joins before writing.
        Ok(Self {
            conn,
            keys,
            max_len: config.change_log_max_len,
            clock,
            epoch: Arc::default(),
            time: Arc::default(),
            member: new_member_id(),
            peers: Arc::default(),
            member_ttl_ms: config.member_ttl_ms,
            rejoin_wait_ms: config.rejoin_wait_ms,
        })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The key layout (for tools and tests).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn epoch(&self) -> String {
        self.epoch.load(Ordering::SeqCst).to_string()
    }

    /// Whether `dispatch_epoch`'s answer (epoch, restarted, waiting) fences this handle's writes.
    fn is_fenced_by(&self, (epoch, restarted, _): (u64, u8, u64)) -> bool {
        restarted == 1 || epoch != self.epoch.load(Ordering::SeqCst)
    }

    async fn fcall(&self, name: &str, keys: &[&str], args: &[&str]) -> Result<Value, StoreError> {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(name).arg(keys.len()).arg(keys).arg(args);
        match cmd.query_async(&mut self.conn()).await {
            Ok(v) => Ok(v),
            Err(e) if functions_missing(&e) => Err(self.functions_lost().await),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The Functions were gone: load them again, and fence the caller, since Redis has most
    /// likely lost its data with them (the dispatchers reconcile).
    async fn functions_lost(&self) -> StoreError {
        tracing::warn!("the dispatch Redis Functions are missing (Redis lost its data?): loading them again");
        match load_functions(&mut self.conn()).await {
            Ok(()) => {
                StoreError::Fenced("Redis had lost its Functions (and likely its data); they are loaded again".into())
            }
            Err(e) => StoreError::Unavailable(format!("loading the Redis Functions again failed: {e}")),
        }
    }

    /// `TIME` of the node holding this pool (pipelined behind a read of a pool key, which routes
    /// it there in a cluster).
    async fn redis_now(&self) -> Result<Millis, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TYPE").arg(&self.keys.epoch).ignore().cmd("TIME");
        let sent = local_ms();
        let (time,): (Value,) = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        self.time.record(time, sent)
    }

    async fn records<T: serde::de::DeserializeOwned>(
        &self,
        keys: Vec<String>,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1_000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(k);
            }
            let raw: Vec<Option<String>> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
            for r in raw {
                if let Some(v) = decode::<T>(what, r)? {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for RedisStore {
    /// Redis's clock: estimated from the last `TIME` sample when it is under a second old (every
    /// transition's read takes one), otherwise asked for.
    async fn now(&self) -> Result<Millis, StoreError> {
        match &self.clock {
            Some(c) => Ok(c.now()),
            None => match self.time.estimate() {
                Some(t) => Ok(t),
                None => self.redis_now().await,
            },
        }
    }

    /// One round trip: the records asked for and `TIME`.
    async fn read(&self, case: Option<&CaseId>, agent: Option<&AgentId>) -> Result<Read, StoreError> {
        let mut pipe = redis::pipe();
        if let Some(c) = case {
            pipe.get(self.keys.case(c.as_str()));
        }
        if let Some(a) = agent {
            pipe.get(self.keys.agent(a.as_str()));
        }
        if self.clock.is_none() {
            pipe.cmd("TIME");
        }
        let sent = local_ms();
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        replies.reverse();
        let mut next = || replies.pop().unwrap_or(Value::Nil);
        let raw = |v: Value| redis::from_redis_value::<Option<String>>(v).map_err(|e| corrupt("reply", e));
        let case = if case.is_some() { decode("case", raw(next())?)? } else { None };
        let agent = if agent.is_some() { decode("agent", raw(next())?)? } else { None };
        let now = match &self.clock {
            Some(c) => c.now(),
            None => self.time.record(next(), sent)?,
        };
        Ok(Read { case, agent, now })
    }

    /// A write's checks without its writes (`dispatch_probe`): the Functions are there (loaded
    /// again if not, and fenced), the epoch holds, and Redis takes writes (not out of memory).
    async fn ping(&self) -> Result<(), StoreError> {
        let now = self.now().await?.to_string();
        let args = [self.epoch(), now, self.member.clone(), self.member_ttl_ms.to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.fcall("dispatch_probe", &[&self.keys.epoch, &self.keys.members], &args).await?;
        let members: Vec<String> = redis::from_redis_value(v).map_err(|e| corrupt("probe reply", e))?;
        *self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = members;
        Ok(())
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<Agent>, StoreError> {
        let raw: Option<String> = self.conn().get(self.keys.agent(id.as_str())).await.map_err(unavailable)?;
        decode("agent", raw)
    }

    async fn list_agents(&self, after: Option<&AgentId>, limit: usize) -> Result<Vec<Agent>, StoreError> {
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&self.keys.agents)
            .arg(min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        self.records(ids.iter().map(|id| self.keys.agent(id)).collect(), "agent").await
    }

    async fn remove_agent(&self, id: &AgentId, version: u64) -> Result<(), StoreError> {
        let key = self.keys.agent(id.as_str());
        let v = self
            .fcall(
                "dispatch_remove_agent",
                &[&key, &self.keys.agents, &self.keys.log, &self.keys.epoch, &self.keys.seq],
                &[
                    &version.to_string(),
                    id.as_str(),
                    &self.max_len.to_string(),
                    &self.epoch(),
                    &self.now().await?.to_string(),
                ],
            )
            .await?;
        match v {
            Value::Int(1) => Ok(()),
            _ => Err(StoreError::Conflict(format!("agent {id}: version moved"))),
        }
    }

    async fn get_case(&self, id: &CaseId) -> Result<Option<Case>, StoreError> {
        let raw: Option<String> = self.conn().get(self.keys.case(id.as_str())).await.map_err(unavailable)?;
        decode("case", raw)
    }

    async fn offer_case(&self, offer: &OfferId) -> Result<Option<CaseId>, StoreError> {
        let raw: Option<String> = self.conn().hget(&self.keys.offers, offer.as_str()).await.map_err(unavailable)?;
        raw.map(|s| CaseId::parse_qualified("offer case", &s).map_err(|e| corrupt("offer index", e))).transpose()
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        let Commit { case, agent, timers, disarm, counters, segment } = commit;
        // The store sets the version (the one place that does): above the one read, in this
        // handle's epoch (see `next_version`). `exp` is the version read.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let case_read = case.as_ref().map_or(0, |c| c.version);
        let agent_read = agent.as_ref().map_or(0, |a| a.version);
        let case = case.map(|mut c| {
            c.version = next_version(c.version, epoch);
            c
        });
        let agent = agent.map(|mut a| {
            a.version = next_version(a.version, epoch);
            a
        });
        let meta = CommitMeta {
            c: case.as_ref().map(|c| {
                let live_offer = match &c.state {
                    CaseState::Offered { offer_id, .. } => vec![offer_id.as_str()],
                    _ => Vec::new(),
                };
                RecordMeta::case(c, live_offer).over(case_read)
            }),
            a: agent.as_ref().map(|a| RecordMeta::agent(a).over(agent_read)),
            t: timers_meta(&timers),
            x: disarm.iter().map(timer_member).collect(),
            n: counters.iter().map(|(c, d)| (counter_name(*c), d.to_string())).collect(),
            max: self.max_len.to_string(),
            g: segment.as_ref().map(|g| {
                g.counts.iter().map(|(c, d)| (format!("{}|{}", g.segment, c.name()), d.to_string())).collect()
            }),
            gx: segment
                .as_ref()
                .map(|_| (dispatch_domain::demand::RETENTION_MS + dispatch_domain::demand::BUCKET_MS).to_string()),
        };
        let meta = serde_json::to_string(&meta).map_err(|e| corrupt("commit meta", e))?;
        let segment_key = self.keys.segments(segment.as_ref().map_or(0, |g| g.bucket));
        let case_json =
            case.as_ref().map(serde_json::to_string).transpose().map_err(|e| corrupt("case", e))?.unwrap_or_default();
        let agent_json =
            agent.as_ref().map(serde_json::to_string).transpose().map_err(|e| corrupt("agent", e))?.unwrap_or_default();
        let case_key = self.keys.case(case.as_ref().map_or("", |c| c.id().as_str()));
        let agent_key = self.keys.agent(agent.as_ref().map_or("", |a| a.id().as_str()));
        let keys = [
            case_key.as_str(),
            agent_key.as_str(),
            &self.keys.agents,
            &self.keys.live,
            &self.keys.offers,
            &self.keys.timers,
            &self.keys.counters,
            &self.keys.log,
            &self.keys.epoch,
            &self.keys.seq,
            &segment_key,
        ];
        let now = self.now().await?.to_string();
        let v = self.fcall("dispatch_commit", &keys, &[&meta, &case_json, &agent_json, &self.epoch(), &now]).await?;
        match v {
            Value::Array(items) if items.first() == Some(&Value::Int(1)) => {
                let int = |v: &Value| redis::from_redis_value::<i64>(v.clone()).map_err(|e| corrupt("commit reply", e));
                let seq = items.get(1).map(int).transpose()?.unwrap_or(0);
                let mut totals = Vec::new();
                for pair in items.get(2..).unwrap_or_default().chunks(2) {
                    if let [name, total] = pair {
                        let name: String = redis::from_redis_value(name.clone()).map_err(|e| corrupt("counter", e))?;
                        if let Some(c) = counter_named(&name) {
                            totals.push((c, int(total)?));
                        }
                    }
                }
                Ok(Committed { case, agent, seq: u64::try_from(seq).unwrap_or(0), counters: totals })
            }
            Value::Array(items) => {
                let which = match items.get(1) {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => "record".to_owned(),
                };
                Err(StoreError::Conflict(format!("{which} version moved")))
            }
            other => Err(corrupt("commit reply", format!("{other:?}"))),
        }
    }

    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<(TimerKey, Millis)>, StoreError> {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys.timers)
            .arg("-inf")
            .arg(now)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(raw.into_iter().filter_map(|(m, due)| parse_timer(&m).map(|k| (k, due as Millis))).collect())
    }

    async fn clear_timer(&self, key: &TimerKey, due: Millis) -> Result<(), StoreError> {
        self.fcall(
            "dispatch_clear_timer",
            &[&self.keys.timers, &self.keys.epoch],
            &[&timer_member(key), &due.to_string(), &self.epoch(), &self.now().await?.to_string()],
        )
        .await?;
        Ok(())
    }

    async fn counters(&self) -> Result<Vec<(Counter, i64)>, StoreError> {
        let raw: HashMap<String, i64> = self.conn().hgetall(&self.keys.counters).await.map_err(unavailable)?;
        Ok(Counter::ALL.iter().filter_map(|c| raw.get(counter_name(*c)).map(|v| (*c, *v))).collect())
    }

    async fn get_state(&self, name: &str) -> Result<Option<(u64, String)>, StoreError> {
        let raw: Option<String> = self.conn().get(self.keys.state(name)).await.map_err(unavailable)?;
        raw.map(|r| {
            let (v, body) = r.split_once(':').ok_or_else(|| corrupt("state", "no version"))?;
            let v = v.parse::<u64>().map_err(|e| corrupt("state version", e))?;
            Ok((v, body.to_owned()))
        })
        .transpose()
    }

    async fn put_state(&self, name: &str, expected: u64, body: &str) -> Result<bool, StoreError> {
        let key = self.keys.state(name);
        let now = self.now().await?.to_string();
        let v = self
            .fcall("dispatch_put_state", &[&key, &self.keys.epoch], &[&expected.to_string(), body, &self.epoch(), &now])
            .await?;
        Ok(matches!(v, Value::Int(1)))
    }

    async fn segment_counts(&self, since: Millis) -> Result<Vec<BucketCount>, StoreError> {
        use dispatch_domain::demand::{BUCKET_MS, RETENTION_MS, SegmentCounter, bucket_of};
        let now = self.now().await?;
        let first = bucket_of(since.max(now - RETENTION_MS));
        let buckets: Vec<Millis> = (0..).map(|i| first + i * BUCKET_MS).take_while(|b| *b <= now).collect();
        let mut pipe = redis::pipe();
        for b in &buckets {
            pipe.hgetall(self.keys.segments(*b));
        }
        let raw: Vec<HashMap<String, i64>> = pipe.query_async(&mut self.conn()).await.map_err(unavailable)?;
        let mut out = Vec::new();
        for (bucket, fields) in buckets.into_iter().zip(raw) {
            for (field, total) in fields {
                let Some((segment, counter)) = field.rsplit_once('|') else { continue };
                let Some(counter) = SegmentCounter::named(counter) else { continue };
                out.push(BucketCount { bucket, segment: segment.to_owned(), counter, total });
            }
        }
        Ok(out)
    }

    async fn log_weights(&self, change: &dispatch_domain::transparency::WeightChange) -> Result<bool, StoreError> {
        let json = serde_json::to_string(change).map_err(|e| corrupt("weight change", e))?;
        let keep = dispatch_domain::transparency::WEIGHT_LOG.to_string();
        let v = self.fcall("dispatch_log_weights", &[&self.keys.weights], &[&change.key(), &json, &keep]).await?;
        Ok(matches!(v, Value::Int(1)))
    }

    async fn weight_log(&self, limit: usize) -> Result<Vec<dispatch_domain::transparency::WeightChange>, StoreError> {
        let n = isize::try_from(limit).unwrap_or(isize::MAX).max(1);
        let raw: Vec<String> = self.conn().lrange(&self.keys.weights, -n, -1).await.map_err(unavailable)?;
        raw.iter()
            .rev()
            .map(|r| {
                let json = r.split_once('\t').map_or(r.as_str(), |(_, j)| j);
                serde_json::from_str(json).map_err(|e| corrupt("weight change", e))
            })
            .collect()
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let ids: Vec<String> = self.conn().zrange(&self.keys.agents, 0, -1).await.map_err(unavailable)?;
        let agents = self.records(ids.iter().map(|id| self.keys.agent(id)).collect(), "agent").await?;
        let live: Vec<String> = self.conn().smembers(&self.keys.live).await.map_err(unavailable)?;
        let cases: Vec<Case> = self.records(live.iter().map(|id| self.keys.case(id)).collect(), "case").await?;
        Ok(Snapshot { agents, live_cases: cases.into_iter().filter(|c| !c.state.is_terminal()).collect() })
    }

    async fn purge_case(&self, id: &CaseId) -> Result<(), StoreError> {
        let Some(case) = self.get_case(id).await? else { return Ok(()) };
        let offers: Vec<&str> = case.offers.iter().map(|o| o.id.as_str()).collect();
        let key = self.keys.case(id.as_str());
        self.fcall(
            "dispatch_purge_case",
            &[&key, &self.keys.live, &self.keys.offers, &self.keys.log, &self.keys.epoch, &self.keys.seq],
            &[
                id.as_str(),
                &serde_json::to_string(&offers).map_err(|e| corrupt("offers", e))?,
                &self.max_len.to_string(),
                &self.epoch(),
                &self.now().await?.to_string(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Joins with this handle's member id and the peers its last probe saw: a new epoch waits
    /// for them (see `dispatch.lua`).
    async fn join_epoch(&self, high_water: u64) -> Result<Epoch, StoreError> {
        let now = self.now().await?;
        let known = self.epoch.load(Ordering::SeqCst);
        let peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join(",");
        let keys = [self.keys.epoch.as_str(), self.keys.seq.as_str(), self.keys.members.as_str()];
        let args = [
            known.to_string(),
            now.to_string(),
            high_water.to_string(),
            self.member.clone(),
            self.rejoin_wait_ms.to_string(),
            self.member_ttl_ms.to_string(),
            peers,
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = self.fcall("dispatch_join_epoch", &keys, &args).await?;
        let (number, at, found, waiting): (u64, Millis, u64, u64) =
            redis::from_redis_value(v).map_err(|e| corrupt("epoch", e))?;
        self.epoch.store(number, Ordering::SeqCst);
        if waiting > 0 {
            info!(epoch = number, waiting, "joined a new epoch: writes wait for the other dispatchers to rejoin");
        }
        Ok(Epoch { number, began_after_restart_at: (at > 0).then_some(at), lost_after: (at > 0).then_some(found) })
    }

    /// Fenced if the store restarted or moved epoch; unavailable while the epoch still waits
    /// for dispatchers to rejoin (one of them may yet put back what a refusal rests on).
    async fn check_epoch(&self) -> Result<(), StoreError> {
        let now = self.now().await?;
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg("dispatch_epoch").arg(1).arg(&self.keys.epoch).arg(now);
        let status: (u64, u8, u64) = match cmd.query_async(&mut self.conn()).await {
            Ok(s) => s,
            Err(e) if functions_missing(&e) => return Err(self.functions_lost().await),
            Err(e) => return Err(unavailable(e)),
        };
        if self.is_fenced_by(status) {
            return Err(StoreError::Fenced(format!(
                "the store is at epoch {}, restarted: {}",
                status.0,
                status.1 == 1
            )));
        }
        if status.2 > 0 {
            return Err(StoreError::Unavailable(format!(
                "reconciling: waiting for {} dispatcher(s) to rejoin after the store changed",
                status.2
            )));
        }
        Ok(())
    }

    async fn restored(&self) -> Result<(), StoreError> {
        let args = [self.epoch(), self.member.clone()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.fcall("dispatch_checked_in", &[&self.keys.epoch], &args).await.map(drop)
    }

    async fn leave(&self) -> Result<(), StoreError> {
        self.fcall("dispatch_leave", &[&self.keys.members], &[&self.member]).await.map(drop)
    }

    async fn restore(&self, records: Vec<Restore>, marks: &Marks) -> Result<usize, StoreError> {
        let counters: Vec<(&str, String)> =
            marks.counters.iter().map(|(c, total)| (counter_name(*c), total.to_string())).collect();
        let counters = serde_json::to_string(&counters).map_err(|e| corrupt("counters", e))?;
        let closed: Vec<(&str, String)> = marks.closed.iter().map(|(id, v)| (id.as_str(), v.to_string())).collect();
        let closed = serde_json::to_string(&closed).map_err(|e| corrupt("closings", e))?;
        let mut written = 0;
        // At least one call, so that the marks are put back even with no record to restore.
        let chunks: Vec<&[Restore]> = if records.is_empty() { vec![&[]] } else { records.chunks(100).collect() };
        for chunk in chunks {
            let mut keys = vec![
                self.keys.epoch.clone(),
                self.keys.agents.clone(),
                self.keys.live.clone(),
                self.keys.offers.clone(),
                self.keys.timers.clone(),
                self.keys.log.clone(),
                self.keys.seq.clone(),
                self.keys.counters.clone(),
                self.keys.closed.clone(),
            ];
            let mut args = vec![
                self.epoch(),
                self.max_len.to_string(),
                marks.high_water.to_string(),
                counters.clone(),
                closed.clone(),
            ];
            for r in chunk {
                let (key, meta, body) = match r {
                    Restore::Case(c, t) => (
                        self.keys.case(c.id().as_str()),
                        RecordMeta {
                            t: timers_meta(t),
                            ..RecordMeta::case(c, c.offers.iter().map(|o| o.id.as_str()).collect())
                        },
                        serde_json::to_string(c).map_err(|e| corrupt("case", e))?,
                    ),
                    Restore::Agent(a, t) => (
                        self.keys.agent(a.id().as_str()),
                        RecordMeta { t: timers_meta(t), ..RecordMeta::agent(a) },
                        serde_json::to_string(a).map_err(|e| corrupt("agent", e))?,
                    ),
                };
                keys.push(key);
                args.push(serde_json::to_string(&meta).map_err(|e| corrupt("restore meta", e))?);
                args.push(body);
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let v = self.fcall("dispatch_restore", &keys, &args).await?;
            written += redis::from_redis_value::<usize>(v).map_err(|e| corrupt("restore reply", e))?;
        }
        Ok(written)
    }

    async fn change_cursor(&self) -> Result<String, StoreError> {
        let last: redis::streams::StreamRangeReply =
            self.conn().xrevrange_count(&self.keys.log, "+", "-", 1).await.map_err(unavailable)?;
        Ok(last.ids.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
    }

    async fn changes(&self, cursor: &str, limit: usize) -> Result<ChangeBatch, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE").arg(&self.keys.log).arg(format!("({cursor}")).arg("+").arg("COUNT").arg(limit);
        pipe.cmd("FCALL_RO").arg("dispatch_epoch").arg(1).arg(&self.keys.epoch);
        pipe.cmd("XINFO").arg("STREAM").arg(&self.keys.log);
        let result: Result<(redis::streams::StreamRangeReply, (u64, u8, u64), Value), _> =
            pipe.query_async(&mut self.conn()).await;
        let (range, epoch_status, info) = match result {
            Ok(r) => r,
            // The log or the Functions are gone (Redis lost its data): everything must be re-read.
            Err(e) if e.to_string().contains("no such key") || functions_missing(&e) => {
                if functions_missing(&e) {
                    let _ = self.functions_lost().await;
                }
                return Ok(ChangeBatch {
                    changes: Vec::new(),
                    cursor: cursor.to_owned(),
                    gap: true,
                    fenced: true,
                    ..ChangeBatch::default()
                });
            }
            Err(e) => return Err(unavailable(e)),
        };
        let fenced = self.is_fenced_by(epoch_status);
        let max_deleted = match &info {
            Value::Array(kv) | Value::Set(kv) => kv.chunks(2).find_map(|p| match p {
                [Value::BulkString(k), Value::BulkString(v)] if k.as_slice() == b"max-deleted-entry-id" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            Value::Map(kv) => kv.iter().find_map(|(k, v)| match (k, v) {
                (Value::BulkString(k), Value::BulkString(v)) if k.as_slice() == b"max-deleted-entry-id" => {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            _ => None,
        };
        let gap = max_deleted.is_some_and(|d| stream_id(&d) > stream_id(cursor));
        let mut out =
            ChangeBatch { changes: Vec::new(), cursor: cursor.to_owned(), gap, fenced, ..ChangeBatch::default() };
        for entry in range.ids {
            let field = |name: &str| match entry.map.get(name) {
                Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            };
            let version = field("v").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
            if let Some(seq) = field("s").and_then(|s| s.parse::<u64>().ok()) {
                out.high_water = out.high_water.max(seq);
            }
            match (field("k").as_deref(), field("id")) {
                (Some("a"), Some(id)) => {
                    let id = AgentId::parse("log", &id).map_err(|e| corrupt("change log", e))?;
                    out.changes.push(ChangeRef::Agent(id, version));
                }
                (Some("c"), Some(id)) => {
                    let id = CaseId::parse_qualified("log", &id).map_err(|e| corrupt("change log", e))?;
                    out.changes.push(ChangeRef::Case(id, version));
                }
                _ => {}
            }
            if out.oldest_at.is_none() {
                // A stream entry's id begins with the Redis time it was added at (ms).
                out.oldest_at = i64::try_from(stream_id(&entry.id).0).ok().filter(|ms| *ms > 0);
            }
            out.cursor = entry.id;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_members_round_trip() {
        let c = CaseId::parse("c", "tenant:case-1").unwrap();
        let a = AgentId::parse("a", "agent@x").unwrap();
        for k in [
            TimerKey::OfferDeadline(c.clone()),
            TimerKey::CaseReview(c.clone()),
            TimerKey::AgentReady(a.clone()),
            TimerKey::PresenceGrace(a.clone()),
            TimerKey::PresenceLease(a.clone()),
            TimerKey::InvitationExpiry(a),
            TimerKey::HandBack(c.clone()),
            TimerKey::Purge(c),
        ] {
            assert_eq!(parse_timer(&timer_member(&k)), Some(k));
        }
        assert_eq!(parse_timer("bogus:1"), None);
    }

    #[test]
    fn a_time_sample_stands_in_for_redis_time_for_a_second_only() {
        let t = TimeSample::default();
        assert_eq!(t.estimate(), None, "no sample yet");
        t.sample(5_000_000, local_ms());
        let e = t.estimate().expect("a fresh sample");
        assert!((5_000_000..5_000_050).contains(&e), "{e}");
        t.taken_at.store(local_ms() - TIME_SAMPLE_MS, Ordering::Relaxed);
        assert_eq!(t.estimate(), None, "a sample a second old is not used");
    }

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(stream_id("10-0") > stream_id("9-5"));
        assert!(stream_id("10-2") > stream_id("10-1"));
    }
}
