//! One validator per request: proto request → the domain values the engine takes, or the
//! first field that is wrong. Used by the handlers and by the fuzz target, so both run the same
//! rules.

use dispatch_domain::limits::{DEFAULT_PAGE_SIZE, DEFAULT_WATCH_INTERVAL_MS, Limits, WATCH_INTERVAL_MS};
use dispatch_domain::model::{AgentProfile, CaseSpec, bounded_text};
use dispatch_domain::stats::{AvailabilityFilter, GroupBy};
use dispatch_domain::{AgentId, CaseId, FieldError, Policy};
use dispatch_engine::{AgentCommand, Inbound};
use dispatch_proto::v1 as pb;

use crate::convert;

fn required(field: &str) -> FieldError {
    FieldError::new(field, "is required")
}

/// `SubmitCase`.
pub fn submit_case(r: &pb::SubmitCaseRequest, policy: &Policy) -> Result<CaseSpec, FieldError> {
    let pb::SubmitCaseRequest { spec } = r;
    convert::spec_from(spec.as_ref().ok_or_else(|| required("spec"))?, "spec", policy)
}

/// `ExplainMatch`: the case (as the dispatcher names it) and the agent.
pub fn explain_match(r: &pb::ExplainMatchRequest) -> Result<(CaseId, dispatch_domain::AgentId), FieldError> {
    let pb::ExplainMatchRequest { case_id, agent_id } = r;
    Ok((CaseId::parse_qualified("case_id", case_id)?, dispatch_domain::AgentId::parse("agent_id", agent_id)?))
}

/// `GetFairness`: the language (if any) and the window in days.
pub fn get_fairness(r: &pb::GetFairnessRequest) -> Result<(Option<dispatch_domain::Language>, i64), FieldError> {
    let pb::GetFairnessRequest { language, days } = r;
    let language =
        if language.is_empty() { None } else { Some(dispatch_domain::Language::parse("language", language)?) };
    Ok((language, dispatch_domain::stats::fairness_days(*days)?))
}

/// `GetSegmentDemand`: the segments asked about.
pub fn get_segment_demand(
    r: &pb::GetSegmentDemandRequest,
) -> Result<dispatch_domain::demand::SegmentFilter, FieldError> {
    let pb::GetSegmentDemandRequest { segment } = r;
    let q = segment.as_ref().ok_or_else(|| required("segment"))?;
    let pb::SegmentQuery { language, tier, channel, skills, exact_skills } = q;
    let skills: Vec<&str> = skills.iter().map(String::as_str).collect();
    dispatch_domain::demand::SegmentFilter::parse(
        "segment",
        language,
        convert::tier_from("segment.tier", *tier).ok(),
        convert::channel_from("segment.channel", *channel).ok(),
        &skills,
        *exact_skills,
    )
}

/// `WhatIfStaffing`.
pub fn what_if_staffing(r: &pb::WhatIfStaffingRequest) -> Result<dispatch_domain::queueing::Forecast, FieldError> {
    let pb::WhatIfStaffingRequest {
        arrivals,
        interval_seconds,
        handle_time_seconds,
        patience_seconds,
        target_answer_seconds,
        service_level,
        shrinkage,
        max_occupancy,
    } = *r;
    dispatch_domain::queueing::Forecast::parse(dispatch_domain::queueing::ForecastInput {
        arrivals,
        interval_s: interval_seconds,
        handle_s: handle_time_seconds,
        patience_s: patience_seconds,
        target_s: target_answer_seconds,
        service_level,
        shrinkage,
        max_occupancy,
    })
}

/// `GetCase`.
pub fn get_case(r: &pb::GetCaseRequest) -> Result<CaseId, FieldError> {
    let pb::GetCaseRequest { case_id } = r;
    CaseId::parse_qualified("case_id", case_id)
}

/// `AckInvitation`: the agent, the invitation id, whether the agent declined.
pub fn ack_invitation(r: &pb::AckInvitationRequest) -> Result<(AgentId, String, bool), FieldError> {
    let pb::AckInvitationRequest { agent_id, invitation_id, declined } = r;
    let agent_id = AgentId::parse("agent_id", agent_id)?;
    if invitation_id.is_empty() {
        return Err(required("invitation_id"));
    }
    let id = bounded_text("invitation_id", invitation_id, 200)?.to_owned();
    Ok((agent_id, id, *declined))
}

/// `ListInvitations`: the primary language asked for (`None`: all), open ones only.
pub fn list_invitations(r: &pb::ListInvitationsRequest) -> Result<(Option<String>, bool), FieldError> {
    let pb::ListInvitationsRequest { language, live_only } = r;
    let language = match language.as_str() {
        "" => None,
        l => Some(dispatch_domain::Language::parse("language", l)?.primary().to_owned()),
    };
    Ok((language, *live_only))
}

/// `CancelCase`: the case and the reason.
pub fn cancel_case(r: &pb::CancelCaseRequest, limits: &Limits) -> Result<(CaseId, String), FieldError> {
    let pb::CancelCaseRequest { case_id, reason } = r;
    Ok((
        CaseId::parse_qualified("case_id", case_id)?,
        bounded_text("reason", reason, limits.max_reason_len)?.to_owned(),
    ))
}

/// `RateCase`: the case and the rating (its time is the store's, set when it is stored).
pub fn rate_case(r: &pb::RateCaseRequest) -> Result<(CaseId, dispatch_domain::reputation::CaseRating), FieldError> {
    let pb::RateCaseRequest { case_id, rating, agent_controllable } = r;
    let id = CaseId::parse_qualified("case_id", case_id)?;
    Ok((id, dispatch_domain::reputation::CaseRating::parse(*rating, *agent_controllable, 0)?))
}

/// `WatchCase`.
pub fn watch_case(r: &pb::WatchCaseRequest) -> Result<CaseId, FieldError> {
    let pb::WatchCaseRequest { case_id } = r;
    CaseId::parse_qualified("case_id", case_id)
}

/// `UpsertAgent`.
pub fn upsert_agent(r: &pb::UpsertAgentRequest, limits: &Limits) -> Result<AgentProfile, FieldError> {
    let pb::UpsertAgentRequest { profile } = r;
    convert::profile_from(profile.as_ref().ok_or_else(|| required("profile"))?, "profile", limits)
}

/// `GetAgent` and `RemoveAgent`.
pub fn agent_id(agent_id: &str) -> Result<AgentId, FieldError> {
    AgentId::parse("agent_id", agent_id)
}

/// `ListAgents`: where to start, and the page size.
pub fn list_agents(r: &pb::ListAgentsRequest, limits: &Limits) -> Result<(Option<AgentId>, usize), FieldError> {
    let pb::ListAgentsRequest { page_size, page_token } = r;
    let size = match *page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n <= limits.max_page_size => n,
        n => return Err(FieldError::new("page_size", format!("{n} is above {}", limits.max_page_size))),
    };
    let after = if page_token.is_empty() { None } else { Some(AgentId::parse("page_token", page_token)?) };
    Ok((after, size as usize))
}

/// `GetAvailability`.
pub fn get_availability(
    r: &pb::GetAvailabilityRequest,
    limits: &Limits,
) -> Result<(AvailabilityFilter, Vec<GroupBy>), FieldError> {
    let pb::GetAvailabilityRequest { filter, group_by } = r;
    convert::filter_from(limits, filter.as_ref(), group_by, "")
}

/// `WatchAvailability`: the filter, grouping and interval (ms).
pub fn watch_availability(
    r: &pb::WatchAvailabilityRequest,
    limits: &Limits,
) -> Result<(AvailabilityFilter, Vec<GroupBy>, u32), FieldError> {
    let pb::WatchAvailabilityRequest { filter, group_by, interval_ms } = r;
    let (filter, dims) = convert::filter_from(limits, filter.as_ref(), group_by, "")?;
    let interval = match *interval_ms {
        0 => DEFAULT_WATCH_INTERVAL_MS,
        n if WATCH_INTERVAL_MS.contains(&n) => n,
        n => {
            let (lo, hi) = (WATCH_INTERVAL_MS.start(), WATCH_INTERVAL_MS.end());
            return Err(FieldError::new("interval_ms", format!("{n} is outside {lo} to {hi}")));
        }
    };
    Ok((filter, dims, interval))
}

/// One message of an agent's stream.
pub fn agent_message(msg: pb::AgentMessage, limits: &Limits) -> Inbound {
    let request_id = msg.request_id.clone();
    Inbound::Command { request_id, command: command(msg, limits) }
}

/// `SendCommand`: the session and the message (the command itself is checked as on `Connect`,
/// with its result in band).
pub fn send_command(
    session_id: String,
    message: Option<pb::AgentMessage>,
) -> Result<(String, pb::AgentMessage), FieldError> {
    use dispatch_domain::limits::MAX_ID_LEN;
    if session_id.is_empty() {
        return Err(required("session_id"));
    }
    if session_id.len() > MAX_ID_LEN {
        return Err(FieldError::new("session_id", format!("longer than {MAX_ID_LEN} bytes")));
    }
    Ok((session_id, message.ok_or_else(|| required("message"))?))
}

/// Validates an agent's command; field names follow the `AgentMessage` message.
pub fn command(msg: pb::AgentMessage, limits: &Limits) -> Result<AgentCommand, FieldError> {
    use dispatch_domain::limits::MAX_ID_LEN;
    use pb::agent_message::Command;
    let pb::AgentMessage { request_id, command } = msg;
    if request_id.len() > MAX_ID_LEN {
        return Err(FieldError::new("request_id", format!("longer than {MAX_ID_LEN} bytes")));
    }
    Ok(match command.ok_or_else(|| required("command"))? {
        Command::SetStatus(pb::SetStatus { status }) => {
            AgentCommand::SetStatus(convert::status_from("set_status.status", status)?)
        }
        Command::Heartbeat(pb::Heartbeat {}) => AgentCommand::Heartbeat,
        Command::Accept(pb::Accept { offer_id }) => {
            AgentCommand::Accept(dispatch_domain::OfferId::parse("accept.offer_id", &offer_id)?)
        }
        Command::Decline(pb::Decline { offer_id, reason }) => AgentCommand::Decline(
            dispatch_domain::OfferId::parse("decline.offer_id", &offer_id)?,
            bounded_text("decline.reason", &reason, limits.max_reason_len)?.to_owned(),
        ),
        Command::Complete(pb::Complete { case_id, outcome }) => AgentCommand::Complete(
            CaseId::parse_qualified("complete.case_id", &case_id)?,
            bounded_text("complete.outcome", &outcome, limits.max_reason_len)?.to_owned(),
        ),
        Command::ReportActivity(pb::ReportActivity { case_id }) => {
            AgentCommand::ReportActivity(CaseId::parse_qualified("report_activity.case_id", &case_id)?)
        }
        Command::ExplainCase(pb::ExplainCase { case_id }) => {
            AgentCommand::ExplainCase(CaseId::parse_qualified("explain_case.case_id", &case_id)?)
        }
        Command::ExplainMe(pb::ExplainMe {}) => AgentCommand::ExplainMe,
        Command::GetAllocationPolicy(pb::GetAllocationPolicy {}) => AgentCommand::AllocationParameters,
    })
}
