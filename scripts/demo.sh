#!/usr/bin/env bash
# The demo behind `make demo`: load the example tools, call them through the
# same core the MCP and agent front ends use, and watch the sandbox refuse
# what the manifests do not grant.
#   scripts/demo.sh TOOLHOST_BINARY TOOLS_DIR
set -uo pipefail
BIN=${1:-target/release/toolhost}
TOOLS=${2:-build/tools}
export TOOLHOST_TOOLS=$TOOLS

step() { printf '\n\033[1m$ toolhost %s\033[0m\n' "$*"; }
run() { step "$*"; "$BIN" "$@"; echo "(exit $?)"; }

run list
run call echo '{"text": "hello from a sandbox"}'
run call json_query '{"json": "{\"team\": {\"members\": [{\"name\": \"ada\"}, {\"name\": \"grace\"}]}}", "path": "team.members[-1].name"}'
run call regex_extract '{"pattern": "(?<user>\\w+)@(?<host>[\\w.]+)", "text": "mail ada@example.org or grace@navy.mil", "group": "host"}'
run call list_dir '{"path": "/data", "recursive": true}'
run call search '{"pattern": "fn \\w+", "path": "/data/src"}'
run call write_file '{"path": "demo/hello.txt", "content": "written inside the read-write grant\n", "create_dirs": true}'

printf '\n\033[1m# What the manifests do not grant, the sandbox refuses:\033[0m\n'
run call read_file '{"path": "/data/../../../../etc/passwd"}'
run call read_file '{"path": "/etc/passwd"}'
run call http_fetch '{"url": "http://example.com/"}'
run call echo '{"txet": "typo"}'
run call no_such_tool '{}'

printf '\n\033[1m# Serve the same tools to any MCP client:\033[0m\n'
echo "  $BIN serve --stdio            # for Claude Code, IDEs, SDK clients"
echo "  $BIN serve --http 127.0.0.1:8080"
echo "  $BIN agent --prompt '...'      # drive the claude CLI with these tools"
