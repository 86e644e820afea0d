//! Fixtures shared by the engine's integration tests.

use dispatch_domain::limits::Limits;
use dispatch_domain::model::{AgentProfile, AgentProfileInput, Channel};

/// An English chat agent with room for one case.
pub fn profile(id: &str) -> AgentProfile {
    let input = AgentProfileInput {
        id,
        display_name: "",
        languages: vec![("en", 4)],
        capacity: vec![(Some(Channel::Chat), 1)],
        rating: 4.0,
        ..AgentProfileInput::default()
    };
    AgentProfile::parse(input, &Limits::default()).unwrap()
}
