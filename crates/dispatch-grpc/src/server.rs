//! Assembles the gRPC server: the four services with explicit limits, the identity
//! interceptor on the agent stream, `grpc.health.v1` and server reflection. The caller owns the
//! listener (so tests bind `127.0.0.1:0`) and the shutdown future.

use std::future::Future;
use std::time::Duration;

use dispatch_engine::Engine;
use dispatch_proto::v1::agent_service_server::AgentServiceServer;
use dispatch_proto::v1::escalation_service_server::EscalationServiceServer;
use dispatch_proto::v1::planner_service_server::PlannerServiceServer;
use dispatch_proto::v1::roster_service_server::RosterServiceServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use crate::identity;
use crate::services::{EdgeConfig, Services};

/// Transport limits and timeouts. tonic's defaults are open-ended; every one is set here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval_ms: u64,
    /// Close a connection whose keepalive ping is not answered within this time.
    pub keepalive_timeout_ms: u64,
    /// Disconnect an agent device that sends nothing (not even a heartbeat) for this long.
    pub heartbeat_timeout_ms: u64,
    /// Buffer of events per watch stream.
    pub watch_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_concurrent_streams: 256,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            heartbeat_timeout_ms: 45_000,
            watch_buffer: 64,
        }
    }
}

/// Serves until `shutdown` resolves: then health goes NOT_SERVING, long-lived streams end (agents
/// are told by the stream's end to reconnect), the engine's background work stops, and the
/// server drains.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_all(&health, ServingStatus::Serving).await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dispatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");

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
    };
    let services = Services::new(engine.clone(), edge, stop_rx);
    let max = config.max_message_bytes;

    let agent = InterceptedService::new(
        AgentServiceServer::new(services.clone()).max_decoding_message_size(max),
        identity::agent_identity,
    );
    let escalation = EscalationServiceServer::new(services.clone()).max_decoding_message_size(max);
    let roster = RosterServiceServer::new(services.clone()).max_decoding_message_size(max);
    let planner = PlannerServiceServer::new(services).max_decoding_message_size(max);

    let addr = listener.local_addr().ok();
    info!(?addr, "serving dispatch.v1");
    let drain = async move {
        shutdown.await;
        info!("shutting down: health NOT_SERVING, ending streams");
        stop_tx.send_replace(true);
        set_all(&health, ServingStatus::NotServing).await;
        engine.stop();
    };
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_millis(config.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(agent)
        .add_service(escalation)
        .add_service(roster)
        .add_service(planner)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
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
    ] {
        health.set_service_status(name, status).await;
    }
}
