//! Redis-only: restarts with AOF, a hung Redis and a dead Redis. The dispatcher keeps running
//! throughout and recovers by itself.

use std::time::{Duration, Instant};

use dispatch_domain::Policy;
use dispatch_engine::EngineConfig;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use tonic::Code;

async fn serving(s: &TestServer) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel());
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cases_and_offers_survive_a_redis_restart_with_aof() {
    let mut s = TestServer::start(Backend::Redis, Policy::default()).await;
    s.register(profile("a1", &[("en", 5)], &[("billing", 3)], true)).await;
    let mut a = s.available("a1").await;
    s.submit(case("kept-1", "en", &[("billing", 2)], pb::Tier::Vip)).await;
    let offer = a.offer().await;
    s.submit(case("kept-2", "en", &[], pb::Tier::Standard)).await;
    let before = (s.case("kept-1").await, s.case("kept-2").await, s.agent("a1").await);

    let redis = s.redis.as_mut().expect("redis backend");
    redis.stop(); // SIGTERM: Redis fsyncs the AOF and exits
    redis.restart();

    // The same dispatcher reconnects by itself.
    let after = eventually("reads after the restart", || async {
        let mut esc = s.escalation();
        let c1 = esc.get_case(pb::GetCaseRequest { case_id: "kept-1".into() }).await.ok()?.into_inner().case?;
        Some(c1)
    })
    .await;
    assert_eq!(after, before.0, "the offered case is intact");
    assert_eq!(after.offers[0].offer_id, offer.offer_id);
    assert_eq!(s.case("kept-2").await, before.1);
    assert_eq!(s.agent("a1").await.profile, before.2.profile);
    // The restart began a new epoch, but Redis lost nothing (its high-water mark is where the
    // dispatcher saw it): joining is all, no reconcile window, no restore. The first write meets
    // the fence (UNAVAILABLE, retry) at most; the accept goes through without the clock moving.
    let code = bounded("the accept to go through", async {
        loop {
            let r = a.accept(&offer.offer_id).await;
            if r.code != Code::Unavailable as i32 {
                return r.code;
            }
        }
    })
    .await;
    assert_eq!(code, 0);
    assert!(s.engine.reconciles() > 0, "the new epoch was joined");
    assert_eq!(s.case("kept-1").await.state, pb::CaseState::Assigned as i32);
    assert_eq!(serving(&s).await, SERVING, "no reconcile window after a restart that lost nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_gives_unavailable_then_recovery() {
    let s = TestServer::start(Backend::Redis, Policy::default()).await;
    s.submit(case("h-1", "en", &[], pb::Tier::Standard)).await;
    assert_eq!(serving(&s).await, SERVING);
    s.redis.as_ref().unwrap().pause(); // SIGSTOP: connections stay open, nothing answers

    let started = Instant::now();
    let err = s.escalation().get_case(pb::GetCaseRequest { case_id: "h-1".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast (response timeout), took {:?}", started.elapsed());
    let err = s
        .escalation()
        .submit_case(pb::SubmitCaseRequest { spec: Some(case("h-2", "en", &[], pb::Tier::Standard)) })
        .await;
    assert_eq!(err.unwrap_err().code(), Code::Unavailable);
    eventually("health NOT_SERVING", || async { (serving(&s).await == NOT_SERVING).then_some(()) }).await;

    s.redis.as_ref().unwrap().resume();
    eventually("health SERVING again", || async { (serving(&s).await == SERVING).then_some(()) }).await;
    eventually("reads work again", || async {
        s.escalation().get_case(pb::GetCaseRequest { case_id: "h-1".into() }).await.ok().map(drop)
    })
    .await;
    // The retried submit goes through (idempotent: retried until it answers).
    eventually("the submit retry", || async {
        s.escalation()
            .submit_case(pb::SubmitCaseRequest { spec: Some(case("h-2", "en", &[], pb::Tier::Standard)) })
            .await
            .ok()
            .map(drop)
    })
    .await;
    assert_eq!(s.case("h-2").await.state, pb::CaseState::Queued as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_gives_unavailable_and_a_restarted_one_is_used_again() {
    let mut s = TestServer::start(Backend::Redis, Policy::default()).await;
    s.register(profile("d1", &[("en", 5)], &[], false)).await;
    s.redis.as_mut().unwrap().kill();
    let err = s.roster().get_agent(pb::GetAgentRequest { agent_id: "d1".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    eventually("health NOT_SERVING", || async { (serving(&s).await == NOT_SERVING).then_some(()) }).await;
    s.redis.as_mut().unwrap().restart();
    // Back from its AOF with everything the dispatcher saw written: ready again as soon as the
    // new epoch is joined, without a reconcile window.
    eventually("health SERVING again", || async { (serving(&s).await == SERVING).then_some(()) }).await;
    eventually("the new epoch joined", || async { (s.engine.reconciles() > 0).then_some(()) }).await;
    eventually("writes work again", || async {
        s.roster()
            .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile("d2", &[("en", 5)], &[], false)) })
            .await
            .ok()
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dispatcher_follows_the_change_log_and_rebuilds_after_a_gap() {
    // A long presence lease: the manual clock jumps 20 s at once below, faster than A could
    // renew a 15 s lease (real time renews every 5 s).
    let policy = Policy { presence_lease_ms: 120_000, ..Policy::default() };
    let a = TestServer::start(Backend::Redis, policy.clone()).await;
    let b = TestServer::start_beside(&a, policy).await;
    let available_on_b = || async {
        let r = b.planner().get_availability(pb::GetAvailabilityRequest::default()).await.ok()?.into_inner();
        r.report?.total
    };
    a.register(profile("seen", &[("en", 5)], &[], false)).await;
    let mut seen = a.available("seen").await;
    eventually("B's index to see A's agent", || async { available_on_b().await.filter(|t| t.available == 1) }).await;

    // Trim the whole log: B's cursor now points before deleted entries, so it must rebuild.
    let url = a.redis.as_ref().unwrap().url();
    let out = std::process::Command::new("redis-cli")
        .args(["-u", &url, "XTRIM", "dispatch:{default}:log", "MAXLEN", "0"])
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success());
    a.register(profile("after-gap", &[("de", 5)], &[], false)).await;
    eventually("B's rebuilt index to see the new agent", || async {
        available_on_b().await.filter(|t| t.registered == 2)
    })
    .await;
    // A case submitted on B goes to the agent whose stream is on A: B makes the offer, A learns
    // of it from the change log and shows it to the device; the agent accepts through A.
    b.submit(case("via-b", "en", &[], pb::Tier::Standard)).await;
    let offer = seen.offer().await;
    assert_eq!(offer.case.as_ref().unwrap().case_id, "via-b");
    assert!(offer.remaining_ms > 0 && offer.remaining_ms <= 20_000);
    assert_eq!(seen.accept(&offer.offer_id).await.code, 0);
    assert_eq!(seen.assigned().await.offer_id, offer.offer_id);
    assert_eq!(b.case("via-b").await.state, pb::CaseState::Assigned as i32);
    // An offer B times out reaches the device on A as a revocation.
    b.submit(case("via-b-2", "en", &[], pb::Tier::Standard)).await;
    assert_eq!(seen.complete("via-b").await.code, 0, "the device on A completes its case");
    a.advance(10_000); // the chat wrap-up ends
    let second = seen.offer().await;
    assert_eq!(second.case.as_ref().unwrap().case_id, "via-b-2");
    a.advance(20_000);
    let r = seen.revoked().await;
    assert_eq!((r.offer_id.as_str(), r.reason.as_str()), (second.offer_id.as_str(), "timed_out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_shutting_down_hands_offers_back_and_sends_devices_elsewhere() {
    let policy = Policy { presence_lease_ms: 120_000, ..Policy::default() };
    let mut a = TestServer::start(Backend::Redis, policy.clone()).await;
    let b = TestServer::start_beside(&a, policy).await;
    for id in ["busy", "leaving", "staying"] {
        a.register(profile(id, &[("en", 5)], &[], false)).await;
    }
    // On A: "busy" holds an assignment, "leaving" a live offer.
    let mut busy = a.available("busy").await;
    a.submit(case("held", "en", &[], pb::Tier::Standard)).await;
    let o = busy.offer().await;
    assert_eq!(busy.accept(&o.offer_id).await.code, 0);
    let mut leaving = a.available("leaving").await;
    a.submit(case("handed-back", "en", &[], pb::Tier::Standard)).await;
    let offer = leaving.offer().await;
    assert_eq!(offer.case.as_ref().unwrap().case_id, "handed-back");
    // On B: a free agent.
    let mut staying = b.available("staying").await;

    a.shutdown().await;

    // Devices on A are told to reconnect (UNAVAILABLE is gRPC's "try again").
    for conn in [&mut leaving, &mut busy] {
        let status = conn.expect_error().await;
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(status.message().contains("reconnect"), "{}", status.message());
    }
    // The offer was handed back at once, not left to its deadline: the clock has not moved,
    // yet B offers the case to its agent.
    let again = staying.offer().await;
    assert_eq!(again.case.as_ref().unwrap().case_id, "handed-back");
    assert_eq!(b.case("handed-back").await.offers[0].reason, "disconnected");
    // The agent with an assignment reconnects to B and finds its work there.
    let mut busy = b.connect("busy").await;
    let status = busy
        .next("busy's status on B", |e| match e {
            pb::dispatcher_message::Event::Status(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(status.assigned_case_ids, vec!["held".to_owned()]);
    assert_eq!(busy.complete("held").await.code, 0);
    assert_eq!(b.case("held").await.state, pb::CaseState::Completed as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_redis_lost_in_a_crash_are_put_back_by_the_dispatchers() {
    let policy = Policy { presence_lease_ms: 120_000, ..Policy::default() };
    let mut a = TestServer::start(Backend::Redis, policy.clone()).await;
    let b = TestServer::start_beside(&a, policy).await;
    for id in ["w1", "w2"] {
        a.register(profile(id, &[("en", 5)], &[], false)).await;
    }
    let mut w1 = a.available("w1").await;
    eventually("B to see w1", || async {
        let r = b.planner().get_availability(pb::GetAvailabilityRequest::default()).await.ok()?.into_inner();
        r.report?.total.filter(|t| t.available == 1)
    })
    .await;
    // Redis's state "a second ago".
    let saved = a.redis.as_ref().unwrap().copy_aof();
    // Then: a case submitted through B (and confirmed to the router), offered to w1 and accepted.
    b.submit(case("late", "en", &[], pb::Tier::Standard)).await;
    let offer = w1.offer().await;
    assert_eq!(w1.accept(&offer.offer_id).await.code, 0);
    w1.assigned().await;
    eventually("B to see the assignment", || async {
        b.engine
            .get_case(&dispatch_domain::CaseId::parse("id", "late").ok()?, None)
            .await
            .ok()
            .filter(|(c, _)| c.state.name() == "assigned")
    })
    .await;

    // Redis crashes and comes back without those writes.
    a.redis.as_mut().unwrap().crash_back_to(&saved);
    let redis_url = a.redis.as_ref().unwrap().url();
    let raw = std::process::Command::new("redis-cli")
        .args(["-u", &redis_url, "EXISTS", "dispatch:{default}:case:late"])
        .output()
        .expect("redis-cli runs");
    assert_eq!(String::from_utf8_lossy(&raw.stdout).trim(), "0", "Redis really lost the case");

    // Both dispatchers notice, join the new epoch and put back what they know.
    eventually("both dispatchers to reconcile", || async {
        (a.engine.reconciles() > 0 && b.engine.reconciles() > 0).then_some(())
    })
    .await;
    // The dispatcher that joins first may not have read the newest writes yet and see no loss;
    // the one that did then begins a lossy epoch, and both put back what they know. Writes wait
    // out its window (UNAVAILABLE meanwhile: a client retries).
    let mut w2 = bounded("w2 to sign in once the window has passed", async {
        loop {
            a.advance(EngineConfig::default().reconcile_window_ms);
            match AgentConn::open(b.device_channel(), "w2").await {
                Ok(mut c) => {
                    if c.go_available().await.code == 0 {
                        return c;
                    }
                }
                Err(e) => assert_eq!(e.code(), Code::Unavailable, "{}", e.message()),
            }
        }
    })
    .await;
    // Nothing lost, nothing given twice: the case is w1's, with its one offer.
    let late = b.case("late").await;
    assert_eq!(late.state, pb::CaseState::Assigned as i32);
    assert_eq!(late.current_agent_id, "w1");
    assert_eq!(late.offers.len(), 1);
    assert_eq!(a.engine.losses_beyond_memory(), (0, vec![]), "a loss within memory is put back, not reported");
    assert_eq!(b.engine.losses_beyond_memory(), (0, vec![]));
    // The planner's counters are back where the dispatchers saw them.
    let q = a.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((q.submitted_total, q.offers_made, q.offers_accepted), (1, 1, 1), "{q:?}");
    assert_eq!(w1.complete("late").await.code, 0);
    // Versions written after the loss carry the new epoch: none can equal one from before it.
    let done = a.case("late").await;
    assert!(done.version > 1 << 32, "version {} carries the epoch", done.version);
    // And dispatch goes on: a new case reaches the free agent.
    a.submit(case("after", "en", &[], pb::Tier::Standard)).await;
    let next = w2.offer().await;
    assert_eq!(next.case.as_ref().unwrap().case_id, "after");
}

/// A Redis that comes back with nothing (no persistence, a new volume): the first call that sees
/// it (a write, the change log, the readiness probe) reloads the Functions; both dispatchers
/// join a new epoch, put back what they hold (the live case, the agents, the case closed a moment
/// ago), and serve again by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_is_detected_and_repaired() {
    let policy = Policy { presence_lease_ms: 120_000, ..Policy::default() };
    let mut a = TestServer::start(Backend::Redis, policy.clone()).await;
    let b = TestServer::start_beside(&a, policy).await;
    for id in ["e1", "e2"] {
        a.register(profile(id, &[("en", 5)], &[], false)).await;
    }
    let mut e1 = a.available("e1").await;
    b.submit(case("done-1", "en", &[], pb::Tier::Standard)).await;
    let o = e1.offer().await;
    assert_eq!(e1.accept(&o.offer_id).await.code, 0);
    assert_eq!(e1.complete("done-1").await.code, 0);
    a.advance(10_000); // wrap-up ends
    b.submit(case("held-1", "en", &[], pb::Tier::Standard)).await;
    let o = e1.offer().await;
    assert_eq!(e1.accept(&o.offer_id).await.code, 0);
    eventually("B to see held-1 assigned", || async {
        let c = b.case("held-1").await;
        (c.state == pb::CaseState::Assigned as i32).then_some(())
    })
    .await;

    a.redis.as_mut().unwrap().crash_empty();
    assert_eq!(a.redis.as_ref().unwrap().cli(&["DBSIZE"]), "0", "Redis really is empty");
    eventually("both dispatchers to reconcile", || async {
        (a.engine.reconciles() > 0 && b.engine.reconciles() > 0).then_some(())
    })
    .await;
    eventually("A not ready while the reconcile window is open", || async {
        (serving(&a).await == NOT_SERVING).then_some(())
    })
    .await;
    a.advance(EngineConfig::default().reconcile_window_ms);
    eventually("A ready again", || async { (serving(&a).await == SERVING).then_some(()) }).await;
    eventually("B ready again", || async { (serving(&b).await == SERVING).then_some(()) }).await;
    // What they held is back, and dispatch goes on.
    assert_eq!(b.case("done-1").await.state, pb::CaseState::Completed as i32, "a case closed lately is kept");
    let held = a.case("held-1").await;
    assert_eq!((held.state, held.current_agent_id.as_str()), (pb::CaseState::Assigned as i32, "e1"));
    let mut e2 = b.available("e2").await;
    a.submit(case("after-empty", "en", &[], pb::Tier::Standard)).await;
    assert_eq!(e2.offer().await.case.unwrap().case_id, "after-empty");
    assert_eq!(e1.complete("held-1").await.code, 0);
}

/// `FUNCTION FLUSH` alone (the data stays): the library is loaded again by the next call that
/// needs it, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_functions_are_loaded_again() {
    let s = TestServer::start(Backend::Redis, Policy::default()).await;
    s.register(profile("f1", &[("en", 5)], &[], false)).await;
    assert_eq!(s.redis.as_ref().unwrap().cli(&["FUNCTION", "FLUSH"]), "OK");
    eventually("writes to work again", || async {
        s.roster()
            .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile("f2", &[("en", 5)], &[], false)) })
            .await
            .ok()
    })
    .await;
    eventually("health SERVING", || async { (serving(&s).await == SERVING).then_some(()) }).await;
    assert_eq!(s.agent("f1").await.profile.unwrap().agent_id, "f1");
}

/// Redis out of memory (maxmemory reached, noeviction): every write is refused, so readiness says
/// NOT_SERVING until memory is back; liveness (the process) is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_is_not_ready_until_it_has_room() {
    let s = TestServer::start(Backend::Redis, Policy::default()).await;
    s.register(profile("m1", &[("en", 5)], &[], false)).await;
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    eventually("health NOT_SERVING", || async { (serving(&s).await == NOT_SERVING).then_some(()) }).await;
    let err = s
        .roster()
        .upsert_agent(pb::UpsertAgentRequest { profile: Some(profile("m2", &[("en", 5)], &[], false)) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("out of memory"), "{}", err.message());
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    eventually("health SERVING again", || async { (serving(&s).await == SERVING).then_some(()) }).await;
    s.register(profile("m2", &[("en", 5)], &[], false)).await;
}

/// A loss reaching back past what the dispatcher remembers of closed cases (here: a memory of
/// one second, and Redis back to its state of ten seconds ago) cannot be put back; it is
/// detected and reported with the ids it can name, instead of passing silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_beyond_what_is_remembered_is_reported() {
    let engine = EngineConfig { reconcile_memory_ms: 1_000, ..EngineConfig::default() };
    let mut s = TestServer::start_redis_with_engine(Policy::default(), engine).await;
    s.register(profile("l1", &[("en", 5)], &[], false)).await;
    let mut l1 = s.available("l1").await;
    // old-0 is offered before Redis's state "of back then" is taken; it is completed after.
    s.submit(case("old-0", "en", &[], pb::Tier::Standard)).await;
    let first = l1.offer().await;
    let saved = s.redis.as_ref().unwrap().copy_aof();
    assert_eq!(l1.accept(&first.offer_id).await.code, 0);
    assert_eq!(l1.complete("old-0").await.code, 0);
    s.advance(10_000); // the wrap-up ends
    s.submit(case("old-1", "en", &[], pb::Tier::Standard)).await;
    let o = l1.offer().await;
    assert_eq!(l1.accept(&o.offer_id).await.code, 0);
    assert_eq!(l1.complete("old-1").await.code, 0);
    s.advance(10_000); // both closed long before what is remembered
    assert_eq!(s.engine.losses_beyond_memory().0, 0);
    s.redis.as_mut().unwrap().crash_back_to(&saved);
    eventually("the reconcile", || async { (s.engine.reconciles() > 0).then_some(()) }).await;
    let (losses, _) = eventually("the loss to be reported", || async {
        Some(s.engine.losses_beyond_memory()).filter(|(n, _)| *n > 0)
    })
    .await;
    assert_eq!(losses, 1);
    // Redis brought old-0 back as offered; the dispatcher knew it was completed and closed it
    // again instead of serving it twice, and names it.
    let (_, ids) = s.engine.losses_beyond_memory();
    assert!(ids.iter().any(|id| id.as_str() == "old-0"), "{ids:?}");
    let old = s.case("old-0").await;
    assert_eq!(old.state, pb::CaseState::Completed as i32);
    assert_eq!(old.outcome, dispatch_domain::transition::CLOSED_BEFORE_LOSS);
    s.advance(EngineConfig::default().reconcile_window_ms);
    s.submit(case("after-loss", "en", &[], pb::Tier::Standard)).await;
    let next = l1.offer().await;
    assert_eq!(next.case.unwrap().case_id, "after-loss", "the revived offer of old-0 is never offered again");
}

/// Engine settings for a dispatcher that learns of others' writes and of store restarts only
/// when a write of its own is fenced (no change-log polling, no probe unless the clock moves).
fn quiet() -> EngineConfig {
    EngineConfig { change_feed_interval_ms: 3_600_000, health_interval_ms: 3_600_000, ..EngineConfig::default() }
}

/// Registers `id` through `s` once: `Err` with the message of an UNAVAILABLE refusal (any other
/// refusal fails the test).
async fn try_register(s: &TestServer, id: &str) -> Result<(), String> {
    let profile = Some(profile(id, &[("en", 5)], &[], false));
    match s.roster().upsert_agent(pb::UpsertAgentRequest { profile }).await {
        Ok(_) => Ok(()),
        Err(e) => {
            assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
            assert!(retry_delay(&e).is_some(), "UNAVAILABLE carries a retry delay: {}", e.message());
            Err(e.message().to_owned())
        }
    }
}

/// Waits until a write through `s` is refused because the store waits for dispatchers to
/// rejoin (a write that succeeds fails the test); the refusal's message.
async fn refused_while_waiting(s: &TestServer, id: &str) -> String {
    eventually("a write to be refused while the store waits for dispatchers", || async {
        match try_register(s, id).await {
            Ok(()) => panic!("{id} was written while the store should wait for a dispatcher"),
            Err(m) => m.contains("to rejoin").then_some(m),
        }
    })
    .await
}

/// Registers `id` through `s` once the store takes writes again.
async fn written_once_open(s: &TestServer, id: &str) {
    bounded("the write to go through", async {
        while try_register(s, id).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Redis crashes and comes back without the last writes, which only dispatcher A saw (B had not
/// read them yet): B rejoins first and sees nothing missing. B must not write on the store until
/// A has rejoined (A's mark shows the loss, and A puts back what it knows); otherwise B would
/// time out the offer A's agent accepted and give the case to a second agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_only_one_dispatcher_saw_waits_for_it() {
    let policy = Policy { presence_lease_ms: 120_000, ..Policy::default() };
    let mut a = TestServer::start_redis_with_engine(policy.clone(), quiet()).await;
    let b = TestServer::start_beside_with_engine(&a, policy, quiet()).await;
    a.register(profile("w1", &[("en", 5)], &[], false)).await;
    let mut w1 = AgentConn::open(a.channel(), "w1").await.expect("w1 connects");
    assert_eq!(w1.go_available().await.code, 0);
    let saved = a.redis.as_ref().unwrap().copy_aof();
    // Through A only: a case offered to w1 and accepted.
    a.submit(case("late", "en", &[], pb::Tier::Standard)).await;
    let offer = w1.offer().await;
    assert_eq!(w1.accept(&offer.offer_id).await.code, 0);
    w1.assigned().await;
    a.redis.as_mut().unwrap().crash_back_to(&saved);

    // B's next write is fenced; B rejoins, sees no loss, and waits for A.
    let refusal = refused_while_waiting(&b, "w2").await;
    assert!(refusal.contains("waiting for 1 dispatcher(s) to rejoin"), "{refusal}");

    // A's next write is fenced too (the first may meet the connection Redis broke): it rejoins,
    // finds the loss and puts the assignment back; B is fenced again, rejoins the lossy epoch
    // and puts back what it knows.
    eventually("both dispatchers to reconcile the loss", || async {
        let _ = try_register(&a, "w3").await;
        let _ = try_register(&b, "w2").await;
        (a.engine.reconciles() > 0 && b.engine.reconciles() > 1).then_some(())
    })
    .await;
    a.advance(EngineConfig::default().reconcile_window_ms);
    written_once_open(&b, "w2").await;
    let late = b.case("late").await;
    assert_eq!(late.state, pb::CaseState::Assigned as i32);
    assert_eq!(late.current_agent_id, "w1");
    assert_eq!(late.offers.len(), 1, "offered once, to w1");
    assert_eq!(b.engine.losses_beyond_memory(), (0, vec![]));
}

/// A dispatcher that does not rejoin after a store restart (it died) is waited for only until
/// the deadline (store clock); one that shut down gracefully is not waited for at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_dispatchers_that_do_not_rejoin_is_bounded() {
    let policy = Policy::default();
    let mut a = TestServer::start_redis_with_engine(policy.clone(), quiet()).await;
    let mut gone = TestServer::start_beside_with_engine(&a, policy.clone(), quiet()).await;
    let dead = TestServer::start_beside_with_engine(&a, policy, quiet()).await;
    gone.shutdown().await;
    // `dead` never writes again: it stands for a process that died with the store.
    dead.engine.stop();
    let redis = a.redis.as_mut().unwrap();
    redis.stop();
    redis.restart();
    let refusal = refused_while_waiting(&a, "w1").await;
    assert!(refusal.contains("waiting for 1 dispatcher(s) to rejoin"), "not for the one that left: {refusal}");
    a.advance(dispatch_redis::RedisConfig::default().rejoin_wait_ms);
    written_once_open(&a, "w1").await;
}
