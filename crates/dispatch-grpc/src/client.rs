//! Building clients: one place that sets the client-side limits, used by the command-line
//! client and the tests.

use std::time::Duration;

use dispatch_proto::AGENT_ID_HEADER;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Connects to `addr` (`http://host:port`).
pub async fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect()
        .await
}

/// Wraps `msg` in a request carrying the agent's identity.
pub fn as_agent<T>(agent_id: &str, msg: T) -> Result<Request<T>, Status> {
    let mut req = Request::new(msg);
    let v: MetadataValue<_> =
        agent_id.parse().map_err(|_| Status::invalid_argument("agent id is not valid metadata"))?;
    req.metadata_mut().insert(AGENT_ID_HEADER, v);
    Ok(req)
}
