//! The API surface: idempotency, validation, identity, planner, health and reflection.

use dispatch_domain::Policy;
use dispatch_grpc::ServerConfig;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use tokio_stream::StreamExt;
use tonic::Code;

async fn submit_is_idempotent_on_the_case_id(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let spec = case("idem-1", "en", &[("billing", 2)], pb::Tier::Standard);
    let first =
        s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(spec.clone()) }).await.unwrap().into_inner();
    assert!(first.created);
    let again =
        s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(spec.clone()) }).await.unwrap().into_inner();
    assert!(!again.created);
    assert_eq!(again.case.as_ref().unwrap().version, first.case.as_ref().unwrap().version);
    let mut other = spec;
    other.tier = pb::Tier::Vip as i32;
    let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(other) }).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let stats = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.submitted_total, stats.waiting), (1, 1));
    assert_eq!(s.case("idem-1").await.spec.unwrap().tier, pb::Tier::Standard as i32);
}

async fn bad_input_names_the_field_and_changes_nothing(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let bad_cases = [
        ("spec.language", {
            let mut c = case("v1", "english!", &[], pb::Tier::Standard);
            c.case_id = "v1".into();
            c
        }),
        ("spec.case_id", case("", "en", &[], pb::Tier::Standard)),
        ("spec.required_skills[0].level", case("v2", "en", &[("billing", 6)], pb::Tier::Standard)),
        ("spec.tier", case("v3", "en", &[], pb::Tier::Unspecified)),
        ("spec.summary", {
            let mut c = case("v4", "en", &[], pb::Tier::Standard);
            c.summary = "x".repeat(9000);
            c
        }),
        ("spec.required_skills", case("v5", "en", &vec![("s", 1); 33], pb::Tier::Standard)),
        ("spec.channel", {
            let mut c = case("v6", "en", &[], pb::Tier::Standard);
            c.channel = 0;
            c
        }),
    ];
    for (field, spec) in bad_cases {
        let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {}", err.message());
        assert!(err.message().starts_with(field), "expected {field} in {:?}", err.message());
        assert_field(&err, field);
    }
    let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: None }).await.unwrap_err();
    assert_field(&err, "spec");
    let stats = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.submitted_total, 0, "no rejected request created anything");

    let mut p = profile("bad", &[("en", 5)], &[("disputes", 9)], false);
    let err = s.roster().upsert_agent(pb::UpsertAgentRequest { profile: Some(p.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_field(&err, "profile.skills[0].level");
    p.skills.clear();
    p.languages.clear();
    let err = s.roster().upsert_agent(pb::UpsertAgentRequest { profile: Some(p) }).await.unwrap_err();
    assert_field(&err, "profile.languages");
    let err = s.roster().get_agent(pb::GetAgentRequest { agent_id: "bad".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the rejected agent was not registered");
    let err =
        s.roster().list_agents(pb::ListAgentsRequest { page_size: 5000, page_token: String::new() }).await.unwrap_err();
    assert_field(&err, "page_size");
    let err = s.escalation().get_case(pb::GetCaseRequest { case_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = s
        .planner()
        .get_availability(pb::GetAvailabilityRequest {
            filter: None,
            group_by: vec![pb::GroupBy::Language as i32, pb::GroupBy::Language as i32],
        })
        .await
        .unwrap_err();
    assert_field(&err, "group_by[1]");
}

async fn bad_agent_commands_get_a_result_naming_the_field(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("a", &[("en", 5)], &[], false)).await;
    let mut a = s.connect("a").await;
    let r = a.accept("").await;
    assert_eq!(r.code, Code::InvalidArgument as i32);
    assert!(r.message.starts_with("accept.offer_id"), "{}", r.message);
    assert_eq!(r.field, "accept.offer_id", "the result names the field");
    let r = a.accept("of-unknown").await;
    assert_eq!(r.code, Code::NotFound as i32);
    let r = a.command(pb::agent_message::Command::SetStatus(pb::SetStatus { status: 0 })).await;
    assert!(r.message.starts_with("set_status.status"), "{}", r.message);
    assert_eq!(r.field, "set_status.status", "the result names the field");
    let r = a.complete("not-mine").await;
    assert_eq!(r.code, Code::NotFound as i32);
    let r = a.command(pb::agent_message::Command::Heartbeat(pb::Heartbeat {})).await;
    assert_eq!(r.code, 0);
}

async fn the_agent_identity_comes_from_metadata(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(1);
    let no_id = pb::agent_service_client::AgentServiceClient::new(s.channel())
        .connect(tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap_err();
    assert_eq!(no_id.code(), Code::Unauthenticated);
    let unknown = AgentConn::open(s.channel(), "ghost").await.err().expect("unknown agent refused");
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn planner_counts_match_the_pool(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("de-vip", &[("de", 5), ("en", 4)], &[("disputes", 4)], true)).await;
    s.register(profile("de-plain", &[("de", 3)], &[("disputes", 2)], false)).await;
    s.register(profile("en-away", &[("en", 5)], &[("refunds", 3)], false)).await;
    s.register(profile("fr-off", &[("fr", 5)], &[], false)).await;
    let _v = s.available("de-vip").await;
    let _p = s.available("de-plain").await; // stays available
    let mut aw = s.connect("en-away").await;
    aw.expect_status(pb::AgentStatus::Away).await;
    s.submit(case("busy-1", "de", &[("disputes", 2)], pb::Tier::Standard)).await; // de-vip wins (higher)
    eventually("de-vip to hold the offer", || async {
        (!s.agent("de-vip").await.presence.unwrap().pending_offer_id.is_empty()).then_some(())
    })
    .await;
    let total = |r: pb::GetAvailabilityResponse| r.report.unwrap().total.unwrap();
    // The planner counts from this dispatcher's index, which takes a commit just after the store.
    let all = eventually("the planner to count de-vip busy", || async {
        let r = s.planner().get_availability(pb::GetAvailabilityRequest::default()).await.unwrap().into_inner();
        Some(total(r)).filter(|t| t.busy == 1)
    })
    .await;
    assert_eq!((all.registered, all.online, all.available, all.busy, all.away, all.offline), (4, 3, 1, 1, 1, 1));
    let filter = pb::AvailabilityFilter {
        languages: vec!["de".into()],
        min_language_proficiency: 0,
        skills: vec![pb::SkillLevel { skill: "disputes".into(), level: 3 }],
        vip_certified_only: true,
        ..Default::default()
    };
    let german = total(
        s.planner()
            .get_availability(pb::GetAvailabilityRequest { filter: Some(filter), group_by: vec![] })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!((german.registered, german.busy), (1, 1));
    let grouped = s
        .planner()
        .get_availability(pb::GetAvailabilityRequest {
            filter: None,
            group_by: vec![pb::GroupBy::Language as i32, pb::GroupBy::Activity as i32],
        })
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let count = |lang: &str, act: pb::Activity| {
        grouped
            .groups
            .iter()
            .find(|g| g.language == lang && g.activity == act as i32)
            .map_or(0, |g| g.counts.unwrap().registered)
    };
    assert_eq!(count("de", pb::Activity::Busy), 1);
    assert_eq!(count("de", pb::Activity::Available), 1);
    assert_eq!(count("en", pb::Activity::Away), 1);
    assert_eq!(count("en", pb::Activity::Busy), 1, "de-vip also speaks English");
    assert_eq!(count("fr", pb::Activity::Offline), 1);
    let q = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((q.waiting, q.offered, q.offers_made), (0, 1, 1));
}

async fn watch_availability_reports_changes(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("w", &[("en", 5)], &[], false)).await;
    let mut reports = s
        .planner()
        .watch_availability(pb::WatchAvailabilityRequest { filter: None, group_by: vec![], interval_ms: 250 })
        .await
        .unwrap()
        .into_inner();
    let first = bounded("first report", reports.next()).await.unwrap().unwrap();
    assert_eq!(first.total.unwrap().available, 0);
    let _a = s.available("w").await;
    let seen = bounded("a report with the agent available", async {
        while let Some(r) = reports.next().await {
            if r.unwrap().total.unwrap().available == 1 {
                return true;
            }
        }
        false
    })
    .await;
    assert!(seen);
}

async fn roster_lists_pages_and_refuses_to_remove_a_busy_agent(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    for i in 0..5 {
        s.register(profile(&format!("agent-{i}"), &[("en", 5)], &[], false)).await;
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let r = s
            .roster()
            .list_agents(pb::ListAgentsRequest { page_size: 2, page_token: token })
            .await
            .unwrap()
            .into_inner();
        ids.extend(r.agents.into_iter().map(|a| a.profile.unwrap().agent_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(ids, (0..5).map(|i| format!("agent-{i}")).collect::<Vec<_>>());
    let mut a = s.available("agent-0").await;
    s.submit(case("rm-1", "en", &[], pb::Tier::Standard)).await;
    let offer = a.offer().await;
    let _ = a.accept(&offer.offer_id).await;
    let err = s.roster().remove_agent(pb::RemoveAgentRequest { agent_id: "agent-0".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    s.roster().remove_agent(pb::RemoveAgentRequest { agent_id: "agent-4".into() }).await.unwrap();
    let err = s.roster().get_agent(pb::GetAgentRequest { agent_id: "agent-4".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Updating a profile keeps the live state.
    let updated = s.register(profile("agent-0", &[("en", 5), ("es", 4)], &[], false)).await;
    assert_eq!(updated.presence.unwrap().assigned_case_ids, vec!["rm-1".to_owned()]);
}

/// The services' codec starts with 512-byte buffers (`dispatch_proto::Codec`): messages several
/// times that size travel intact both ways, on unary calls and on the agent stream.
async fn messages_larger_than_the_codec_buffer_travel_intact(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("reader", &[("en", 5)], &[], false)).await;
    let mut agent = s.available("reader").await;
    let summary: String =
        (0..dispatch_domain::limits::MAX_SUMMARY_LEN).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let mut spec = case("long-1", "en", &[], pb::Tier::Standard);
    spec.summary = summary.clone();
    s.submit(spec).await;
    assert_eq!(s.case("long-1").await.spec.unwrap().summary, summary);
    let offer = agent.offer().await;
    assert_eq!(offer.case.unwrap().summary, summary, "the offer on the stream carries the whole summary");
    assert_eq!(agent.accept(&offer.offer_id).await.code, 0);
    assert_eq!(agent.assigned().await.case.unwrap().summary, summary);
}

/// The services a reflection client of package `$refl` (v1 or v1alpha: the same messages in
/// two generated packages) lists.
macro_rules! list_services {
    ($refl:path, $channel:expr) => {{
        use $refl as refl;
        let mut client = refl::server_reflection_client::ServerReflectionClient::new($channel);
        let req = refl::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(refl::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut resp = client.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let msg = bounded("reflection answer", resp.next()).await.unwrap().unwrap();
        let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) = msg.message_response
        else {
            panic!("unexpected reflection answer");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
    }};
}

async fn health_and_reflection_work_for_generic_tools(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel());
    for service in ["", "dispatch.v1.AgentService", "dispatch.v1.EscalationService", "dispatch.v1.PlannerService"] {
        let r =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
    }
    let names = list_services!(tonic_reflection::pb::v1, s.channel());
    for want in [
        "dispatch.v1.AgentService",
        "dispatch.v1.EscalationService",
        "dispatch.v1.RosterService",
        "dispatch.v1.PlannerService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
}

async fn an_out_of_range_enum_is_named_as_such(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let mut c = case("e1", "en", &[], pb::Tier::Standard);
    c.tier = 9;
    let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(c) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "spec.tier: tier 9 is not a known tier; TIER_STANDARD or TIER_VIP");
    let mut c = case("e2", "en", &[], pb::Tier::Standard);
    c.channel = 7;
    let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(c) }).await.unwrap_err();
    assert!(err.message().starts_with("spec.channel: channel 7 is not a known channel"), "{}", err.message());
    let mut p = profile("e3", &[("en", 5)], &[], false);
    p.capacity[0].channel = 12;
    let err = s.roster().upsert_agent(pb::UpsertAgentRequest { profile: Some(p) }).await.unwrap_err();
    assert!(err.message().starts_with("profile.capacity[0].channel: channel 12 is not"), "{}", err.message());
    s.register(profile("e4", &[("en", 5)], &[], false)).await;
    let mut a = s.connect("e4").await;
    let r = a.command(pb::agent_message::Command::SetStatus(pb::SetStatus { status: 42 })).await;
    assert_eq!(r.code, Code::InvalidArgument as i32);
    assert!(r.message.starts_with("set_status.status: status 42 is not a known status"), "{}", r.message);
    // The unset value is still reported as required.
    let mut c = case("e5", "en", &[], pb::Tier::Standard);
    c.tier = 0;
    let err = s.escalation().submit_case(pb::SubmitCaseRequest { spec: Some(c) }).await.unwrap_err();
    assert!(err.message().contains("required"), "{}", err.message());
}

async fn a_bad_agent_id_metadata_value_is_named_as_metadata(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let err = AgentConn::open(s.channel(), "bad agent id!").await.err().expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_field(&err, "metadata agent-id");
    assert!(!err.message().contains("token"), "{}", err.message());
}

async fn an_unknown_method_or_service_is_unimplemented(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    for path in ["/dispatch.v1.EscalationService/NoSuchMethod", "/no.such.Service/Call"] {
        let mut grpc = tonic::client::Grpc::new(s.channel());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let err = grpc.unary(tonic::Request::new(()), path.parse().unwrap(), codec).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {}", err.message());
    }
}

async fn reflection_v1alpha_is_served_for_older_tools(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    let names = list_services!(tonic_reflection::pb::v1alpha, s.channel());
    assert!(names.iter().any(|n| n == "dispatch.v1.EscalationService"), "{names:?}");
}

/// Offers made = accepted + declined + timed out + revoked + live, after any mix of
/// operations (seeded, so a failure repeats).
async fn every_offer_made_is_accounted_for(b: Backend) {
    let s = TestServer::start(b, Policy { cool_down_after_decline_ms: 0, ..Policy::default() }).await;
    let mut agents = Vec::new();
    for i in 0..3 {
        let id = format!("acc-{i}");
        s.register(profile(&id, &[("en", 5)], &[], false)).await;
        agents.push(s.available(&id).await);
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut cases = 0;
    for _ in 0..40 {
        match next(6) {
            0 | 1 => {
                cases += 1;
                s.submit(case(&format!("acc-c{cases}"), "en", &[], pb::Tier::Standard)).await;
            }
            2 if cases > 0 => {
                let id = format!("acc-c{}", 1 + next(cases));
                let _ = s.escalation().cancel_case(pb::CancelCaseRequest { case_id: id, reason: "left".into() }).await;
            }
            3 => s.advance(next(25_000)),
            _ => {
                let a = &mut agents[next(3) as usize];
                if let Some(o) = a.offer_now().await {
                    if next(2) == 0 {
                        a.accept(&o.offer_id).await;
                    } else {
                        a.decline(&o.offer_id, "busy").await;
                    }
                }
            }
        }
    }
    // And one cancel that certainly withdraws a live offer (a language no waiting case has).
    s.register(profile("acc-de", &[("de", 5)], &[], false)).await;
    let _de = s.available("acc-de").await;
    s.submit(case("acc-last", "de", &[], pb::Tier::Standard)).await;
    eventually("the last case to be offered", || async {
        let c = s.case("acc-last").await;
        (c.state == pb::CaseState::Offered as i32).then_some(())
    })
    .await;
    let cancel = pb::CancelCaseRequest { case_id: "acc-last".into(), reason: "left".into() };
    s.escalation().cancel_case(cancel).await.unwrap();
    // Once matching has settled (counters and the live offers are read apart, so a check while
    // an offer is being made could see one without the other).
    eventually("every offer made to be accounted for", || async {
        let stats = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
        let settled = stats.offers_accepted + stats.offers_declined + stats.offers_timed_out + stats.offers_revoked;
        (stats.offers_made == settled + stats.offered && stats.offers_made > 0).then_some(())
    })
    .await;
    let stats = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    assert!(stats.offers_revoked > 0, "a cancelled offer counts as revoked: {stats:?}");
}

on_both_stores!(
    a_watch_of_a_finished_case_gets_its_snapshot_and_ends,
    watches_are_bounded_per_connection,
    an_out_of_range_enum_is_named_as_such,
    a_bad_agent_id_metadata_value_is_named_as_metadata,
    an_unknown_method_or_service_is_unimplemented,
    reflection_v1alpha_is_served_for_older_tools,
    every_offer_made_is_accounted_for,
    submit_is_idempotent_on_the_case_id,
    bad_input_names_the_field_and_changes_nothing,
    bad_agent_commands_get_a_result_naming_the_field,
    the_agent_identity_comes_from_metadata,
    planner_counts_match_the_pool,
    watch_availability_reports_changes,
    roster_lists_pages_and_refuses_to_remove_a_busy_agent,
    health_and_reflection_work_for_generic_tools,
    messages_larger_than_the_codec_buffer_travel_intact,
);

async fn a_watch_of_a_finished_case_gets_its_snapshot_and_ends(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.submit(case("fin-1", "en", &[], pb::Tier::Standard)).await;
    let cancel = pb::CancelCaseRequest { case_id: "fin-1".into(), reason: "left".into() };
    s.escalation().cancel_case(cancel).await.unwrap();
    let mut w = s.watch("fin-1").await;
    let first = bounded("the snapshot", w.next()).await.expect("a snapshot").unwrap();
    assert_eq!((first.kind(), first.state()), (pb::CaseEventKind::Snapshot, pb::CaseState::Cancelled));
    assert!(bounded("the end", w.next()).await.is_none(), "the watch ends after the snapshot");
}

async fn watches_are_bounded_per_connection(b: Backend) {
    let server = ServerConfig { plaintext: true, max_watches_per_connection: 3, ..ServerConfig::default() };
    let s = TestServer::start_with(b, Policy::default(), server).await;
    for i in 0..4 {
        s.submit(case(&format!("w-{i}"), "zz", &[], pb::Tier::Standard)).await;
    }
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(s.watch(&format!("w-{i}")).await);
    }
    let err = s.escalation().watch_case(pb::WatchCaseRequest { case_id: "w-3".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(retry_delay(&err).is_some(), "RESOURCE_EXHAUSTED carries a retry delay");
    drop(open.pop());
    eventually("a slot to free", || async {
        s.escalation().watch_case(pb::WatchCaseRequest { case_id: "w-3".into() }).await.ok()
    })
    .await;
}

/// The planners' what-if: the textbook case (100 contacts per half hour, 3-minute handle time,
/// 80 % within 20 s) needs 14 agents by Erlang C; Erlang A, with customers who give up after a
/// minute on average, needs no more. Bad figures are refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_staffing_answers_the_textbook_case() {
    let s = TestServer::start(Backend::Memory, Policy::default()).await;
    let request = pb::WhatIfStaffingRequest {
        arrivals: 100.0,
        interval_seconds: 1800.0,
        handle_time_seconds: 180.0,
        patience_seconds: 60.0,
        target_answer_seconds: 20.0,
        service_level: 0.8,
        shrinkage: 0.3,
        max_occupancy: 0.0,
    };
    let r = s.planner().what_if_staffing(request).await.unwrap().into_inner();
    assert!((r.erlangs - 10.0).abs() < 1e-9);
    let c = r.erlang_c.expect("erlang c");
    assert!(c.reachable);
    assert_eq!((c.agents_on_queue, c.agents_scheduled), (14, 20));
    assert!((c.probability_of_waiting - 0.174).abs() < 0.001, "{c:?}");
    assert!((c.service_level - 0.888).abs() < 0.001, "{c:?}");
    let a = r.erlang_a.expect("erlang a with a patience");
    assert!(a.reachable && a.agents_on_queue <= 14 && a.service_level >= 0.8 && a.abandonment > 0.0, "{a:?}");
    for (field, bad) in [
        ("arrivals", pb::WhatIfStaffingRequest { arrivals: -1.0, ..request }),
        ("interval_seconds", pb::WhatIfStaffingRequest { interval_seconds: 0.0, ..request }),
        ("service_level", pb::WhatIfStaffingRequest { service_level: 1.5, ..request }),
        ("service_level", pb::WhatIfStaffingRequest { service_level: 0.0, ..request }),
        ("shrinkage", pb::WhatIfStaffingRequest { shrinkage: 1.0, ..request }),
        ("patience_seconds", pb::WhatIfStaffingRequest { patience_seconds: f64::NAN, ..request }),
    ] {
        let err = s.planner().what_if_staffing(bad).await.unwrap_err();
        assert_field(&err, field);
    }
}
