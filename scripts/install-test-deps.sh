#!/usr/bin/env bash
# Install what the tests need beyond Python packages, and only what is missing:
#
#   Debian   redis-server     shared state for rate limits and single-use tokens
#            docker-registry  the CNCF Distribution registry (skopeo logs in to it)
#            skopeo           the registry client
#            apache2-utils    htpasswd, for the registry's bcrypt password file
#            curl, python3    what examples/runner-*.sh run
#            nodejs, npm      only if node/npm are missing altogether
#            softhsm2         a software PKCS#11 token (HSM) for the github.app.pkcs11 signer
#            opensc           pkcs11-tool, to inspect and write objects on that token
#            tinyproxy        an HTTP CONNECT proxy, for HTTPS_PROXY support
#   npm      tests/e2e/node   `npm ci`: the pinned @actions/core, from its lockfile
#
# Idempotent, and quick when everything is there (no apt-get update, no npm run).
# Runs apt-get directly as root, through sudo otherwise. On a host with systemd,
# installing docker-registry also starts Debian's own registry service on :5000;
# the tests do not use it (each test run starts its own on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> the Debian package that provides it
commands=(redis-server docker-registry skopeo htpasswd curl python3 node npm softhsm2-util pkcs11-tool
  tinyproxy)
declare -A package=(
  [redis-server]=redis-server [docker-registry]=docker-registry [skopeo]=skopeo [htpasswd]=apache2-utils
  [curl]=curl [python3]=python3 [node]=nodejs [npm]=npm
  [softhsm2-util]=softhsm2 [pkcs11-tool]=opensc [tinyproxy]=tinyproxy
)

missing=()
for command in "${commands[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package[$command]}")
done

if ((${#missing[@]})) && ! command -v apt-get >/dev/null 2>&1; then
  # Not Debian: say exactly what to install, and stop.
  {
    echo "install-test-deps: the tests need programs this script installs on Debian only."
    echo "Missing: ${missing[*]} (Debian package names). Install them, then run make test again:"
    echo "  Debian/Ubuntu:   sudo apt-get install redis-server docker-registry skopeo apache2-utils curl nodejs npm softhsm2 opensc tinyproxy"
    echo "  Fedora:          sudo dnf install redis distribution skopeo httpd-tools curl nodejs npm softhsm opensc tinyproxy"
    echo "  macOS/Homebrew:  brew install redis distribution skopeo httpd curl node softhsm opensc tinyproxy"
  } >&2
  exit 1
fi

if ((${#missing[@]})); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "install-test-deps: need root or sudo to install: ${missing[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  echo "install-test-deps: installing ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lockfile changed since the last install (a stamp in node_modules).
node_dir=tests/e2e/node
stamp="$node_dir/node_modules/.install-stamp"
want=$(cat "$node_dir/package.json" "$node_dir/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "install-test-deps: npm ci in $node_dir" >&2
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$want" >"$stamp"
fi
