//! Security: TLS (and mutual TLS), token authentication, the authorisation matrix over every
//! method of the API (enumerated from the descriptor set), tenant scoping, stream age, oversized
//! and malformed requests, and stalled TLS handshakes.

use std::path::PathBuf;
use std::process::Command;

use dispatch_domain::Policy;
use dispatch_grpc::auth::{AuthConfig, Authenticator, KeyConfig, RULES};
use dispatch_grpc::client::{self, Bearer, ClientTls};
use dispatch_grpc::{ServerConfig, TlsConfig};
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const OLD_SECRET: &str = "an-older-signing-secret-that-is-being-rotated-out";

/// A development PKI made by `deploy/dev-certs.sh` (what README tells users to run).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("dispatch-pki-{}-{n}", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/dev-certs.sh");
        let out = Command::new("bash").arg(script).arg(&dir).output().expect("run deploy/dev-certs.sh");
        assert!(out.status.success(), "dev-certs.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        Self { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(f)).expect("pki file")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn auth_config(pki: &Pki) -> AuthConfig {
    AuthConfig {
        keys: vec![
            KeyConfig {
                kid: "old".into(),
                algorithm: "HS256".into(),
                secret: Some(OLD_SECRET.into()),
                secret_file: None,
                public_key_file: None,
            },
            KeyConfig {
                kid: "dev".into(),
                algorithm: "HS256".into(),
                secret: None,
                secret_file: Some(pki.path("jwt.secret")),
                public_key_file: None,
            },
        ],
        leeway_s: 5,
        ..AuthConfig::default()
    }
}

struct Secure {
    /// Kept alive for the test's duration.
    _server: TestServer,
    pki: Pki,
    port: u16,
}

impl Secure {
    async fn start(require_client_cert: bool) -> Self {
        Self::start_with(require_client_cert, auth_config).await
    }

    async fn start_with(require_client_cert: bool, auth: impl Fn(&Pki) -> AuthConfig) -> Self {
        let pki = Pki::new();
        let config = ServerConfig {
            tls: TlsConfig {
                cert: pki.path("server.pem"),
                key: pki.path("server.key"),
                client_ca: pki.path("ca.pem"),
                require_client_cert,
                handshake_timeout_ms: 1_000,
            },
            ..ServerConfig::default()
        };
        let authn = Authenticator::from_config(&auth(&pki)).expect("auth config");
        let server = TestServer::start_secure(Policy::default(), config, authn).await;
        let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
        Self { _server: server, pki, port }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn tls(&self) -> ClientTls {
        ClientTls { ca_pem: Some(self.pki.read("ca.pem")), ..ClientTls::default() }
    }

    async fn channel(&self) -> Channel {
        bounded("a TLS connection", client::channel_with(&self.url(), &self.tls())).await.expect("TLS connect")
    }

    fn secret(&self) -> Vec<u8> {
        self.pki.read("jwt.secret")
    }

    fn token(&self, claims: serde_json::Value) -> String {
        sign(&claims, &self.secret(), jsonwebtoken::Algorithm::HS256, Some("dev"))
    }

    fn role(&self, role: &str, sub: &str, tenant: Option<&str>) -> String {
        token(&self.secret(), role, sub, tenant, 3600)
    }
}

fn now_s() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(role: &str, sub: &str, tenant: Option<&str>, ttl: i64) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "iss": "dispatch", "aud": "dispatch", "exp": now_s() + ttl, "iat": now_s(),
        "roles": [role], "tenant": tenant,
    })
}

fn sign(claims: &serde_json::Value, secret: &[u8], alg: jsonwebtoken::Algorithm, kid: Option<&str>) -> String {
    let mut h = jsonwebtoken::Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap()
}

/// A token with `alg: none` (no signature): must never be accepted.
fn unsigned(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT","kid":"dev"}"#),
        base64_url(claims.to_string().as_bytes())
    )
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every method of the dispatch.v1 services, from the descriptor set: (path, client streaming,
/// server streaming).
fn methods() -> Vec<(String, bool, bool)> {
    let fds = prost_types::FileDescriptorSet::decode(dispatch_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in fds.file.iter().filter(|f| f.package() == "dispatch.v1") {
        for s in &f.service {
            for m in &s.method {
                out.push((
                    format!("/dispatch.v1.{}/{}", s.name(), m.name()),
                    m.client_streaming(),
                    m.server_streaming(),
                ));
            }
        }
    }
    out
}

/// Calls `path` with an empty request message and `token`, returning the status code.
async fn raw_call(
    ch: Channel,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
    token: Option<&str>,
) -> Code {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    fn with_token<T>(mut r: tonic::Request<T>, token: Option<&str>) -> tonic::Request<T> {
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
    let result = match (client_streaming, server_streaming) {
        (false, false) => grpc.unary(with_token(tonic::Request::new(()), token), path, codec).await.map(drop),
        (false, true) => grpc.server_streaming(with_token(tonic::Request::new(()), token), path, codec).await.map(drop),
        _ => {
            let stream = tokio_stream::iter(Vec::<()>::new());
            grpc.streaming(with_token(tonic::Request::new(stream), token), path, codec).await.map(drop)
        }
    };
    match result {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_has_a_rule_and_every_bad_credential_is_refused() {
    let s = Secure::start(false).await;
    let ch = s.channel().await;
    let methods = methods();
    assert_eq!(methods.len(), 24, "the API's methods: {methods:?}");
    for (path, _, _) in &methods {
        assert!(RULES.iter().any(|(p, _)| p == path), "{path} has no access rule");
    }
    // A method or service the server does not have is UNIMPLEMENTED, with a token or without.
    let admin = s.role("admin", "ops", None);
    for path in ["/dispatch.v1.EscalationService/NoSuchMethod", "/no.such.Service/Call"] {
        for token in [None, Some(admin.as_str())] {
            let code = raw_call(ch.clone(), path, false, false, token).await;
            assert_eq!(code, Code::Unimplemented, "{path} with a token: {}", token.is_some());
        }
    }
    let good = claims("admin", "ops", None, 3600);
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "someone-else".into();
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = "evil".into();
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(s.token(claims("admin", "ops", None, -3600)))),
        (
            "bad signature",
            Some(sign(
                &good,
                b"not-the-secret-not-the-secret-not-the-secret",
                jsonwebtoken::Algorithm::HS256,
                Some("dev"),
            )),
        ),
        ("algorithm not allowed", Some(sign(&good, &s.secret(), jsonwebtoken::Algorithm::HS512, Some("dev")))),
        ("alg none", Some(unsigned(&good))),
        ("unknown key id", Some(sign(&good, &s.secret(), jsonwebtoken::Algorithm::HS256, Some("nope")))),
        ("wrong audience", Some(s.token(wrong_aud))),
        ("wrong issuer", Some(s.token(wrong_iss))),
        ("no exp", Some(s.token(no_exp))),
        ("garbage", Some("not.a.token".to_owned())),
    ];
    for (path, cs, ss) in &methods {
        for (what, token) in &bad {
            let code = raw_call(ch.clone(), path, *cs, *ss, token.as_deref()).await;
            assert_eq!(code, Code::Unauthenticated, "{path} with {what}");
        }
        // A valid token with a role the method does not allow.
        let allowed = RULES.iter().find(|(p, _)| p == path).unwrap().1;
        let wrong = ["agent", "router", "planner"]
            .into_iter()
            .find(|r| match allowed {
                dispatch_grpc::auth::Access::Roles(rs) => !rs.iter().any(|x| format!("{x:?}").eq_ignore_ascii_case(r)),
                dispatch_grpc::auth::Access::Public => false,
            })
            .expect("some role is not allowed");
        let code = raw_call(ch.clone(), path, *cs, *ss, Some(&s.role(wrong, "someone", Some("acme")))).await;
        assert_eq!(code, Code::PermissionDenied, "{path} as {wrong}");
    }
    // Nothing changed.
    let admin = s.role("admin", "ops", None);
    let bearer = Bearer::new(Some(&admin)).unwrap();
    let mut planner = pb::planner_service_client::PlannerServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let q = planner.get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(q.submitted_total, 0);
    let mut roster = pb::roster_service_client::RosterServiceClient::with_interceptor(ch, bearer);
    assert!(roster.list_agents(pb::ListAgentsRequest::default()).await.unwrap().into_inner().agents.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_and_only_its_job() {
    let s = Secure::start(false).await;
    let ch = s.channel().await;
    let admin = Bearer::new(Some(&s.role("admin", "ops", None))).unwrap();
    let mut roster = pb::roster_service_client::RosterServiceClient::with_interceptor(ch.clone(), admin);
    for id in ["ana", "ben"] {
        roster
            .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile(id, &[("en", 5)], &[], false)) })
            .await
            .unwrap();
    }
    // Router of tenant acme submits; another tenant cannot see or cancel it; acme can.
    let acme = Bearer::new(Some(&s.role("router", "acme-router", Some("acme")))).unwrap();
    let globex = Bearer::new(Some(&s.role("router", "globex-router", Some("globex")))).unwrap();
    let mut esc_acme = pb::escalation_service_client::EscalationServiceClient::with_interceptor(ch.clone(), acme);
    let mut esc_globex = pb::escalation_service_client::EscalationServiceClient::with_interceptor(ch.clone(), globex);
    esc_acme
        .submit_case(pb::SubmitCaseRequest { spec: Some(case("acme-1", "en", &[], pb::Tier::Standard)) })
        .await
        .unwrap();
    let hidden = esc_globex.get_case(pb::GetCaseRequest { case_id: "acme-1".into() }).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "another tenant's case does not exist for globex");
    let hidden = esc_globex
        .cancel_case(pb::CancelCaseRequest { case_id: "acme-1".into(), reason: String::new() })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let hidden = esc_globex.watch_case(pb::WatchCaseRequest { case_id: "acme-1".into() }).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // Case ids are each tenant's own: globex may use the same id, and neither sees the other's.
    let mut theirs = case("acme-1", "en", &[], pb::Tier::Standard);
    theirs.summary = "globex's own case".into();
    theirs.language = "fr".into();
    let r = esc_globex.submit_case(pb::SubmitCaseRequest { spec: Some(theirs) }).await.unwrap().into_inner();
    assert!(r.created, "a new case for globex, not a conflict with acme's");
    assert_eq!(r.case.unwrap().spec.unwrap().case_id, "acme-1", "named by globex's own id");
    let mine = esc_acme.get_case(pb::GetCaseRequest { case_id: "acme-1".into() }).await.unwrap().into_inner();
    assert_eq!(mine.case.unwrap().spec.unwrap().summary, "summary of acme-1", "acme's case is untouched");
    let again = esc_acme
        .submit_case(pb::SubmitCaseRequest { spec: Some(case("acme-1", "en", &[], pb::Tier::Standard)) })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "acme's retry is still idempotent");
    let prefixed = esc_acme.get_case(pb::GetCaseRequest { case_id: "globex/acme-1".into() }).await.unwrap_err();
    assert_eq!(prefixed.code(), Code::InvalidArgument, "a router cannot name another tenant's case");
    assert_violation(&prefixed);
    // Planner reads.
    let planner_token = Bearer::new(Some(&s.role("planner", "wfm", None))).unwrap();
    let mut planner = pb::planner_service_client::PlannerServiceClient::with_interceptor(ch.clone(), planner_token);
    let q = planner.get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(q.waiting, 2, "acme's case and globex's of the same id");
    // Agents: their identity is the token's subject; A cannot act on B's offer.
    let ana_token = s.role("agent", "ana", None);
    let ben_token = s.role("agent", "ben", None);
    let mut ana = AgentConn::open_with_token(ch.clone(), "ana", &ana_token).await.expect("ana connects");
    let mut ben = AgentConn::open_with_token(ch.clone(), "ben", &ben_token).await.expect("ben connects");
    assert_eq!(ana.go_available().await.code, 0);
    assert_eq!(ben.go_available().await.code, 0);
    // The planner sees who holds the offer; the other one tries to take it.
    let holder_id = eventually("the case to be offered", || {
        let mut esc = esc_acme.clone();
        async move {
            let c = esc.get_case(pb::GetCaseRequest { case_id: "acme-1".into() }).await.ok()?.into_inner().case?;
            (c.state == pb::CaseState::Offered as i32).then_some(c.current_agent_id)
        }
    })
    .await;
    let (holder, other) = if holder_id == "ana" { (&mut ana, &mut ben) } else { (&mut ben, &mut ana) };
    let offer = holder.offer().await;
    assert_eq!(offer.case.as_ref().unwrap().case_id, "acme/acme-1", "agents see the dispatcher's id of the case");
    let r = other.accept(&offer.offer_id).await;
    assert_eq!(r.code, Code::PermissionDenied as i32, "{}", r.message);
    let r = holder.accept(&offer.offer_id).await;
    assert_eq!(r.code, 0, "{}", r.message);
    // Key rotation: a token signed with the older key (by its kid) is accepted too.
    let old =
        sign(&claims("planner", "wfm", None, 3600), OLD_SECRET.as_bytes(), jsonwebtoken::Algorithm::HS256, Some("old"));
    let mut planner_old =
        pb::planner_service_client::PlannerServiceClient::with_interceptor(ch, Bearer::new(Some(&old)).unwrap());
    assert!(planner_old.get_queue_stats(pb::GetQueueStatsRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stream_ends_when_its_token_expires() {
    let s = Secure::start(false).await;
    let ch = s.channel().await;
    let admin = Bearer::new(Some(&s.role("admin", "ops", None))).unwrap();
    let mut roster = pb::roster_service_client::RosterServiceClient::with_interceptor(ch.clone(), admin);
    roster
        .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile("brief", &[("en", 5)], &[], false)) })
        .await
        .unwrap();
    let brief = token(&s.secret(), "agent", "brief", None, 2);
    let mut a = AgentConn::open_with_token(ch, "brief", &brief).await.expect("brief connects");
    assert_eq!(a.expect_error().await.code(), Code::Unauthenticated, "ends when the token expires");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plaintext_untrusted_and_certless_clients() {
    let s = Secure::start(true).await;
    // Plaintext to a TLS port.
    let plain = client::channel(&format!("http://127.0.0.1:{}", s.port)).await;
    if let Ok(ch) = plain {
        let code = raw_call(ch, "/dispatch.v1.PlannerService/GetQueueStats", false, false, None).await;
        assert_ne!(code, Code::Ok);
        assert_ne!(code, Code::Unauthenticated, "the plaintext client never reached the auth layer");
    }
    // A server certificate from another CA is not trusted.
    let other = Pki::new();
    let untrusted = ClientTls {
        ca_pem: Some(other.read("ca.pem")),
        identity: Some((s.pki.read("client.pem"), s.pki.read("client.key"))),
        domain: None,
    };
    assert!(client::channel_with(&s.url(), &untrusted).await.is_err(), "an untrusted server certificate is refused");
    // Mutual TLS required: no client certificate, no connection.
    let certless = client::channel_with(&s.url(), &s.tls()).await;
    if let Ok(ch) = certless {
        let code = raw_call(ch, "/dispatch.v1.PlannerService/GetQueueStats", false, false, None).await;
        assert!(
            ![Code::Ok, Code::Unauthenticated, Code::PermissionDenied].contains(&code),
            "a client without a certificate is refused by the TLS layer, before any handler: {code:?}"
        );
    }
    // With the client certificate and a token it works.
    let mtls = ClientTls { identity: Some((s.pki.read("client.pem"), s.pki.read("client.key"))), ..s.tls() };
    let ch = client::channel_with(&s.url(), &mtls).await.expect("mutual TLS connects");
    let bearer = Bearer::new(Some(&s.role("planner", "wfm", None))).unwrap();
    let mut planner = pb::planner_service_client::PlannerServiceClient::with_interceptor(ch, bearer);
    assert!(planner.get_queue_stats(pb::GetQueueStatsRequest {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_stop_legitimate_clients_and_are_closed() {
    use tokio::io::AsyncReadExt;
    let s = Secure::start(false).await;
    let mut stalled = Vec::new();
    for _ in 0..500 {
        stalled.push(tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("tcp connect"));
    }
    // A legitimate client gets through meanwhile.
    let ch = s.channel().await;
    let bearer = Bearer::new(Some(&s.role("planner", "wfm", None))).unwrap();
    let mut planner = pb::planner_service_client::PlannerServiceClient::with_interceptor(ch, bearer);
    assert!(
        bounded("a call beside 500 stalled handshakes", planner.get_queue_stats(pb::GetQueueStatsRequest {}))
            .await
            .is_ok()
    );
    // Every stalled connection is closed by the server after the 1 s handshake timeout.
    bounded("the server to close every stalled connection", async {
        for mut c in stalled {
            let mut buf = [0u8; 64];
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused_without_memory_growth() {
    let s = TestServer::start(Backend::Memory, Policy::default()).await;
    let mut esc = s.escalation().max_encoding_message_size(64 * 1024 * 1024);
    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let before = rss();
    for i in 0..20 {
        let mut spec = case(&format!("big-{i}"), "en", &[], pb::Tier::Standard);
        spec.summary = "x".repeat(8 * 1024 * 1024);
        let err = esc.submit_case(pb::SubmitCaseRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 96 * 1024 * 1024, "RSS grew by {grown} bytes over 20 refused 8 MiB requests");
    // Malformed protobuf: wire type garbage.
    let mut grpc = tonic::client::Grpc::new(s.channel());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Vec<u8>, ()>::default();
    // A BytesValue's field 1 is read by SubmitCaseRequest as `spec`: bytes that are not a CaseSpec.
    let garbage = vec![0xffu8, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let err = grpc
        .unary(tonic::Request::new(garbage), "/dispatch.v1.EscalationService/SubmitCase".parse().unwrap(), codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_field(&err, "request");
    let q = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(q.submitted_total, 0, "nothing was created");
}
