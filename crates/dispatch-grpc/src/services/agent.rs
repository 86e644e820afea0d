//! `AgentService`: one stream per device. The engine's session object owns the stream's life
//! (heartbeats, sign-out, replacement, age); this file maps protobuf in and out.

use dispatch_engine::{CommandSource, Inbound, StreamLimits};
use dispatch_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::{BoxStream, Services};
use crate::error::status;
use crate::{auth, convert, requests};

/// The device's inbound messages, validated.
struct Commands {
    inbound: Streaming<pb::AgentMessage>,
    limits: dispatch_domain::limits::Limits,
}

impl CommandSource for Commands {
    async fn next(&mut self) -> Option<Inbound> {
        match self.inbound.message().await {
            Ok(Some(msg)) => Some(requests::agent_message(msg, &self.limits)),
            Ok(None) => None,
            Err(e) => Some(Inbound::Failed(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Services {
    type ConnectStream = BoxStream<pb::DispatcherMessage>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = principal.agent()?;
        let limits =
            StreamLimits { heartbeat_timeout: self.edge.heartbeat_timeout, max_age: self.stream_age(&principal) };
        let source = Commands { inbound: request.into_inner(), limits: self.engine.policy().limits.clone() };
        let (notices, commands) = self.engine.connect(&agent_id).await.map_err(status)?;
        tokio::spawn(commands.run(source, limits, self.shutting_down()));
        let stream = futures_util::stream::unfold(notices, |mut notices| async move {
            notices.next().await.map(|n| (convert::notice_to(n), notices))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
