//! The browser transport: a browser's agent session (`OpenSession` + `SendCommand`) is the same
//! session as `Connect`, on every backend; the web listener serves the consoles and gRPC-Web
//! with the same authorisation, and CORS grants only the configured origins.

use dispatch_domain::Policy;
use dispatch_grpc::auth::{AuthConfig, Authenticator, KeyConfig};
use dispatch_grpc::{ServerConfig, WebConfig};
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

/// A browser's session, spoken with the generated client over a real socket.
struct WebSession {
    id: String,
    agent: String,
    channel: Channel,
    stream: tonic::Streaming<pb::DispatcherMessage>,
    seq: u64,
}

impl WebSession {
    async fn open(channel: Channel, agent: &str) -> (Self, pb::SessionOpened) {
        let req = dispatch_grpc::client::as_agent(agent, pb::OpenSessionRequest {}).unwrap();
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel.clone());
        let mut stream = bounded("OpenSession", client.open_session(req)).await.expect("open session").into_inner();
        let first = bounded("the first message", stream.message()).await.expect("stream").expect("a message");
        let Some(Event::Opened(opened)) = first.event else { panic!("the first message is SessionOpened: {first:?}") };
        let s = Self { id: opened.session_id.clone(), agent: agent.to_owned(), channel, stream, seq: 0 };
        (s, opened)
    }

    async fn call(
        &mut self,
        as_agent: &str,
        session_id: &str,
        command: Option<Command>,
    ) -> Result<pb::CommandResult, tonic::Status> {
        self.seq += 1;
        let message = command.map(|c| pb::AgentMessage { request_id: format!("w-{}", self.seq), command: Some(c) });
        let req = pb::SendCommandRequest { session_id: session_id.to_owned(), message };
        let mut client = pb::agent_service_client::AgentServiceClient::new(self.channel.clone());
        bounded("SendCommand", client.send_command(dispatch_grpc::client::as_agent(as_agent, req).unwrap()))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn send(&mut self, command: Command) -> Result<pb::CommandResult, tonic::Status> {
        let (agent, id) = (self.agent.clone(), self.id.clone());
        self.call(&agent, &id, Some(command)).await
    }

    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        bounded(what, async {
            loop {
                let m = self.stream.message().await.expect("stream").expect("stream open");
                if let Some(v) = m.event.as_ref().and_then(&mut pick) {
                    return v;
                }
            }
        })
        .await
    }
}

async fn a_browser_session_is_the_agents_session(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("web1", &[("en", 5)], &[], false)).await;
    s.register(profile("web2", &[("en", 5)], &[], false)).await;
    let (mut web, opened) = WebSession::open(s.device_channel(), "web1").await;
    assert!(!opened.session_id.is_empty());
    assert_eq!(opened.heartbeat_interval_ms, 15_000, "three heartbeats within the 45 s timeout");
    let st = web.next("signed in", |e| if let Event::Status(st) = e { Some(st.clone()) } else { None }).await;
    assert_eq!((st.status(), st.reason.as_str()), (pb::AgentStatus::Away, "signed_in"));

    // A command's result is the call's answer, and comes on the stream after what it caused.
    let r = web.send(Command::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 })).await.unwrap();
    assert_eq!(r.code, 0);
    let st = web.next("available", |e| if let Event::Status(st) = e { Some(st.clone()) } else { None }).await;
    assert_eq!(st.status(), pb::AgentStatus::Available);
    let id = r.request_id.clone();
    let echoed =
        web.next("the result on the stream", |e| if let Event::Result(x) = e { Some(x.clone()) } else { None }).await;
    assert_eq!((echoed.request_id.as_str(), echoed.code), (id.as_str(), 0));
    assert_eq!(
        s.agent("web1").await.presence.unwrap().status(),
        pb::AgentStatus::Available,
        "the same agent state as Connect's"
    );

    s.submit(case("wb1", "en", &[], pb::Tier::Standard)).await;
    let offer = web.next("the offer", |e| if let Event::Offer(o) = e { Some(o.clone()) } else { None }).await;
    assert_eq!(offer.case.as_ref().unwrap().case_id, "wb1");
    assert!(offer.remaining_ms > 0);

    // Bad input: a clear status naming the field, and nothing changes.
    let e = web.send(Command::Accept(pb::Accept { offer_id: String::new() })).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_field(&e, "message.accept.offer_id");
    let e = web.call("web1", &web.id.clone(), None).await.unwrap_err();
    assert_field(&e, "message");
    let e = web.call("web1", "", Some(Command::Heartbeat(pb::Heartbeat {}))).await.unwrap_err();
    assert_field(&e, "session_id");
    let e = web.call("web1", "ss-nope", Some(Command::Heartbeat(pb::Heartbeat {}))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let session = web.id.clone();
    let accept = Command::Accept(pb::Accept { offer_id: offer.offer_id.clone() });
    let e = web.call("web2", &session, Some(accept)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "another agent's session: {e:?}");
    assert_eq!(s.case("wb1").await.state(), pb::CaseState::Offered, "nothing changed");

    assert_eq!(web.send(Command::Accept(pb::Accept { offer_id: offer.offer_id.clone() })).await.unwrap().code, 0);
    web.next("the assignment", |e| matches!(e, Event::Assignment(a) if a.offer_id == offer.offer_id).then_some(()))
        .await;
    let e = web.send(Command::Decline(pb::Decline { offer_id: offer.offer_id.clone(), reason: "late".into() })).await;
    let e = e.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&e).as_deref(), Some("OFFER_ALREADY_ACCEPTED"));
    let done = web.send(Command::Complete(pb::Complete { case_id: "wb1".into(), outcome: "refunded".into() })).await;
    assert_eq!(done.unwrap().code, 0);
    let c = s.case("wb1").await;
    let by = c.offers.last().unwrap();
    assert_eq!((c.state(), c.outcome.as_str()), (pb::CaseState::Completed, "refunded"));
    assert_eq!((by.agent_id.as_str(), by.outcome()), ("web1", pb::OfferOutcome::Accepted));

    // The browser leaves: its session ends as a closed Connect stream's does.
    let WebSession { stream, .. } = web;
    drop(stream);
    eventually("the agent to be seen disconnected", || async {
        (!s.agent("web1").await.presence.unwrap().connected).then_some(())
    })
    .await;
    let mut again = WebSession::open(s.device_channel(), "web1").await.0;
    let e = again.call("web1", &session, Some(Command::Heartbeat(pb::Heartbeat {}))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "the old session is gone: {e:?}");
}

/// A second device replaces a browser session (and the other way round), as with Connect.
async fn a_browser_session_and_a_native_stream_replace_each_other(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("web3", &[("en", 5)], &[], false)).await;
    let (mut web, _) = WebSession::open(s.device_channel(), "web3").await;
    web.next("signed in", |e| matches!(e, Event::Status(_)).then_some(())).await;
    let mut phone = s.connect("web3").await;
    phone.expect_status(pb::AgentStatus::Away).await;
    let ended = web.next("replaced", |e| if let Event::Ended(x) = e { Some(x.reason()) } else { None }).await;
    assert_eq!(ended, pb::SessionEndReason::Replaced);
    let e = web.send(Command::Heartbeat(pb::Heartbeat {})).await.unwrap_err();
    assert!(matches!(e.code(), Code::NotFound | Code::Unavailable | Code::FailedPrecondition), "{e:?}");
    let (mut web, _) = WebSession::open(s.device_channel(), "web3").await;
    assert_eq!(phone.ended().await, pb::SessionEndReason::Replaced);
    assert_eq!(web.send(Command::Heartbeat(pb::Heartbeat {})).await.unwrap().code, 0);
}

on_every_backend!(a_browser_session_is_the_agents_session, a_browser_session_and_a_native_stream_replace_each_other);

const SECRET: &str = "a-signing-secret-of-the-web-listener-test-32b";

/// One HTTP/1.1 exchange on a fresh connection: (status, lower-cased headers, body).
async fn http(port: u16, request: String, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut sock = bounded("connect", tokio::net::TcpStream::connect(("127.0.0.1", port))).await.unwrap();
    sock.write_all(request.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    bounded("the response", sock.read_to_end(&mut raw)).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A gRPC-Web call with an empty request message: (HTTP status, headers, body).
async fn grpc_web(
    port: u16,
    path: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let frame = [0u8, 0, 0, 0, 0];
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n",
        frame.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    if let Some(o) = origin {
        req.push_str(&format!("origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    http(port, req, &frame).await
}

/// The grpc-status of a gRPC-Web answer: in the headers (trailers-only) or in the trailer frame.
fn grpc_status(headers: &[(String, String)], body: &[u8]) -> Option<u32> {
    if let Some(s) = header(headers, "grpc-status") {
        return s.parse().ok();
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let at = text.find("grpc-status:")? + "grpc-status:".len();
    text[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_listener_serves_the_consoles_and_grpc_web_under_the_same_rules() {
    let port = dispatch_redis::testing::free_port();
    let config = ServerConfig {
        plaintext: true,
        web: WebConfig {
            listen: format!("127.0.0.1:{port}"),
            allowed_origins: vec!["https://console.example.com".into()],
            ..WebConfig::default()
        },
        ..ServerConfig::default()
    };
    let auth = AuthConfig {
        keys: vec![KeyConfig {
            kid: "dev".into(),
            algorithm: "HS256".into(),
            secret: Some(SECRET.into()),
            secret_file: None,
            public_key_file: None,
        }],
        ..AuthConfig::default()
    };
    let _server = TestServer::start_secure(Policy::default(), config, Authenticator::from_config(&auth).unwrap()).await;
    let page = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let (status, h, body) = eventually("the web listener", || async {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(_) => Some(http(port, page("/agent/"), b"").await),
            Err(_) => None,
        }
    })
    .await;
    assert_eq!(status, 200, "the agent console is public (it holds no data)");
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    assert!(header(&h, "content-security-policy").unwrap().contains("default-src 'self'"));
    assert!(String::from_utf8_lossy(&body).contains("/assets/agent.js"));
    for p in ["/planner", "/assets/agent.js", "/assets/planner.js", "/"] {
        assert_eq!(http(port, page(p), b"").await.0, 200, "{p}");
    }
    assert_ne!(http(port, page("/Cargo.toml"), b"").await.0, 200, "nothing but the consoles' files");

    // Secure mode: no token, no call; the role rules are the main port's.
    let stats = "/dispatch.v1.PlannerService/GetQueueStats";
    let (status, h, body) = grpc_web(port, stats, None, None).await;
    assert_eq!((status, grpc_status(&h, &body)), (200, Some(Code::Unauthenticated as u32)), "{h:?}");
    let agent = token(SECRET.as_bytes(), "agent", "ana", None, 600);
    let (_, h, body) = grpc_web(port, stats, Some(&agent), None).await;
    assert_eq!(grpc_status(&h, &body), Some(Code::PermissionDenied as u32));
    let planner = token(SECRET.as_bytes(), "planner", "pia", None, 600);
    let (status, h, body) = grpc_web(port, stats, Some(&planner), None).await;
    assert_eq!((status, grpc_status(&h, &body)), (200, Some(0)), "{h:?}");
    assert!(header(&h, "content-type").unwrap().starts_with("application/grpc-web"));
    let (_, h, body) = grpc_web(port, "/dispatch.v1.AgentService/OpenSession", None, None).await;
    assert_eq!(grpc_status(&h, &body), Some(Code::Unauthenticated as u32), "the agent's session too");

    // CORS: a grant for the listed origin only.
    let preflight = |origin: &str| {
        format!(
            "OPTIONS {stats} HTTP/1.1\r\nhost: x\r\norigin: {origin}\r\naccess-control-request-method: POST\r\n\
             access-control-request-headers: authorization,content-type,x-grpc-web\r\nconnection: close\r\n\r\n"
        )
    };
    let (_, h, _) = http(port, preflight("https://evil.example"), b"").await;
    assert_eq!(header(&h, "access-control-allow-origin"), None, "a disallowed origin gets no grant: {h:?}");
    let (_, h, _) = http(port, preflight("https://console.example.com"), b"").await;
    assert_eq!(header(&h, "access-control-allow-origin"), Some("https://console.example.com"));
    assert!(header(&h, "access-control-allow-headers").unwrap().contains("authorization"));
    let (_, h, _) = grpc_web(port, stats, Some(&planner), Some("https://evil.example")).await;
    assert_eq!(header(&h, "access-control-allow-origin"), None, "{h:?}");
    let (_, h, _) = grpc_web(port, stats, Some(&planner), Some("https://console.example.com")).await;
    assert_eq!(header(&h, "access-control-allow-origin"), Some("https://console.example.com"));
    assert!(header(&h, "access-control-expose-headers").unwrap().contains("grpc-status"));
}
