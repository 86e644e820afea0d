//! Agent sessions: a device's stream ([`Engine::connect`] hands the transport an
//! [`AgentNotices`] to forward and an [`AgentCommands`] to feed), and the commands an agent
//! sends over it.

use std::future::Future;
use std::time::Duration;

use dispatch_domain::{AgentId, AgentStatus, CaseId, FieldError, OfferId, Rejection, SessionId, transition};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::{EngineError, not_found};
use crate::sessions::{AgentNotice, StreamEnd};
use crate::write::Load;

/// A command from an agent's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// Go available, away or offline (offline signs out and ends the stream).
    SetStatus(AgentStatus),
    /// Nothing but "still here".
    Heartbeat,
    /// Accept an offer.
    Accept(OfferId),
    /// Decline an offer, with a reason.
    Decline(OfferId, String),
    /// Complete an assigned case, with an outcome.
    Complete(CaseId, String),
    /// Still working on an assigned case (a reply sent, a call running): its activity timer
    /// starts again.
    ReportActivity(CaseId),
    /// Why the agent may or may not be offered a case: answered by an
    /// [`AgentNotice::Explanation`] before the result.
    ExplainCase(CaseId),
    /// Why the agent gets no offers now, and its own figures: answered by an
    /// [`AgentNotice::AgentExplanation`] before the result.
    ExplainMe,
    /// What decides who gets a case: answered by an [`AgentNotice::AllocationParameters`].
    AllocationParameters,
}

/// One message from the device, as the transport decoded it.
#[derive(Debug)]
pub enum Inbound {
    /// A command (or why it could not be read: answered with INVALID_ARGUMENT).
    Command {
        /// Echoed in the result.
        request_id: String,
        /// The command.
        command: Result<AgentCommand, FieldError>,
    },
    /// The device's stream failed.
    Failed(String),
}

/// Where a session's commands come from (the transport's inbound stream).
pub trait CommandSource: Send {
    /// The next message; `None` when the device closed its stream.
    fn next(&mut self) -> impl Future<Output = Option<Inbound>> + Send;
}

/// Bounds of one stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// A device that sends nothing (not even a heartbeat) for this long is disconnected.
    pub heartbeat_timeout: Duration,
    /// The stream ends after this long (credentials' lifetime, or the configured maximum).
    pub max_age: Duration,
}

/// What a device is told, in order; ends after an [`AgentNotice::Ended`].
pub struct AgentNotices {
    rx: mpsc::Receiver<Box<AgentNotice>>,
    done: bool,
}

impl AgentNotices {
    /// The next message for the device; `None` after the last.
    pub async fn next(&mut self) -> Option<AgentNotice> {
        if self.done {
            return None;
        }
        let notice = match self.rx.recv().await {
            Some(n) => *n,
            // The session was dropped without a word: its queue was full (the device did not
            // read), or the stream is over anyway.
            None => AgentNotice::Ended { why: StreamEnd::TooSlow },
        };
        self.done = matches!(notice, AgentNotice::Ended { .. });
        Some(notice)
    }

    /// The next message if one is queued now (a simulation's device reads between steps).
    pub fn try_next(&mut self) -> Option<AgentNotice> {
        if self.done {
            return None;
        }
        let notice = match self.rx.try_recv() {
            Ok(n) => *n,
            Err(mpsc::error::TryRecvError::Empty) => return None,
            Err(mpsc::error::TryRecvError::Disconnected) => AgentNotice::Ended { why: StreamEnd::TooSlow },
        };
        self.done = matches!(notice, AgentNotice::Ended { .. });
        Some(notice)
    }
}

/// The command side of one device's session.
pub struct AgentCommands {
    engine: Engine,
    agent_id: AgentId,
    session_id: SessionId,
}

impl AgentCommands {
    /// This session's id.
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// Carries out one command now and returns its outcome, for callers in this process (the
    /// transport uses [`AgentCommands::run`], which queues each result on the stream instead).
    pub async fn execute(&self, command: AgentCommand) -> Result<(), EngineError> {
        self.engine.command(&self.agent_id, &self.session_id, command).await
    }

    /// Carries out the device's commands until it leaves, goes silent past the heartbeat
    /// timeout, signs out, is replaced, its stream's age runs out, or `shutdown` resolves;
    /// then ends the session (a live offer is revoked; the agent stays signed in for the grace
    /// period). Each command's result is queued after the notices the command caused.
    pub async fn run(self, mut source: impl CommandSource, limits: StreamLimits, shutdown: impl Future<Output = ()>) {
        let sessions = &self.engine.inner.delivery.sessions;
        let (agent, session) = (&self.agent_id, &self.session_id);
        let expiry = tokio::time::sleep(limits.max_age);
        tokio::pin!(expiry, shutdown);
        loop {
            let next = tokio::select! {
                m = tokio::time::timeout(limits.heartbeat_timeout, source.next()) => m,
                () = &mut expiry => {
                    warn!(agent_id = %agent, "stream age or credentials expired; ending the stream");
                    sessions.end_session(agent, session, StreamEnd::CredentialsExpired);
                    break;
                }
                () = &mut shutdown => {
                    sessions.end_session(agent, session, StreamEnd::ServerShutdown);
                    break;
                }
            };
            let (request_id, command) = match next {
                Ok(Some(Inbound::Command { request_id, command })) => (request_id, command),
                Ok(Some(Inbound::Failed(e))) => {
                    info!(agent_id = %agent, error = %e, "agent stream failed");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(agent_id = %agent, "no heartbeat within the timeout; disconnecting");
                    sessions.end_session(agent, session, StreamEnd::HeartbeatTimeout);
                    break;
                }
            };
            if !sessions.begin_command(agent, session) {
                break;
            }
            let outcome = match command {
                Ok(c) => self.engine.command(agent, session, c).await,
                Err(field) => Err(EngineError::Rejected(field.into())),
            };
            if !sessions.finish_command(agent, session, AgentNotice::Result { request_id, outcome }) {
                break;
            }
        }
        // A session replaced by another device here is that device's now: ending it in the
        // store could revoke the offer the new session is about to show.
        let replaced = sessions.current(agent).is_some_and(|s| &s != session);
        if !replaced && let Err(e) = self.engine.disconnect(agent, session).await {
            warn!(agent_id = %agent, error = %e, "disconnect failed; the presence grace will take the agent offline");
        }
    }
}

impl Engine {
    /// Opens a device session: signs the agent in (away) or resumes its session within the
    /// grace period. A session already open for the agent is ended (told it was replaced).
    pub async fn connect(&self, agent_id: &AgentId) -> Result<(AgentNotices, AgentCommands), EngineError> {
        let session_id = SessionId::parse("session_id", &self.inner.ids.mint("ss"))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let sessions = &self.inner.delivery.sessions;
        let rx = sessions.open(agent_id.clone(), session_id.clone(), self.inner.config.agent_outbound_buffer);
        let out = self
            .transact(Load::Agent(agent_id), |_, agent, now| {
                let agent = agent.ok_or_else(|| Rejection::not_found("agent", agent_id))?;
                Ok(transition::connect(agent, session_id.clone(), now, &self.inner.policy))
            })
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                sessions.forget(agent_id, &session_id);
                return Err(e);
            }
        };
        if let Some(a) = &out.committed.agent {
            let lease_until = a.session.as_ref().map_or(dispatch_domain::Millis::MIN, |s| s.lease_until);
            sessions.confirm(agent_id, &session_id, a.version, lease_until);
            // A live offer survives a session switch (a second device): show it on the new one.
            if let Some(p) = &a.pending_offer
                && let Some(case) = self.inner.index.case(&p.case_id)
            {
                self.show_offer(agent_id, &p.offer_id, std::sync::Arc::new(case.spec.clone()), p.deadline, out.now);
            }
        }
        info!(agent_id = %agent_id, session_id = %session_id, "agent connected");
        let commands = AgentCommands { engine: self.clone(), agent_id: agent_id.clone(), session_id };
        Ok((AgentNotices { rx, done: false }, commands))
    }

    async fn command(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        command: AgentCommand,
    ) -> Result<(), EngineError> {
        match command {
            AgentCommand::SetStatus(s) => self.set_status(agent_id, session_id, s).await,
            AgentCommand::Heartbeat => self.is_current_session(agent_id, session_id),
            AgentCommand::Accept(offer_id) => self.accept(agent_id, session_id, &offer_id).await,
            AgentCommand::Decline(offer_id, reason) => self.decline(agent_id, session_id, &offer_id, &reason).await,
            AgentCommand::Complete(case_id, outcome) => self.complete(agent_id, session_id, &case_id, &outcome).await,
            AgentCommand::ReportActivity(case_id) => self.report_activity(agent_id, session_id, &case_id).await,
            AgentCommand::ExplainMe => {
                let notice = AgentNotice::AgentExplanation(Box::new(self.explain_agent(agent_id).await?));
                self.answer(agent_id, session_id, notice);
                Ok(())
            }
            AgentCommand::AllocationParameters => {
                let notice = AgentNotice::AllocationParameters(Box::new(self.allocation_policy().await?));
                self.answer(agent_id, session_id, notice);
                Ok(())
            }
            AgentCommand::ExplainCase(case_id) => {
                let explanation = Box::new(self.explain_match(&case_id, agent_id).await?);
                self.answer(agent_id, session_id, AgentNotice::Explanation { case_id, explanation });
                Ok(())
            }
        }
    }

    /// The device stream ended: revoke the live offer at once; the agent stays signed in for
    /// the grace period.
    pub async fn disconnect(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<(), EngineError> {
        self.end_session(agent_id, session_id).await.map(drop)
    }

    /// Ends a session; whether a live offer was revoked.
    pub(crate) async fn end_session(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<bool, EngineError> {
        self.inner.delivery.sessions.forget(agent_id, session_id);
        self.disconnect_in_store(agent_id, session_id).await
    }

    /// Records the session's device as gone (its live offer revoked, the grace period begun),
    /// leaving the stream, if still held here, to its caller; whether a live offer was revoked.
    pub(crate) async fn disconnect_in_store(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
    ) -> Result<bool, EngineError> {
        let out = self
            .transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
                Ok(agent
                    .map(|a| transition::disconnect(a, case, session_id, now, &self.inner.policy))
                    .unwrap_or_default())
            })
            .await?;
        info!(agent_id = %agent_id, session_id = %session_id, "agent disconnected");
        Ok(out.events.iter().any(|e| matches!(e, dispatch_domain::Event::Revoked { .. })))
    }

    /// Whether `session_id` is the agent's session held here (a heartbeat's answer).
    fn is_current_session(&self, agent_id: &AgentId, session_id: &SessionId) -> Result<(), EngineError> {
        match self.inner.delivery.sessions.current(agent_id) {
            Some(s) if &s == session_id => Ok(()),
            _ => Err(Rejection::StaleSession.into()),
        }
    }

    /// The agent sets its status.
    async fn set_status(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        status: AgentStatus,
    ) -> Result<(), EngineError> {
        self.transact(Load::AgentAndPendingCase(agent_id), |case, agent, now| {
            let agent = agent.ok_or_else(|| Rejection::not_found("agent", agent_id))?;
            transition::set_status(agent, case, session_id, status, now, &self.inner.policy)
        })
        .await
        .map(drop)
    }

    /// The case an offer to `agent_id` belongs to: from the agent's live offer as the index
    /// holds it (an offer id names one case for ever), else from the store.
    async fn offer_case(&self, agent_id: &AgentId, offer_id: &OfferId) -> Result<CaseId, EngineError> {
        let indexed = self.inner.index.agent(agent_id);
        if let Some(p) = indexed.as_ref().and_then(|a| a.pending_offer.as_ref()).filter(|p| &p.offer_id == offer_id) {
            return Ok(p.case_id.clone());
        }
        self.inner.store.offer_case(offer_id).await?.ok_or_else(|| not_found("offer", offer_id))
    }

    /// The agent accepts an offer (idempotent on the offer id).
    async fn accept(&self, agent_id: &AgentId, session_id: &SessionId, offer_id: &OfferId) -> Result<(), EngineError> {
        let case_id = self.offer_case(agent_id, offer_id).await?;
        self.transact(Load::CaseAndAgent(&case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, &case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::accept(case, agent, offer_id, now, &self.inner.policy)
        })
        .await
        .map(drop)
    }

    /// The agent declines an offer (idempotent on the offer id).
    async fn decline(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        offer_id: &OfferId,
        reason: &str,
    ) -> Result<(), EngineError> {
        let case_id = self.offer_case(agent_id, offer_id).await?;
        self.transact(Load::CaseAndAgent(&case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, &case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::decline(case, agent, offer_id, reason, now, &self.inner.policy)
        })
        .await
        .map(drop)
    }

    /// Queues the answer to a question the session asked, before the command's result. A
    /// device whose queue is full hears nothing more anyway.
    fn answer(&self, agent_id: &AgentId, session_id: &SessionId, notice: AgentNotice) {
        let _ = self.inner.delivery.sessions.send(agent_id, Some(session_id), notice);
    }

    /// The agent reports activity on an assigned case.
    async fn report_activity(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        case_id: &CaseId,
    ) -> Result<(), EngineError> {
        self.transact(Load::CaseAndAgent(case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::report_activity(case, agent, now, &self.inner.policy)
        })
        .await
        .map(drop)
    }

    /// The agent completes an assigned case.
    async fn complete(
        &self,
        agent_id: &AgentId,
        session_id: &SessionId,
        case_id: &CaseId,
        outcome: &str,
    ) -> Result<(), EngineError> {
        self.transact(Load::CaseAndAgent(case_id, agent_id), |case, agent, now| {
            let (case, agent) = both(case, agent, case_id, agent_id)?;
            transition::check_session(agent, session_id)?;
            transition::complete(case, agent, outcome, now, &self.inner.policy)
        })
        .await
        .map(drop)
    }
}

fn both<'a>(
    case: Option<&'a dispatch_domain::Case>,
    agent: Option<&'a dispatch_domain::Agent>,
    case_id: &CaseId,
    agent_id: &AgentId,
) -> Result<(&'a dispatch_domain::Case, &'a dispatch_domain::Agent), Rejection> {
    let case = case.ok_or_else(|| Rejection::not_found("case", case_id))?;
    let agent = agent.ok_or_else(|| Rejection::not_found("agent", agent_id))?;
    Ok((case, agent))
}
