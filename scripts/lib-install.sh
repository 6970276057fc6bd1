# Sourced by the install scripts: third-party packages installed exactly as
# locked in scripts/locks/ (README there), digests checked; Debian packages
# of test peers kept from running as services.

LOCKS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/locks"

# npm_locked NAME PREFIX: the packages of scripts/locks/NAME/ into PREFIX.
npm_locked() {
  local name=$1 prefix=$2
  mkdir -p "$prefix"
  cp "$LOCKS/$name/package.json" "$LOCKS/$name/package-lock.json" "$prefix/"
  npm ci --prefix "$prefix" --no-audit --no-fund --loglevel=error
}

# locked_python: the Python the pip locks were resolved for (3.11, Debian
# bookworm's) or a newer one; exits if there is none.
locked_python() {
  local p
  for p in "${PYTHON:-}" python3.11 python3; do
    [ -n "$p" ] && command -v "$p" >/dev/null || continue
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      command -v "$p"
      return
    fi
  done
  echo "python 3.11 or newer is required (the locks in scripts/locks/ are for it)" >&2
  exit 1
}

# pip_locked VENV NAME: a new virtualenv VENV (an old one is emptied: pip
# would keep what it holds unchecked) with the packages of
# scripts/locks/NAME.txt.
pip_locked() {
  local venv=$1 name=$2
  "$(locked_python)" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary :all: -r "$LOCKS/$name.txt"
}

# lock_digest NAME...: one digest of the named locks, for install stamps
# (a changed lock installs again).
lock_digest() {
  local n
  for n in "$@"; do
    [ -f "$LOCKS/$n/package-lock.json" ] || [ -f "$LOCKS/$n.txt" ] \
      || { echo "no lock named $n in $LOCKS" >&2; exit 1; }
  done
  for n in "$@"; do
    if [ -f "$LOCKS/$n/package-lock.json" ]; then cat "$LOCKS/$n/package-lock.json"; fi
    if [ -f "$LOCKS/$n.txt" ]; then cat "$LOCKS/$n.txt"; fi
  done | sha256sum | cut -c1-16
}

# no_boot_service UNIT: a Debian package the tests run themselves (nginx,
# the registry), installed by the script just now, is not also a service
# started at boot, on all interfaces (one the machine had before is left
# as it is: it may be the developer's own). Never asks for a password.
no_boot_service() {
  local sudo=
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v systemctl >/dev/null; then
    $sudo systemctl disable --quiet "$1.service" >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null; then
    $sudo update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}
