//! The dispatch rules, pure: no I/O, no clock, no async, no randomness. Time (`now`) and
//! identifiers (offer ids, session ids) are passed in; every decision returns a value.
//!
//! Layout:
//! - [`model`]: identifiers, languages, skills, tiers, channels, profiles and case specs, each
//!   built only through validation (errors name the field);
//! - [`limits`]: input limits;
//! - [`policy`]: the configurable rules (timeouts, misses, wrap-up, relaxation, weights);
//! - [`state`]: the persisted records, [`Agent`](state::Agent) and [`Case`](state::Case), and
//!   queue ordering;
//! - [`scoring`]: hard filters, soft terms and ranking of candidates;
//! - [`compact`]: compact summaries of agents that scans read with the same rules;
//! - [`transition`]: the case / offer / agent state machines, returning a
//!   [`Change`](transition::Change) (records to compare-and-set, events, timers).
//! - [`stats`]: planner counts over agents;
//! - [`queueing`]: Erlang C and Erlang A (waits, service level, agents needed);
//! - [`callin`]: calling in offline agents (opt-ins, hysteresis, who to invite);
//! - [`demand`]: demand segments, their live rates, estimated waits and staffing advice;
//! - [`worktime`]: working-time accounting and limits;
//! - [`reputation`]: customers' ratings and the shrunk mean selection scores;
//! - [`transparency`]: why an agent gets no offers, and the allocation parameters in force.

pub mod callin;
pub mod compact;
pub mod demand;
pub mod limits;
pub mod model;
pub mod policy;
pub mod queueing;
pub mod reputation;
pub mod scoring;
pub mod state;
pub mod stats;
pub mod transition;
pub mod transparency;
pub mod worktime;

pub use model::{
    AgentId, CaseId, Channel, FieldError, Language, Level, Millis, OfferId, SessionId, Skill, TenantId, Tier,
};
pub use policy::Policy;
pub use state::{Activity, Agent, AgentStatus, Case, CaseState, StatusReason};
pub use stats::Counter;
pub use transition::{Change, Event, Precondition, Rejection, TimerKey};
