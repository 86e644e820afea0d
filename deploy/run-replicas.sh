#!/usr/bin/env bash
# Several dispatchers on one Redis, on loopback, for trying failover by hand:
#
#   deploy/run-replicas.sh 3          # redis on 127.0.0.1:6390, dispatchd on :50051 :50052 :50053
#
# Then point dispatchctl at any replica (--addr http://127.0.0.1:50052), kill one
# (kill -9 / kill -STOP), and watch the others take over its offers. Ctrl-C stops everything.
# Development mode (plaintext, no authentication); logs in target/replicas/.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
redis_port=${REDIS_PORT:-6390}
dir=target/replicas
mkdir -p "$dir"
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
cargo build --release -p dispatchd
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
redis-server deploy/redis.conf --port "$redis_port" --dir "$PWD/$dir" --logfile "$PWD/$dir/redis.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 1 "$n"); do
  port=$((50050 + i))
  target/release/dispatchd --dev --listen "127.0.0.1:$port" --redis-url "redis://127.0.0.1:$redis_port" \
    --set "server.health_listen=\"127.0.0.1:$((8080 + i))\"" >"$dir/dispatchd-$i.log" 2>&1 &
  pids+=($!)
  echo "replica $i: http://127.0.0.1:$port (health on 127.0.0.1:$((8080 + i)), pid $!, log $dir/dispatchd-$i.log)"
done
echo "redis: redis://127.0.0.1:$redis_port (pid ${pids[0]}); Ctrl-C stops all"
wait
