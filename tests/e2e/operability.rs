//! What an operator sees: the metrics page on the operations port (checked by Prometheus's own
//! `promtool`), the alert rules, and the errors a program can read.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use dispatch_domain::Policy;
use dispatch_grpc::ServerConfig;
use dispatch_proto::v1 as pb;
use dispatch_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// `promtool` with `args`, `input` on its standard input; panics with its output unless it
/// succeeds. A missing `promtool` fails the test (the test command installs it).
fn promtool(args: &[&str], input: &str) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (Debian package prometheus; tests/run.sh installs it)");
    child.stdin.take().expect("stdin").write_all_sync(input);
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

trait WriteAllSync {
    fn write_all_sync(self, input: &str);
}

impl WriteAllSync for std::process::ChildStdin {
    fn write_all_sync(mut self, input: &str) {
        use std::io::Write;
        self.write_all(input.as_bytes()).expect("write to promtool");
    }
}

/// `GET /metrics` over HTTP/1.1 from the operations port: (content type, body).
async fn scrape(ops: &str) -> (String, String) {
    let mut conn = tokio::net::TcpStream::connect(ops).await.expect("connect to the operations port");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: dispatch\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut raw = Vec::new();
    bounded("the metrics page", conn.read_to_end(&mut raw)).await.expect("read the answer");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_owned() };
    (content_type, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The value of every sample of `name` whose labels include all of `labels`, summed.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

/// Every sample line: (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once("=\"").map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned())))
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    out
}

async fn ops_server(b: Backend) -> (TestServer, String) {
    let ops = format!("127.0.0.1:{}", free_port());
    let server = ServerConfig { plaintext: true, health_listen: ops.clone(), ..ServerConfig::default() };
    (TestServer::start_with(b, Policy::default(), server).await, ops)
}

async fn metrics_pass_promtool_and_agree_with_queue_stats(b: Backend) {
    let (s, ops) = ops_server(b).await;
    s.register(profile("m1", &[("en", 5)], &[], true)).await;
    s.register(profile("m2", &[("de", 5)], &[], false)).await;
    let mut m1 = s.available("m1").await;
    let mut m2 = s.available("m2").await;
    s.submit(case("vip-1", "en", &[], pb::Tier::Vip)).await;
    let o = m1.offer().await;
    assert_eq!(m1.accept(&o.offer_id).await.code, 0);
    assert_eq!(m1.complete("vip-1").await.code, 0);
    s.submit(case("std-1", "de", &[], pb::Tier::Standard)).await;
    let o = m2.offer().await;
    assert_eq!(m2.decline(&o.offer_id, "busy").await.code, 0);
    s.submit(case("std-2", "fr", &[], pb::Tier::Standard)).await;
    s.escalation()
        .cancel_case(pb::CancelCaseRequest { case_id: "std-2".into(), reason: "customer left".into() })
        .await
        .unwrap();
    for _ in 0..3 {
        s.case("vip-1").await;
    }
    let missing = s.escalation().get_case(pb::GetCaseRequest { case_id: "nope".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let (content_type, text) = scrape(&ops).await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    promtool(&["check", "metrics"], &text);

    let q = s.planner().get_queue_stats(pb::GetQueueStatsRequest {}).await.unwrap().into_inner();
    let events = |e: &str| sum(&text, "dispatch_case_events_total", &[("event", e)]) as u64;
    let seen = [
        events("submitted"),
        events("offered"),
        events("accepted"),
        events("declined"),
        events("timed_out"),
        events("revoked"),
        events("completed"),
        events("cancelled"),
        events("expired"),
    ];
    let stats = [
        q.submitted_total,
        q.offers_made,
        q.offers_accepted,
        q.offers_declined,
        q.offers_timed_out,
        q.offers_revoked,
        q.completed_total,
        q.cancelled_total,
        q.expired_total,
    ];
    assert_eq!(seen, stats, "metrics agree with GetQueueStats");
    assert_eq!(seen, [3, 2, 1, 1, 0, 0, 1, 1, 0], "and with the scenario");
    assert_eq!(sum(&text, "dispatch_case_events_total", &[("event", "submitted"), ("tier", "vip")]), 1.0);
    assert_eq!(sum(&text, "dispatch_submit_to_assigned_seconds_count", &[("tier", "vip")]), 1.0);
    assert_eq!(sum(&text, "dispatch_cases", &[("state", "queued"), ("tier", "standard")]), 1.0, "std-1 waits");
    assert_eq!(sum(&text, "dispatch_waiting_cases", &[("language", "de")]), 1.0);
    assert_eq!(sum(&text, "dispatch_connected_devices", &[]), 2.0);
    assert_eq!(sum(&text, "dispatch_build_info", &[]), 1.0);
    assert!(sum(&text, "dispatch_store_operation_seconds_count", &[("op", "commit")]) >= 8.0, "commits are timed");
    // The RPC histogram counts the calls made.
    let get_case = "/dispatch.v1.EscalationService/GetCase";
    assert_eq!(sum(&text, "dispatch_rpc_duration_seconds_count", &[("method", get_case), ("code", "OK")]), 3.0);
    assert_eq!(sum(&text, "dispatch_rpc_duration_seconds_count", &[("method", get_case), ("code", "NOT_FOUND")]), 1.0);
    let submit = "/dispatch.v1.EscalationService/SubmitCase";
    assert_eq!(sum(&text, "dispatch_rpc_duration_seconds_count", &[("method", submit), ("code", "OK")]), 3.0);

    // The dashboard and the alerts use only metrics the page has.
    let families: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for file in ["grafana/dispatch.json", "prometheus/alerts.yml"] {
        let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read_to_string(&path).expect("a deploy file");
        if file.ends_with(".json") {
            let _: serde_json::Value = serde_json::from_str(&body).expect("the dashboard is JSON");
        }
        let mut used = 0;
        for (i, _) in body.match_indices("dispatch_") {
            let name: String = body[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(families.contains(base), "{file} uses {name}, which the metrics page does not have");
            used += 1;
        }
        assert!(used > 5, "{file} uses the metrics");
    }
}

/// No case or agent id becomes a label: the series after 1,000 distinct cases are the series
/// after ten, and no id appears on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_cardinality_stays_bounded() {
    let (s, ops) = ops_server(Backend::Memory).await;
    let series =
        |text: &str| samples(text).into_iter().map(|(n, l, _)| (n, l)).collect::<std::collections::BTreeSet<_>>();
    for i in 0..10 {
        s.submit(case(&format!("card-{i}"), if i % 2 == 0 { "en" } else { "xx" }, &[], pb::Tier::Standard)).await;
        s.case(&format!("card-{i}")).await;
    }
    // The background tasks' store operations (sweeper, change-log follower) have shown up.
    let before = eventually("the background tasks to run", || async {
        let text = scrape(&ops).await.1;
        let ran = ["due_timers", "changes"]
            .iter()
            .all(|op| sum(&text, "dispatch_store_operation_seconds_count", &[("op", op)]) > 0.0);
        ran.then(|| series(&text))
    })
    .await;
    for i in 10..1_000 {
        let language = ["en", "xx", "yy", "zz", "de"][i % 5];
        s.submit(case(&format!("card-{i}"), language, &[], pb::Tier::Standard)).await;
        s.case(&format!("card-{i}")).await;
    }
    let (_, text) = scrape(&ops).await;
    assert!(!text.contains("card-"), "no case id on the metrics page");
    let after = series(&text);
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "series added by 990 more cases: {new:?}");
    assert_eq!(sum(&text, "dispatch_waiting_cases", &[("language", "other")]), 599.0, "xx, yy and zz count as other");
}

/// The alerting rules load in Prometheus (`promtool check rules`) and fire as their unit tests
/// say (`promtool test rules`).
#[test]
fn alert_rules_pass_promtool() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    promtool(&["check", "rules", &format!("{dir}/alerts.yml")], "");
    promtool(&["test", "rules", &format!("{dir}/alerts-test.yml")], "");
}

/// A FAILED_PRECONDITION names its reason in `google.rpc.ErrorInfo` (RPCs) and in the
/// `CommandResult` (agent streams).
async fn preconditions_carry_a_stable_reason(b: Backend) {
    let s = TestServer::start(b, Policy::default()).await;
    s.register(profile("p1", &[("en", 5)], &[], false)).await;
    let mut p1 = s.available("p1").await;
    s.submit(case("pre-1", "en", &[], pb::Tier::Standard)).await;
    let o = p1.offer().await;
    assert_eq!(p1.decline(&o.offer_id, "no").await.code, 0);
    let r = p1.accept(&o.offer_id).await;
    assert_eq!((r.code, r.reason.as_str()), (Code::FailedPrecondition as i32, "OFFER_ALREADY_DECLINED"), "{r:?}");
    s.register(profile("p2", &[("en", 5)], &[], false)).await;
    let mut p2 = s.available("p2").await;
    let o = p2.offer().await;
    assert_eq!(o.case.as_ref().unwrap().case_id, "pre-1");
    let err = s.roster().remove_agent(pb::RemoveAgentRequest { agent_id: "p2".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(error_reason(&err).as_deref(), Some("AGENT_HOLDS_WORK"), "{}", err.message());
}

on_both_stores!(metrics_pass_promtool_and_agree_with_queue_stats, preconditions_carry_a_stable_reason);

/// The pool's gauges tell the same story on every replica: the one holding the devices and the
/// one the router talks to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_the_same_pool_gauges() {
    let s = TestServer::start(Backend::Replicas, Policy::default()).await;
    let devices = s.devices.as_ref().expect("a devices replica");
    s.register(profile("g1", &[("en", 5)], &[], true)).await;
    s.register(profile("g2", &[("de", 5)], &[], false)).await;
    let mut g1 = s.available("g1").await;
    s.submit(case("gauge-1", "en", &[], pb::Tier::Vip)).await;
    s.submit(case("gauge-2", "de", &[], pb::Tier::Standard)).await;
    let o = g1.offer().await;
    assert_eq!(g1.accept(&o.offer_id).await.code, 0);
    let pool = |text: &str| {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                ["dispatch_cases{", "dispatch_agents{", "dispatch_waiting_cases{", "dispatch_available_agents{"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let seen = eventually("both replicas to show the same pool", || async {
        let (a, b) = (pool(&s.engine.metrics_text().await), pool(&devices.engine.metrics_text().await));
        (a == b && a.iter().any(|l| l.starts_with("dispatch_cases{state=\"assigned\",tier=\"vip\"} 1"))).then_some(a)
    })
    .await;
    assert!(seen.contains(&"dispatch_waiting_cases{language=\"de\"} 1".to_owned()), "{seen:?}");
    assert!(seen.contains(&"dispatch_available_agents{language=\"en\"} 1".to_owned()), "{seen:?}");
}

/// Languages are labelled by their primary subtag, as the planner groups them: a `de-CH` case
/// waits under `de`, a `pt-BR` speaker is available under `pt` (both configured by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_tags_count_under_their_language() {
    let s = TestServer::start(Backend::Memory, Policy::default()).await;
    s.submit(case("region-1", "de-CH", &[], pb::Tier::Standard)).await;
    s.register(profile("br", &[("pt-BR", 5)], &[], false)).await;
    let _br = s.available("br").await;
    let text = s.engine.metrics_text().await;
    assert_eq!(sum(&text, "dispatch_waiting_cases", &[("language", "de")]), 1.0, "{text}");
    assert_eq!(sum(&text, "dispatch_waiting_cases", &[("language", "other")]), 0.0);
    assert_eq!(sum(&text, "dispatch_available_agents", &[("language", "pt")]), 1.0);
}
