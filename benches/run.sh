#!/usr/bin/env bash
# Reproduces the benchmark report: builds release binaries, runs the load generator against a
# dispatcher on the embedded store and on Redis, the floors of this machine in the same run
# (gRPC unary echo, Redis FCALL), the selection and Redis memory benchmarks, and writes
# BENCHMARKS.md with PNG plots in benches/plots/.
#   benches/run.sh            (about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-results
mkdir -p "$out" benches/plots
: > "$out/results.jsonl"
cargo build --release -p dispatchd -p dispatch-benches --bin loadgen --bin dispatchd --bin dispatchctl 2>&1 | tail -1
B=target/release
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dispatcher_args=(--dev --set 'log.filter="warn"' --set policy.wrap_up_ms.chat=0 --set policy.wrap_up_ms.voice=0
  --set policy.wrap_up_ms.email=0 --set engine.rescan_interval_ms=1000)
dpid=""
start_dispatcher() { # store: memory | redis
  port=$(free_port); hport=$(free_port); wport=$(free_port)
  # The operations port serves /metrics: the load generator reads each run's cost per case.
  local ports=(--listen "127.0.0.1:$port" --set "server.health_listen=\"127.0.0.1:$hport\""
    --set "server.web.listen=\"127.0.0.1:$wport\"")
  cost=(--metrics-addr "127.0.0.1:$hport")
  if [ "$1" = redis ]; then
    redis-cli -p "$rport" flushall >/dev/null
    $B/dispatchd "${dispatcher_args[@]}" "${ports[@]}" --redis-url "redis://127.0.0.1:$rport" &
    cost+=(--redis-url "redis://127.0.0.1:$rport")
  else
    $B/dispatchd "${dispatcher_args[@]}" "${ports[@]}" &
  fi
  dpid=$!
  for _ in $(seq 100); do $B/dispatchctl --addr "http://127.0.0.1:$port" queue >/dev/null 2>&1 && return; sleep 0.1; done
  echo "dispatcher did not start" >&2; exit 1
}
stop_dispatcher() { kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; }
record() { # label, loadgen args...
  local label=$1; shift
  echo "== $label"
  $B/loadgen run --addr "http://127.0.0.1:$port" --dispatcher-pid "$dpid" --label "$label" "${cost[@]}" "$@" | tee "$out/$label.txt" | tail -1 >> "$out/results.jsonl"
}

rport=$(free_port)
rdir=$(mktemp -d)
redis-server --port "$rport" --dir "$rdir" --save "" --appendonly yes --appendfsync everysec --daemonize yes --logfile "$rdir/r.log"
trap 'stop_dispatcher; redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true; rm -rf "$rdir"' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "== floors"
$B/loadgen grpc-floor --concurrency 64 --duration 5 | tee "$out/grpc-floor.txt" | tail -1 >> "$out/results.jsonl"
$B/loadgen redis-floor --redis-url "redis://127.0.0.1:$rport" --concurrency 64 --duration 5 | tee "$out/redis-floor.txt" | tail -1 >> "$out/results.jsonl"

# The runs the targets are judged on are repeated three times (a fresh dispatcher each): on two
# shared cores one run's tail swings with whatever else the machine does; the report shows the
# median run and lists all three.
for store in memory redis; do
  for k in 1 2 3; do
    start_dispatcher $store
    record "$store-throughput#$k" --agents 2000 --rate 0 --concurrency 128 --duration 10 --handle-ms 0 --simple-cases
    stop_dispatcher
    start_dispatcher $store
    record "$store-1000ps-10k#$k" --agents 10000 --rate 1000 --duration 10 --handle-ms 200 --source-ips 2
    stop_dispatcher
  done
done
for rate in 250 500 1000 2000; do
  start_dispatcher memory
  record "memory-rate-$rate" --agents 5000 --rate $rate --duration 5 --handle-ms 200
  stop_dispatcher
done
for n in 2000 5000 10000 18000; do
  start_dispatcher memory
  record "connect-$n" --agents $n --connect-only --source-ips 2
  stop_dispatcher
done
# 50,000 agents do not fit in the 20,000 open files a process may have here: five agents share
# each connection (each still its own stream and session).
start_dispatcher memory
record "connect-50000-x5" --agents 50000 --agents-per-connection 5 --connect-only --source-ips 2
stop_dispatcher
start_dispatcher memory
record "memory-1000ps-50k-x5" --agents 50000 --agents-per-connection 5 --rate 1000 --duration 10 --handle-ms 200 --source-ips 2
stop_dispatcher

echo "== selection"
cargo bench -q -p dispatch-benches --bench selection 2>/dev/null | tee "$out/selection.txt"
echo "== micro benchmarks (criterion)"
cargo bench -q -p dispatch-benches --bench micro 2>/dev/null | tee "$out/micro.txt"
echo "== redis memory"
cargo bench -q -p dispatch-benches --bench redis_memory 2>/dev/null | tee "$out/redis-memory.txt"

python3 benches/report.py "$out" > BENCHMARKS.md
echo "wrote BENCHMARKS.md and benches/plots/*.png"
