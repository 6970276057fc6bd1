# Sourced by the install scripts: third-party packages installed exactly as
# locked in scripts/locks/ (README there), digests checked.

LOCKS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/locks"

# npm_locked NAME PREFIX: the packages of scripts/locks/NAME/ into PREFIX.
npm_locked() {
  local name=$1 prefix=$2
  mkdir -p "$prefix"
  cp "$LOCKS/$name/package.json" "$LOCKS/$name/package-lock.json" "$prefix/"
  npm ci --prefix "$prefix" --no-audit --no-fund --loglevel=error
}

# pip_locked VENV NAME: the packages of scripts/locks/NAME.txt into VENV.
pip_locked() {
  local venv=$1 name=$2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary :all: -r "$LOCKS/$name.txt"
}

# lock_digest NAME...: one digest of the named locks, for install stamps
# (a changed lock installs again).
lock_digest() {
  local n f
  for n in "$@"; do
    for f in "$LOCKS/$n/package-lock.json" "$LOCKS/$n.txt"; do
      if [ -f "$f" ]; then cat "$f"; fi
    done
  done | sha256sum | cut -c1-16
}
