#!/usr/bin/env bash
# Install the pinned `claude` CLI (npm @anthropic-ai/claude-code) into a
# project-local, gitignored directory, for the agent tests and `toolhost agent`.
#   scripts/install-claude-cli.sh [DIR] [VERSION]
# DIR defaults to .claude-cli, VERSION to the locked one; VERSION `latest` is
# the newest the npm registry serves (`make test-agent-newest`). The CLI is
# then DIR/node_modules/.bin/claude; the tests look in .claude-cli unless
# TOOLHOST_CLAUDE_CLI names another executable. Idempotent.
# The pinned version is installed exactly as locked in
# scripts/locks/claude-cli/ (npm ci: every package's integrity checked);
# `latest` is not locked, on purpose (SECURITY.md, "Operator hardening").
set -euo pipefail
source "$(dirname "$0")/lib-install.sh"
# The version is named in the lock only.
PINNED=$(sed -n 's/.*"@anthropic-ai\/claude-code": *"\([^"]*\)".*/\1/p' "$LOCKS/claude-cli/package.json")
[ -n "$PINNED" ] || { echo "scripts/locks/claude-cli/package.json names no @anthropic-ai/claude-code" >&2; exit 1; }
DIR=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.claude-cli"}
VERSION=${2:-$PINNED}
if [ "$VERSION" = latest ]; then
  command -v npm >/dev/null || { echo "npm is required to find the newest claude CLI" >&2; exit 1; }
  VERSION=$(npm view @anthropic-ai/claude-code version)
  echo "newest claude CLI on npm: $VERSION (pinned: $PINNED)"
fi
BIN="$DIR/node_modules/.bin/claude"
# The pinned one is kept only if installed from this lock (a stamp of its
# digest), the newest if its version matches.
STAMP="$DIR/installed"
WANT="locks=$(lock_digest claude-cli)"
if [ "$VERSION" = "$PINNED" ]; then
  if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "claude CLI $VERSION already installed at $BIN"
    exit 0
  fi
elif [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null | awk '{print $1}')" = "$VERSION" ]; then
  echo "claude CLI $VERSION already installed at $BIN"
  exit 0
fi
rm -f "$STAMP"
command -v npm >/dev/null || { echo "npm is required to install the claude CLI (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DIR"
# The package's platform binary comes from its optional dependency
# (@anthropic-ai/claude-code-linux-x64 on this platform).
if [ "$VERSION" = "$PINNED" ]; then
  npm_locked claude-cli "$DIR"
  "$BIN" --version
  echo "$WANT" > "$STAMP"
  exit 0
else
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION"
fi
"$BIN" --version
