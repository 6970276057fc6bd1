#!/usr/bin/env bash
# Install time of a tool package from a real OCI registry on 127.0.0.1, side
# by side (interleaved, same run) with installing the same signed package
# from a local file (no network). (Debian's skopeo, the natural peer for the
# transfer plus a cosign check, is built with sigstore disabled.)
# Each `toolhost install` is a fresh process into an empty store, so the time
# includes start-up, fetch, digest checks, signature verification, the grants
# review, the manifest validation and the atomic store write.
#   scripts/bench-install.sh [TOOLHOST_BINARY] [ROUNDS]
# Needs `make tools` and scripts/install-registry.sh. Prints a markdown table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/toolhost}
ROUNDS=${2:-21}
[ -x "$BIN" ] || { echo "no toolhost binary at $BIN (cargo build --release -p toolhost-cli)" >&2; exit 1; }
[ -f "$ROOT/build/tools/echo.wasm" ] || { echo "run make tools first" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "run scripts/install-registry.sh first" >&2; exit 1; }

T=$(mktemp -d)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$T/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $T/registry
http:
  addr: 127.0.0.1:$PORT
  secret: bench
YML
docker-registry serve "$T/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done

mkdir -p "$T/tool"
cp "$ROOT/build/tools/echo.wasm" "$ROOT/build/tools/echo.toml" "$T/tool/"
REF=127.0.0.1:$PORT/tools/echo:1.0
"$BIN" keygen "$T/signer" >/dev/null 2>&1
"$BIN" pack "$T/tool" -o "$T/echo.oci.tar" >/dev/null 2>&1
PUSHED=$("$BIN" push "$T/echo.oci.tar" "$REF" 2>/dev/null)
"$BIN" sign "$PUSHED" --key "$T/signer.key" 2>/dev/null
"$BIN" sign "$T/echo.oci.tar" --key "$T/signer.key" --identity "127.0.0.1:$PORT/tools/echo" 2>/dev/null
cat > "$T/host.toml" <<TOML
[[trust]]
source = "127.0.0.1:$PORT/tools/*"
keys = ["$T/signer.pub"]
TOML
now() { date +%s%N; }
declare -a REG FILE
for i in $(seq "$ROUNDS"); do
  rm -rf "$T/s1" "$T/s2"
  a=$(now); "$BIN" install "$REF" --store "$T/s1" --config "$T/host.toml" >/dev/null 2>"$T/err" || { cat "$T/err" >&2; exit 1; }; b=$(now)
  REG+=($(( (b - a) / 1000 )))
  a=$(now); "$BIN" install "$T/echo.oci.tar" --store "$T/s2" --config "$T/host.toml" >/dev/null 2>"$T/err" || { cat "$T/err" >&2; exit 1; }; b=$(now)
  FILE+=($(( (b - a) / 1000 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
R=$(median "${REG[@]}"); F=$(median "${FILE[@]}")
echo "| install of echo ($(stat -c %s "$ROOT/build/tools/echo.wasm") B component), median of $ROUNDS | time | vs registry install |"
echo "|---|---|---|"
awk -v r="$R" -v f="$F" 'BEGIN {
  printf "| toolhost install REGISTRY/tools/echo:1.0 (signed, verified, reviewed) | %.1f ms | 1.00x |\n", r/1000
  printf "| toolhost install echo.oci.tar (local file, same checks) | %.1f ms | %.2fx |\n", f/1000, f/r }'
