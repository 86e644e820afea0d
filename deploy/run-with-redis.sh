#!/usr/bin/env bash
# Runs dispatchd against Redis in one command: uses the Redis at $REDIS_URL (default
# redis://127.0.0.1:6379), starting a local redis-server with deploy/redis.conf if none answers.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${REDIS_URL:-redis://127.0.0.1:6379}
hostport=${url#redis://}
host=${hostport%%:*}
port=${hostport##*:}
port=${port%%/*}
if ! redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
  dir=${REDIS_DIR:-target/redis-data}
  mkdir -p "$dir"
  echo "starting redis-server on $host:$port (data in $dir)"
  redis-server deploy/redis.conf --bind "$host" --port "$port" --dir "$PWD/$dir" --daemonize yes \
    --logfile "$PWD/$dir/redis.log" --pidfile "$PWD/$dir/redis.pid"
  for _ in $(seq 50); do redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
exec cargo run --release -p dispatchd -- --redis-url "$url" "$@"
