//! End-to-end tests: one binary (link time), one module per area.

mod api;
mod callin;
mod demand;
mod eligibility;
mod handback;
mod matching;
mod offers;
mod operability;
mod presence;
mod redis_faults;
mod replicas;
mod reputation;
mod security;
mod transparency;
mod web;
mod worktime;
