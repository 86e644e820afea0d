//! Who is calling. One interceptor reads the agent's identity from request metadata; handlers
//! read it from the request extensions and never from message bodies, so that authentication
//! (tokens) replaces this one function later.

use dispatch_domain::AgentId;
use dispatch_proto::AGENT_ID_HEADER;
use tonic::{Request, Status};

/// The authenticated agent of an `AgentService` call.
#[derive(Debug, Clone)]
pub struct CallerAgent(pub AgentId);

/// Reads the `agent-id` metadata into [`CallerAgent`]; UNAUTHENTICATED when absent or invalid.
pub fn agent_identity(mut req: Request<()>) -> Result<Request<()>, Status> {
    let raw = req
        .metadata()
        .get(AGENT_ID_HEADER)
        .ok_or_else(|| Status::unauthenticated(format!("metadata {AGENT_ID_HEADER} is required")))?;
    let raw = raw.to_str().map_err(|_| Status::unauthenticated(format!("metadata {AGENT_ID_HEADER} is not text")))?;
    let id = AgentId::parse(AGENT_ID_HEADER, raw).map_err(|e| Status::unauthenticated(e.to_string()))?;
    req.extensions_mut().insert(CallerAgent(id));
    Ok(req)
}

/// The caller set by [`agent_identity`].
pub fn caller<T>(req: &Request<T>) -> Result<AgentId, Status> {
    req.extensions()
        .get::<CallerAgent>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no agent identity on this call"))
}
