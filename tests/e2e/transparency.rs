//! What workers are told: why no offers now, their own figures, and the allocation parameters
//! in force, over the agent stream and to planners alike.

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use pb::agent_message::Command;
use pb::dispatcher_message::Event;

async fn explained(a: &mut AgentConn) -> pb::ExplainAgentResponse {
    let id = a.send(Command::ExplainMe(pb::ExplainMe {})).await;
    let e = a
        .next("an explanation", |e| match e {
            Event::Explained(x) => Some(x.clone()),
            _ => None,
        })
        .await;
    assert_eq!(a.result(&id).await.code, 0);
    e
}

fn codes(e: &pb::ExplainAgentResponse) -> Vec<&str> {
    e.reasons.iter().map(|r| r.code.as_str()).collect()
}

async fn an_agent_is_told_why_no_offers_come_and_sees_its_own_figures(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("ida", &[("de", 5)], &[("billing", 2)], false)).await;
    let mut ida = s.connect("ida").await;
    ida.expect_status(pb::AgentStatus::Away).await;
    assert_eq!(codes(&explained(&mut ida).await), ["away"]);
    assert_eq!(ida.go_available().await.code, 0);
    assert_eq!(codes(&explained(&mut ida).await), ["no_waiting_case"]);
    // A waiting case she may not take: told what it needs.
    s.submit(case("t1", "de", &[("disputes", 3)], pb::Tier::Standard)).await;
    // The device's replica learns of the case from the change log (at once on one replica).
    let e = bounded("the case to be seen", async {
        loop {
            let e = explained(&mut ida).await;
            if codes(&e) != ["no_waiting_case"] {
                return e;
            }
        }
    })
    .await;
    assert_eq!(codes(&e), ["requirements"]);
    assert!(e.reasons[0].detail.contains("1 skill (e.g. lacks skill disputes"), "{}", e.reasons[0].detail);
    // One she may take: offered; decline it and she cools down.
    s.submit(case("t2", "de", &[], pb::Tier::Standard)).await;
    let o = ida.offer().await;
    assert_eq!(codes(&explained(&mut ida).await), ["holding_offer", "at_capacity"]);
    assert_eq!(ida.decline(&o.offer_id, "lunch").await.code, 0);
    let e = explained(&mut ida).await;
    assert_eq!(e.reasons[0].code, "cool_down");
    assert!(e.reasons[0].until_ms > 0);
    let today = e.today.unwrap();
    assert_eq!((today.offers_received, today.offers_declined, today.offers_accepted), (1, 1, 0));
    // Planners see the same for any agent.
    let p = s.planner().explain_agent(pb::ExplainAgentRequest { agent_id: "ida".into() }).await.unwrap().into_inner();
    assert_eq!(codes(&p), codes(&e));
    assert_eq!(p.last_7_days.unwrap().offers_received, 1);
    assert_eq!(p.reputation, 4.0, "a newcomer at the prior");
    let err = s.planner().explain_agent(pb::ExplainAgentRequest { agent_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

async fn the_allocation_parameters_are_the_same_on_the_stream_and_for_planners(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("jo", &[("en", 5)], &[], false)).await;
    let mut jo = s.connect("jo").await;
    let id = jo.send(Command::GetAllocationPolicy(pb::GetAllocationPolicy {})).await;
    let mine = jo
        .next("the allocation policy", |e| match e {
            Event::AllocationPolicy(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(jo.result(&id).await.code, 0);
    let planners = s.planner().get_allocation_policy(pb::GetAllocationPolicyRequest {}).await.unwrap().into_inner();
    assert_eq!(mine, planners);
    assert_eq!(mine.weights[0].term, "idle", "most important first");
    let shares: f64 = mine.weights.iter().map(|w| w.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(mine.filters.iter().any(|f| f.code == "market"));
    assert!(mine.text.starts_with("Every case is offered automatically"), "{}", mine.text);
}

async fn fairness_figures_show_how_work_spreads_and_how_long_each_tier_waits(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("busy", &[("de", 5)], &[], true)).await;
    s.register(profile("idle", &[("de", 3)], &[], false)).await;
    s.register(profile("other", &[("fr", 5)], &[], false)).await;
    let mut busy = s.available("busy").await;
    for (id, tier) in [("f1", pb::Tier::Vip), ("f2", pb::Tier::Standard), ("f3", pb::Tier::Standard)] {
        s.submit(case(id, "de", &[], tier)).await;
        s.advance(2_000); // each customer waits 2 s before the accept
        let o = busy.offer().await;
        assert_eq!(busy.accept(&o.offer_id).await.code, 0);
        assert_eq!(busy.complete(id).await.code, 0);
        s.advance(15_000);
    }
    let get = |language: &str, days: u32| {
        let mut planner = s.planner();
        let request = pb::GetFairnessRequest { language: language.into(), days };
        async move { planner.get_fairness(request).await }
    };
    // With two replicas the planner's learns of the agent's records from the change log.
    let f = eventually("the three offers to be counted", || async {
        Some(get("de", 1).await.unwrap().into_inner()).filter(|f| f.offers == 3 && f.engaged_ms > 0)
    })
    .await;
    assert_eq!((f.agents, f.offers), (2, 3), "the German agents only");
    assert!((f.offers_gini - 0.5).abs() < 1e-9, "three offers and none: {}", f.offers_gini);
    assert_eq!(f.offers_top_decile_share, 1.0);
    assert!(f.engaged_gini > 0.0 && f.engaged_ms > 0);
    let waits: Vec<(i32, u64, f64)> = f.waits.iter().map(|w| (w.tier, w.assigned, w.mean_wait_ms)).collect();
    assert_eq!(waits, [(pb::Tier::Vip as i32, 1, 2_000.0), (pb::Tier::Standard as i32, 2, 2_000.0)]);
    assert_eq!(get("", 0).await.unwrap().into_inner().agents, 3, "every agent, seven days");
    assert_field(&get("de", 8).await.unwrap_err(), "days");
    assert_field(&get("d", 1).await.unwrap_err(), "language");
}

on_every_backend!(
    fairness_figures_show_how_work_spreads_and_how_long_each_tier_waits,
    an_agent_is_told_why_no_offers_come_and_sees_its_own_figures,
    the_allocation_parameters_are_the_same_on_the_stream_and_for_planners,
);

/// Changes of the weights are logged with who put them in force and when, once each, whichever
/// replica starts with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_are_logged_with_who_and_when() {
    let first = TestServer::start(Backend::Redis, Policy::default()).await;
    let log = |s: &TestServer| {
        let mut planner = s.planner();
        async move { planner.get_allocation_policy(pb::GetAllocationPolicyRequest {}).await.unwrap().into_inner().changes }
    };
    let changes = log(&first).await;
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].by.as_str(), changes[0].weights["idle"]), ("deployment configuration", 2.0));
    let mut heavier = Policy::default();
    heavier.weights.idle = 3.0;
    let author =
        dispatch_engine::EngineConfig { policy_author: "ana@ops".into(), ..dispatch_engine::EngineConfig::default() };
    let second = TestServer::start_beside_with_engine(&first, heavier.clone(), author.clone()).await;
    let _third = TestServer::start_beside_with_engine(&first, heavier, author).await;
    let changes = log(&second).await;
    assert_eq!(changes.len(), 2, "the same weights again are not a change: {changes:?}");
    assert_eq!((changes[0].by.as_str(), changes[0].weights["idle"]), ("ana@ops", 3.0), "newest first");
    assert!(changes[0].at_ms >= changes[1].at_ms);
    assert_eq!(log(&first).await, changes, "every replica tells the same story");
}
