//! The roster: agents' profiles.

use dispatch_domain::model::AgentProfile;
use dispatch_domain::{Agent, AgentId, Millis, Rejection, transition};

use crate::engine::Engine;
use crate::error::{EngineError, not_found};
use crate::store::StoreError;
use crate::write::Load;

impl Engine {
    /// Registers or updates an agent; returns it, whether it was new, and the store's time.
    pub async fn upsert_agent(&self, profile: AgentProfile) -> Result<(Agent, bool, Millis), EngineError> {
        let id = profile.id.clone();
        let mut created = false;
        let out = self
            .transact(Load::Agent(&id), |_, agent, now| {
                created = agent.is_none();
                transition::upsert_profile(agent, profile.clone(), now).map_err(|r| match r {
                    // The profile's fields, as the request names them.
                    Rejection::InvalidArgument(f) => Rejection::InvalidArgument(f.under("profile")),
                    other => other,
                })
            })
            .await?;
        let agent = out.committed.agent.ok_or_else(|| EngineError::Internal("upsert stored no agent".into()))?;
        Ok((agent, created, out.now))
    }

    /// An agent, and the store's time.
    pub async fn get_agent(&self, id: &AgentId) -> Result<(Agent, Millis), EngineError> {
        let read = self.inner.store.read(None, Some(id)).await?;
        read.agent.map(|a| (a, read.now)).ok_or_else(|| not_found("agent", id))
    }

    /// A page of agents after `after`, and the store's time.
    pub async fn list_agents(
        &self,
        after: Option<&AgentId>,
        limit: usize,
    ) -> Result<(Vec<Agent>, Millis), EngineError> {
        let agents = self.inner.store.list_agents(after, limit).await?;
        Ok((agents, self.now().await?))
    }

    /// Removes an agent that holds no work; its open session is ended. Through the write
    /// path's gate, compare-and-set on the version read.
    pub async fn remove_agent(&self, id: &AgentId) -> Result<(), EngineError> {
        for _ in 0..self.inner.config.conflict_retries {
            let read = self.inner.store.read(None, Some(id)).await?;
            let agent = match read.agent {
                Some(a) => a,
                None => return Err(self.refusal(Rejection::not_found("agent", id), read.now).await),
            };
            if let Err(rejection) = transition::check_removable(&agent) {
                return Err(self.refusal(rejection, read.now).await);
            }
            match self.gated(read.now, self.inner.store.remove_agent(id, agent.version)).await {
                Ok(()) => {
                    self.observe_agent_removed(id);
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contention(format!("agent {id} kept changing")))
    }
}
