#!/usr/bin/env bash
# Install the pinned toolchains that build tools written in Python and
# JavaScript into WASI components, under the project (gitignored):
#   - PyPI: componentize-py, in a virtualenv at DIR/py;
#   - npm: @bytecodealliance/componentize-js (SpiderMonkey/StarlingMonkey; it
#     brings jco, wizer and weval as dependencies) at DIR/js.
#   scripts/install-guest-toolchains.sh [DIR]      (default: .toolchains/)
# `make tools` runs it; idempotent: a matching install is kept (stamp file).
# componentize-js runs on the system's Node (>= 20); if that is older, the
# npm package `node` is installed beside it and used instead.
set -euo pipefail
COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
NODE=22.23.3   # only installed if the system's Node is older than 20

DIR=${1:-${TOOLHOST_TOOLCHAINS:-"$(cd "$(dirname "$0")/.." && pwd)/.toolchains"}}
mkdir -p "$DIR"
STAMP="$DIR/installed"
WANT="componentize-py=$COMPONENTIZE_PY componentize-js=$COMPONENTIZE_JS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
rm -f "$STAMP"
echo "installing guest toolchains into $DIR ($WANT)"

command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -n "$PYTHON" ] || { echo "python3 (>= 3.9) is required" >&2; exit 1; }

"$PYTHON" -m venv "$DIR/py"
"$DIR/py/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY"
"$DIR/py/bin/componentize-py" --version

# npm: `--yes` because a user npmrc may default to asking.
mkdir -p "$DIR/js"
[ -f "$DIR/js/package.json" ] || echo '{"name":"toolhost-guest-toolchains","private":true}' > "$DIR/js/package.json"
PKGS=("@bytecodealliance/componentize-js@$COMPONENTIZE_JS")
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  PKGS+=("node@$NODE")
fi
npm install --yes --prefix "$DIR/js" --no-audit --no-fund --loglevel=error "${PKGS[@]}"
# The node that runs componentize-js: the project's if installed, else the system's.
if [ -x "$DIR/js/node_modules/.bin/node" ]; then
  ln -sf "node_modules/.bin/node" "$DIR/js/node"
else
  ln -sf "$(command -v node)" "$DIR/js/node"
fi
"$DIR/js/node" "$DIR/js/node_modules/@bytecodealliance/componentize-js/src/cli.js" --version

echo "$WANT" > "$STAMP"
echo "guest toolchains installed in $DIR"
