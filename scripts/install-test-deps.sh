#!/usr/bin/env bash
# Install the pinned test dependencies of the MCP front end into a
# project-local, gitignored directory (default: .test-deps/):
#   - npm prefix node/: the official TypeScript SDK clients, v1
#     (@modelcontextprotocol/sdk) and v2 (@modelcontextprotocol/client, with
#     the tasks extension's client @modelcontextprotocol/ext-tasks), the
#     MCP Inspector CLI (@modelcontextprotocol/inspector), the MCP conformance
#     suite 0.1.x (@modelcontextprotocol/conformance) and the Node 22 they need
#     (npm package `node`; the system Node may be older);
#   - npm prefix conformance-next/: the conformance suite of the 2026-07-28
#     revision (0.2.0 alphas). Its own prefix: both suites install the same
#     `conformance` binary and depend on different SDK versions;
#   - PyPI: the official Python SDK (`mcp`) in a virtualenv;
#   - PyPI: kubernetes-validate (with the Kubernetes API schemas bundled) in
#     a virtualenv of its own, kube/, for `make check-deploy`.
#   scripts/install-test-deps.sh [DIR]
# The tests (tests/integration/mcp*.rs) and `make conformance` look in DIR
# (or $TOOLHOST_TEST_DEPS). Idempotent: a matching install is kept.
set -euo pipefail
SDK_TS=1.32.2
CLIENT_TS=2.4.0
EXT_TASKS=0.2.2
INSPECTOR=2.12.0
CONFORMANCE=0.1.16
CONFORMANCE_NEXT=0.2.0-alpha.12
NODE=22.23.3
SDK_PY=2.3.0
# The OTLP protobuf messages (and their runtime) the OpenTelemetry export
# test decodes spans with (tests/clients/otlp_receiver.py).
OTEL_PROTO=1.39.1
PROTOBUF=6.33.1
KUBE_VALIDATE=1.37.0

DIR=${1:-${TOOLHOST_TEST_DEPS:-"$(cd "$(dirname "$0")/.." && pwd)/.test-deps"}}
mkdir -p "$DIR"
STAMP="$DIR/installed"
WANT="sdk-ts=$SDK_TS client-ts=$CLIENT_TS ext-tasks=$EXT_TASKS inspector=$INSPECTOR conformance=$CONFORMANCE conformance-next=$CONFORMANCE_NEXT node=$NODE sdk-py=$SDK_PY otel-proto=$OTEL_PROTO protobuf=$PROTOBUF kubernetes-validate=$KUBE_VALIDATE"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "test deps already installed in $DIR ($WANT)"
  exit 0
fi
rm -f "$STAMP"

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -n "$PYTHON" ] || { echo "python3 (>= 3.10) is required" >&2; exit 1; }

# $(npm_prefix NAME PACKAGES...): install exactly PACKAGES into $DIR/NAME.
# `--yes` because a user npmrc may default to asking; `--save-exact` pins.
npm_prefix() {
  local name=$1; shift
  mkdir -p "$DIR/$name"
  [ -f "$DIR/$name/package.json" ] || echo "{\"name\":\"toolhost-test-deps-$name\",\"private\":true}" > "$DIR/$name/package.json"
  npm install --yes --save-exact --prefix "$DIR/$name" --no-audit --no-fund --loglevel=error "$@"
}
npm_prefix node \
  "@modelcontextprotocol/sdk@$SDK_TS" \
  "@modelcontextprotocol/client@$CLIENT_TS" \
  "@modelcontextprotocol/ext-tasks@$EXT_TASKS" \
  "@modelcontextprotocol/inspector@$INSPECTOR" \
  "@modelcontextprotocol/conformance@$CONFORMANCE" \
  "node@$NODE"
npm_prefix conformance-next "@modelcontextprotocol/conformance@$CONFORMANCE_NEXT"
"$DIR/node/node_modules/.bin/node" --version

"$PYTHON" -m venv "$DIR/venv"
"$DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check "mcp==$SDK_PY" \
  "opentelemetry-proto==$OTEL_PROTO" "protobuf==$PROTOBUF"
"$DIR/venv/bin/python" -c 'import mcp, importlib.metadata as m; print("python mcp", m.version("mcp"))'

"$PYTHON" -m venv "$DIR/kube"
"$DIR/kube/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBE_VALIDATE"
"$DIR/kube/bin/kubernetes-validate" --version

echo "$WANT" > "$STAMP"
echo "test deps installed in $DIR"
