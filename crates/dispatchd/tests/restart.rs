//! `kill -9` the dispatcher while an offer is out: a new dispatcher on the same Redis expires
//! the offer on time (Redis's clock) and re-offers the case. Real processes, real Redis time,
//! bounded waits.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatch_grpc::client;
use dispatch_proto::v1 as pb;
use dispatch_redis::testing::RedisServer;
use dispatch_tests::{AgentConn, free_port, profile};

const BOUND: Duration = Duration::from_secs(20);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatchers_offer_is_expired_and_re_offered_by_its_successor() {
    let redis = RedisServer::start();
    let (mut first, addr1) = dispatchd(&redis);
    let ch1 = channel(&addr1).await;
    let mut roster = pb::roster_service_client::RosterServiceClient::new(ch1.clone());
    for (id, prof) in [("best", 5), ("backup", 3)] {
        roster
            .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile(id, &[("en", prof)], &[], false)) })
            .await
            .unwrap();
    }
    let mut best = AgentConn::open(ch1.clone(), "best").await.expect("best connects");
    assert_eq!(best.go_available().await.code, 0);
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
    let offer = best.offer().await;

    first.0.kill().unwrap(); // kill -9 with the offer out
    first.0.wait().unwrap();

    let (_second, addr2) = dispatchd(&redis);
    let ch2 = channel(&addr2).await;
    let mut backup = AgentConn::open(ch2.clone(), "backup").await.expect("backup connects");
    assert_eq!(backup.go_available().await.code, 0);
    let re_offer = backup.offer().await;
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
