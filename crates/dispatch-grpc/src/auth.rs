//! Who may call what. Every request passes [`AuthLayer`]: it finds the method's rule in
//! [`RULES`] (no rule: refused), authenticates the bearer token (JWT with pinned algorithms,
//! required `exp`, `aud`, `iss` and `sub`, explicit leeway, keys chosen by `kid`), checks the
//! role, and hands the [`Principal`] to the handler in the request extensions. Handlers then
//! scope what they do to the principal: an agent acts only as itself, a router only within its
//! tenant.
//!
//! Roles: `agent` (its own stream, offers and cases), `router` (submit / get / cancel / watch
//! cases of its tenant), `planner` (planner and roster reads), `admin` (everything, roster
//! writes included).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::edge::BoxFuture;
use dispatch_domain::{AgentId, TenantId};
use dispatch_proto::AGENT_ID_HEADER;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tonic::Status;

/// A role a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A support agent's device.
    Agent,
    /// A routing service (one tenant).
    Router,
    /// A workforce planner (reads).
    Planner,
    /// The notification service: reads invitations to offline agents, acknowledges them.
    Notifier,
    /// Operations (everything).
    Admin,
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (health checks, reflection).
    Public,
    /// A token with one of these roles (admin always passes).
    Roles(&'static [Role]),
}

const ROUTER: Access = Access::Roles(&[Role::Router]);
const PLANNER: Access = Access::Roles(&[Role::Planner]);
const ADMIN: Access = Access::Roles(&[]);

/// The access rule of every method served. A method missing here is refused for everyone (and
/// fails the authorisation test, which enumerates the services' descriptors).
pub const RULES: &[(&str, Access)] = &[
    ("/dispatch.v1.AgentService/Connect", Access::Roles(&[Role::Agent])),
    ("/dispatch.v1.AgentService/OpenSession", Access::Roles(&[Role::Agent])),
    ("/dispatch.v1.AgentService/SendCommand", Access::Roles(&[Role::Agent])),
    ("/dispatch.v1.EscalationService/SubmitCase", ROUTER),
    ("/dispatch.v1.EscalationService/GetCase", ROUTER),
    ("/dispatch.v1.EscalationService/CancelCase", ROUTER),
    ("/dispatch.v1.EscalationService/WatchCase", ROUTER),
    ("/dispatch.v1.EscalationService/RateCase", ROUTER),
    ("/dispatch.v1.RosterService/UpsertAgent", ADMIN),
    ("/dispatch.v1.RosterService/RemoveAgent", ADMIN),
    ("/dispatch.v1.RosterService/GetAgent", PLANNER),
    ("/dispatch.v1.RosterService/ListAgents", PLANNER),
    ("/dispatch.v1.PlannerService/GetAvailability", PLANNER),
    ("/dispatch.v1.PlannerService/GetQueueStats", PLANNER),
    ("/dispatch.v1.PlannerService/WatchAvailability", PLANNER),
    ("/dispatch.v1.PlannerService/WhatIfStaffing", PLANNER),
    ("/dispatch.v1.PlannerService/ExplainMatch", PLANNER),
    ("/dispatch.v1.PlannerService/ExplainAgent", PLANNER),
    ("/dispatch.v1.PlannerService/GetFairness", PLANNER),
    ("/dispatch.v1.PlannerService/GetSegmentDemand", PLANNER),
    ("/dispatch.v1.PlannerService/ListInvitations", PLANNER),
    ("/dispatch.v1.NotifierService/StreamInvitations", Access::Roles(&[Role::Notifier])),
    ("/dispatch.v1.NotifierService/AckInvitation", Access::Roles(&[Role::Notifier])),
    // The same for every agent: agents may read it outside their stream too.
    ("/dispatch.v1.PlannerService/GetAllocationPolicy", Access::Roles(&[Role::Planner, Role::Agent])),
    // Generic tools and load balancers: the API's shape is public (it is in the repository).
    ("/grpc.health.v1.Health/Check", Access::Public),
    ("/grpc.health.v1.Health/Watch", Access::Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Access::Public),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Access::Public),
];

/// Every method the server serves, from the services' descriptors (`/package.Service/Method`).
pub(crate) fn served_methods() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let mut out: std::collections::HashSet<String> = RULES.iter().map(|(p, _)| (*p).to_owned()).collect();
        for set in [dispatch_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    for method in service.method {
                        out.insert(format!(
                            "/{package}.{}/{}",
                            service.name.as_deref().unwrap_or_default(),
                            method.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        out
    })
}

/// Where a principal's subject came from (named in errors about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectSource {
    /// The token's `sub` claim.
    Token,
    /// The `agent-id` request metadata (development mode).
    Metadata,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject (for an agent: its agent id).
    pub subject: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// A router's tenant.
    pub tenant: Option<TenantId>,
    /// When the credentials expire (Unix seconds); long-lived streams end then.
    pub expires_at: Option<u64>,
    /// Where `subject` came from.
    pub source: SubjectSource,
}

impl Principal {
    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The tenant a case operation is scoped to: `None` (every case) for admins and the
    /// development mode, the token's tenant for routers.
    pub fn case_scope(&self) -> Result<Option<TenantId>, Status> {
        if self.has(Role::Admin) {
            return Ok(None);
        }
        match &self.tenant {
            Some(t) => Ok(Some(t.clone())),
            None => Err(Status::permission_denied("router credentials carry no tenant")),
        }
    }

    /// The agent this principal acts as.
    pub fn agent(&self) -> Result<AgentId, Status> {
        if !self.has(Role::Agent) {
            return Err(Status::permission_denied("only an agent may open an agent stream"));
        }
        match self.source {
            SubjectSource::Token => {
                AgentId::parse("sub", &self.subject).map_err(|e| Status::unauthenticated(format!("token subject: {e}")))
            }
            SubjectSource::Metadata => AgentId::parse(AGENT_ID_HEADER, &self.subject).map_err(|e| {
                crate::error::invalid(dispatch_domain::FieldError::new(format!("metadata {}", e.field), e.reason))
            }),
        }
    }
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id: tokens name it in their `kid` header (rotation: list old and new keys).
    pub kid: String,
    /// The one algorithm this key accepts: `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`,
    /// `PS256`, `PS384`, `PS512`, `ES256`, `ES384` or `EdDSA`.
    pub algorithm: String,
    /// HMAC shared secret (HS*), inline.
    #[serde(default)]
    pub secret: Option<String>,
    /// HMAC shared secret (HS*), from a file.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// PEM public key (RS*, PS*, ES*, EdDSA), from a file.
    #[serde(default)]
    pub public_key_file: Option<String>,
}

/// `[auth]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `jwt` (bearer tokens, the default) or `dev` (no authentication; the agent's identity
    /// from the `agent-id` metadata; logged loudly at start).
    pub mode: String,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Verification keys.
    pub keys: Vec<KeyConfig>,
    /// Long-lived streams (agent streams, watches) end after this long, or when the token
    /// expires, whichever comes first; the client reconnects with a fresh token.
    pub max_stream_age_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "jwt".to_owned(),
            issuer: "dispatch".to_owned(),
            audience: "dispatch".to_owned(),
            leeway_s: 30,
            keys: Vec::new(),
            max_stream_age_s: 3_600,
        }
    }
}

struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// Authenticates requests (see the module docs).
pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    /// Bearer JWTs: keys by `kid`, and the stream age bound.
    Jwt { keys: HashMap<String, Key>, max_stream_age_s: u64 },
    /// Development: everyone may do everything; agents name themselves with `agent-id`.
    Dev,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Jwt { keys, .. } => f.debug_struct("Jwt").field("kids", &keys.keys().collect::<Vec<_>>()).finish(),
            Mode::Dev => f.write_str("Dev"),
        }
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))
}

impl Authenticator {
    /// Builds the authenticator; errors name the configuration key.
    pub fn from_config(c: &AuthConfig) -> Result<Self, String> {
        match c.mode.as_str() {
            "dev" => return Ok(Self::dev()),
            "jwt" => {}
            other => return Err(format!("auth.mode: {other:?} is not jwt or dev")),
        }
        if c.keys.is_empty() {
            return Err("auth.keys: at least one verification key is required in jwt mode (or run with --dev)".into());
        }
        if c.issuer.is_empty() || c.audience.is_empty() {
            return Err("auth.issuer and auth.audience are required".into());
        }
        let mut keys = HashMap::new();
        for (i, k) in c.keys.iter().enumerate() {
            let field = format!("auth.keys[{i}]");
            let algorithm: Algorithm = k
                .algorithm
                .parse()
                .map_err(|_| format!("{field}.algorithm: {:?} is not a JWT algorithm", k.algorithm))?;
            let decoding = match algorithm {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                    let secret = match (&k.secret, &k.secret_file) {
                        (Some(s), None) => s.as_bytes().to_vec(),
                        (None, Some(p)) => read(p)?,
                        _ => return Err(format!("{field}: an HMAC key needs exactly one of secret, secret_file")),
                    };
                    if secret.len() < 32 {
                        return Err(format!("{field}: an HMAC secret must be at least 32 bytes"));
                    }
                    DecodingKey::from_secret(&secret)
                }
                other => {
                    let path =
                        k.public_key_file.as_deref().ok_or_else(|| format!("{field}.public_key_file is required"))?;
                    let pem = read(path)?;
                    let parsed = match other {
                        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                        _ => DecodingKey::from_rsa_pem(&pem),
                    };
                    parsed.map_err(|e| format!("{field}.public_key_file: {e}"))?
                }
            };
            let mut validation = Validation::new(algorithm);
            validation.set_audience(&[&c.audience]);
            validation.set_issuer(&[&c.issuer]);
            validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
            validation.leeway = c.leeway_s;
            validation.validate_nbf = true;
            if keys.insert(k.kid.clone(), Key { algorithm, decoding, validation }).is_some() {
                return Err(format!("{field}.kid: {:?} is listed twice", k.kid));
            }
        }
        Ok(Self { mode: Mode::Jwt { keys, max_stream_age_s: c.max_stream_age_s } })
    }

    /// The development mode: no authentication.
    pub fn dev() -> Self {
        Self { mode: Mode::Dev }
    }

    /// Whether this is the development mode.
    pub fn is_dev(&self) -> bool {
        matches!(self.mode, Mode::Dev)
    }

    /// Streams end after this long at the latest.
    pub fn max_stream_age_s(&self) -> Option<u64> {
        match &self.mode {
            Mode::Jwt { max_stream_age_s, .. } => Some(*max_stream_age_s),
            Mode::Dev => None,
        }
    }

    fn verify(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        let keys = match &self.mode {
            Mode::Dev => return Ok(dev_principal(headers)),
            Mode::Jwt { keys, .. } => keys,
        };
        let raw = headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("authorization: a bearer token is required"))?
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization: not text"))?;
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer <token>`"))?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| Status::unauthenticated(format!("token: {e}")))?;
        let key = match &header.kid {
            Some(kid) => {
                keys.get(kid).ok_or_else(|| Status::unauthenticated(format!("token: unknown key id {kid:?}")))?
            }
            None if keys.len() == 1 => keys.values().next().expect("one key"),
            None => return Err(Status::unauthenticated("token: a key id (kid) is required")),
        };
        if header.alg != key.algorithm {
            return Err(Status::unauthenticated(format!(
                "token: algorithm {:?} is not allowed for this key",
                header.alg
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map_err(|e| Status::unauthenticated(format!("token: {e}")))?;
        let c = data.claims;
        let mut roles = Vec::new();
        for r in c.roles.iter().chain(c.role.iter()) {
            let role = match r.as_str() {
                "agent" => Role::Agent,
                "router" => Role::Router,
                "planner" => Role::Planner,
                "admin" => Role::Admin,
                "notifier" => Role::Notifier,
                _ => continue, // unknown roles grant nothing
            };
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let tenant = c
            .tenant
            .map(|t| TenantId::parse("tenant", &t).map_err(|e| Status::unauthenticated(format!("token: {e}"))))
            .transpose()?;
        Ok(Principal { subject: c.sub, roles, tenant, expires_at: Some(c.exp), source: SubjectSource::Token })
    }

    /// Authenticates and authorises a call to `path`: `Ok(None)` for a public method. A method
    /// the server does not serve is UNIMPLEMENTED (as gRPC tools expect); one it serves without
    /// an access rule is refused to everyone.
    pub fn authorize(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Principal>, Status> {
        let access = match RULES.iter().find(|(p, _)| *p == path) {
            Some((_, a)) => *a,
            None if served_methods().contains(path) => {
                return Err(Status::permission_denied(format!("{path} is not open to any caller")));
            }
            None => return Err(Status::unimplemented(format!("{path} is not a method of this server"))),
        };
        let roles = match access {
            Access::Public => return Ok(None),
            Access::Roles(r) => r,
        };
        let principal = self.verify(headers)?;
        if self.is_dev() && roles == [Role::Agent] && !principal.has(Role::Agent) {
            return Err(Status::unauthenticated(format!("metadata {AGENT_ID_HEADER} is required (development mode)")));
        }
        if principal.has(Role::Admin) || roles.iter().any(|r| principal.has(*r)) {
            Ok(Some(principal))
        } else {
            let needs =
                roles.iter().map(|r| format!("{r:?}").to_lowercase()).chain(["admin".to_owned()]).collect::<Vec<_>>();
            Err(Status::permission_denied(format!("{path} needs the role {}", needs.join(" or "))))
        }
    }
}

/// Development mode: a device naming itself with `agent-id` is that agent; anyone else is an
/// unscoped operator.
fn dev_principal(headers: &http::HeaderMap) -> Principal {
    match headers.get(AGENT_ID_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) => Principal {
            subject: id.to_owned(),
            roles: vec![Role::Agent],
            tenant: None,
            expires_at: None,
            source: SubjectSource::Metadata,
        },
        None => Principal {
            subject: "dev".to_owned(),
            roles: vec![Role::Router, Role::Planner, Role::Admin],
            tenant: None,
            expires_at: None,
            source: SubjectSource::Metadata,
        },
    }
}

/// The principal set by [`AuthLayer`].
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| Status::unauthenticated("no credentials on this call"))
}

/// Tower layer applying [`Authenticator::authorize`] to every request, per connection.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// A layer over `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: Arc::clone(&self.auth) }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.auth.authorize(req.uri().path(), req.headers()) {
            Ok(Some(p)) => {
                req.extensions_mut().insert(p);
            }
            Ok(None) => {}
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        }
        // The clone is ready only after poll_ready; swap so that the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut resp = inner.call(req).await?;
            decode_errors_per_spec(&mut resp);
            Ok(resp)
        })
    }
}

/// tonic refuses a request message above the size limit with OUT_OF_RANGE, and one that is not
/// valid protobuf with INTERNAL; gRPC specifies RESOURCE_EXHAUSTED for the first, and a request
/// that cannot be decoded is the caller's INVALID_ARGUMENT, not a server fault. (The oversized
/// message is refused before its body is buffered either way.)
fn decode_errors_per_spec(resp: &mut http::Response<tonic::body::Body>) {
    let h = resp.headers();
    let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default().replace("%20", " ");
    let status = match h.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some("11") if message.contains("message length too large") => crate::error::exhausted(message),
        Some("13") if message.contains("failed to decode Protobuf message") => {
            crate::error::invalid(dispatch_domain::FieldError::new("request", message))
        }
        _ => return,
    };
    // The status with its details replaces tonic's.
    let _ = status.add_header(resp.headers_mut());
}
