#!/usr/bin/env bash
# Install the real OCI registry and the independent signature verifier that
# the package tests (tests/integration/package.rs) drive, from Debian
# bookworm, at pinned versions:
#   - docker-registry: the CNCF distribution registry (registry:2), started by
#     each test on 127.0.0.1 with a temporary storage directory (the
#     package's own system service is not started);
#   - openssl: checks our cosign-format signatures (ECDSA P-256 over the
#     simple-signing payload) independently of our code. (Debian's skopeo
#     would be the natural peer, but is built with sigstore disabled.)
# Needs root (or sudo) for apt-get; CI runs as root on Debian. Idempotent.
#   scripts/install-registry.sh
set -euo pipefail
source "$(dirname "$0")/lib-install.sh"
REGISTRY=2.8.2+ds1-1

have() {
  [ "$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null)" = "install ok installed $2" ]
}
if have docker-registry "$REGISTRY" && command -v openssl >/dev/null; then
  echo "docker-registry $REGISTRY and openssl already installed"
  exit 0
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing docker-registry and openssl needs root (apt-get)" >&2; exit 1; }
  SUDO=sudo
fi
command -v apt-get >/dev/null || { echo "apt-get not found: install docker-registry $REGISTRY and openssl by hand" >&2; exit 1; }
# The package must not start a system-wide registry: the tests start their
# own. policy-rc.d refuses service starts during this install only.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  ADDED_POLICY=1
fi
cleanup() { if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  "docker-registry=$REGISTRY" openssl >/dev/null
have docker-registry "$REGISTRY" || { echo "docker-registry is not $REGISTRY" >&2; exit 1; }
docker-registry --version
no_boot_service docker-registry
openssl version
