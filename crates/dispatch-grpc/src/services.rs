//! The four services. Each handler validates and converts the request, calls the engine, and
//! converts the answer back; no dispatch rule lives here.

use std::pin::Pin;
use std::time::Duration;

use dispatch_domain::model::bounded_text;
use dispatch_domain::{AgentId, CaseId, FieldError};
use dispatch_engine::{AgentNotice, Engine, EngineError};
use dispatch_proto::v1 as pb;
use pb::agent_message::Command;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::auth::{self, Principal};
use crate::convert::{self, id};
use crate::error::{invalid, required, status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Settings of the transport edge that handlers need.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// A device that sends nothing (not even a heartbeat) for this long is disconnected.
    pub heartbeat_timeout: Duration,
    /// Buffer of server-stream messages for watchers.
    pub watch_buffer: usize,
    /// Long-lived streams end after this long (`None`: no bound, development mode).
    pub max_stream_age: Option<Duration>,
}

/// Shared by every service: the engine, edge settings, and the shutdown signal that ends
/// long-lived streams.
#[derive(Clone)]
pub struct Services {
    engine: Engine,
    edge: EdgeConfig,
    shutdown: watch::Receiver<bool>,
}

impl Services {
    /// Services over `engine`; long-lived streams end when `shutdown` turns true.
    pub fn new(engine: Engine, edge: EdgeConfig, shutdown: watch::Receiver<bool>) -> Self {
        Self { engine, edge, shutdown }
    }
}

// ------------------------------------------------------------------------------------------------
// AgentService
// ------------------------------------------------------------------------------------------------

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Services {
    type ConnectStream = BoxStream<pb::DispatcherMessage>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = principal.agent()?;
        let age = self.stream_age(&principal).await?;
        let inbound = request.into_inner();
        let session = self.engine.connect(&agent_id).await.map_err(status)?;
        let session_id = session.session_id.clone();
        let this = self.clone();
        tokio::spawn(async move { this.read_commands(agent_id, session_id, inbound, age).await });
        let stream = ReceiverStream::new(session.notices).map(|n| convert::notice_to(*n));
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Services {
    /// How long a stream of `principal` may stay open: until its credentials expire, and at most
    /// the configured stream age.
    async fn stream_age(&self, principal: &Principal) -> Result<Duration, Status> {
        let mut age = self.edge.max_stream_age.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        if let Some(exp) = principal.expires_at {
            // Token lifetimes are wall-clock time (as their validation is), not the store's clock.
            let left = exp.saturating_sub(jsonwebtoken::get_current_timestamp());
            age = age.min(Duration::from_secs(left));
        }
        Ok(age)
    }

    /// Reads the device's commands until it leaves, goes silent past the heartbeat timeout,
    /// signs out, its credentials' age runs out, or the server shuts down; then ends the
    /// session (the device sees its stream end and reconnects).
    async fn read_commands(
        self,
        agent_id: AgentId,
        session_id: dispatch_domain::SessionId,
        mut inbound: Streaming<pb::AgentMessage>,
        age: Duration,
    ) {
        let mut shutdown = self.shutdown.clone();
        let expiry = tokio::time::sleep(age);
        tokio::pin!(expiry);
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(self.edge.heartbeat_timeout, inbound.message()) => r,
                _ = shutdown.changed() => break,
                () = &mut expiry => {
                    warn!(agent_id = %agent_id, "stream age or credentials expired; ending the stream");
                    break;
                }
            };
            let msg = match next {
                Ok(Ok(Some(msg))) => msg,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    debug!(agent_id = %agent_id, error = %e, "agent stream failed");
                    break;
                }
                Err(_) => {
                    warn!(agent_id = %agent_id, "no heartbeat within the timeout; disconnecting");
                    break;
                }
            };
            let request_id = msg.request_id.clone();
            let signing_out =
                matches!(&msg.command, Some(Command::SetStatus(s)) if s.status == pb::AgentStatus::Offline as i32);
            let outcome = self.command(&agent_id, &session_id, msg).await;
            let replaced =
                matches!(&outcome, Err(EngineError::Rejected(dispatch_domain::Rejection::FailedPrecondition(_))))
                    && self.engine.heartbeat(&agent_id, &session_id).is_err();
            let ok = outcome.is_ok();
            self.engine.tell_session(&agent_id, Some(&session_id), AgentNotice::Result { request_id, outcome });
            if replaced || (signing_out && ok) {
                break;
            }
        }
        if let Err(e) = self.engine.disconnect(&agent_id, &session_id).await {
            warn!(agent_id = %agent_id, error = %e, "disconnect failed; the presence grace will take the agent offline");
        }
    }

    async fn command(
        &self,
        agent_id: &AgentId,
        session_id: &dispatch_domain::SessionId,
        msg: pb::AgentMessage,
    ) -> Result<(), EngineError> {
        match convert::command_from(msg, &self.engine.policy().limits).map_err(|e| EngineError::Rejected(e.into()))? {
            convert::AgentCommand::SetStatus(s) => self.engine.set_status(agent_id, session_id, s).await.map(drop),
            convert::AgentCommand::Heartbeat => self.engine.heartbeat(agent_id, session_id),
            convert::AgentCommand::Accept(offer_id) => self.engine.accept(agent_id, session_id, &offer_id).await,
            convert::AgentCommand::Decline(offer_id, reason) => {
                self.engine.decline(agent_id, session_id, &offer_id, &reason).await
            }
            convert::AgentCommand::Complete(case_id, outcome) => {
                self.engine.complete(agent_id, session_id, &case_id, &outcome).await
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// EscalationService
// ------------------------------------------------------------------------------------------------

#[tonic::async_trait]
impl pb::escalation_service_server::EscalationService for Services {
    async fn submit_case(
        &self,
        request: Request<pb::SubmitCaseRequest>,
    ) -> Result<Response<pb::SubmitCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let pb::SubmitCaseRequest { spec } = request.into_inner();
        let spec = spec.ok_or_else(|| required("spec"))?;
        let spec = convert::spec_from(&spec, "spec", self.engine.policy()).map_err(invalid)?;
        let (case, created) = self.engine.submit(spec, scope).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        Ok(Response::new(pb::SubmitCaseResponse {
            case: Some(convert::case_to(&case, now, self.engine.policy())),
            created,
        }))
    }

    async fn get_case(&self, request: Request<pb::GetCaseRequest>) -> Result<Response<pb::GetCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let pb::GetCaseRequest { case_id } = request.into_inner();
        let case_id = id("case_id", &case_id, CaseId::parse)?;
        let case = self.engine.get_case(&case_id, scope.as_ref()).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        Ok(Response::new(pb::GetCaseResponse { case: Some(convert::case_to(&case, now, self.engine.policy())) }))
    }

    async fn cancel_case(
        &self,
        request: Request<pb::CancelCaseRequest>,
    ) -> Result<Response<pb::CancelCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let pb::CancelCaseRequest { case_id, reason } = request.into_inner();
        let case_id = id("case_id", &case_id, CaseId::parse)?;
        let reason = bounded_text("reason", &reason, self.engine.policy().limits.max_reason_len).map_err(invalid)?;
        let case = self.engine.cancel(&case_id, reason, scope.as_ref()).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        Ok(Response::new(pb::CancelCaseResponse { case: Some(convert::case_to(&case, now, self.engine.policy())) }))
    }

    type WatchCaseStream = BoxStream<pb::CaseEvent>;

    async fn watch_case(
        &self,
        request: Request<pb::WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let principal = auth::principal(&request)?;
        let scope = principal.case_scope()?;
        let age = self.stream_age(&principal).await?;
        let pb::WatchCaseRequest { case_id } = request.into_inner();
        let case_id = id("case_id", &case_id, CaseId::parse)?;
        let (case, mut events) = self.engine.watch_case(&case_id, scope.as_ref()).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        let (tx, rx) = mpsc::channel(self.edge.watch_buffer);
        let engine = self.engine.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let expiry = tokio::time::sleep(age);
            tokio::pin!(expiry);
            let mut seen = case.version;
            let terminal = case.state.is_terminal();
            if tx.send(Ok(convert::event_to(&convert::snapshot_event(&case, now)))).await.is_err() || terminal {
                return;
            }
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("server shutting down; watch again"))).await;
                        return;
                    }
                                        _ = tx.closed() => return,
                    () = &mut expiry => {
                        let _ = tx.send(Err(Status::unauthenticated("stream age or credentials expired; watch again"))).await;
                        return;
                    }
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: resynchronise with a fresh snapshot.
                        let (Ok(case), Ok(now)) = (engine.get_case(&case_id, scope.as_ref()).await, engine.now().await)
                        else {
                            return;
                        };
                        convert::snapshot_event(&case, now)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if ev.version <= seen && ev.kind != dispatch_engine::CaseEventKind::Snapshot {
                    continue;
                }
                seen = ev.version;
                let end = ev.state.is_terminal();
                if tx.send(Ok(convert::event_to(&ev))).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

// ------------------------------------------------------------------------------------------------
// RosterService
// ------------------------------------------------------------------------------------------------

#[tonic::async_trait]
impl pb::roster_service_server::RosterService for Services {
    async fn upsert_agent(
        &self,
        request: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::UpsertAgentResponse>, Status> {
        let pb::UpsertAgentRequest { profile } = request.into_inner();
        let profile = profile.ok_or_else(|| required("profile"))?;
        let profile = convert::profile_from(&profile, "profile", &self.engine.policy().limits).map_err(invalid)?;
        let (agent, created) = self.engine.upsert_agent(profile).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        Ok(Response::new(pb::UpsertAgentResponse { agent: Some(convert::agent_to(&agent, now)), created }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<pb::GetAgentResponse>, Status> {
        let pb::GetAgentRequest { agent_id } = request.into_inner();
        let agent_id = id("agent_id", &agent_id, AgentId::parse)?;
        let agent = self.engine.get_agent(&agent_id).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        Ok(Response::new(pb::GetAgentResponse { agent: Some(convert::agent_to(&agent, now)) }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let pb::ListAgentsRequest { page_size, page_token } = request.into_inner();
        let size = match page_size {
            0 => 100,
            n if n <= self.engine.policy().limits.max_page_size => n as usize,
            n => {
                return Err(invalid(FieldError::new(
                    "page_size",
                    format!("{n} is above {}", self.engine.policy().limits.max_page_size),
                )));
            }
        };
        let after = if page_token.is_empty() { None } else { Some(id("page_token", &page_token, AgentId::parse)?) };
        let agents = self.engine.list_agents(after.as_ref(), size).await.map_err(status)?;
        let now = self.engine.now().await.map_err(status)?;
        let next_page_token = if agents.len() == size {
            agents.last().map(|a| a.id().to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(|a| convert::agent_to(a, now)).collect(),
            next_page_token,
        }))
    }

    async fn remove_agent(
        &self,
        request: Request<pb::RemoveAgentRequest>,
    ) -> Result<Response<pb::RemoveAgentResponse>, Status> {
        let pb::RemoveAgentRequest { agent_id } = request.into_inner();
        let agent_id = id("agent_id", &agent_id, AgentId::parse)?;
        self.engine.remove_agent(&agent_id).await.map_err(status)?;
        Ok(Response::new(pb::RemoveAgentResponse {}))
    }
}

// ------------------------------------------------------------------------------------------------
// PlannerService
// ------------------------------------------------------------------------------------------------

#[tonic::async_trait]
impl pb::planner_service_server::PlannerService for Services {
    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        let pb::GetAvailabilityRequest { filter, group_by } = request.into_inner();
        let (filter, dims) =
            convert::filter_from(&self.engine.policy().limits, filter.as_ref(), &group_by, "").map_err(invalid)?;
        let (report, now) = self.engine.availability(&filter, &dims).await.map_err(status)?;
        Ok(Response::new(pb::GetAvailabilityResponse { report: Some(convert::report_to(&report, now)) }))
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::GetQueueStatsResponse>, Status> {
        let pb::GetQueueStatsRequest {} = request.into_inner();
        let stats = self.engine.queue_stats().await.map_err(status)?;
        Ok(Response::new(convert::queue_stats_to(&stats)))
    }

    type WatchAvailabilityStream = BoxStream<pb::AvailabilityReport>;

    async fn watch_availability(
        &self,
        request: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let age = self.stream_age(&auth::principal(&request)?).await?;
        let pb::WatchAvailabilityRequest { filter, group_by, interval_ms } = request.into_inner();
        let (filter, dims) =
            convert::filter_from(&self.engine.policy().limits, filter.as_ref(), &group_by, "").map_err(invalid)?;
        let interval = match interval_ms {
            0 => 1000,
            n @ 250..=60_000 => n,
            n => {
                return Err(invalid(FieldError::new("interval_ms", format!("{n} is outside 250 to 60000"))));
            }
        };
        let interval = Duration::from_millis(u64::from(interval));
        let (tx, rx) = mpsc::channel(self.edge.watch_buffer);
        let engine = self.engine.clone();
        let mut changes = engine.pool_changes();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let expiry = tokio::time::sleep(age);
            tokio::pin!(expiry);
            let mut last: Option<pb::AvailabilityReport> = None;
            let mut last_sent = tokio::time::Instant::now();
            loop {
                let report = match engine.availability(&filter, &dims).await {
                    Ok((r, now)) => convert::report_to(&r, now),
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let same = last.as_ref().is_some_and(|l| l.total == report.total && l.groups == report.groups);
                if !same || last_sent.elapsed() >= interval {
                    if tx.send(Ok(report.clone())).await.is_err() {
                        return;
                    }
                    last = Some(report);
                    last_sent = tokio::time::Instant::now();
                }
                // On change, at most once per interval; without change, once per interval.
                let wait_until = last_sent + interval;
                tokio::select! {
                    _ = tokio::time::sleep_until(wait_until) => {}
                    r = changes.changed() => {
                        if r.is_err() { return; }
                        tokio::select! {
                            _ = tokio::time::sleep_until(wait_until) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                                        _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                    () = &mut expiry => {
                        let _ = tx.send(Err(Status::unauthenticated("stream age or credentials expired; watch again"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
