//! Layered configuration: defaults → TOML file → `DISPATCH__SECTION__KEY` environment variables
//! → command-line flags → validation. Layers are merged as TOML tables, so every key can be
//! set at every layer with the same name; the environment is passed in as a list so tests never
//! touch the process environment.

use anyhow::{Context, bail};
use dispatch_domain::Policy;
use dispatch_engine::EngineConfig;
use dispatch_grpc::ServerConfig;
use dispatch_grpc::auth::AuthConfig;
use dispatch_redis::RedisConfig;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Prefix of environment variables; `__` separates sections (`DISPATCH__POLICY__OFFER_TIMEOUT_MS`).
pub const ENV_PREFIX: &str = "DISPATCH__";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to serve gRPC on.
    pub listen: String,
    /// Logging.
    pub log: LogConfig,
    /// Transport limits.
    pub server: ServerConfig,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Dispatch rules.
    pub policy: Policy,
    /// The Redis store; with an empty `url` the embedded in-memory store is used.
    pub redis: RedisConfig,
    /// Authentication: bearer JWTs, or the development mode.
    pub auth: AuthConfig,
    /// Trace export (OpenTelemetry).
    pub telemetry: TelemetryConfig,
}

/// Trace export: off unless an OTLP endpoint is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP over gRPC, e.g. `http://otel-collector:4317`; empty: no traces (and no cost).
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces kept when the caller did not decide (a caller's sampled `traceparent`
    /// is always followed), 0.0 to 1.0.
    pub sample_ratio: f64,
    /// How often finished spans are sent.
    pub export_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "dispatchd".to_owned(),
            sample_ratio: 1.0,
            export_interval_ms: 5_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".to_owned(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            engine: EngineConfig::default(),
            policy: Policy::default(),
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `dispatch_engine=debug,info`.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".to_owned(), format: "text".to_owned() }
    }
}

/// Parses a value given as text (env or flag): a TOML value when it is one (`20`, `true`,
/// `[1, 2]`), else a string.
fn scalar(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn set_path(table: &mut Table, path: &[&str], value: Value) -> anyhow::Result<()> {
    let (last, parents) = path.split_last().context("empty key")?;
    let mut t = table;
    for p in parents {
        t = t
            .entry((*p).to_owned())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .with_context(|| format!("{p} is not a section"))?;
    }
    t.insert((*last).to_owned(), value);
    Ok(())
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Builds the configuration from its layers. `overrides` are `section.key=value` pairs from
/// flags, applied last.
pub fn load(
    file: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[String],
) -> anyhow::Result<Config> {
    let mut table = Table::try_from(Config::default()).context("serialising defaults")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {path}"))?;
        let t: Table = toml::from_str(&text).with_context(|| format!("parsing config file {path}"))?;
        merge(&mut table, t);
    }
    let mut env_table = Table::new();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix(ENV_PREFIX) {
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            set_path(&mut env_table, &path, scalar(&v)).with_context(|| format!("environment variable {k}"))?;
        }
    }
    merge(&mut table, env_table);
    let mut flag_table = Table::new();
    for o in overrides {
        let Some((k, v)) = o.split_once('=') else { bail!("--set {o}: expected section.key=value") };
        let path: Vec<&str> = k.trim().split('.').collect();
        set_path(&mut flag_table, &path, scalar(v.trim())).with_context(|| format!("--set {o}"))?;
    }
    merge(&mut table, flag_table);
    let config: Config = Value::Table(table).try_into().context("invalid configuration")?;
    config.validate()?;
    Ok(config)
}

impl Config {
    /// Checks values that types do not.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.policy.validate()?;
        self.listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("listen: {:?} is not host:port", self.listen))?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!("log.format: must be text or json");
        }
        let s = &self.server;
        for (k, v) in [
            ("agent", s.agent_max_message_bytes),
            ("escalation", s.escalation_max_message_bytes),
            ("roster", s.roster_max_message_bytes),
            ("planner", s.planner_max_message_bytes),
        ] {
            if !(1024..=16 * 1024 * 1024).contains(&v) {
                bail!("server.{k}_max_message_bytes: must be 1024 to 16777216");
            }
        }

        self.engine.validate().map_err(|e| anyhow::anyhow!(e))?;
        if self.server.watch_buffer == 0 {
            bail!("server.watch_buffer: must be above 0");
        }
        let redis_url = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        if !self.redis.url.is_empty() && !redis_url(&self.redis.url) {
            bail!("redis.url: {:?} is not a redis:// or rediss:// URL", self.redis.url);
        }
        if let Some((i, n)) = self.redis.cluster_nodes.iter().enumerate().find(|(_, n)| !redis_url(n)) {
            bail!("redis.cluster_nodes[{i}]: {n:?} is not a redis:// or rediss:// URL");
        }
        if self.redis.pool.is_empty() || self.redis.pool.contains(['{', '}']) {
            bail!("redis.pool: must be non-empty and free of braces (it is the keys' hash tag)");
        }
        if self.redis.member_ttl_ms < 2 * self.engine.health_interval_ms {
            bail!(
                "redis.member_ttl_ms: must be at least twice engine.health_interval_ms (each probe renews \
                 a dispatcher's membership)"
            );
        }
        let t = &self.telemetry;
        let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !(t.otlp_endpoint.is_empty() || url(&t.otlp_endpoint)) {
            bail!("telemetry.otlp_endpoint: {:?} is not an http:// or https:// URL", t.otlp_endpoint);
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            bail!("telemetry.sample_ratio: must be 0.0 to 1.0");
        }
        if t.export_interval_ms == 0 {
            bail!("telemetry.export_interval_ms: must be above 0");
        }
        if self.redis.rejoin_wait_ms == 0 {
            bail!("redis.rejoin_wait_ms: must be above 0");
        }
        if !self.server.plaintext && (self.server.tls.cert.is_empty() || self.server.tls.key.is_empty()) {
            bail!(
                "server.tls.cert and server.tls.key are required: the dispatcher serves TLS only \
                 (deploy/dev-certs.sh makes development certificates), or run `dispatchd --dev` \
                 for the plaintext, unauthenticated development mode"
            );
        }
        if self.server.tls.handshake_timeout_ms == 0 || self.server.max_requests_per_connection == 0 {
            bail!("server.tls.handshake_timeout_ms and server.max_requests_per_connection must be above 0");
        }
        if self.server.heartbeat_timeout_ms < 1000 {
            bail!("server.heartbeat_timeout_ms: must be at least 1000");
        }
        dispatch_grpc::auth::Authenticator::from_config(&self.auth).map_err(|e| anyhow::anyhow!(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--dev` sets.
    const DEV: [&str; 2] = ["server.plaintext=true", "auth.mode=\"dev\""];

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("dispatchd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:6000\"\n[policy]\noffer_timeout_ms = 15000\nmax_consecutive_misses = 5\n",
        )
        .unwrap();
        let env = vec![
            ("DISPATCH__POLICY__OFFER_TIMEOUT_MS".to_owned(), "12000".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let c = load(
            Some(file.to_str().unwrap()),
            env,
            &["policy.max_consecutive_misses=4".to_owned(), DEV[0].to_owned(), DEV[1].to_owned()],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000");
        assert_eq!(c.policy.offer_timeout_ms, 12000);
        assert_eq!(c.policy.max_consecutive_misses, 4);
        assert_eq!(c.policy.presence_grace_ms, Policy::default().presence_grace_ms);
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let e = load(None, vec![], &["policy.offer_timeout_ms=5".to_owned(), DEV[0].to_owned(), DEV[1].to_owned()])
            .unwrap_err();
        assert!(format!("{e:#}").contains("offer_timeout_ms"), "{e:#}");
        let e = load(None, vec![], &["policy.no_such_key=1".to_owned()]).unwrap_err();
        assert!(format!("{e:#}").contains("no_such_key"), "{e:#}");
        let e = load(None, vec![("DISPATCH__LISTEN".to_owned(), "nowhere".to_owned())], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("listen"), "{e:#}");
        let e = load(None, vec![], &[]).unwrap_err();
        assert!(format!("{e:#}").contains("server.tls.cert"), "secure by default: {e:#}");
        let e = load(None, vec![], &["server.plaintext=true".to_owned()]).unwrap_err();
        assert!(format!("{e:#}").contains("auth.keys"), "tokens are required: {e:#}");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/dispatchd.toml");
        let c = load(Some(path), vec![], &[DEV[0].to_owned(), DEV[1].to_owned()]).unwrap();
        assert_eq!(c.log.format, "json");
        assert_eq!(c.policy.relaxation.len(), 3);
        assert_eq!(c.policy.offer_timeout(dispatch_domain::Channel::Voice, dispatch_domain::Tier::Vip), 15_000);
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
    }
}
