//! The browser listener (`[server.web]`): the consoles' pages ([`dispatch_web`]) and the same
//! `dispatch.v1` services over gRPC-Web (`tonic-web`), behind the same edge (load shedding,
//! metrics), the same authorisation layer (the bearer token in the `authorization` header) and
//! the same message limits as the main port. CORS grants only the configured origins (none by
//! default: the consoles served here are the same origin and need no grant).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `[server.web]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the browser listener, e.g. `127.0.0.1:8080`: the agent console (`/agent/`),
    /// the planner dashboard (`/planner/`) and the `dispatch.v1` services over gRPC-Web, with TLS
    /// as the main port has it. Empty: none (`dispatchd --dev` serves it on `127.0.0.1:8080`).
    pub listen: String,
    /// Origins whose pages may call the services (CORS), e.g. `https://console.example.com`.
    /// Empty (the default): no cross-origin grant at all.
    pub allowed_origins: Vec<String>,
    /// When `listen` cannot be bound, go on without the browser listener (a warning) instead of
    /// failing: set by `dispatchd --dev` for its default address, never by configuration.
    #[serde(skip)]
    pub best_effort: bool,
}

/// The address `dispatchd --dev` serves the consoles on when none is configured.
pub const DEV_LISTEN: &str = "127.0.0.1:8080";

impl WebConfig {
    /// The CORS layer: grants exactly the allowed origins (none when the list is empty: a
    /// preflight is answered without any grant); errors name the entry.
    pub fn cors(&self) -> Result<CorsLayer, String> {
        let mut origins = Vec::new();
        for (i, o) in self.allowed_origins.iter().enumerate() {
            let field = format!("server.web.allowed_origins[{i}]");
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(|| format!("{field}: {o:?} is not an origin (https://host[:port])"))?;
            if rest.is_empty() || rest.contains('/') {
                return Err(format!("{field}: {o:?} is not an origin (scheme://host[:port], no path)"));
            }
            origins.push(HeaderValue::from_str(o).map_err(|_| format!("{field}: {o:?} is not a header value"))?);
        }
        let headers = ["authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"]
            .into_iter()
            .chain([dispatch_proto::AGENT_ID_HEADER])
            .map(HeaderName::from_static);
        let exposed = ["grpc-status", "grpc-message", "grpc-status-details-bin"].map(HeaderName::from_static);
        Ok(CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers(headers.collect::<Vec<_>>())
            .expose_headers(exposed)
            .max_age(Duration::from_secs(600)))
    }
}

/// Serves the consoles' pages (`GET`/`HEAD` of a path [`dispatch_web::serves`]); every other
/// request goes on to the services.
#[derive(Clone, Copy, Default)]
pub struct PagesLayer;

impl<S> tower::Layer<S> for PagesLayer {
    type Service = Pages<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pages { inner }
    }
}

/// See [`PagesLayer`].
#[derive(Clone)]
pub struct Pages<S> {
    inner: S,
}

type Respond<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Pages<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Respond<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let page = matches!(*req.method(), Method::GET | Method::HEAD)
            .then(|| dispatch_web::asset(req.uri().path()))
            .flatten();
        match page {
            Some(asset) => {
                let head = req.method() == Method::HEAD;
                Box::pin(async move { Ok(page_response(asset, head)) })
            }
            None => Box::pin(self.inner.call(req)),
        }
    }
}

fn page_response(asset: dispatch_web::Asset, head: bool) -> http::Response<tonic::body::Body> {
    let body = if head {
        tonic::body::Body::empty()
    } else {
        tonic::body::Body::new(http_body_util::Full::new(bytes_of(asset.body)))
    };
    let mut resp = http::Response::new(body);
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    for (k, v) in dispatch_web::SECURITY_HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    resp
}

fn bytes_of(b: &'static [u8]) -> tonic::codegen::Bytes {
    tonic::codegen::Bytes::from_static(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_named() {
        let c = |o: &[&str]| WebConfig {
            allowed_origins: o.iter().map(|s| (*s).to_owned()).collect(),
            ..WebConfig::default()
        };
        assert!(c(&[]).cors().is_ok());
        assert!(c(&["https://console.example.com", "http://127.0.0.1:5173"]).cors().is_ok());
        for bad in ["*", "console.example.com", "https://x.example/path", "https://"] {
            let e = c(&["https://ok.example", bad]).cors().unwrap_err();
            assert!(e.starts_with("server.web.allowed_origins[1]"), "{bad}: {e}");
        }
    }
}
