#!/usr/bin/env bash
# The project's test command (README.md, .ci/run): formatting, lints, and every test of the
# workspace. Installs what the tests need on a fresh Debian machine; a missing dependency fails
# the run, it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  echo "error: cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# The Redis tests start their own redis-server (7.0+ for Redis Functions) on free ports; the
# TLS tests make their certificates with deploy/dev-certs.sh (openssl); the metrics page and the
# alert rules are checked by Prometheus's own promtool (Debian package prometheus).
if ! need redis-server || ! need redis-cli || ! need openssl || ! need promtool; then
  echo "== installing redis-server, openssl and prometheus (promtool) (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    redis-server redis-tools openssl prometheus >/dev/null
fi
need promtool || { echo "error: promtool is required (Debian package prometheus) and could not be installed" >&2; exit 1; }
need redis-server || { echo "error: redis-server is required and could not be installed" >&2; exit 1; }
need redis-cli || { echo "error: redis-cli is required and could not be installed" >&2; exit 1; }
need openssl || { echo "error: openssl is required and could not be installed" >&2; exit 1; }
major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
if [ "${major:-0}" -lt 7 ]; then
  echo "error: redis-server 7.0 or newer is required (Redis Functions); found $(redis-server --version)" >&2
  exit 1
fi
echo "redis: $(redis-server --version)"

# The Kubernetes manifests are validated with kubernetes-validate (PyPI; its schemas ship in
# the package, so validation runs offline), installed into target/tools/venv.
KV_VERSION=1.37.0
venv=target/tools/venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ "$("$venv/bin/kubernetes-validate" --version)" != "$KV_VERSION" ]; then
  echo "== installing kubernetes-validate $KV_VERSION (PyPI)"
  if ! need python3 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$KV_VERSION"
fi
export KUBERNETES_VALIDATE="$PWD/$venv/bin/kubernetes-validate"

# The consoles: Node and npm build them (crates/dispatch-web/ui/build.sh; npm packages into
# target/web) and the browser test drives Debian's Chromium with playwright-core (npm).
if ! need node || ! need npm || ! need chromium; then
  echo "== installing chromium, nodejs and npm (Debian packages)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  pkgs="chromium fonts-dejavu-core"
  need node || pkgs="$pkgs nodejs"
  need npm || pkgs="$pkgs npm"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
need node || { echo "error: node is required (Debian package nodejs) and could not be installed" >&2; exit 1; }
need chromium || { echo "error: chromium is required (Debian package chromium) and could not be installed" >&2; exit 1; }
echo "== consoles: dist/ is what ui/ builds"
crates/dispatch-web/ui/build.sh --check

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
RUST_BACKTRACE=0 cargo test --workspace --locked
echo "== browser: the consoles in headless Chromium (tests/browser/consoles.mjs)"
# The binaries `cargo test` built for the dispatchd tests (a `cargo build` would build the
# dependencies again with other features).
for b in dispatchd dispatchctl; do
  [ -x "target/debug/$b" ] || { echo "error: target/debug/$b was not built by cargo test" >&2; exit 1; }
done
DISPATCHD="$PWD/target/debug/dispatchd" DISPATCHCTL="$PWD/target/debug/dispatchctl" \
  CHROMIUM="$(command -v chromium)" PLAYWRIGHT="$PWD/target/web/node_modules/playwright-core/index.mjs" \
  OUT="$PWD/target/browser-test" node tests/browser/consoles.mjs
