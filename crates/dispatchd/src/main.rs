//! `dispatchd`: the dispatch engine's server.
//!
//! `dispatchd` serves on 127.0.0.1:50051 with the embedded store and default rules;
//! `dispatchd --print-config` shows the effective configuration (defaults, file, environment,
//! flags) as TOML.

mod config;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use dispatch_engine::{Clock, Engine, MemoryStore, Store};
use dispatch_grpc::auth::Authenticator;
use dispatch_redis::RedisStore;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The dispatch engine for human support agents.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "DISPATCH_CONFIG")]
    config: Option<String>,
    /// Address to listen on (same as `--set listen=...`).
    #[arg(long)]
    listen: Option<String>,
    /// Keep the pool in Redis at this URL (same as `--set redis.url=...`; env `DISPATCH_REDIS_URL`).
    #[arg(long, env = "DISPATCH_REDIS_URL")]
    redis_url: Option<String>,
    /// Sets any configuration key, e.g. `--set policy.offer_timeout_ms=15000`; repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Development mode: plaintext and no authentication (agents name themselves with the
    /// `agent-id` metadata). Logged loudly; never for a reachable port.
    #[arg(long)]
    dev: bool,
    /// Prints the effective configuration and exits.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut overrides = args.set.clone();
    if let Some(l) = &args.listen {
        overrides.push(format!("listen=\"{l}\""));
    }
    if args.dev {
        overrides.push("server.plaintext=true".to_owned());
        overrides.push("auth.mode=\"dev\"".to_owned());
    }
    if let Some(u) = &args.redis_url {
        overrides.push(format!("redis.url=\"{u}\""));
    }
    let mut config = config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    if args.dev && config.server.web.listen.is_empty() {
        // The consoles, on a well-known address, if it is free.
        config.server.web.listen = dispatch_grpc::web::DEV_LISTEN.to_owned();
        config.server.web.best_effort = true;
    }
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // The OTLP exporter (tonic) needs the runtime: built inside it.
        let traces = init_logs(&config.log, &config.telemetry)?;
        let result = run(config).await;
        if let Some(provider) = traces {
            // Sends the spans still buffered.
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing traces failed: {e}");
            }
        }
        result
    })
}

/// Logs to standard output; with an OTLP endpoint also the spans (of calls, transitions and
/// offers) to it. Returns the tracer provider to flush at exit.
fn init_logs(
    log: &config::LogConfig,
    telemetry: &config::TelemetryConfig,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter).context("log.filter")?;
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = if log.format == "json" { fmt.json().boxed() } else { fmt.boxed() };
    let (traces, provider) = if telemetry.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let provider = tracer_provider(telemetry)?;
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "dispatchd");
        // Spans only (events stay in the logs), the dispatcher's own, down to DEBUG: the engine's
        // transition and offer spans are DEBUG so that without an exporter they cost nothing.
        let only_spans = tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() && m.target().starts_with("dispatch") && *m.level() <= tracing::Level::DEBUG
        });
        (Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(only_spans)), Some(provider))
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(traces).init();
    if provider.is_some() {
        info!(endpoint = %telemetry.otlp_endpoint, "exporting traces over OTLP");
    }
    Ok(provider)
}

fn tracer_provider(t: &config::TelemetryConfig) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&t.otlp_endpoint)
        .build()
        .context("telemetry.otlp_endpoint")?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(std::time::Duration::from_millis(t.export_interval_ms))
        .build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(t.sample_ratio))))
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(t.service_name.clone()).build())
        .build())
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    let clock = Clock::system();
    let (store, kind): (Arc<dyn Store>, &str) = if config.redis.url.is_empty() && config.redis.cluster_nodes.is_empty()
    {
        (Arc::new(MemoryStore::new(clock.clone())), "memory")
    } else {
        (Arc::new(RedisStore::open(&config.redis, None).await?), "redis")
    };
    let engine = Engine::start(store, clock, config.policy.clone(), config.engine.clone()).await?;
    let listener = TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    info!(listen = %listener.local_addr()?, store = kind, "dispatchd ready");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let auth = Arc::new(Authenticator::from_config(&config.auth).map_err(|e| anyhow::anyhow!(e))?);
    if auth.is_dev() || config.server.plaintext {
        warn!(
            "DEVELOPMENT MODE: plaintext={} authentication={}",
            config.server.plaintext,
            if auth.is_dev() { "off" } else { "jwt" }
        );
    }
    let drain_bound = std::time::Duration::from_millis(config.server.shutdown_grace_ms.saturating_mul(2));
    let server_config =
        dispatch_grpc::ServerConfig { traces: !config.telemetry.otlp_endpoint.is_empty(), ..config.server.clone() };
    let server = dispatch_grpc::serve(listener, engine, server_config, auth, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|e| anyhow::anyhow!(e))?,
        () = shutdown_signal() => {
            let _ = stop_tx.send(());
                        // Offers handed back and streams ended by the server; this bounds the drain regardless.
            match tokio::time::timeout(drain_bound, server).await {
                Ok(r) => r.map_err(|e| anyhow::anyhow!(e))?,
                Err(_) => tracing::warn!(?drain_bound, "drain took too long; exiting"),
            }
        }
    }
    info!("dispatchd stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    info!("shutdown signal received");
}
