#!/usr/bin/env bash
# Builds the consoles' bundles into crates/dispatch-web/dist/ (committed, embedded by the crate
# with the pages of ui/static, so that `cargo build` needs no Node): npm packages (package-lock.json)
# into target/web, client code generated from proto/ by protoc-gen-es (buf compiles the protos), bundled by esbuild.
#   build.sh           rebuild dist/
#   build.sh --check   rebuild into a scratch directory and fail if dist/ differs (tests/run.sh)
set -euo pipefail
ui="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$ui/../../.." && pwd)"
work="$root/target/web"
dist="$ui/../dist"
out="$dist"
if [ "${1:-}" = "--check" ]; then out="$work/check-dist"; fi

command -v node >/dev/null || { echo "error: node and npm are required to build the consoles" >&2; exit 1; }
mkdir -p "$work"
if ! cmp -s "$ui/package-lock.json" "$work/.installed-lock" || [ ! -d "$work/node_modules" ]; then
  echo "== installing the consoles' npm packages into target/web"
  cp "$ui/package.json" "$ui/package-lock.json" "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$ui/package-lock.json" "$work/.installed-lock"
fi

rm -rf "$work/gen" "$work/src" "$out.tmp"
cp -r "$ui/src" "$work/src"
(cd "$work" && PATH="$work/node_modules/.bin:$PATH" ./node_modules/.bin/buf generate "$root/proto" --path "$root/proto/dispatch" --template "$ui/buf.gen.yaml")
cp "$ui/tsconfig.json" "$work/"
(cd "$work" && ./node_modules/.bin/tsc -p tsconfig.json)
mkdir -p "$out.tmp"
(cd "$work" && ./node_modules/.bin/esbuild src/agent.ts src/planner.ts --bundle --minify --format=esm \
  --target=es2020 --legal-comments=none --charset=utf8 --log-level=warning --outdir="$out.tmp")
rm -rf "$out"
mv "$out.tmp" "$out"

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$dist" "$out" >/dev/null; then
    diff -rq "$dist" "$out" >&2 || true
    echo "error: crates/dispatch-web/dist is not what crates/dispatch-web/ui builds: run crates/dispatch-web/ui/build.sh and commit dist/" >&2
    exit 1
  fi
  echo "consoles: dist/ is up to date"
fi
