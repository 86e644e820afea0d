#!/usr/bin/env bash
# What metrics and traces cost (issue #14), in one run on the embedded store: the closed-loop
# throughput and the submit→offer p99 at 1,000 cases/s, for
#   base       the build before metrics and traces (git rev $BASE),
#   off        this build, traces off (metrics are always on),
#   traces     this build exporting every span to an OTLP sink (loadgen otlp-sink),
#   traces10   the same keeping one trace in ten (telemetry.sample_ratio = 0.1).
# Variants alternate, twice each; prints a table and writes target/bench-results/overhead/.
#   BASE=79a8985 benches/overhead.sh     (about 5 minutes once both builds exist)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${BASE:-79a8985}
out=target/bench-results/overhead
mkdir -p "$out"
: > "$out/results.jsonl"
cargo build --release -p dispatchd -p dispatch-benches --bin loadgen --bin dispatchd 2>&1 | tail -1
B=target/release
# The baseline in a worktree with a target dir of its own (release artifacts of the same names).
wt=target/overhead-base
[ -d "$wt" ] || git worktree add --detach "$wt" "$base" >/dev/null
(cd "$wt" && CARGO_TARGET_DIR="$PWD/../overhead-base-target" cargo build --release -p dispatchd --bin dispatchd 2>&1 | tail -1)
BASE_BIN=target/overhead-base-target/release/dispatchd

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
args=(--dev --set 'log.filter="warn"' --set policy.wrap_up_ms.chat=0 --set policy.wrap_up_ms.voice=0
  --set policy.wrap_up_ms.email=0 --set engine.rescan_interval_ms=1000)
sink_port=$(free_port)
$B/loadgen otlp-sink --listen "127.0.0.1:$sink_port" > "$out/sink.txt" &
sink=$!
dpid=""
trap 'kill $dpid $sink 2>/dev/null || true' EXIT
start() { # variant
  port=$(free_port)
  case $1 in
    base) $BASE_BIN "${args[@]}" --listen "127.0.0.1:$port" & ;;
    off) $B/dispatchd "${args[@]}" --listen "127.0.0.1:$port" & ;;
    traces) $B/dispatchd "${args[@]}" --listen "127.0.0.1:$port" \
      --set "telemetry.otlp_endpoint=\"http://127.0.0.1:$sink_port\"" --set telemetry.export_interval_ms=1000 & ;;
    traces10) $B/dispatchd "${args[@]}" --listen "127.0.0.1:$port" --set telemetry.sample_ratio=0.1 \
      --set "telemetry.otlp_endpoint=\"http://127.0.0.1:$sink_port\"" --set telemetry.export_interval_ms=1000 & ;;
  esac
  dpid=$!
  for _ in $(seq 100); do $B/dispatchctl --addr "http://127.0.0.1:$port" queue >/dev/null 2>&1 && return; sleep 0.1; done
  echo "dispatcher did not start" >&2; exit 1
}
stop() { kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; }
for rep in 1 2; do
  for v in base off traces traces10; do
    start $v
    $B/loadgen run --addr "http://127.0.0.1:$port" --dispatcher-pid "$dpid" --label "$v-closed#$rep" \
      --agents 2000 --rate 0 --concurrency 128 --duration 10 --handle-ms 0 --simple-cases | tail -1 >> "$out/results.jsonl"
    stop
    start $v
    $B/loadgen run --addr "http://127.0.0.1:$port" --dispatcher-pid "$dpid" --label "$v-1000ps#$rep" \
      --agents 10000 --rate 1000 --duration 10 --handle-ms 200 --source-ips 2 | tail -1 >> "$out/results.jsonl"
    stop
  done
done
kill -INT $sink; wait $sink || true
python3 - "$out/results.jsonl" "$out/sink.txt" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| variant | closed loop, assigned/s (runs) | submit→offer p99 at 1,000/s, ms (runs) |")
print("|---|---:|---:|")
for v in ["base", "off", "traces", "traces10"]:
    closed = [r["throughput_per_s"] for r in rows if r["label"].split("-closed")[0] == v and "-closed" in r["label"]]
    p99 = [r["submit_to_offer"]["p99_ms"] for r in rows if r["label"].split("-1000ps")[0] == v and "-1000ps" in r["label"]]
    print(f"| {v} | {statistics.median(closed):,.0f} ({', '.join(f'{x:,.0f}' for x in closed)}) | "
          f"{statistics.median(p99):.2f} ({', '.join(f'{x:.2f}' for x in p99)}) |")
print("spans received by the sink:", open(sys.argv[2]).read().strip())
PY
