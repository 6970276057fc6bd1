#!/usr/bin/env bash
# Install nginx, the load balancer the scale-out test (tests/integration/
# scale_out.rs) puts in front of three `toolhost serve --http` replicas, from
# Debian bookworm at a pinned version. The test runs nginx itself, as the
# calling user, with a generated config on 127.0.0.1 ports: the package's
# own system service is not started (and is not needed).
# Needs root (or sudo) for apt-get; CI runs as root on Debian. Idempotent.
#   scripts/install-nginx.sh
set -euo pipefail
source "$(dirname "$0")/lib-install.sh"
# The pinned upstream release and Debian revision. Debian's security pocket
# keeps only its newest update (deb12uN), so a pin on one update breaks
# when the next one lands: the newest deb12uN of this revision is taken,
# never another upstream release or revision.
NGINX_BASE=1.22.1-9

have() {
  dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null \
    | grep -Eq "^install ok installed $(printf %s "$2" | sed 's/[.+]/\\&/g')(\+deb12u[0-9]+)?$"
}
if have nginx-light "$NGINX_BASE"; then
  echo "nginx-light $(dpkg-query -W -f='${Version}' nginx-light) already installed"
  exit 0
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing nginx needs root (apt-get)" >&2; exit 1; }
  SUDO=sudo
fi
command -v apt-get >/dev/null || { echo "apt-get not found: install nginx $NGINX by hand" >&2; exit 1; }
# The package must not start a system-wide nginx on port 80: the test starts
# its own. policy-rc.d refuses service starts during this install only.
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
# nginx-light: the core with the upstream and proxy modules the test needs,
# and no dynamic modules to pull in.
NGINX=$(apt-cache madison nginx-light | awk -v b="$NGINX_BASE" '$3 == b || index($3, b "+deb12u") == 1 { print $3 }' \
  | sort -V | tail -1)
[ -n "$NGINX" ] || { echo "no nginx-light $NGINX_BASE(+deb12uN) in the package sources" >&2; exit 1; }
$SUDO apt-get install -y -qq --no-install-recommends \
  "nginx-light=$NGINX" "nginx-common=$NGINX" >/dev/null
have nginx-light "$NGINX_BASE" || { echo "nginx-light is not $NGINX_BASE" >&2; exit 1; }
/usr/sbin/nginx -v
no_boot_service nginx
