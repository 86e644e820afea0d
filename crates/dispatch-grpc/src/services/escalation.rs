//! `EscalationService`: routers submit, read, cancel and watch cases.

use dispatch_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{BoxStream, Services};
use crate::error::{invalid, status};
use crate::{auth, convert, requests};

#[tonic::async_trait]
impl pb::escalation_service_server::EscalationService for Services {
    async fn submit_case(
        &self,
        request: Request<pb::SubmitCaseRequest>,
    ) -> Result<Response<pb::SubmitCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let spec = requests::submit_case(request.get_ref(), self.engine.policy()).map_err(invalid)?;
        let (case, created, now) = self.engine.submit(spec, scope.clone()).await.map_err(status)?;
        Ok(Response::new(pb::SubmitCaseResponse {
            case: Some(convert::case_to(&case, now, self.engine.policy(), scope.as_ref())),
            created,
        }))
    }

    async fn get_case(&self, request: Request<pb::GetCaseRequest>) -> Result<Response<pb::GetCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let case_id = requests::get_case(request.get_ref()).map_err(invalid)?;
        let (case, now) = self.engine.get_case(&case_id, scope.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::GetCaseResponse {
            case: Some(convert::case_to(&case, now, self.engine.policy(), scope.as_ref())),
        }))
    }

    async fn cancel_case(
        &self,
        request: Request<pb::CancelCaseRequest>,
    ) -> Result<Response<pb::CancelCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let (case_id, reason) =
            requests::cancel_case(request.get_ref(), &self.engine.policy().limits).map_err(invalid)?;
        let (case, now) = self.engine.cancel(&case_id, &reason, scope.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::CancelCaseResponse {
            case: Some(convert::case_to(&case, now, self.engine.policy(), scope.as_ref())),
        }))
    }

    async fn rate_case(&self, request: Request<pb::RateCaseRequest>) -> Result<Response<pb::RateCaseResponse>, Status> {
        let scope = auth::principal(&request)?.case_scope()?;
        let (case_id, rating) = requests::rate_case(request.get_ref()).map_err(invalid)?;
        let (case, now) = self.engine.rate_case(&case_id, rating, scope.as_ref()).await.map_err(status)?;
        Ok(Response::new(pb::RateCaseResponse {
            case: Some(convert::case_to(&case, now, self.engine.policy(), scope.as_ref())),
        }))
    }

    type WatchCaseStream = BoxStream<pb::CaseEvent>;

    async fn watch_case(
        &self,
        request: Request<pb::WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let principal = auth::principal(&request)?;
        let scope = principal.case_scope()?;
        let age = self.stream_age(&principal);
        let case_id = requests::watch_case(request.get_ref()).map_err(invalid)?;
        let slot = self.watch_slot(request.remote_addr())?;
        let mut watch = self.engine.watch_case(&case_id, scope.as_ref()).await.map_err(status)?;
        let (tx, rx) = mpsc::channel(self.edge.watch_buffer);
        let shutdown = self.shutting_down();
        tokio::spawn(async move {
            let _slot = slot;
            let expiry = tokio::time::sleep(age);
            tokio::pin!(expiry, shutdown);
            loop {
                let ev = tokio::select! {
                    ev = watch.next() => ev,
                    () = &mut shutdown => {
                        let _ = tx.send(Err(crate::error::unavailable("server shutting down; watch again"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    () = &mut expiry => {
                        let _ = tx.send(Err(Status::unauthenticated("stream age or credentials expired; watch again"))).await;
                        return;
                    }
                };
                let Some(ev) = ev else { return };
                if tx.send(Ok(convert::event_to(&ev, scope.as_ref()))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
