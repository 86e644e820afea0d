//! Building clients: one place that sets the client-side transport (TLS, optional client
//! certificate, timeouts) and attaches credentials, used by the command-line client and the
//! tests.

use std::time::Duration;

use dispatch_proto::AGENT_ID_HEADER;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle that signed the server's certificate (required for `https://`).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate is checked against (default: the address's host).
    pub domain: Option<String>,
}

/// Connects to `addr` (`http://host:port`, or `https://host:port` with TLS).
pub async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    channel_with(addr, &ClientTls::default()).await
}

/// Connects to `addr` with TLS settings.
pub async fn channel_with(addr: &str, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr, tls)?.connect().await
}

/// The configured endpoint for `addr`.
pub fn endpoint(addr: &str, tls: &ClientTls) -> Result<Endpoint, tonic::transport::Error> {
    let mut e = Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if addr.starts_with("https://") {
        let mut c = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            c = c.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &tls.domain {
            c = c.domain_name(d.clone());
        }
        e = e.tls_config(c)?;
    }
    Ok(e)
}

/// Attaches `authorization: Bearer <token>` (when a token is set) to every call.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Credentials from a token; `None` sends none.
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| Status::invalid_argument("the token is not valid metadata"))
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Wraps `msg` in a request naming the agent (development mode identity).
pub fn as_agent<T>(agent_id: &str, msg: T) -> Result<Request<T>, Status> {
    let mut req = Request::new(msg);
    let v: MetadataValue<_> =
        agent_id.parse().map_err(|_| Status::invalid_argument("agent id is not valid metadata"))?;
    req.metadata_mut().insert(AGENT_ID_HEADER, v);
    Ok(req)
}

/// What a token minted by [`mint_token`] says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenClaims {
    /// The subject: for an agent, its agent id.
    pub sub: String,
    /// Issuer, as the server's `auth.issuer`.
    pub iss: String,
    /// Audience, as the server's `auth.audience`.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Roles: `agent`, `router`, `planner`, `admin`.
    pub roles: Vec<String>,
    /// A router's tenant.
    pub tenant: Option<String>,
}

impl TokenClaims {
    /// Claims for `sub` in `role`, valid from now for `ttl_s` seconds (wall-clock time, as
    /// token validation is), issued by and for `dispatch`.
    pub fn new(role: &str, sub: &str, tenant: Option<&str>, ttl_s: u64) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            sub: sub.to_owned(),
            iss: "dispatch".to_owned(),
            aud: "dispatch".to_owned(),
            iat: now,
            exp: now + ttl_s,
            roles: vec![role.to_owned()],
            tenant: tenant.map(str::to_owned),
        }
    }
}

/// An HS256 token signed with `secret` under key id `kid`: for development set-ups
/// (`dispatchctl dev-token`) and tests.
pub fn mint_token(secret: &[u8], kid: &str, claims: &TokenClaims) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_secret(secret))
}
