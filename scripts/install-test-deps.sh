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
#   - PyPI: the official Python SDK (`mcp`) in a virtualenv, with the OTLP
#     protobuf messages the OpenTelemetry export test decodes spans with
#     (tests/clients/otlp_receiver.py);
#   - PyPI: kubernetes-validate (with the Kubernetes API schemas bundled) in
#     a virtualenv of its own, kube/, for `make check-deploy`.
#   scripts/install-test-deps.sh [DIR]
# The tests (tests/integration/mcp*.rs) and `make conformance` look in DIR
# (or $TOOLHOST_TEST_DEPS). Idempotent: a matching install is kept.
# Exactly as locked in scripts/locks/ (test-node, test-conformance-next,
# test-venv, kube: the versions are there, and nowhere else), dependencies
# included, their digests checked (npm ci, pip --require-hashes).
set -euo pipefail
source "$(dirname "$0")/lib-install.sh"

DIR=${1:-${TOOLHOST_TEST_DEPS:-"$(cd "$(dirname "$0")/.." && pwd)/.test-deps"}}
mkdir -p "$DIR"
STAMP="$DIR/installed"
WANT="locks=$(lock_digest test-node test-conformance-next test-venv kube)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "test deps already installed in $DIR ($WANT)"
  exit 0
fi
rm -f "$STAMP"

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
locked_python >/dev/null

# npm prefix node/: the SDK clients, the Inspector, the conformance suite and
# Node itself; conformance-next/: the next revision's suite.
npm_locked test-node "$DIR/node"
npm_locked test-conformance-next "$DIR/conformance-next"
"$DIR/node/node_modules/.bin/node" --version

pip_locked "$DIR/venv" test-venv
"$DIR/venv/bin/python" -c 'import mcp, importlib.metadata as m; print("python mcp", m.version("mcp"))'

pip_locked "$DIR/kube" kube
"$DIR/kube/bin/kubernetes-validate" --version

echo "$WANT" > "$STAMP"
echo "test deps installed in $DIR"
