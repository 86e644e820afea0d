//! The engine's API, one area per file: the roster, cases (routers), agent sessions (devices)
//! and the planner.

pub mod agents;
pub mod cases;
pub mod planner;
pub mod roster;
