//! A short day with a surge of German VIP cases: calling in offline agents must raise the VIP
//! service level, and the engine's estimates and staffing figures must be there to measure.

use dispatch_domain::Tier;
use dispatch_sim::{SimConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_in_offline_agents_beats_waiting_on_vip_service_level() {
    let config = SimConfig::short_day(11);
    let off = run(SimConfig { call_in: false, ..config.clone() }).await.expect("run without call-in");
    let on = run(SimConfig { call_in: true, ..config }).await.expect("run with call-in");
    let (vip_off, vip_on) = (off.tier(Tier::Vip, true), on.tier(Tier::Vip, true));
    eprintln!("off:\n{}{}\non:\n{}{}", off.rows(), off.call_in_line(), on.rows(), on.call_in_line());
    assert_eq!(vip_off.cases, vip_on.cases, "both runs see the same customers");
    assert!(vip_off.cases > 50, "the surge brings VIP cases: {vip_off:?}");
    assert_eq!(off.invited, 0, "no invitation with call-in off");
    assert!(on.invited > 0 && on.came_online > 0, "invitations sent and answered: {} / {}", on.invited, on.came_online);
    assert!(
        vip_on.service_level > vip_off.service_level + 0.05,
        "call-in on beats off on the surge's VIP service level: {:.3} vs {:.3}",
        vip_on.service_level,
        vip_off.service_level
    );
    assert!(vip_on.abandonment < vip_off.abandonment, "fewer VIP customers give up: {vip_on:?} vs {vip_off:?}");
    assert!(off.tier(Tier::Vip, false).short_minutes > 0, "the surge shows as a shortfall");
    assert!(off.tier(Tier::Standard, false).estimate_n > 0, "estimates were given and can be scored");
}
