//! Two tenants racing for the same case ids, through two dispatchers on one Redis: each tenant
//! gets its own case for every id, each submit is idempotent within its tenant, and neither
//! tenant ever sees, cancels or blocks the other's case.

use std::sync::Arc;

use dispatch_domain::model::{CaseSpec, CaseSpecInput};
use dispatch_domain::{CaseId, CaseState, Channel, Level, Policy, TenantId, Tier};
use dispatch_engine::{Clock, Engine, EngineConfig, EngineError};
use dispatch_redis::testing::RedisServer;
use dispatch_redis::{RedisConfig, RedisStore};

fn spec(id: &str, summary: &str) -> CaseSpec {
    let input = CaseSpecInput {
        id,
        language: "en",
        tier: Some(Tier::Standard),
        channel: Some(Channel::Chat),
        summary,
        ..Default::default()
    };
    CaseSpec::parse(input, Level::MIN, &dispatch_domain::limits::Limits::default()).expect("spec")
}

async fn dispatcher(redis: &RedisServer, clock: &Clock) -> Engine {
    let config = RedisConfig { url: redis.url(), ..RedisConfig::default() };
    let store = RedisStore::open(&config, Some(clock.clone())).await.expect("open the store");
    Engine::start(Arc::new(store), clock.clone(), Policy::default(), EngineConfig::default()).await.expect("start")
}

/// Submits until the store answers (a submit that meets a conflict or an outage is retried
/// with the same id, as the router contract says).
async fn submit(e: &Engine, tenant: &TenantId, id: &str) -> bool {
    loop {
        match e.submit(spec(id, tenant.as_str()), Some(tenant.clone())).await {
            Ok((_, created, _)) => return created,
            Err(EngineError::Unavailable(_) | EngineError::Contention(_)) => tokio::task::yield_now().await,
            Err(other) => panic!("{tenant} {id}: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_racing_for_the_same_case_ids() {
    let redis = RedisServer::start();
    let clock = Clock::manual(1_800_000_000_000);
    let (a, b) = (dispatcher(&redis, &clock).await, dispatcher(&redis, &clock).await);
    let tenants = [TenantId::parse("t", "acme").unwrap(), TenantId::parse("t", "globex").unwrap()];
    const IDS: usize = 200;
    // Every id submitted by both tenants, twice each, through both dispatchers, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (t, tenant) in tenants.iter().enumerate() {
            for (d, engine) in [&a, &b].into_iter().enumerate() {
                let (engine, tenant) = (engine.clone(), tenant.clone());
                tasks.spawn(async move {
                    let mut created = 0;
                    for i in 0..IDS {
                        // Each (round, tenant, dispatcher) walks every id, from its own start.
                        let i = (i + 37 * (4 * round + 2 * t + d)) % IDS;
                        created += usize::from(submit(&engine, &tenant, &format!("case-{i}")).await);
                    }
                    created
                });
            }
        }
    }
    let mut created = 0;
    while let Some(n) = tasks.join_next().await {
        created += n.expect("a submitter");
    }
    assert_eq!(created, 2 * IDS, "exactly one new case per tenant and id, every other submit a retry");
    for id in 0..IDS {
        let id = CaseId::parse("c", &format!("case-{id}")).unwrap();
        for tenant in &tenants {
            for engine in [&a, &b] {
                let (case, _) = engine.get_case(&id, Some(tenant)).await.expect("each tenant sees its own case");
                assert_eq!(case.spec.summary, tenant.as_str(), "{tenant} sees its own payload");
                assert_eq!(case.tenant.as_ref(), Some(tenant));
                assert_eq!(case.state, CaseState::Queued);
            }
        }
    }
    // A cancel by one tenant leaves the other's case of the same id alone.
    let first = CaseId::parse("c", "case-0").unwrap();
    let (cancelled, _) = a.cancel(&first, "left", Some(&tenants[0])).await.expect("cancel");
    assert_eq!(cancelled.state, CaseState::Cancelled);
    let (other, _) = b.get_case(&first, Some(&tenants[1])).await.unwrap();
    assert_eq!(other.state, CaseState::Queued, "globex's case-0 is untouched");
    a.stop();
    b.stop();
}

/// A case stored before case ids were scoped by tenant (under the router's plain id, naming the
/// tenant) is read as it is: its tenant finds it, a retry of its submit is idempotent, and another
/// tenant may still use the id for a case of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stored_before_tenant_scoping_are_read_as_they_are() {
    use dispatch_engine::{Commit, Store};
    let redis = RedisServer::start();
    let clock = Clock::manual(1_800_000_000_000);
    let config = RedisConfig { url: redis.url(), ..RedisConfig::default() };
    let old = RedisStore::open(&config, Some(clock.clone())).await.unwrap();
    old.join_epoch(0).await.unwrap();
    let acme = TenantId::parse("t", "acme").unwrap();
    let legacy = dispatch_domain::Case {
        tenant: Some(acme.clone()),
        ..dispatch_domain::Case::new(spec("old-1", "acme"), clock.now())
    };
    old.commit(Commit { case: Some(legacy), ..Commit::default() }).await.expect("a record as stored before");
    let e = dispatcher(&redis, &clock).await;
    let id = CaseId::parse("c", "old-1").unwrap();
    let (found, _) = e.get_case(&id, Some(&acme)).await.expect("acme finds its case");
    assert_eq!(found.id().as_str(), "old-1", "under its old key");
    assert!(!submit(&e, &acme, "old-1").await, "a retry of the old submit is idempotent");
    let globex = TenantId::parse("t", "globex").unwrap();
    assert!(e.get_case(&id, Some(&globex)).await.is_err(), "another tenant does not see it");
    assert!(submit(&e, &globex, "old-1").await, "and may use the id itself");
    let (cancelled, _) = e.cancel(&id, "left", Some(&acme)).await.expect("acme cancels its old case");
    assert_eq!(cancelled.state, CaseState::Cancelled);
    e.stop();
}
