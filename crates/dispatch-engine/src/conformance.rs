//! One conformance suite for every [`Store`]: each function checks one guarantee the engine
//! relies on. [`store_conformance_tests!`](crate::store_conformance_tests) turns them into tests
//! for a store constructor; the memory store and the Redis store run the same suite.

use std::sync::Arc;

use dispatch_domain::model::{AgentProfile, AgentProfileInput, CaseSpec, CaseSpecInput};
use dispatch_domain::state::Explanation;
use dispatch_domain::{
    Agent, AgentId, Case, CaseId, Channel, Level, Millis, OfferId, Policy, SessionId, Tier, TimerKey, transition,
};

use crate::clock::Clock;
use crate::store::{Commit, Counter, Marks, Restore, SegmentWrite, Store, StoreError};
use dispatch_domain::demand::SegmentCounter;

/// What a conformance test gets: the store, the clock it runs on, and whatever must live as long
/// as the store (a `redis-server`).
pub type Fixture = (Arc<dyn Store>, Clock, Box<dyn std::any::Any + Send>);

/// An agent record as the suite writes it: English, billing, one chat slot (for store tests
/// outside the suite too).
pub fn sample_agent(id: &str) -> Agent {
    agent(id)
}

fn agent(id: &str) -> Agent {
    let p = AgentProfile::parse(
        AgentProfileInput {
            id,
            display_name: id,
            languages: vec![("en", 5)],
            skills: vec![("billing", 3)],
            vip_certified: false,
            capacity: vec![(Some(Channel::Chat), 1)],
            rating: 4.0,
            ..Default::default()
        },
        &dispatch_domain::limits::Limits::default(),
    )
    .expect("valid profile");
    Agent::new(p, 0)
}

fn case(id: &str, at: Millis) -> Case {
    let spec = CaseSpec::parse(
        CaseSpecInput {
            id,
            language: "en",
            tier: Some(Tier::Standard),
            channel: Some(Channel::Chat),
            ..Default::default()
        },
        Level::MIN,
        &dispatch_domain::limits::Limits::default(),
    )
    .expect("valid spec");
    Case::new(spec, at)
}

fn cid(s: &str) -> CaseId {
    CaseId::parse("c", s).unwrap()
}

fn aid(s: &str) -> AgentId {
    AgentId::parse("a", s).unwrap()
}

async fn put_agent(s: &dyn Store, a: Agent) -> Agent {
    s.commit(Commit { agent: Some(a), ..Commit::default() }).await.expect("commit agent").agent.expect("agent")
}

async fn put_case(s: &dyn Store, c: Case) -> Case {
    s.commit(Commit { case: Some(c), ..Commit::default() }).await.expect("commit case").case.expect("case")
}

/// A commit stores records with version + 1 and reads give them back as written.
pub async fn records_round_trip_with_versions(s: &dyn Store) {
    let a = put_agent(s, agent("a1")).await;
    assert_eq!(a.version, 1);
    assert_eq!(s.get_agent(a.id()).await.unwrap(), Some(a.clone()));
    let a2 = put_agent(s, a.clone()).await;
    assert_eq!(a2.version, 2);
    let c = put_case(s, case("c1", 5)).await;
    assert_eq!(c.version, 1);
    assert_eq!(s.get_case(c.id()).await.unwrap(), Some(c.clone()));
    let r = s.read(Some(c.id()), Some(a.id())).await.unwrap();
    assert_eq!((r.case, r.agent), (Some(c), Some(a2)));
    assert!(s.get_agent(&aid("nobody")).await.unwrap().is_none());
    assert!(s.get_case(&cid("nothing")).await.unwrap().is_none());
}

/// A stale version anywhere in a commit writes nothing at all: no record, no timer, no counter.
pub async fn a_conflict_writes_nothing(s: &dyn Store) {
    let a = put_agent(s, agent("a1")).await;
    let armed = TimerKey::OfferDeadline(cid("c-old"));
    s.commit(Commit { timers: vec![(armed.clone(), 5)], ..Commit::default() }).await.unwrap();
    let stale = Agent { version: 0, ..a.clone() };
    let r = s
        .commit(Commit {
            case: Some(case("c-new", 1)),
            agent: Some(stale),
            timers: vec![(TimerKey::CaseReview(cid("c-new")), 1)],
            disarm: vec![armed.clone()],
            counters: vec![(Counter::Submitted, 1)],
            segment: Some(SegmentWrite {
                bucket: 0,
                segment: "en/standard/chat/-".into(),
                counts: vec![(SegmentCounter::Arrived, 1)],
            }),
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert!(s.get_case(&cid("c-new")).await.unwrap().is_none(), "the case was not written");
    assert_eq!(s.due_timers(i64::MAX / 2, 10).await.unwrap(), vec![(armed, 5)], "no timer was armed or disarmed");
    assert!(s.counters().await.unwrap().iter().all(|(_, v)| *v == 0), "no counter moved");
    assert!(s.segment_counts(0).await.unwrap().is_empty(), "no segment count moved");
    assert_eq!(s.get_agent(a.id()).await.unwrap().unwrap().version, 1);
}

/// Version 0 means "must not exist": creating twice conflicts.
pub async fn create_requires_absence(s: &dyn Store) {
    put_case(s, case("dup", 1)).await;
    let r = s.commit(Commit { case: Some(case("dup", 2)), ..Commit::default() }).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(s.get_case(&cid("dup")).await.unwrap().unwrap().created_at, 1);
}

/// Timers come back earliest first, up to the limit; re-arming moves a timer; clearing is
/// compare-and-set on the due time.
pub async fn timers_are_ordered_movable_and_cleared_by_due_time(s: &dyn Store) {
    let k1 = TimerKey::OfferDeadline(cid("c1"));
    let k2 = TimerKey::PresenceGrace(aid("a:1"));
    let k3 = TimerKey::Purge(cid("c3"));
    let timers = vec![(k1.clone(), 300), (k2.clone(), 100), (k3.clone(), 900)];
    s.commit(Commit { timers, ..Commit::default() }).await.unwrap();
    assert_eq!(s.due_timers(300, 10).await.unwrap(), vec![(k2.clone(), 100), (k1.clone(), 300)]);
    assert_eq!(s.due_timers(1_000, 1).await.unwrap(), vec![(k2.clone(), 100)]);
    s.commit(Commit { timers: vec![(k2.clone(), 500)], ..Commit::default() }).await.unwrap();
    assert_eq!(s.due_timers(300, 10).await.unwrap(), vec![(k1.clone(), 300)], "re-armed later");
    s.clear_timer(&k2, 100).await.unwrap();
    assert_eq!(
        s.due_timers(600, 10).await.unwrap(),
        vec![(k1.clone(), 300), (k2.clone(), 500)],
        "a stale clear is ignored"
    );
    s.clear_timer(&k1, 300).await.unwrap();
    assert_eq!(s.due_timers(600, 10).await.unwrap(), vec![(k2, 500)]);
}

/// A commit disarms the timers it names whatever their due time, before arming its own: a key
/// it both disarms and arms stays armed at the new time; one never armed is no error.
pub async fn a_commit_disarms_timers(s: &dyn Store) {
    let (k1, k2, k3) =
        (TimerKey::CaseReview(cid("c1")), TimerKey::OfferDeadline(cid("c1")), TimerKey::Purge(cid("c2")));
    let timers = vec![(k1.clone(), 300), (k2.clone(), 100), (k3.clone(), 900)];
    s.commit(Commit { timers, ..Commit::default() }).await.unwrap();
    let c = case("c1", 1);
    let disarm = vec![k1.clone(), k2.clone(), TimerKey::HandBack(cid("never-armed"))];
    let commit = Commit { case: Some(c), timers: vec![(k2.clone(), 700)], disarm, ..Commit::default() };
    s.commit(commit).await.unwrap();
    assert_eq!(s.due_timers(1_000, 10).await.unwrap(), vec![(k2, 700), (k3, 900)]);
}

/// An offered case can be found by its offer id.
pub async fn offers_lead_to_their_case(s: &dyn Store) {
    let policy = Policy::default();
    let a = put_agent(s, agent("a1")).await;
    let sid = SessionId::parse("s", "ss-1").unwrap();
    let ch = transition::connect(&a, sid.clone(), 0, &policy);
    let a = put_agent(s, ch.agent.unwrap()).await;
    let ch = transition::set_status(&a, None, &sid, dispatch_domain::AgentStatus::Available, 0, &policy).unwrap();
    let a = put_agent(s, ch.agent.unwrap()).await;
    let c = put_case(s, case("c1", 0)).await;
    let offer = OfferId::parse("o", "of-1").unwrap();
    let ch = transition::offer(&c, &a, offer.clone(), Explanation::default(), 0, &policy).unwrap();
    s.commit(Commit { case: ch.case, agent: ch.agent, timers: ch.timers, ..Commit::default() }).await.unwrap();
    assert_eq!(s.offer_case(&offer).await.unwrap(), Some(c.id().clone()));
    assert_eq!(s.offer_case(&OfferId::parse("o", "of-2").unwrap()).await.unwrap(), None);
}

/// Agents page in id order.
pub async fn agents_page_in_id_order(s: &dyn Store) {
    for id in ["b", "a", "d", "c", "e"] {
        put_agent(s, agent(id)).await;
    }
    let first = s.list_agents(None, 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|a| a.id().as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let next = s.list_agents(Some(first[1].id()), 10).await.unwrap();
    let ids: Vec<&str> = next.iter().map(|a| a.id().as_str()).collect();
    assert_eq!(ids, ["c", "d", "e"]);
}

/// Removing an agent is fenced by its version.
pub async fn agent_removal_is_fenced(s: &dyn Store) {
    let a = put_agent(s, agent("gone")).await;
    assert!(matches!(s.remove_agent(a.id(), 7).await, Err(StoreError::Conflict(_))));
    assert!(s.get_agent(a.id()).await.unwrap().is_some());
    s.remove_agent(a.id(), 1).await.unwrap();
    assert!(s.get_agent(a.id()).await.unwrap().is_none());
    assert!(s.list_agents(None, 10).await.unwrap().is_empty());
}

/// A snapshot has every agent and only the cases that are not terminal; purging deletes only
/// terminal cases.
pub async fn snapshot_and_purge_see_only_what_they_should(s: &dyn Store) {
    let policy = Policy::default();
    put_agent(s, agent("a1")).await;
    let live = put_case(s, case("live", 0)).await;
    let done = put_case(s, case("done", 0)).await;
    let ch = transition::cancel(&done, None, "left", 1, &policy).unwrap();
    s.commit(Commit { case: ch.case, ..Commit::default() }).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.agents.len(), 1);
    let ids: Vec<&str> = snap.live_cases.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(ids, ["live"]);
    s.purge_case(live.id()).await.unwrap();
    assert!(s.get_case(live.id()).await.unwrap().is_some(), "a live case is never purged");
    s.purge_case(done.id()).await.unwrap();
    assert!(s.get_case(done.id()).await.unwrap().is_none());
}

/// Counters add up across commits.
pub async fn counters_add_up(s: &dyn Store) {
    for _ in 0..3 {
        s.commit(Commit {
            counters: vec![(Counter::OffersMade, 2), (Counter::AcceptMillisTotal, 150)],
            ..Commit::default()
        })
        .await
        .unwrap();
    }
    let c: std::collections::BTreeMap<Counter, i64> = s.counters().await.unwrap().into_iter().collect();
    assert_eq!(c.get(&Counter::OffersMade), Some(&6));
    assert_eq!(c.get(&Counter::AcceptMillisTotal), Some(&450));
}

/// Segment counts add up per segment and bucket, are read back from a given bucket on, and
/// leave other segments and buckets alone.
pub async fn segment_counts_add_up_per_bucket(s: &dyn Store, _clock: &Clock) {
    use dispatch_domain::demand::{BUCKET_MS, bucket_of};
    let now = bucket_of(s.now().await.unwrap());
    let write = |bucket, segment: &str, counts: Vec<(SegmentCounter, i64)>| Commit {
        segment: Some(SegmentWrite { bucket, segment: segment.into(), counts }),
        ..Commit::default()
    };
    let de = "de/vip/chat/billing";
    s.commit(write(now - BUCKET_MS, de, vec![(SegmentCounter::Arrived, 2)])).await.unwrap();
    for _ in 0..3 {
        s.commit(write(now, de, vec![(SegmentCounter::Arrived, 1), (SegmentCounter::HandleMs, 1_500)])).await.unwrap();
    }
    s.commit(write(now, "fr/standard/voice/-", vec![(SegmentCounter::Abandoned, 1)])).await.unwrap();
    let mut got: Vec<(Millis, String, SegmentCounter, i64)> = s
        .segment_counts(now - BUCKET_MS)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.bucket, c.segment, c.counter, c.total))
        .collect();
    got.sort();
    let mut want = vec![
        (now - BUCKET_MS, de.to_owned(), SegmentCounter::Arrived, 2),
        (now, de.to_owned(), SegmentCounter::Arrived, 3),
        (now, de.to_owned(), SegmentCounter::HandleMs, 4_500),
        (now, "fr/standard/voice/-".to_owned(), SegmentCounter::Abandoned, 1),
    ];
    want.sort();
    assert_eq!(got, want);
    let recent = s.segment_counts(now).await.unwrap();
    assert!(recent.iter().all(|c| c.bucket == now) && recent.len() == 3, "{recent:?}");
}

/// A shared state record is written only over the version it was read at: of two writers on
/// one version, one wins.
pub async fn state_is_written_over_its_version_only(s: &dyn Store) {
    assert_eq!(s.get_state("round").await.unwrap(), None);
    assert!(s.put_state("round", 0, "{\"a\":1}").await.unwrap());
    assert!(!s.put_state("round", 0, "{\"b\":2}").await.unwrap(), "a second writer of version 0 loses");
    assert_eq!(s.get_state("round").await.unwrap(), Some((1, "{\"a\":1}".to_owned())));
    assert!(s.put_state("round", 1, "x:y").await.unwrap());
    assert_eq!(s.get_state("round").await.unwrap(), Some((2, "x:y".to_owned())));
    assert_eq!(s.get_state("other").await.unwrap(), None);
}

/// Two callers committing on the same version: exactly one wins, every time.
pub async fn racing_commits_have_exactly_one_winner(s: Arc<dyn Store>) {
    let mut a = put_agent(&*s, agent("contended")).await;
    for round in 0..30 {
        let mut tasks = Vec::new();
        for who in 0..2 {
            let s = Arc::clone(&s);
            let mut mine = a.clone();
            mine.profile.display_name = format!("writer {who} round {round}");
            tasks.push(tokio::spawn(async move { s.commit(Commit { agent: Some(mine), ..Commit::default() }).await }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        a = s.get_agent(a.id()).await.unwrap().unwrap();
        assert_eq!(a.version, round + 2);
    }
}

/// `read` returns the store's time.
pub async fn read_reports_the_store_time(s: &dyn Store, clock: &Clock) {
    let r = s.read(None, None).await.unwrap();
    assert!((r.now - clock.now()).abs() < 60_000, "store time {} vs clock {}", r.now, clock.now());
    s.ping().await.unwrap();
}

/// Generates one `#[tokio::test]` per conformance check, in module `$name`, for the store built
/// by `$make` (an async block returning a [`Fixture`]).
/// A restore writes only records the store holds in an older version (or not at all), with
/// their index entries and timers; it never moves a record back.
pub async fn restore_keeps_the_newest_version(s: &dyn Store) {
    let older = put_agent(s, agent("r-a")).await; // version 1
    let mut newer = older.clone();
    newer.version = 3;
    newer.consecutive_misses = 2;
    let stale = Agent { version: 0, ..agent("r-a") };
    let c = put_case(s, case("r-c1", 5)).await;
    let ahead = put_case(s, c.clone()).await; // version 2 in the store
    let mut lost = case("r-lost", 7);
    lost.version = 4;
    let timer = (TimerKey::CaseReview(cid("r-lost")), 99);
    let before = s.counters().await.unwrap();
    let submitted = before.iter().find(|(c, _)| *c == Counter::Submitted).map_or(0, |(_, v)| *v);
    // A case some dispatcher saw closed at version 9 is never brought back open in an older one.
    let mut revived = case("r-closed", 3);
    revived.version = 6;
    let marks = Marks {
        high_water: 1_000,
        counters: vec![(Counter::Submitted, submitted + 40)],
        closed: vec![(cid("r-closed"), 9)],
    };
    let written = s
        .restore(
            vec![
                Restore::Agent(newer.clone(), vec![]),
                Restore::Agent(stale, vec![]),
                Restore::Case(c.clone(), vec![]),
                Restore::Case(lost.clone(), vec![timer.clone()]),
                Restore::Case(revived, vec![]),
            ],
            &marks,
        )
        .await
        .expect("restore");
    let after = s.counters().await.unwrap();
    assert!(after.contains(&(Counter::Submitted, submitted + 40)), "counters raised to what was seen: {after:?}");
    let lower = Marks { high_water: 0, counters: vec![(Counter::Submitted, 1)], closed: vec![] };
    s.restore(Vec::new(), &lower).await.expect("restore of marks alone");
    assert!(s.counters().await.unwrap().contains(&(Counter::Submitted, submitted + 40)), "never lowered");
    assert_eq!(written, 2, "the newer agent and the missing case, not the case seen closed");
    assert_eq!(s.get_case(&cid("r-closed")).await.unwrap(), None, "not revived");
    assert_eq!(s.get_agent(&aid("r-a")).await.unwrap(), Some(newer));
    assert_eq!(s.get_case(&cid("r-c1")).await.unwrap(), Some(ahead), "never moved back");
    assert_eq!(s.get_case(&cid("r-lost")).await.unwrap(), Some(lost.clone()));
    assert!(s.snapshot().await.unwrap().live_cases.iter().any(|c| c.id() == lost.id()), "listed as live");
    assert_eq!(s.due_timers(100, 10).await.unwrap(), vec![timer]);
    // Later commits continue from the restored version.
    assert_eq!(put_case(s, lost).await.version, 5);
}

#[macro_export]
macro_rules! store_conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as suite;

            macro_rules! case {
                ($test:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        let (store, _clock, _guard): suite::Fixture = $make.await;
                        suite::$test(&*store).await;
                    }
                };
            }
            case!(records_round_trip_with_versions);
            case!(a_conflict_writes_nothing);
            case!(create_requires_absence);
            case!(timers_are_ordered_movable_and_cleared_by_due_time);
            case!(a_commit_disarms_timers);
            case!(offers_lead_to_their_case);
            case!(agents_page_in_id_order);
            case!(agent_removal_is_fenced);
            case!(snapshot_and_purge_see_only_what_they_should);
            case!(counters_add_up);
            case!(state_is_written_over_its_version_only);
            case!(restore_keeps_the_newest_version);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_commits_have_exactly_one_winner() {
                let (store, _clock, _guard): suite::Fixture = $make.await;
                suite::racing_commits_have_exactly_one_winner(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn segment_counts_add_up_per_bucket() {
                let (store, clock, _guard): suite::Fixture = $make.await;
                suite::segment_counts_add_up_per_bucket(&*store, &clock).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn read_reports_the_store_time() {
                let (store, clock, _guard): suite::Fixture = $make.await;
                suite::read_reports_the_store_time(&*store, &clock).await;
            }
        }
    };
}
