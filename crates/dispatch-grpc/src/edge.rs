//! The outermost layer of every call: the per-connection request limit (load shedding:
//! RESOURCE_EXHAUSTED with `RetryInfo`, never a queue), the RPC metrics (calls by method and
//! status code, with their latency until the response began) and, when traces are exported, a
//! span per call that continues the caller's trace (W3C `traceparent` in the metadata).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use dashmap::DashMap;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramVec, IntCounter};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::auth::served_methods;

/// See the module docs.
#[derive(Clone)]
pub struct EdgeLayer {
    state: Arc<EdgeState>,
}

struct EdgeState {
    traced: bool,
    max_in_flight: usize,
    /// Calls in flight per connection (sharded: every call takes and gives back a slot).
    in_flight: DashMap<SocketAddr, usize>,
    calls: HistogramVec,
    shed: IntCounter,
}

impl EdgeLayer {
    /// At most `max_in_flight` calls at once per connection; metrics into `registry`; with
    /// `traced` a span per call (only when traces are exported: otherwise none is created).
    pub fn new(max_in_flight: usize, registry: &prometheus::Registry, traced: bool) -> Self {
        let calls = dispatch_engine::metrics::rpc_histogram(registry);
        let shed = dispatch_engine::metrics::shed_counter(registry);
        Self { state: Arc::new(EdgeState { traced, max_in_flight, in_flight: DashMap::new(), calls, shed }) }
    }
}

/// Reads propagation fields (`traceparent`, `tracestate`) from request metadata.
struct Metadata<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one call, a child of the caller's span when the metadata names one.
fn call_span(method: &str, headers: &http::HeaderMap) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let (service, name) = method.trim_start_matches('/').split_once('/').unwrap_or(("unknown", method));
    let span = tracing::info_span!(
        "grpc",
        otel.name = %method.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %name,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Metadata(headers)));
    let _ = span.set_parent(parent);
    span
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService { inner, state: Arc::clone(&self.state) }
    }
}

/// See [`EdgeLayer`].
#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    state: Arc<EdgeState>,
}

/// One call counted against its connection until its response begins (or it is dropped).
struct Slot {
    state: Arc<EdgeState>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.in_flight.remove_if_mut(&self.peer, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl EdgeState {
    /// A slot for a call on `peer`'s connection; `None` when it is full.
    fn slot(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let mut n = self.in_flight.entry(peer).or_insert(0);
        if *n >= self.max_in_flight {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Slot { state: Arc::clone(self), peer })
    }
}

fn peer<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|t| t.get_ref().remote_addr()))
}

/// The status code of a response that has begun: in its headers for an error answered at once
/// (trailers-only), otherwise OK (a stream's later end is not counted here).
fn code_of(resp: &http::Response<tonic::body::Body>) -> &'static str {
    let raw = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    match raw.map(tonic::Code::from) {
        None | Some(tonic::Code::Ok) => "OK",
        Some(tonic::Code::Cancelled) => "CANCELLED",
        Some(tonic::Code::Unknown) => "UNKNOWN",
        Some(tonic::Code::InvalidArgument) => "INVALID_ARGUMENT",
        Some(tonic::Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Some(tonic::Code::NotFound) => "NOT_FOUND",
        Some(tonic::Code::AlreadyExists) => "ALREADY_EXISTS",
        Some(tonic::Code::PermissionDenied) => "PERMISSION_DENIED",
        Some(tonic::Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Some(tonic::Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Some(tonic::Code::Aborted) => "ABORTED",
        Some(tonic::Code::OutOfRange) => "OUT_OF_RANGE",
        Some(tonic::Code::Unimplemented) => "UNIMPLEMENTED",
        Some(tonic::Code::Internal) => "INTERNAL",
        Some(tonic::Code::Unavailable) => "UNAVAILABLE",
        Some(tonic::Code::DataLoss) => "DATA_LOSS",
        Some(tonic::Code::Unauthenticated) => "UNAUTHENTICATED",
    }
}

/// The future of a boxed tower service (this layer's and [`crate::auth`]'s).
pub(crate) type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for EdgeService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        // Known methods only: an unknown path must not become a label value.
        let path = req.uri().path();
        let method = served_methods().get(path).map_or("unknown", String::as_str);
        let state = Arc::clone(&self.state);
        let slot = match peer(&req) {
            Some(p) => match state.slot(p) {
                Some(s) => Some(s),
                None => {
                    state.shed.inc();
                    state
                        .calls
                        .with_label_values(&[method, "RESOURCE_EXHAUSTED"])
                        .observe(started.elapsed().as_secs_f64());
                    let status = crate::error::exhausted(format!(
                        "{} calls are in flight on this connection; retry shortly or use another connection",
                        state.max_in_flight
                    ));
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            },
            None => None,
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let span = state.traced.then(|| call_span(method, req.headers()));
        let call = async move {
            let resp = inner.call(req).await;
            drop(slot);
            if let Ok(r) = &resp {
                let code = code_of(r);
                state.calls.with_label_values(&[method, code]).observe(started.elapsed().as_secs_f64());
                tracing::Span::current().record("rpc.grpc.status_code", code);
            }
            resp
        };
        match span {
            Some(span) => Box::pin(tracing::Instrument::instrument(call, span)),
            None => Box::pin(call),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tonic_types::StatusExt;
    use tower::{Layer, Service};

    use super::*;

    /// A handler that answers once `release` is notified.
    #[derive(Clone)]
    struct Held {
        release: Arc<tokio::sync::Semaphore>,
    }

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let release = Arc::clone(&self.release);
            Box::pin(async move {
                let _permit = release.acquire().await.expect("open");
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn request(port: u16) -> http::Request<()> {
        let mut req = http::Request::builder().uri("/dispatch.v1.EscalationService/GetCase").body(()).unwrap();
        let remote_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        req.extensions_mut().insert(TcpConnectInfo { local_addr: None, remote_addr });
        req
    }

    #[tokio::test]
    async fn a_full_connection_sheds_with_a_retry_delay_and_counts_it() {
        let registry = prometheus::Registry::new();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let mut svc = EdgeLayer::new(2, &registry, false).layer(Held { release: Arc::clone(&release) });
        let first = tokio::spawn(svc.call(request(1000)));
        let second = tokio::spawn(svc.call(request(1000)));
        // Both hold their connection's two slots (the futures were created, so counted).
        let shed = svc.call(request(1000)).await.unwrap();
        let status = tonic::Status::from_header_map(shed.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{}", status.message());
        assert!(status.get_error_details().retry_info().is_some(), "with a retry delay");
        // Another connection is not affected.
        let other = tokio::spawn(svc.call(request(1001)));
        release.add_permits(3);
        for call in [first, second, other] {
            assert_eq!(call.await.unwrap().unwrap().status(), http::StatusCode::OK);
        }
        // The slots are free again.
        release.add_permits(1);
        assert!(tonic::Status::from_header_map(svc.call(request(1000)).await.unwrap().headers()).is_none());
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(text.contains("dispatch_rpc_shed_total 1"), "{text}");
        assert!(
            text.contains(
                r#"dispatch_rpc_duration_seconds_count{code="RESOURCE_EXHAUSTED",method="/dispatch.v1.EscalationService/GetCase"} 1"#
            ),
            "{text}"
        );
    }
}
