//! A day of the marketplace, simulated on the real engine: the in-process dispatcher on the
//! memory store and a manual clock, stepped a second at a time. Customers arrive by a daily
//! curve over 35 languages (with a surge of one language's VIP cases) and give up when their
//! patience runs out; gig agents sign in for shifts, answer offers and handle cases for
//! lognormal times; opted-in offline agents answer invitations (the simulator is the
//! notification service: it acknowledges each invitation, and the agent comes online or not).
//! Nothing of the dispatcher is simulated: offers, estimates, staffing advice and call-in rounds
//! are the engine's and the domain's.
//!
//! The report ([`Report`]) gives per tier the service level against the tier's target, waits
//! (p50/p90/p99), abandonment, the error of the estimated wait given at submit, minutes in
//! shortfall, and over the day the invitations and the agents' utilisation.

pub mod report;
pub mod run;
pub mod workload;

pub use report::{Report, markdown, service_level_svg};
pub use run::run;

/// A surge of one language's VIP cases.
#[derive(Debug, Clone)]
pub struct Surge {
    /// Its language.
    pub language: &'static str,
    /// Local hours it runs, from.
    pub from_hour: f64,
    /// To.
    pub to_hour: f64,
    /// Extra VIP arrivals per hour while it runs.
    pub per_hour: f64,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the workload and every draw.
    pub seed: u64,
    /// Local hour the run starts (the clock starts there, UTC = local).
    pub start_hour: u32,
    /// Hours simulated.
    pub hours: u64,
    /// Arrivals per hour at the daily peak.
    pub peak_per_hour: f64,
    /// Share of VIP customers.
    pub vip_share: f64,
    /// Mean patience of VIP customers, ms.
    pub patience_vip_ms: u64,
    /// Of standard customers, ms.
    pub patience_standard_ms: u64,
    /// Gig agents (they sign in for their shifts by themselves).
    pub gig_agents: usize,
    /// Offline agents opted in to call-ins (they come online only when invited).
    pub offline_agents: usize,
    /// The surge, if any.
    pub surge: Option<Surge>,
    /// Whether the dispatcher calls in offline agents.
    pub call_in: bool,
}

impl SimConfig {
    /// The reported day: 07:00 to 23:00, 35 languages, a German VIP surge in the evening.
    pub fn day(seed: u64) -> Self {
        Self {
            seed,
            start_hour: 7,
            hours: 16,
            peak_per_hour: 700.0,
            vip_share: 0.12,
            patience_vip_ms: 240_000,
            patience_standard_ms: 480_000,
            gig_agents: 420,
            offline_agents: 120,
            surge: Some(Surge { language: "de", from_hour: 18.0, to_hour: 20.0, per_hour: 90.0 }),
            call_in: true,
        }
    }

    /// Two evening hours around the surge, smaller: the test suite's run.
    pub fn short_day(seed: u64) -> Self {
        Self {
            start_hour: 17,
            hours: 2,
            peak_per_hour: 300.0,
            gig_agents: 150,
            offline_agents: 50,
            surge: Some(Surge { language: "de", from_hour: 17.25, to_hour: 18.5, per_hour: 80.0 }),
            ..Self::day(seed)
        }
    }
}
