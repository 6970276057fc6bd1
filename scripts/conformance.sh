#!/usr/bin/env bash
# Run the MCP conformance suite against `toolhost serve --http` over the
# conformance tools (build/conformance-tools, from `make tools`).
#   scripts/conformance.sh TOOLHOST_BINARY
# Needs scripts/install-test-deps.sh (the suite and the Node 22 it runs on).
# Exit 0 iff exactly the scenarios in tests/conformance/baseline.yml fail.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:?usage: scripts/conformance.sh TOOLHOST_BINARY}
DEPS=${TOOLHOST_TEST_DEPS:-$ROOT/.test-deps}
NODE_BIN="$DEPS/node/node_modules/.bin"
if [ ! -x "$NODE_BIN/conformance" ] || [ ! -x "$NODE_BIN/node" ]; then
  echo "the MCP conformance suite is not installed: run scripts/install-test-deps.sh" >&2
  exit 1
fi
[ -f "$ROOT/build/conformance-tools/conformance.toml" ] || { echo "run \`make tools\` first" >&2; exit 1; }

WORK=$(mktemp -d)
LOG="$WORK/server.log"
"$BIN" serve --http 127.0.0.1:0 --tools "$ROOT/build/conformance-tools" --watch false 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
URL=
for _ in $(seq 1 300); do
  URL=$(grep -o 'http://[^ ]*/mcp' "$LOG" || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; echo "toolhost serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG" >&2; echo "toolhost serve did not start" >&2; exit 1; }
echo "conformance suite against $URL"
# The suite writes results/ into the working directory: keep it out of the tree.
cd "$WORK"
PATH="$NODE_BIN:$PATH" conformance server --url "$URL" --suite all \
  --expected-failures "$ROOT/tests/conformance/baseline.yml"
