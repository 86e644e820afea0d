//! Calling in offline agents: the rounds (one dispatcher runs each: the one whose write of the
//! shared round state wins), the invitations they write on agents' records, the feed the
//! notification service reads, and its acknowledgements. The rules are the domain's
//! ([`dispatch_domain::callin`]); this gathers the shortfalls and the candidates.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dispatch_domain::callin::{self, CallInState, Invitation};
use dispatch_domain::demand::Segment;
use dispatch_domain::{Agent, AgentId, Millis, transition};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::write::Load;

/// The shared state record of the rounds.
const STATE: &str = "call_in";
/// How long a round's winner waits for its index to follow the change log.
const CATCH_UP: Duration = Duration::from_secs(2);
/// How often an unacknowledged invitation is sent again on an open feed.
const REDELIVER: Duration = Duration::from_secs(30);

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The round's number.
    pub round: u64,
    /// Segments short of agents now, with the Erlang A shortfall.
    pub short: Vec<(String, u32)>,
    /// Invitations written.
    pub invited: Vec<(AgentId, String)>,
}

impl Engine {
    /// Runs a call-in round if one is due and this dispatcher wins it (another replica's write
    /// of the round state first means that one runs it). `None` when no round ran here.
    pub async fn call_in_round(&self) -> Result<Option<Round>, EngineError> {
        let policy = &self.inner.policy;
        let p = &policy.call_in;
        let _one = self.inner.call_in_round.lock().await;
        let now = self.now().await?;
        if !p.enabled || now < self.inner.call_in_due.load(Ordering::SeqCst) || self.draining() {
            return Ok(None);
        }
        let (version, mut state) = match self.inner.store.get_state(STATE).await? {
            Some((v, body)) => {
                let state: CallInState = serde_json::from_str(&body)
                    .map_err(|e| EngineError::Internal(format!("call-in state unreadable: {e}")))?;
                (v, state)
            }
            None => (0, CallInState::default()),
        };
        if now < state.next_round_at {
            self.inner.call_in_due.store(state.next_round_at, Ordering::SeqCst);
            return Ok(None);
        }
        // Shortfalls and candidates are the index's: it must hold every record written before
        // the round (another replica's registrations, invitations, sign-ins and cases). If the
        // follower does not get there in time, the round waits for its next turn.
        if !self.catch_up(CATCH_UP).await {
            warn!(round = state.round, "call-in round put off: the change log could not be followed in time");
            return Ok(None);
        }
        let short = self.shortfalls(now).await?;
        let act = callin::track(&mut state, &short, now, p);
        let body = serde_json::to_string(&state).map_err(|e| EngineError::Internal(e.to_string()))?;
        let won = self.gated(now, self.inner.store.put_state(STATE, version, &body)).await?;
        self.inner.call_in_due.store(state.next_round_at, Ordering::SeqCst);
        if !won {
            debug!("another dispatcher ran this call-in round");
            return Ok(None);
        }
        let mut invited = Vec::new();
        let agents = self.inner.index.agents();
        for (key, n) in act {
            let Some(segment) = Segment::parse_key(&key) else { continue };
            let Some(sample) = segment.sample_case(policy, now) else { continue };
            let pending_expected: f64 =
                self.inner.index.invited_for(&key, now).iter().map(|a| a.call_in.response_rate(p)).sum();
            let chosen = callin::plan(n, pending_expected, agents.iter().map(|a| a.as_ref()), &sample, now, policy);
            let incentive = p.incentive(n);
            for id in chosen {
                let invitation_id = callin::invitation_id(state.round, &id);
                let r = self
                    .transact(Load::Agent(&id), |_, agent, now| match agent {
                        Some(a) => {
                            transition::invite(a, &sample, &key, invitation_id.clone(), incentive.clone(), now, policy)
                        }
                        None => Ok(Default::default()),
                    })
                    .await;
                match r {
                    Ok(w) if w.committed.agent.is_some() => {
                        info!(agent_id = %id, segment = %key, shortfall = n, "invited to come online");
                        invited.push((id, invitation_id));
                    }
                    Ok(_) | Err(EngineError::Rejected(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Some(Round { round: state.round, short, invited }))
    }

    /// Each segment with cases lately or waiting, with its Erlang A shortfall against the agents
    /// serving it (at least 1 while cases wait and nobody could take them).
    async fn shortfalls(&self, now: Millis) -> Result<Vec<(String, u32)>, EngineError> {
        let policy = &self.inner.policy;
        let counts = self.segment_counts(now, true).await?;
        let waiting = self.inner.index.live_cases();
        let waiting: Vec<_> = waiting.iter().filter(|c| c.state == dispatch_domain::CaseState::Queued).collect();
        let mut segments: BTreeSet<Segment> = counts.segment_keys().cloned().collect();
        segments.extend(waiting.iter().map(|c| Segment::of(&c.spec)));
        let mut out = Vec::new();
        for segment in segments {
            let Some(sample) = segment.sample_case(policy, now) else { continue };
            let supply = self.inner.index.supply_for(&sample, now, policy);
            let advice = self.advice_for(&segment, &counts, supply.serving, now)?;
            let waits = waiting.iter().any(|c| Segment::of(&c.spec) == segment);
            out.push((segment.key(), callin::call_in_need(&advice, waits)));
        }
        Ok(out)
    }

    /// The latest invitation of every invited agent the index knows, newest first, with the
    /// agent: of segments of `language` (all when `None`), open ones only if `live_only`.
    pub async fn invitations(
        &self,
        language: Option<&str>,
        live_only: bool,
    ) -> Result<(Vec<(Invitation, Arc<Agent>)>, Millis), EngineError> {
        let now = self.now().await?;
        let mut out: Vec<(Invitation, Arc<Agent>)> = self
            .inner
            .index
            .invited()
            .into_iter()
            .filter_map(|(_, a)| a.invitation.clone().map(|i| (i, a)))
            .filter(|(i, _)| !live_only || i.live(now))
            .filter(|(i, _)| language.is_none_or(|l| Segment::parse_key(&i.segment).is_some_and(|s| s.language == l)))
            .collect();
        out.sort_by(|(a, _), (b, _)| b.sent_at.cmp(&a.sent_at).then(a.id.cmp(&b.id)));
        Ok((out, now))
    }

    /// The notification service acknowledges an invitation (see
    /// [`transition::acknowledge_invitation`]); the agent as stored after.
    pub async fn acknowledge_invitation(
        &self,
        agent_id: &AgentId,
        invitation_id: &str,
        declined: bool,
    ) -> Result<(Agent, Millis), EngineError> {
        let mut unchanged = None;
        let out = self
            .transact(Load::Agent(agent_id), |_, agent, now| {
                let a = agent.ok_or_else(|| dispatch_domain::Rejection::not_found("agent", agent_id))?;
                unchanged = Some(a.clone());
                transition::acknowledge_invitation(a, invitation_id, declined, now)
            })
            .await?;
        out.committed
            .agent
            .or(unchanged)
            .map(|a| (a, out.now))
            .ok_or_else(|| EngineError::Internal("acknowledge read no agent".into()))
    }

    /// The invitations to deliver: every open unacknowledged one now, then each as it is
    /// issued (on any replica), and again every 30 seconds until acknowledged.
    pub fn invitation_feed(&self) -> InvitationFeed {
        InvitationFeed {
            engine: self.clone(),
            rx: self.inner.delivery.invitations.subscribe(),
            pending: VecDeque::new(),
            started: false,
        }
    }
}

/// A notification service's feed of invitations (see [`Engine::invitation_feed`]).
pub struct InvitationFeed {
    engine: Engine,
    rx: broadcast::Receiver<Arc<Agent>>,
    pending: VecDeque<(Invitation, Arc<Agent>)>,
    started: bool,
}

impl InvitationFeed {
    async fn undelivered(&self) -> Vec<(Invitation, Arc<Agent>)> {
        match self.engine.invitations(None, true).await {
            Ok((all, _)) => all.into_iter().filter(|(i, _)| i.delivered_at == 0).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The next invitation to deliver; `None` when the dispatcher stops.
    pub async fn next(&mut self) -> Option<(Invitation, Arc<Agent>)> {
        loop {
            if !self.started {
                self.started = true;
                self.pending.extend(self.undelivered().await);
            }
            if let Some(next) = self.pending.pop_front() {
                return Some(next);
            }
            let mut stop = self.engine.inner.life.stop.subscribe();
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(agent) => {
                        if let Some(i) = agent.invitation.clone() {
                            let now = self.engine.now().await.unwrap_or(i.sent_at);
                            if i.live(now) && i.delivered_at == 0 {
                                self.pending.push_back((i, agent));
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.started = false,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(REDELIVER) => self.started = false,
                _ = stop.changed() => return None,
            }
        }
    }
}
