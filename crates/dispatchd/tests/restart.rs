//! `kill -9` the dispatcher while an offer is out: a new dispatcher on the same Redis expires
//! the offer on time (Redis's clock) and re-offers the case. Real processes, real Redis time,
//! bounded waits.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatch_grpc::client;
use dispatch_proto::v1 as pb;
use dispatch_redis::testing::RedisServer;
use pb::agent_message::Command as C;
use pb::dispatcher_message::Event;
use tokio_stream::StreamExt;

const BOUND: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when dropped (also when an assertion fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dispatchd(redis: &RedisServer) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .args(["--dev", "--listen", &format!("127.0.0.1:{port}"), "--redis-url", &redis.url()])
        .args(["--set", "policy.offer_timeout_ms=1500", "--set", "policy.presence_lease_ms=3000"])
        .args(["--set", "engine.sweep_interval_ms=50", "--set", "log.filter=\"warn\""])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dispatchd starts");
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(c) = client::channel(addr).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("dispatchd listening")
}

fn profile(id: &str, prof: u32) -> pb::AgentProfile {
    pb::AgentProfile {
        agent_id: id.into(),
        display_name: id.into(),
        languages: vec![pb::LanguageProficiency { language: "en".into(), proficiency: prof }],
        skills: vec![],
        vip_certified: false,
        capacity: vec![pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 1 }],
        rating: 4.0,
    }
}

/// Connects as `id`, goes available, and returns the stream and the command sender.
async fn agent(
    ch: tonic::transport::Channel,
    id: &str,
) -> (tokio::sync::mpsc::Sender<pb::AgentMessage>, tonic::Streaming<pb::DispatcherMessage>) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::AgentMessage {
        request_id: "go".into(),
        command: Some(C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 })),
    })
    .await
    .unwrap();
    let req = client::as_agent(id, tokio_stream::wrappers::ReceiverStream::new(rx)).unwrap();
    let stream =
        pb::agent_service_client::AgentServiceClient::new(ch).connect(req).await.expect("connect").into_inner();
    (tx, stream)
}

async fn next_offer(stream: &mut tonic::Streaming<pb::DispatcherMessage>) -> pb::OfferMade {
    tokio::time::timeout(BOUND, async {
        loop {
            match stream.next().await.expect("stream open").expect("stream ok").event {
                Some(Event::Offer(o)) => return o,
                _ => continue,
            }
        }
    })
    .await
    .expect("an offer within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatchers_offer_is_expired_and_re_offered_by_its_successor() {
    let redis = RedisServer::start();
    let (mut first, addr1) = dispatchd(&redis);
    let ch1 = channel(&addr1).await;
    let mut roster = pb::roster_service_client::RosterServiceClient::new(ch1.clone());
    for (id, prof) in [("best", 5), ("backup", 3)] {
        roster.upsert_agent(pb::UpsertAgentRequest { profile: Some(profile(id, prof)) }).await.unwrap();
    }
    let (_tx_best, mut best) = agent(ch1.clone(), "best").await;
    let spec = pb::CaseSpec {
        case_id: "survivor".into(),
        language: "en".into(),
        tier: pb::Tier::Standard as i32,
        channel: pb::Channel::Chat as i32,
        ..Default::default()
    };
    pb::escalation_service_client::EscalationServiceClient::new(ch1.clone())
        .submit_case(pb::SubmitCaseRequest { spec: Some(spec) })
        .await
        .unwrap();
    let offer = next_offer(&mut best).await;

    first.0.kill().unwrap(); // kill -9 with the offer out
    first.0.wait().unwrap();

    let (_second, addr2) = dispatchd(&redis);
    let ch2 = channel(&addr2).await;
    let (_tx_backup, mut backup) = agent(ch2.clone(), "backup").await;
    let re_offer = next_offer(&mut backup).await;
    assert_eq!(re_offer.case.unwrap().case_id, "survivor");

    let case = pb::escalation_service_client::EscalationServiceClient::new(ch2)
        .get_case(pb::GetCaseRequest { case_id: "survivor".into() })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let first_offer = &case.offers[0];
    assert_eq!(first_offer.offer_id, offer.offer_id);
    assert!(
        [pb::OfferOutcome::TimedOut as i32, pb::OfferOutcome::Revoked as i32].contains(&first_offer.outcome),
        "the dead dispatcher's offer was reclaimed: {first_offer:?}"
    );
    if first_offer.outcome == pb::OfferOutcome::TimedOut as i32 {
        assert!(first_offer.decided_at_ms >= first_offer.deadline_ms, "timed out on time, not early");
    }
    assert!(case.offers[1].offered_at_ms >= first_offer.decided_at_ms, "re-offered only after the first offer ended");
    assert_eq!(case.offers[1].agent_id, "backup");
}
