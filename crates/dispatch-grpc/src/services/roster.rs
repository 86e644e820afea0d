//! `RosterService`: agents' profiles.

use dispatch_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Services;
use crate::error::{invalid, status};
use crate::{convert, requests};

#[tonic::async_trait]
impl pb::roster_service_server::RosterService for Services {
    async fn upsert_agent(
        &self,
        request: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::UpsertAgentResponse>, Status> {
        let profile = requests::upsert_agent(request.get_ref(), &self.engine.policy().limits).map_err(invalid)?;
        let (agent, created, now) = self.engine.upsert_agent(profile).await.map_err(status)?;
        Ok(Response::new(pb::UpsertAgentResponse {
            agent: Some(convert::agent_to(&agent, now, self.engine.policy())),
            created,
        }))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> Result<Response<pb::GetAgentResponse>, Status> {
        let pb::GetAgentRequest { agent_id } = request.get_ref();
        let agent_id = requests::agent_id(agent_id).map_err(invalid)?;
        let (agent, now) = self.engine.get_agent(&agent_id).await.map_err(status)?;
        Ok(Response::new(pb::GetAgentResponse { agent: Some(convert::agent_to(&agent, now, self.engine.policy())) }))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let (after, size) = requests::list_agents(request.get_ref(), &self.engine.policy().limits).map_err(invalid)?;
        let (agents, now) = self.engine.list_agents(after.as_ref(), size).await.map_err(status)?;
        let next_page_token = if agents.len() == size {
            agents.last().map(|a| a.id().to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(|a| convert::agent_to(a, now, self.engine.policy())).collect(),
            next_page_token,
        }))
    }

    async fn remove_agent(
        &self,
        request: Request<pb::RemoveAgentRequest>,
    ) -> Result<Response<pb::RemoveAgentResponse>, Status> {
        let pb::RemoveAgentRequest { agent_id } = request.get_ref();
        let agent_id = requests::agent_id(agent_id).map_err(invalid)?;
        self.engine.remove_agent(&agent_id).await.map_err(status)?;
        Ok(Response::new(pb::RemoveAgentResponse {}))
    }
}
