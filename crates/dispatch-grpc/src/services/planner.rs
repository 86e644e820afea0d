//! `PlannerService`: availability and queue figures, and a live availability stream.

use std::time::Duration;

use dispatch_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{BoxStream, Services};
use crate::error::{invalid, status};
use crate::{auth, convert, requests};

#[tonic::async_trait]
impl pb::planner_service_server::PlannerService for Services {
    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        let (filter, dims) =
            requests::get_availability(request.get_ref(), &self.engine.policy().limits).map_err(invalid)?;
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

    async fn get_segment_demand(
        &self,
        request: Request<pb::GetSegmentDemandRequest>,
    ) -> Result<Response<pb::GetSegmentDemandResponse>, Status> {
        let filter = requests::get_segment_demand(request.get_ref()).map_err(invalid)?;
        let (segments, now) = self.engine.segment_demand(&filter).await.map_err(status)?;
        Ok(Response::new(pb::GetSegmentDemandResponse {
            segments: segments.iter().map(|d| convert::segment_demand_to(d, now)).collect(),
            as_of_ms: now,
        }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let (language, live_only) = requests::list_invitations(request.get_ref()).map_err(invalid)?;
        let (all, _) = self.engine.invitations(language.as_deref(), live_only).await.map_err(status)?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: all.iter().map(|(i, a)| convert::invitation_to(i, a)).collect(),
        }))
    }

    async fn explain_match(
        &self,
        request: Request<pb::ExplainMatchRequest>,
    ) -> Result<Response<pb::ExplainMatchResponse>, Status> {
        let (case_id, agent_id) = requests::explain_match(request.get_ref()).map_err(invalid)?;
        let e = self.engine.explain_match(&case_id, &agent_id).await.map_err(status)?;
        Ok(Response::new(convert::match_explanation_to(&e)))
    }

    async fn explain_agent(
        &self,
        request: Request<pb::ExplainAgentRequest>,
    ) -> Result<Response<pb::ExplainAgentResponse>, Status> {
        let pb::ExplainAgentRequest { agent_id } = request.get_ref();
        let id = dispatch_domain::AgentId::parse("agent_id", agent_id).map_err(invalid)?;
        let e = self.engine.explain_agent(&id).await.map_err(status)?;
        Ok(Response::new(convert::agent_explanation_to(&e)))
    }

    async fn get_fairness(
        &self,
        request: Request<pb::GetFairnessRequest>,
    ) -> Result<Response<pb::GetFairnessResponse>, Status> {
        let (language, days) = requests::get_fairness(request.get_ref()).map_err(invalid)?;
        let f = self.engine.fairness(language.as_ref().map(|l| l.primary()), days).await.map_err(status)?;
        Ok(Response::new(convert::fairness_to(&f)))
    }

    async fn get_allocation_policy(
        &self,
        request: Request<pb::GetAllocationPolicyRequest>,
    ) -> Result<Response<pb::AllocationPolicy>, Status> {
        let pb::GetAllocationPolicyRequest {} = request.get_ref();
        let policy = self.engine.allocation_policy().await.map_err(status)?;
        Ok(Response::new(convert::allocation_to(&policy)))
    }

    /// Pure computation in the domain; a large forecast runs off the async workers.
    async fn what_if_staffing(
        &self,
        request: Request<pb::WhatIfStaffingRequest>,
    ) -> Result<Response<pb::WhatIfStaffingResponse>, Status> {
        let forecast = requests::what_if_staffing(request.get_ref()).map_err(invalid)?;
        let w = tokio::task::spawn_blocking(move || dispatch_domain::queueing::what_if(&forecast))
            .await
            .map_err(|e| Status::internal(format!("staffing computation failed: {e}")))?;
        Ok(Response::new(convert::what_if_to(&w)))
    }

    type WatchAvailabilityStream = BoxStream<pb::AvailabilityReport>;

    /// A report at once, then on change at most once per interval, and once per interval
    /// without change (a heartbeat).
    async fn watch_availability(
        &self,
        request: Request<pb::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let age = self.stream_age(&auth::principal(&request)?);
        let (filter, dims, interval_ms) =
            requests::watch_availability(request.get_ref(), &self.engine.policy().limits).map_err(invalid)?;
        let interval = Duration::from_millis(u64::from(interval_ms));
        let (tx, rx) = mpsc::channel(self.edge.watch_buffer);
        let engine = self.engine.clone();
        let mut changes = engine.pool_changes();
        let shutdown = self.shutting_down();
        tokio::spawn(async move {
            let expiry = tokio::time::sleep(age);
            tokio::pin!(expiry, shutdown);
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
                let wait_until = last_sent + interval;
                tokio::select! {
                    _ = tokio::time::sleep_until(wait_until) => {}
                    r = changes.changed() => {
                        if r.is_err() { return; }
                        tokio::select! {
                            _ = tokio::time::sleep_until(wait_until) => {}
                            () = &mut shutdown => return,
                        }
                    }
                    () = &mut shutdown => return,
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
