#!/usr/bin/env bash
# Counts the Redis commands one case costs from submit to accepted, with a real dispatchd on a
# private redis-server: background polling (sweeper, change log, health, rescan) is slowed to
# once a minute so that only the case's own path is counted. Needs a release build:
#   cargo build --release -p dispatchd && benches/redis_commands_per_case.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release
dir=$(mktemp -d)
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --dir "$dir" --save "" --appendonly yes --daemonize yes --logfile "$dir/r.log"
trap 'redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true; kill $dpid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
slow="--set engine.sweep_interval_ms=60000 --set engine.change_feed_interval_ms=60000 --set engine.health_interval_ms=60000 --set engine.rescan_interval_ms=60000"
# shellcheck disable=SC2086
$B/dispatchd --listen "127.0.0.1:$gport" --redis-url "redis://127.0.0.1:$rport" $slow --set 'log.filter="warn"' &
dpid=$!
export DISPATCH_ADDR="http://127.0.0.1:$gport"
for _ in $(seq 100); do $B/dispatchctl queue >/dev/null 2>&1 && break; sleep 0.1; done
$B/dispatchctl agent upsert --id ana --lang en:5 >/dev/null
($B/dispatchctl connect --as ana --available --auto-accept --exit-after 1 > "$dir/agent.log" 2>&1 &)
for _ in $(seq 100); do grep -q "OK r1" "$dir/agent.log" 2>/dev/null && break; sleep 0.05; done
redis-cli -p "$rport" config resetstat >/dev/null
$B/dispatchctl submit --id case-rt --lang en >/dev/null
for _ in $(seq 100); do grep -q ASSIGNED "$dir/agent.log" && break; sleep 0.05; done
grep -q ASSIGNED "$dir/agent.log" || { echo "the case was not assigned" >&2; exit 1; }
echo "Redis commands from submit to accepted (INFO commandstats):"
redis-cli -p "$rport" info commandstats | grep -o 'cmdstat_[a-z|]*:calls=[0-9]*' | sed 's/cmdstat_//; s/:calls=/ /' | sort
total=$(redis-cli -p "$rport" info commandstats | grep -o 'calls=[0-9]*' | cut -d= -f2 | paste -sd+ | bc)
echo "total $total (includes the INFO/RESETSTAT of this script: 1)"
