#!/usr/bin/env bash
# Validate deploy/: every Kubernetes manifest against the API schemas of the
# Kubernetes version below (kubernetes-validate, strict: unknown fields are
# errors), the nginx example with `nginx -t` inside a minimal config, and
# the sample host config and the Deployment's tools loaded by the host
# itself ($TOOLHOST, with build/tools from `make tools`).
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

# The sample host config, read by the host itself (when built: `make test`
# builds it first): with its placeholder token digest it is refused, as the
# state key's placeholder is, so the sample never runs with a token anyone
# can read here; with a digest set, it loads the tools the image ships.
# The tools are the Deployment's `--tools`, the image's and the operator's
# manifests (toolhost-tools), laid out as the pod has them.
TOOLHOST=${TOOLHOST:-target/debug/toolhost}
if [ -x "$TOOLHOST" ] && [ -f build/tools/echo.toml ]; then
  sha=$(sha256sum build/tools/echo.wasm | cut -d' ' -f1)
  "$DEPS/kube/bin/python" - deploy/kubernetes/configmap.yaml "$tmp" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
toml = next(d["data"]["toolhost.toml"] for d in docs if "toolhost.toml" in d.get("data", {}))
# Paths of the pod's volumes, moved under the scratch directory.
toml = toml.replace("/var/cache/toolhost", sys.argv[2] + "/cache").replace("/var/log/toolhost", sys.argv[2] + "/log")
open(sys.argv[2] + "/sample.toml", "w").write(toml)
operator = next(d["data"] for d in docs if d["metadata"]["name"] == "toolhost-tools")
import os
os.mkdir(sys.argv[2] + "/operator-tools")
for name, text in operator.items():
    open(sys.argv[2] + "/operator-tools/" + name, "w").write(text)
# The Deployment's --tools, as the image and the ConfigMap lay them out.
deployment = next(yaml.safe_load_all(open("deploy/kubernetes/deployment.yaml")))
args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
tools = [args[i + 1] for i, a in enumerate(args) if a == "--tools"]
tools = [t.replace("/opt/toolhost/tools", "build/tools").replace("/etc/toolhost/tools", sys.argv[2] + "/operator-tools") for t in tools]
open(sys.argv[2] + "/tools", "w").write("\n".join(tools))
PY
  sed -i -e "s|/opt/toolhost/tools/echo.wasm|$PWD/build/tools/echo.wasm|" -e "s/@SHA256@/$sha/" "$tmp"/operator-tools/*.toml
  mapfile -t tools < "$tmp/tools"
  mkdir -p "$tmp/log"
  if out=$("$TOOLHOST" check "${tools[@]}" --config "$tmp/sample.toml" 2>&1); then
    echo "the sample config loaded with its placeholder token digest:" >&2; echo "$out" >&2; exit 1
  fi
  grep -q token-sha256 <<<"$out" || { echo "the sample config failed, but not on its token digest:" >&2; echo "$out" >&2; exit 1; }
  digest=$(head -c 32 /dev/urandom | base64 | tr -d '\n' | sha256sum | cut -d' ' -f1)
  sed -i "s/REPLACE-WITH-THE-SHA256-OF-A-RANDOM-TOKEN/$digest/" "$tmp/sample.toml"
  "$TOOLHOST" check "${tools[@]}" --config "$tmp/sample.toml" >/dev/null \
    || { echo "the sample config, its token digest set, does not load the Deployment's tools with no problem" >&2; exit 1; }
  echo "the sample host config: refused with its placeholder; once set, loads the Deployment's tools with no problem"
elif [ -n "${REQUIRE_HOST:-}" ]; then
  echo "no $TOOLHOST or build/tools to check the sample host config with (make tools; cargo build)" >&2; exit 1
else
  echo "skipped the sample host config: no $TOOLHOST or build/tools (make tools; cargo build)" >&2
fi
echo "deploy/ is valid (Kubernetes $KUBE_VERSION schemas, nginx -t)"
