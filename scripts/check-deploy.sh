#!/usr/bin/env bash
# Validate deploy/: every Kubernetes manifest against the API schemas of the
# Kubernetes version below (kubernetes-validate, strict: unknown fields are
# errors), and the nginx example with `nginx -t` inside a minimal config.
#   scripts/check-deploy.sh
# Needs `scripts/install-test-deps.sh` (kubernetes-validate) and
# `scripts/install-nginx.sh` (nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBE_VERSION=1.33.0
DEPS=${TOOLHOST_TEST_DEPS:-.test-deps}
KV="$DEPS/kube/bin/kubernetes-validate"
[ -x "$KV" ] || { echo "kubernetes-validate is not installed: run scripts/install-test-deps.sh" >&2; exit 1; }
"$KV" --strict --kubernetes-version "$KUBE_VERSION" deploy/kubernetes/*.yaml

NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "nginx is not installed: run scripts/install-nginx.sh" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The example's server block listens with TLS: give it a throwaway
# certificate where it looks for one, by rewriting only the paths.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=mcp.example.com \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
sed -e "s|/etc/ssl/certs/mcp.example.com.pem|$tmp/cert.pem|" \
    -e "s|/etc/ssl/private/mcp.example.com.key|$tmp/key.pem|" \
    deploy/nginx/toolhost.conf > "$tmp/toolhost.conf"
cat > "$tmp/nginx.conf" <<CONF
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events {}
http {
    include $tmp/toolhost.conf;
}
CONF
"$NGINX" -t -q -p "$tmp" -c "$tmp/nginx.conf"
echo "deploy/ is valid (Kubernetes $KUBE_VERSION schemas, nginx -t)"
