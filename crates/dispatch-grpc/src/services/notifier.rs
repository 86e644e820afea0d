//! `NotifierService`: the notification service's feed of invitations to offline agents, and its
//! acknowledgements.

use dispatch_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{BoxStream, Services};
use crate::error::{invalid, status};
use crate::{auth, convert, requests};

#[tonic::async_trait]
impl pb::notifier_service_server::NotifierService for Services {
    type StreamInvitationsStream = BoxStream<pb::Invitation>;

    /// At least once: the open unacknowledged invitations first, then each as issued, and again
    /// every 30 seconds until acknowledged.
    async fn stream_invitations(
        &self,
        request: Request<pb::StreamInvitationsRequest>,
    ) -> Result<Response<Self::StreamInvitationsStream>, Status> {
        let age = self.stream_age(&auth::principal(&request)?);
        let pb::StreamInvitationsRequest {} = request.get_ref();
        let (tx, rx) = mpsc::channel(self.edge.watch_buffer);
        let mut feed = self.engine.invitation_feed();
        let shutdown = self.shutting_down();
        tokio::spawn(async move {
            let expiry = tokio::time::sleep(age);
            tokio::pin!(expiry, shutdown);
            loop {
                tokio::select! {
                    next = feed.next() => match next {
                        Some((i, agent)) => {
                            if tx.send(Ok(convert::invitation_to(&i, &agent))).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    () = &mut expiry => {
                        let _ = tx.send(Err(Status::unavailable("stream age limit reached; reconnect"))).await;
                        return;
                    }
                    () = &mut shutdown => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack_invitation(
        &self,
        request: Request<pb::AckInvitationRequest>,
    ) -> Result<Response<pb::AckInvitationResponse>, Status> {
        let (agent_id, invitation_id, declined) = requests::ack_invitation(request.get_ref()).map_err(invalid)?;
        let (agent, _) =
            self.engine.acknowledge_invitation(&agent_id, &invitation_id, declined).await.map_err(status)?;
        Ok(Response::new(pb::AckInvitationResponse {
            invitation: agent.invitation.as_ref().map(|i| convert::invitation_to(i, &agent)),
        }))
    }
}
