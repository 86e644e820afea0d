//! The fuzzing entry point: decode bytes as one of the API's request messages and run the
//! handlers' own validator on it (`requests`). It must never panic, whatever the bytes. Used by
//! the `cargo fuzz` target in `fuzz/` and by the corpus replay test (stable toolchain).

use dispatch_domain::Policy;
use dispatch_proto::v1 as pb;
use prost::Message;

use crate::requests;

/// How many request kinds the first byte selects among.
pub const KINDS: u8 = 17;

/// Decodes `data[1..]` as the request kind `data[0] % KINDS` and validates it with the
/// handlers' own validator. Returns whether the request would be accepted by validation (for
/// corpus statistics); never panics.
pub fn decode_and_validate(data: &[u8]) -> bool {
    let Some((kind, body)) = data.split_first() else { return false };
    let policy = Policy::default();
    let limits = &policy.limits;
    match kind % KINDS {
        0 => pb::SubmitCaseRequest::decode(body).is_ok_and(|r| requests::submit_case(&r, &policy).is_ok()),
        1 => pb::UpsertAgentRequest::decode(body).is_ok_and(|r| requests::upsert_agent(&r, limits).is_ok()),
        2 => pb::AgentMessage::decode(body).is_ok_and(|m| requests::command(m, limits).is_ok()),
        3 => pb::GetAvailabilityRequest::decode(body).is_ok_and(|r| requests::get_availability(&r, limits).is_ok()),
        4 => pb::WatchAvailabilityRequest::decode(body).is_ok_and(|r| requests::watch_availability(&r, limits).is_ok()),
        5 => pb::GetCaseRequest::decode(body).is_ok_and(|r| requests::get_case(&r).is_ok()),
        6 => pb::CancelCaseRequest::decode(body).is_ok_and(|r| requests::cancel_case(&r, limits).is_ok()),
        7 => pb::ListAgentsRequest::decode(body).is_ok_and(|r| requests::list_agents(&r, limits).is_ok()),
        8 => pb::WatchCaseRequest::decode(body).is_ok_and(|r| requests::watch_case(&r).is_ok()),
        9 => pb::WhatIfStaffingRequest::decode(body).is_ok_and(|r| requests::what_if_staffing(&r).is_ok()),
        10 => pb::ExplainMatchRequest::decode(body).is_ok_and(|r| requests::explain_match(&r).is_ok()),
        11 => pb::RateCaseRequest::decode(body).is_ok_and(|r| requests::rate_case(&r).is_ok()),
        12 => pb::GetFairnessRequest::decode(body).is_ok_and(|r| requests::get_fairness(&r).is_ok()),
        13 => pb::GetSegmentDemandRequest::decode(body).is_ok_and(|r| requests::get_segment_demand(&r).is_ok()),
        14 => pb::AckInvitationRequest::decode(body).is_ok_and(|r| requests::ack_invitation(&r).is_ok()),
        15 => pb::ListInvitationsRequest::decode(body).is_ok_and(|r| requests::list_invitations(&r).is_ok()),
        _ => pb::SendCommandRequest::decode(body).is_ok_and(|r| {
            requests::send_command(r.session_id, r.message).is_ok_and(|(_, m)| requests::command(m, limits).is_ok())
        }),
    }
}

/// Seed inputs: one valid request of each kind and a few near-misses, encoded.
pub fn seeds() -> Vec<Vec<u8>> {
    let with = |kind: u8, m: Vec<u8>| [vec![kind], m].concat();
    let spec = pb::CaseSpec {
        case_id: "case-1".into(),
        language: "de-CH".into(),
        required_skills: vec![pb::SkillLevel { skill: "disputes".into(), level: 3 }],
        preferred_skills: vec![pb::SkillLevel { skill: "refunds".into(), level: 2 }],
        tier: pb::Tier::Vip as i32,
        priority: 3,
        channel: pb::Channel::Chat as i32,
        summary: "charged twice".into(),
        sentiment: -0.5,
        customer_id: "cust-9".into(),
        previous_agent_id: "ana".into(),
        ttl_ms: 60_000,
        ..Default::default()
    };
    let mut bad_spec = spec.clone();
    bad_spec.language = "xx-yyyyyyyyyy".into();
    bad_spec.required_skills[0].level = 9;
    let profile = pb::AgentProfile {
        agent_id: "ana".into(),
        display_name: "Ana".into(),
        languages: vec![pb::LanguageProficiency { language: "de".into(), proficiency: 5 }],
        skills: vec![pb::SkillLevel { skill: "disputes".into(), level: 4 }],
        vip_certified: true,
        capacity: vec![pb::ChannelCapacity { channel: pb::Channel::Chat as i32, capacity: 3 }],
        rating: 4.5,
        ..Default::default()
    };
    let filter = pb::AvailabilityFilter {
        languages: vec!["de".into()],
        min_language_proficiency: 3,
        skills: vec![pb::SkillLevel { skill: "disputes".into(), level: 3 }],
        vip_certified_only: true,
        ..Default::default()
    };
    let gated_spec = pb::CaseSpec {
        case_id: "case-2".into(),
        market: "de".into(),
        data_region: "eu".into(),
        required_clearance: 2,
        required_certifications: vec!["pci".into()],
        ..spec.clone()
    };
    let gated_profile = pb::AgentProfile {
        markets: vec!["DE".into(), "AT".into()],
        data_regions: vec!["eu".into()],
        clearance: 3,
        certifications: vec![pb::Certification { name: "pci".into(), expires_at_ms: 1_900_000_000_000, valid: false }],
        ..profile.clone()
    };
    use pb::agent_message::Command as C;
    let msg = |c: C| pb::AgentMessage { request_id: "r1".into(), command: Some(c) }.encode_to_vec();
    vec![
        with(0, pb::SubmitCaseRequest { spec: Some(spec) }.encode_to_vec()),
        with(0, pb::SubmitCaseRequest { spec: Some(bad_spec) }.encode_to_vec()),
        with(1, pb::UpsertAgentRequest { profile: Some(profile) }.encode_to_vec()),
        with(2, msg(C::Accept(pb::Accept { offer_id: "of-1".into() }))),
        with(2, msg(C::Decline(pb::Decline { offer_id: "of-1".into(), reason: "busy".into() }))),
        with(2, msg(C::SetStatus(pb::SetStatus { status: pb::AgentStatus::Available as i32 }))),
        with(2, msg(C::Complete(pb::Complete { case_id: "case-1".into(), outcome: "done".into() }))),
        with(3, pb::GetAvailabilityRequest { filter: Some(filter.clone()), group_by: vec![1, 4] }.encode_to_vec()),
        with(
            4,
            pb::WatchAvailabilityRequest { filter: Some(filter), group_by: vec![2], interval_ms: 500 }.encode_to_vec(),
        ),
        with(5, pb::GetCaseRequest { case_id: "case-1".into() }.encode_to_vec()),
        with(6, pb::CancelCaseRequest { case_id: "case-1".into(), reason: "left".into() }.encode_to_vec()),
        with(7, pb::ListAgentsRequest { page_size: 10, page_token: "ana".into() }.encode_to_vec()),
        with(8, pb::WatchCaseRequest { case_id: "case-1".into() }.encode_to_vec()),
        with(2, msg(C::ReportActivity(pb::ReportActivity { case_id: "case-1".into() }))),
        with(10, pb::ExplainMatchRequest { case_id: "acme/case-1".into(), agent_id: "ana".into() }.encode_to_vec()),
        with(2, msg(C::ExplainCase(pb::ExplainCase { case_id: "case-1".into() }))),
        with(0, pb::SubmitCaseRequest { spec: Some(gated_spec) }.encode_to_vec()),
        with(1, pb::UpsertAgentRequest { profile: Some(gated_profile) }.encode_to_vec()),
        with(11, pb::RateCaseRequest { case_id: "case-1".into(), rating: 5, agent_controllable: true }.encode_to_vec()),
        with(
            11,
            pb::RateCaseRequest { case_id: "case-1".into(), rating: 6, agent_controllable: false }.encode_to_vec(),
        ),
        with(12, pb::GetFairnessRequest { language: "de-CH".into(), days: 7 }.encode_to_vec()),
        with(2, msg(C::ExplainMe(pb::ExplainMe {}))),
        with(
            13,
            pb::GetSegmentDemandRequest {
                segment: Some(pb::SegmentQuery {
                    language: "de".into(),
                    tier: pb::Tier::Vip as i32,
                    channel: pb::Channel::Chat as i32,
                    skills: vec!["disputes".into()],
                    exact_skills: true,
                }),
            }
            .encode_to_vec(),
        ),
        with(13, pb::GetSegmentDemandRequest { segment: Some(pb::SegmentQuery::default()) }.encode_to_vec()),
        with(
            14,
            pb::AckInvitationRequest { agent_id: "ana".into(), invitation_id: "inv-3-ana".into(), declined: true }
                .encode_to_vec(),
        ),
        with(14, pb::AckInvitationRequest { agent_id: "ana".into(), ..Default::default() }.encode_to_vec()),
        with(15, pb::ListInvitationsRequest { language: "de-CH".into(), live_only: true }.encode_to_vec()),
        with(
            16,
            pb::SendCommandRequest { session_id: "ss-1".into(), message: Some(pb::AgentMessage::default()) }
                .encode_to_vec(),
        ),
        with(
            16,
            pb::SendCommandRequest {
                session_id: "ss-1".into(),
                message: Some(pb::AgentMessage {
                    request_id: "r2".into(),
                    command: Some(C::Accept(pb::Accept { offer_id: "of-1".into() })),
                }),
            }
            .encode_to_vec(),
        ),
    ]
}
