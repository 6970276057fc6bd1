#!/usr/bin/env bash
# Run the MCP conformance suites against `toolhost serve --http` over the
# conformance tools (build/conformance-tools, from `make tools`):
#   - 0.2.0-alpha.12 `server --requirements 2026-07-28`: exactly what the
#     2026-07-28 revision requires, plus the scenarios it runs unscored
#     (tasks extension, pending ones), at the 2026-07-28 wire;
#   - 0.2.0-alpha.12 `server --suite pending`: the scenarios not yet in a
#     spec revision (tasks, SEP-2243 headers, JSON Schema 2020-12, skills);
#   - 0.1.16 `server --suite all`: the 2025-11-25 (session) wire.
#   scripts/conformance.sh TOOLHOST_BINARY
# Needs scripts/install-test-deps.sh (the suites and the Node 22 they run on).
# CONFORMANCE_SUITES (default "2026-07-28 pending 2025-11-25") picks suites;
# CONFORMANCE_SCENARIO runs only that scenario (no expected failures), its
# results kept in the printed directory.
# Exit 0 iff, in every suite, exactly the checks in its expected-failures
# file fail (tests/conformance/expected-failures-*.yml; each entry says why).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:?usage: scripts/conformance.sh TOOLHOST_BINARY}
DEPS=${TOOLHOST_TEST_DEPS:-$ROOT/.test-deps}
NODE_BIN="$DEPS/node/node_modules/.bin"
NEXT_BIN="$DEPS/conformance-next/node_modules/.bin"
SUITES=${CONFORMANCE_SUITES:-"2026-07-28 pending 2025-11-25"}
for b in "$NODE_BIN/conformance" "$NODE_BIN/node" "$NEXT_BIN/conformance"; do
  [ -x "$b" ] || { echo "the MCP conformance suites are not installed ($b): run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -f "$ROOT/build/conformance-tools/conformance.toml" ] || { echo "run \`make tools\` first" >&2; exit 1; }

WORK=$(mktemp -d)
LOG="$WORK/server.log"
SERVER=
HOOK=
cleanup() {
  for p in $HOOK $SERVER; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${CONFORMANCE_SCENARIO:-}" ]; then echo "results and server log kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The tools the suites call live in their own (watched) directory, so the
# diagnostic hooks below can change what is served without touching build/.
mkdir -p "$WORK/tools" "$WORK/spare"
cp "$ROOT"/build/conformance-tools/conformance.{wasm,toml} "$WORK/tools/"
cp "$ROOT"/build/tools/echo.{wasm,toml} "$WORK/spare/"
# The prompts example: what `test_trigger_prompt_change` adds (a prompt
# list change a listener is told of).
cp "$ROOT"/build/tools/prompts.{wasm,toml} "$WORK/spare/"
touch "$WORK/audit.jsonl"
# Compile the spare component now (into the compile cache), so adding it
# later reloads within the suite's notification window.
"$BIN" list --tools "$WORK/spare" >/dev/null
"$BIN" serve --http 127.0.0.1:0 --tools "$WORK/tools" --watch true \
  --audit "$WORK/audit.jsonl" 2>"$LOG" &
SERVER=$!
URL=
for _ in $(seq 1 300); do
  URL=$(grep -o 'http://[^ ]*/mcp' "$LOG" || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; echo "toolhost serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG" >&2; echo "toolhost serve did not start" >&2; exit 1; }

# The suites' diagnostic hooks (`test_trigger_tool_change`,
# `test_trigger_prompt_change`) ask the server to change its tool or prompt
# list. No tool can change what the host serves, so the harness does it, as
# an operator would: when the audit log shows such a call, it adds (or
# removes) a component in the watched directory and the host reloads.
toggle() { # NAME: move NAME's manifest between the tools and the spare directory
  if [ -f "$WORK/tools/$1.toml" ]; then mv "$WORK/tools/$1.toml" "$WORK/spare/"
  else cp "$WORK/spare/$1.wasm" "$WORK/tools/" && mv "$WORK/spare/$1.toml" "$WORK/tools/"; fi
}
hook() {
  local tools=0 prompts=0 n
  while kill -0 "$SERVER" 2>/dev/null; do
    n=$(grep -c '"tool":"test_trigger_tool_change"' "$WORK/audit.jsonl" || true)
    if [ "$n" -gt "$tools" ]; then tools=$n; toggle echo; fi
    n=$(grep -c '"tool":"test_trigger_prompt_change"' "$WORK/audit.jsonl" || true)
    if [ "$n" -gt "$prompts" ]; then prompts=$n; [ -f "$WORK/spare/prompts.toml" ] || [ -f "$WORK/tools/prompts.toml" ] && toggle prompts; fi
    sleep 0.05
  done
}
hook &
HOOK=$!

status=0
run_suite() { # NAME BIN ARGS...
  local name=$1 bin=$2; shift 2
  echo "== conformance $name against $URL"
  # The suite writes results/ into the working directory: keep it out of the tree.
  if [ -n "${CONFORMANCE_SCENARIO:-}" ]; then
    set -- --scenario "$CONFORMANCE_SCENARIO" -o "$WORK/results"
  fi
  (cd "$WORK" && PATH="$NODE_BIN:$PATH" "$bin" server --url "$URL" "$@") || {
    echo "== conformance $name: FAILED (see above)" >&2
    status=1
  }
}
for s in $SUITES; do
  case $s in
    2026-07-28) run_suite "0.2.0-alpha.12 --requirements 2026-07-28" "$NEXT_BIN/conformance" \
      --requirements 2026-07-28 \
      --expected-failures "$ROOT/tests/conformance/expected-failures-2026-07-28.yml" ;;
    pending) run_suite "0.2.0-alpha.12 --suite pending" "$NEXT_BIN/conformance" \
      --suite pending \
      --expected-failures "$ROOT/tests/conformance/expected-failures-pending.yml" ;;
    2025-11-25) run_suite "0.1.16 --suite all" "$NODE_BIN/conformance" --suite all \
      --expected-failures "$ROOT/tests/conformance/expected-failures-0.1.16.yml" ;;
    *) echo "unknown suite $s (known: 2026-07-28 pending 2025-11-25)" >&2; exit 2 ;;
  esac
done
exit $status
