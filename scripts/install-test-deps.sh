#!/usr/bin/env bash
# Install the pinned test dependencies of the MCP front end into a
# project-local, gitignored directory (default: .test-deps/):
#   - npm: the official TypeScript SDK client (@modelcontextprotocol/sdk), the
#     MCP conformance suite (@modelcontextprotocol/conformance) and the Node 22
#     it needs (npm package `node`; the system Node may be older);
#   - PyPI: the official Python SDK (`mcp`) in a virtualenv.
#   scripts/install-test-deps.sh [DIR]
# The tests (tests/integration/mcp.rs) and `make conformance` look in DIR
# (or $TOOLHOST_TEST_DEPS). Idempotent: a matching install is kept.
set -euo pipefail
SDK_TS=1.32.2
CONFORMANCE=0.1.16
NODE=22.23.3
SDK_PY=2.3.0

DIR=${1:-${TOOLHOST_TEST_DEPS:-"$(cd "$(dirname "$0")/.." && pwd)/.test-deps"}}
mkdir -p "$DIR"
STAMP="$DIR/installed"
WANT="sdk-ts=$SDK_TS conformance=$CONFORMANCE node=$NODE sdk-py=$SDK_PY"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "test deps already installed in $DIR ($WANT)"
  exit 0
fi
rm -f "$STAMP"

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -n "$PYTHON" ] || { echo "python3 (>= 3.10) is required" >&2; exit 1; }

# npm: `--yes` because a user npmrc may default to asking.
mkdir -p "$DIR/node"
[ -f "$DIR/node/package.json" ] || echo '{"name":"toolhost-test-deps","private":true}' > "$DIR/node/package.json"
npm install --yes --prefix "$DIR/node" --no-audit --no-fund --loglevel=error \
  "@modelcontextprotocol/sdk@$SDK_TS" \
  "@modelcontextprotocol/conformance@$CONFORMANCE" \
  "node@$NODE"
"$DIR/node/node_modules/.bin/node" --version

"$PYTHON" -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$SDK_PY"
"$DIR/venv/bin/python" -c 'import mcp, importlib.metadata as m; print("python mcp", m.version("mcp"))'

echo "$WANT" > "$STAMP"
echo "test deps installed in $DIR"
