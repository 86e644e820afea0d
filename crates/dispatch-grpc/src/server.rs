//! Assembles the gRPC server: TLS (optionally mutual), the authorisation layer on every call,
//! the four services with explicit limits, `grpc.health.v1` and server reflection. The caller
//! owns the listener (tests bind `127.0.0.1:0`) and the shutdown future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatch_engine::Engine;
use dispatch_proto::v1::agent_service_server::AgentServiceServer;
use dispatch_proto::v1::escalation_service_server::EscalationServiceServer;
use dispatch_proto::v1::notifier_service_server::NotifierServiceServer;
use dispatch_proto::v1::planner_service_server::PlannerServiceServer;
use dispatch_proto::v1::roster_service_server::RosterServiceServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::auth::{AuthLayer, Authenticator};
use crate::edge::EdgeLayer;
use crate::services::{EdgeConfig, Services};

/// Transport limits and timeouts. tonic's defaults are open-ended; every one is set here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest message on an agent stream, in bytes.
    pub agent_max_message_bytes: usize,
    /// Largest `EscalationService` request (a case with its summary), in bytes.
    pub escalation_max_message_bytes: usize,
    /// Largest `RosterService` request, in bytes.
    pub roster_max_message_bytes: usize,
    /// Largest `PlannerService` request, in bytes.
    pub planner_max_message_bytes: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// A span per call, continuing the caller's trace: set by the binary when traces are
    /// exported (`[telemetry]`), not configured here.
    #[serde(skip)]
    pub traces: bool,
    /// Most requests in progress per connection; more are refused at once with
    /// RESOURCE_EXHAUSTED (load shedding, no queueing).
    pub max_requests_per_connection: usize,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval_ms: u64,
    /// Close a connection whose keepalive ping is not answered within this time.
    pub keepalive_timeout_ms: u64,
    /// Disconnect an agent device that sends nothing (not even a heartbeat) for this long.
    pub heartbeat_timeout_ms: u64,
    /// Buffer of events per watch stream.
    pub watch_buffer: usize,
    /// Case watches one connection may hold open at once; more are RESOURCE_EXHAUSTED (the
    /// process-wide bound is `engine.max_watches`).
    pub max_watches_per_connection: usize,
    /// On shutdown, how long handing offers back may take before the rest is left to the
    /// presence lease; the process exits within about twice this.
    pub shutdown_grace_ms: u64,
    /// Serve without TLS. Development only: `dispatchd --dev` sets it and logs a warning.
    pub plaintext: bool,
    /// A second, plaintext listener serving only `grpc.health.v1` (for Kubernetes gRPC probes,
    /// which cannot speak TLS), e.g. `0.0.0.0:8081`; empty: none. It reveals nothing but
    /// SERVING / NOT_SERVING.
    pub health_listen: String,
    /// TLS.
    pub tls: TlsConfig,
    /// The browser listener: consoles and gRPC-Web.
    pub web: crate::web::WebConfig,
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert: String,
    /// PEM private key of the server.
    pub key: String,
    /// PEM CA bundle for client certificates (mutual TLS for service clients); empty: none.
    pub client_ca: String,
    /// With `client_ca`: refuse clients without a certificate (otherwise it is optional, so
    /// agent apps can connect with a token alone).
    pub require_client_cert: bool,
    /// A connection that has not finished the TLS handshake by then is closed.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: String::new(),
            key: String::new(),
            client_ca: String::new(),
            require_client_cert: false,
            handshake_timeout_ms: 5_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            agent_max_message_bytes: 16 * 1024,
            escalation_max_message_bytes: 64 * 1024,
            roster_max_message_bytes: 64 * 1024,
            planner_max_message_bytes: 16 * 1024,
            max_concurrent_streams: 128,
            max_requests_per_connection: 64,
            traces: false,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            heartbeat_timeout_ms: 45_000,
            watch_buffer: 64,
            max_watches_per_connection: 256,
            shutdown_grace_ms: 5_000,
            plaintext: false,
            health_listen: String::new(),
            tls: TlsConfig::default(),
            web: crate::web::WebConfig::default(),
        }
    }
}

/// Why the server could not start or stopped.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

fn tls_config(c: &TlsConfig) -> Result<ServerTlsConfig, ServeError> {
    if c.cert.is_empty() || c.key.is_empty() {
        return Err(
            "server.tls.cert and server.tls.key are required (or run in development mode, plaintext, with --dev)"
                .into(),
        );
    }
    let read = |what: &str, p: &str| std::fs::read(p).map_err(|e| format!("server.tls.{what}: reading {p}: {e}"));
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("cert", &c.cert)?, read("key", &c.key)?))
        .timeout(Duration::from_millis(c.handshake_timeout_ms));
    if !c.client_ca.is_empty() {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("client_ca", &c.client_ca)?))
            .client_auth_optional(!c.require_client_cert);
    }
    Ok(tls)
}

/// Serves until `shutdown` resolves: then health goes NOT_SERVING, long-lived streams end (agents
/// are told by the stream's end to reconnect), the engine's background work stops, and the
/// server drains.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: ServerConfig,
    auth: Arc<Authenticator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut builder = Server::builder();
    if config.plaintext {
        warn!("serving WITHOUT TLS (development mode): do not expose this port");
    } else {
        builder = builder.tls_config(tls_config(&config.tls)?)?;
    }
    if auth.is_dev() {
        warn!("authentication is OFF (development mode): every caller may do everything");
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, ServingStatus::Serving).await;

    // Both reflection versions: grpcurl and current tools speak v1; Python's grpcio-reflection,
    // older grpcurl, Postman and Evans only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dispatch_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection = reflection().build_v1()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    // Health follows the store: NOT_SERVING while it does not answer, SERVING when it is back.
    let mut store_health = engine.health();
    let mut stopping = stop_rx.clone();
    let reporter = health.clone();
    tokio::spawn(async move {
        loop {
            let ok = *store_health.borrow_and_update();
            set_all(&reporter, if ok { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
            tokio::select! {
                r = store_health.changed() => if r.is_err() { return },
                _ = stopping.changed() => return,
            }
        }
    });
    let edge = EdgeConfig {
        heartbeat_timeout: Duration::from_millis(config.heartbeat_timeout_ms),
        watch_buffer: config.watch_buffer,
        max_watches_per_connection: config.max_watches_per_connection,
        max_stream_age: auth.max_stream_age_s().map(Duration::from_secs),
    };
    let engine_metrics = engine.metrics().clone();
    let services = Services::new(engine.clone(), edge, stop_rx.clone());
    let agent = AgentServiceServer::new(services.clone())
        .max_decoding_message_size(config.agent_max_message_bytes)
        .max_encoding_message_size(256 * 1024);
    let escalation = EscalationServiceServer::new(services.clone())
        .max_decoding_message_size(config.escalation_max_message_bytes)
        .max_encoding_message_size(4 * 1024 * 1024);
    let roster = RosterServiceServer::new(services.clone())
        .max_decoding_message_size(config.roster_max_message_bytes)
        .max_encoding_message_size(16 * 1024 * 1024);
    let notifier = NotifierServiceServer::new(services.clone()).max_decoding_message_size(64 * 1024);
    let planner = PlannerServiceServer::new(services)
        .max_decoding_message_size(config.planner_max_message_bytes)
        .max_encoding_message_size(4 * 1024 * 1024);

    let probe = if config.health_listen.is_empty() {
        None
    } else {
        let l = TcpListener::bind(&config.health_listen).await?;
        info!(addr = ?l.local_addr().ok(), "serving grpc.health.v1 and /metrics (plaintext) for probes and scrapes");
        Some(tokio::spawn(operations(l, health_service.clone(), engine.clone())))
    };
    let edge_layer = EdgeLayer::new(config.max_requests_per_connection, engine_metrics.registry(), config.traces);
    let cors = config.web.cors()?;
    let web_listener = if config.web.listen.is_empty() {
        None
    } else {
        match TcpListener::bind(&config.web.listen).await {
            Ok(l) => Some(l),
            Err(e) if config.web.best_effort => {
                warn!(addr = %config.web.listen, error = %e, "the consoles are not served (set server.web.listen to another address)");
                None
            }
            Err(e) => return Err(format!("server.web.listen: binding {}: {e}", config.web.listen).into()),
        }
    };
    let web = if let Some(l) = web_listener {
        info!(addr = ?l.local_addr().ok(), tls = !config.plaintext, "serving the consoles (/agent/, /planner/) and dispatch.v1 over gRPC-Web");
        let mut b = Server::builder().accept_http1(true);
        if !config.plaintext {
            b = b.tls_config(tls_config(&config.tls)?)?;
        }
        let mut stopping = stop_rx.clone();
        let served = b
            .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
            .max_concurrent_streams(Some(config.max_concurrent_streams))
            .layer(cors)
            .layer(crate::web::PagesLayer)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(edge_layer.clone())
            .layer(AuthLayer::new(Arc::clone(&auth)))
            .add_service(agent.clone())
            .add_service(escalation.clone())
            .add_service(roster.clone())
            .add_service(planner.clone())
            .add_service(notifier.clone())
            .serve_with_incoming_shutdown(TcpIncoming::from(l).with_nodelay(Some(true)), async move {
                let _ = stopping.wait_for(|s| *s).await;
            });
        Some(tokio::spawn(served))
    } else {
        None
    };
    let addr = listener.local_addr().ok();
    info!(?addr, tls = !config.plaintext, "serving dispatch.v1");
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let drain = async move {
        shutdown.await;
        info!("shutting down: health NOT_SERVING, handing offers back, ending streams");
        set_all(&health, ServingStatus::NotServing).await;
        // Agents first (told to reconnect, offers handed back), then every other stream.
        engine.shutdown(grace).await;
        stop_tx.send_replace(true);
    };
    builder
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .tcp_nodelay(true)
        .layer(edge_layer)
        .layer(AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(agent)
        .add_service(escalation)
        .add_service(roster)
        .add_service(planner)
        .add_service(notifier)
        // TCP_NODELAY on every accepted socket: without it small replies wait for delayed ACKs
        // (40 ms stalls); `Server::tcp_nodelay` does not reach sockets of a caller's listener.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), drain)
        .await?;
    if let Some(p) = probe {
        p.abort();
    }
    if let Some(w) = web {
        // Its streams ended with the others; what is left is closing its connections.
        if let Ok(Ok(Err(e))) = tokio::time::timeout(grace, w).await {
            warn!(error = %e, "the browser listener stopped with an error");
        }
    }
    Ok(())
}

/// The operations port (plaintext): `grpc.health.v1` over HTTP/2 for probes, and `GET /metrics`
/// (Prometheus text format) over HTTP/1.1 or HTTP/2 for scrapes.
async fn operations(
    listener: TcpListener,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    engine: Engine,
) -> Result<(), tonic::transport::Error> {
    let metrics = axum::routing::get(move || {
        let engine = engine.clone();
        async move { ([(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], engine.metrics_text().await) }
    });
    let routes = tonic::service::Routes::new(health).into_axum_router().route("/metrics", metrics);
    Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
}

/// Sets the overall status and every service's.
async fn set_all(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for name in [
        "",
        <AgentServiceServer<Services> as tonic::server::NamedService>::NAME,
        <EscalationServiceServer<Services> as tonic::server::NamedService>::NAME,
        <RosterServiceServer<Services> as tonic::server::NamedService>::NAME,
        <PlannerServiceServer<Services> as tonic::server::NamedService>::NAME,
        <NotifierServiceServer<Services> as tonic::server::NamedService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}
