//! Earned reputation: routers rate completed cases; the agent's score is the shrunk mean of its
//! last controllable ratings (a newcomer at the prior); ratings are idempotent per case.

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;

async fn rate(s: &TestServer, id: &str, rating: u32, controllable: bool) -> Result<pb::Case, tonic::Status> {
    let r = pb::RateCaseRequest { case_id: id.into(), rating, agent_controllable: controllable };
    s.escalation().rate_case(r).await.map(|r| r.into_inner().case.unwrap())
}

async fn presence(s: &TestServer, id: &str) -> pb::AgentPresence {
    s.agent(id).await.presence.unwrap()
}

async fn ratings_are_idempotent_per_case_and_only_controllable_ones_move_the_score(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await; // window 50, prior 4.0 weighing 5
    s.register(profile("ana", &[("en", 5)], &[], false)).await;
    assert_eq!(presence(&s, "ana").await.reputation, 4.0, "a newcomer starts at the prior");
    let mut ana = s.available("ana").await;
    for id in ["r1", "r2"] {
        s.submit(case(id, "en", &[], pb::Tier::Standard)).await;
        let o = ana.offer().await;
        assert_eq!(ana.accept(&o.offer_id).await.code, 0);
        assert_eq!(ana.complete(id).await.code, 0);
        s.advance(15_000);
    }
    let before = s.case("r1").await;
    let rated = rate(&s, "r1", 5, true).await.unwrap();
    assert_eq!((rated.rating, rated.rating_agent_controllable), (5, true));
    assert_eq!((rated.state, rated.outcome.as_str()), (before.state, before.outcome.as_str()), "nothing else changes");
    let p = presence(&s, "ana").await;
    assert!((p.reputation - 25.0 / 6.0).abs() < 1e-9, "(4 × 5 + 5) / 6, got {}", p.reputation);
    assert_eq!((p.ratings_total, p.ratings_controllable), (1, 1));
    // The same rating again: OK, nothing counted twice. Another one: ALREADY_EXISTS.
    rate(&s, "r1", 5, true).await.unwrap();
    assert_eq!(presence(&s, "ana").await.ratings_total, 1);
    assert_eq!(rate(&s, "r1", 2, true).await.unwrap_err().code(), tonic::Code::AlreadyExists);
    // A complaint the agent could not influence is kept, not scored.
    rate(&s, "r2", 1, false).await.unwrap();
    let p = presence(&s, "ana").await;
    assert_eq!((p.ratings_total, p.ratings_controllable), (2, 1));
    assert!((p.reputation - 25.0 / 6.0).abs() < 1e-9);
    // Bad input changes nothing.
    for bad in [0, 6] {
        assert_field(&rate(&s, "r2", bad, true).await.unwrap_err(), "rating");
    }
    s.submit(case("open", "en", &[], pb::Tier::Standard)).await;
    let err = rate(&s, "open", 5, true).await.unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_deref()),
        (tonic::Code::FailedPrecondition, Some("CASE_NOT_COMPLETED"))
    );
    assert_eq!(rate(&s, "nope", 5, true).await.unwrap_err().code(), tonic::Code::NotFound);
    assert_field(&rate(&s, "a b", 5, true).await.unwrap_err(), "case_id");
}

on_every_backend!(ratings_are_idempotent_per_case_and_only_controllable_ones_move_the_score);
