//! `AgentService`: one session per device. The engine's session object owns the session's life
//! (heartbeats, sign-out, replacement, age); this file maps protobuf in and out. A native app
//! carries its session on one bidirectional stream (`Connect`); a browser, which cannot send a
//! stream, on a server stream (`OpenSession`) and unary calls (`SendCommand`) that feed the same
//! command source, so that both go through one rule set.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dispatch_domain::AgentId;
use dispatch_engine::{AgentNotice, CommandSource, EngineError, Inbound, StreamLimits};
use dispatch_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::{BoxStream, Services};
use crate::error::{self, status};
use crate::{auth, convert, requests};

/// Commands a browser session may have waiting; more are RESOURCE_EXHAUSTED.
pub const MAX_QUEUED_COMMANDS: usize = 16;

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

/// A browser session's commands, as its `SendCommand` calls queue them (already validated).
struct Queued(mpsc::Receiver<Inbound>);

impl CommandSource for Queued {
    async fn next(&mut self) -> Option<Inbound> {
        self.0.recv().await
    }
}

type Answer = oneshot::Sender<Result<(), EngineError>>;

/// One open browser session of this process: where its commands go, and who waits for their
/// results (in the order the session carries them out, which is the order they were queued).
struct BrowserSession {
    agent_id: AgentId,
    commands: mpsc::Sender<Inbound>,
    waiting: VecDeque<Answer>,
}

/// The browser sessions this process holds, by session id.
#[derive(Clone, Default)]
pub(crate) struct BrowserSessions(Arc<Mutex<HashMap<String, BrowserSession>>>);

impl BrowserSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BrowserSession>> {
        // Each update is one whole entry: a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a command for the session; the receiver gets its outcome.
    fn queue(
        &self,
        session_id: &str,
        agent_id: &AgentId,
        command: Inbound,
    ) -> Result<oneshot::Receiver<Result<(), EngineError>>, Status> {
        let mut sessions = self.lock();
        let session = sessions.get_mut(session_id).ok_or_else(|| {
            Status::not_found(format!(
                "session_id: no open session {session_id:?} on this dispatcher (a session lives on the \
                 dispatcher holding its OpenSession stream)"
            ))
        })?;
        if &session.agent_id != agent_id {
            return Err(Status::permission_denied("session_id: the session belongs to another agent"));
        }
        let (tx, rx) = oneshot::channel();
        // Queued and awaited under one lock, so results pair with commands in order.
        match session.commands.try_send(command) {
            Ok(()) => session.waiting.push_back(tx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(error::exhausted(format!(
                    "{MAX_QUEUED_COMMANDS} commands already wait in this session; wait for their results"
                )));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(error::unavailable("the session has ended: open a new one"));
            }
        }
        Ok(rx)
    }

    /// The next command's outcome is known: hand it to its caller (if it still waits).
    fn answer(&self, session_id: &str, outcome: &Result<(), EngineError>) {
        let waiter = self.lock().get_mut(session_id).and_then(|s| s.waiting.pop_front());
        if let Some(w) = waiter {
            let _ = w.send(outcome.clone());
        }
    }
}

/// Removes a browser session from the registry when its stream goes (the browser left, or the
/// session ended): its command queue closes, so the engine's session ends as a closed stream's.
struct Registered {
    sessions: BrowserSessions,
    session_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.session_id);
    }
}

impl Services {
    /// The bounds of `principal`'s session, whichever way it is carried.
    fn stream_limits(&self, principal: &auth::Principal) -> StreamLimits {
        StreamLimits { heartbeat_timeout: self.edge.heartbeat_timeout, max_age: self.stream_age(principal) }
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Services {
    type ConnectStream = BoxStream<pb::DispatcherMessage>;
    type OpenSessionStream = BoxStream<pb::DispatcherMessage>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = principal.agent()?;
        let limits = self.stream_limits(&principal);
        let source = Commands { inbound: request.into_inner(), limits: self.engine.policy().limits.clone() };
        let (notices, commands) = self.engine.connect(&agent_id).await.map_err(status)?;
        tokio::spawn(commands.run(source, limits, self.shutting_down()));
        let stream = futures_util::stream::unfold(notices, |mut notices| async move {
            notices.next().await.map(|n| (convert::notice_to(n), notices))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<Self::OpenSessionStream>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = principal.agent()?;
        let limits = self.stream_limits(&principal);
        let (tx, rx) = mpsc::channel(MAX_QUEUED_COMMANDS);
        let (notices, commands) = self.engine.connect(&agent_id).await.map_err(status)?;
        let session_id = commands.session_id().to_string();
        self.browser
            .lock()
            .insert(session_id.clone(), BrowserSession { agent_id, commands: tx, waiting: VecDeque::new() });
        tokio::spawn(commands.run(Queued(rx), limits, self.shutting_down()));
        let registered = Registered { sessions: self.browser.clone(), session_id: session_id.clone() };
        let opened = pb::DispatcherMessage {
            event: Some(pb::dispatcher_message::Event::Opened(pb::SessionOpened {
                session_id,
                heartbeat_interval_ms: heartbeat_interval(self.edge.heartbeat_timeout),
            })),
        };
        let first = futures_util::stream::once(std::future::ready(Ok(opened)));
        let rest = futures_util::stream::unfold((notices, registered), |(mut notices, registered)| async move {
            let n = notices.next().await?;
            if let AgentNotice::Result { outcome, .. } = &n {
                registered.sessions.answer(&registered.session_id, outcome);
            }
            Some((convert::notice_to(n), (notices, registered)))
        });
        Ok(Response::new(Box::pin(futures_util::StreamExt::chain(first, rest))))
    }

    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::CommandResult>, Status> {
        let principal = auth::principal(&request)?;
        let agent_id = principal.agent()?;
        let pb::SendCommandRequest { session_id, message } = request.into_inner();
        let (session_id, message) = requests::send_command(session_id, message).map_err(error::invalid)?;
        let request_id = message.request_id.clone();
        let command = Inbound::Command {
            request_id: request_id.clone(),
            command: requests::command(message, &self.engine.policy().limits).map_err(|e| e.under("message")),
        };
        let answer = self.browser.queue(&session_id, &agent_id, command)?;
        match answer.await {
            Ok(Ok(())) => Ok(Response::new(pb::CommandResult { request_id, ..pb::CommandResult::default() })),
            Ok(Err(e)) => Err(status(e)),
            Err(_) => Err(error::unavailable("the session ended before the command was carried out: open a new one")),
        }
    }
}

/// How often a browser should send a heartbeat: three within the timeout.
fn heartbeat_interval(timeout: Duration) -> u64 {
    (timeout.as_millis() / 3).max(1) as u64
}
