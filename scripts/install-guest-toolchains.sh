#!/usr/bin/env bash
# Install the pinned toolchains that build tools written in Python and
# JavaScript into WASI components, under the project (gitignored):
#   - PyPI: componentize-py, in a virtualenv at DIR/py;
#   - npm: @bytecodealliance/componentize-js (SpiderMonkey/StarlingMonkey; it
#     brings jco, wizer and weval as dependencies) at DIR/js, with the Node
#     22 it runs on (npm package `node`: the system's may be older).
#   scripts/install-guest-toolchains.sh [DIR]      (default: .toolchains/)
# `make tools` runs it; idempotent: a matching install is kept (stamp file).
# Exactly as locked in scripts/locks/ (guest-py, guest-js: the versions are
# there), dependencies included, their digests checked.
set -euo pipefail
source "$(dirname "$0")/lib-install.sh"

DIR=${1:-${TOOLHOST_TOOLCHAINS:-"$(cd "$(dirname "$0")/.." && pwd)/.toolchains"}}
mkdir -p "$DIR"
STAMP="$DIR/installed"
WANT="locks=$(lock_digest guest-py guest-js)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  # Newer than what make compares it with (this script, its locks).
  touch "$STAMP"
  exit 0
fi
rm -f "$STAMP"
echo "installing guest toolchains into $DIR ($WANT)"

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
locked_python >/dev/null

pip_locked "$DIR/py" guest-py
"$DIR/py/bin/componentize-py" --version

npm_locked guest-js "$DIR/js"
# The node that runs componentize-js: the project's, where the locks have
# one for this platform (Linux x64, arm64), else the system's (>= 20).
if [ -x "$DIR/js/node_modules/.bin/node" ]; then
  ln -sf "node_modules/.bin/node" "$DIR/js/node"
else
  ln -sf "$(command -v node)" "$DIR/js/node"
fi
"$DIR/js/node" "$DIR/js/node_modules/@bytecodealliance/componentize-js/src/cli.js" --version

echo "$WANT" > "$STAMP"
echo "guest toolchains installed in $DIR"
