//! Traces: `dispatchd` with an OTLP endpoint exports a span per call, continuing the caller's
//! trace from its `traceparent` metadata, and spans of the transitions and offers inside it; an
//! offer (made later by the matcher) links back to the submit. The receiver is a tonic server
//! on the OpenTelemetry collector's own proto, started by the test.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch_proto::v1 as pb;
use dispatch_tests::{AgentConn, bounded, case, free_port, profile};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_with_the_callers_parent_and_offers_link_to_the_submit() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let port = free_port();
    let _d = Killed(
        Command::new(env!("CARGO_BIN_EXE_dispatchd"))
            .args(["--dev", "--listen", &format!("127.0.0.1:{port}"), "--set", "log.filter=\"warn\""])
            .args([
                "--set",
                &format!("telemetry.otlp_endpoint=\"{otlp}\""),
                "--set",
                "telemetry.export_interval_ms=100",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dispatchd starts"),
    );
    let addr = format!("http://127.0.0.1:{port}");
    let channel = bounded("dispatchd to listen", async {
        loop {
            if let Ok(c) = tonic::transport::Endpoint::from_shared(addr.clone()).unwrap().connect().await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let mut roster = pb::roster_service_client::RosterServiceClient::new(channel.clone());
    roster
        .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile("t1", &[("en", 5)], &[], false)) })
        .await
        .unwrap();
    let mut agent = AgentConn::open(channel.clone(), "t1").await.expect("the agent connects");
    assert_eq!(agent.go_available().await.code, 0);
    let mut submit =
        tonic::Request::new(pb::SubmitCaseRequest { spec: Some(case("traced", "en", &[], pb::Tier::Standard)) });
    submit.metadata_mut().insert("traceparent", format!("00-{TRACE}-{PARENT}-01").parse().unwrap());
    pb::escalation_service_client::EscalationServiceClient::new(channel.clone()).submit_case(submit).await.unwrap();
    let offer = agent.offer().await;
    assert_eq!(agent.accept(&offer.offer_id).await.code, 0);

    let spans = bounded("the spans to arrive", async {
        loop {
            let spans = receiver.spans.lock().unwrap().clone();
            let submit = spans.iter().find(|s| s.name == "dispatch.v1.EscalationService/SubmitCase").cloned();
            let offer = spans.iter().find(|s| s.name == "offer").cloned();
            if let (Some(s), Some(o)) = (submit, offer) {
                return (spans, s, o);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (all, submit, offer) = spans;
    assert_eq!(hex(&submit.trace_id), TRACE, "the submit continues the caller's trace");
    assert_eq!(hex(&submit.parent_span_id), PARENT, "as a child of the caller's span");
    let transition = all
        .iter()
        .find(|s| s.name == "transition" && s.parent_span_id == submit.span_id)
        .expect("the submit's transition is a child of its call");
    assert!(
        transition.attributes.iter().any(|a| a.key == "case.id"),
        "ids are attributes: {:?}",
        transition.attributes
    );
    assert!(
        offer.links.iter().any(|l| hex(&l.trace_id) == TRACE && l.span_id == transition.span_id),
        "the offer links back to the submit: {:?}",
        offer.links
    );
    for key in ["case.id", "offer.id", "agent.id"] {
        assert!(offer.attributes.iter().any(|a| a.key == key), "offer span has {key}: {:?}", offer.attributes);
    }
}
