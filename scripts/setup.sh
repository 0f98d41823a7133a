#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine that has Node 20, npm and
# cargo: pnpm, the workspace dependencies (native peers compile from source), the release build
# of the napi addon and the TypeScript build. Safe to run again; it only redoes what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PNPM_VERSION=10.34.9
need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required but not installed" >&2; exit 1; }; }
need node
need npm
need cargo
need python3

if ! command -v pnpm >/dev/null 2>&1 || [[ "$(pnpm --version 2>/dev/null)" != 10.* ]]; then
  echo "setup: installing pnpm@$PNPM_VERSION"
  if ! npm install -g "pnpm@$PNPM_VERSION" >/dev/null 2>&1; then
    # No write access to the global prefix: install into the repository instead.
    npm install --prefix .tools "pnpm@$PNPM_VERSION" >/dev/null
    export PATH="$PWD/.tools/node_modules/.bin:$PATH"
  fi
fi

# The S3 backup tests run against moto's S3 server, a separate process on loopback.
if ! python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  echo "setup: installing moto[server] for the S3 backup tests"
  python3 -m pip install --quiet 'moto[server]==5.2.1' >/dev/null 2>&1 \
    || python3 -m pip install --quiet --user --break-system-packages 'moto[server]==5.2.1' >/dev/null
fi

# The dashboard test drives Debian's chromium through puppeteer-core (no browser download).
if ! command -v chromium >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "setup: installing chromium for the dashboard test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium; the dashboard test will fail" >&2
fi

# The failover tests start their own etcd (Debian's etcd-server, 3.4) on free loopback ports.
# The package must not leave a system etcd running on port 2379: its start is denied while it
# installs (policy-rc.d), and any service it registered is stopped and disabled afterwards.
if [[ ! -x /usr/bin/etcd ]]; then
  echo "setup: installing etcd-server for the failover tests"
  as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
  policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq etcd-server >/dev/null
  [[ $policy_added -eq 1 ]] && as_root rm -f /usr/sbin/policy-rc.d
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
  as_root service etcd stop >/dev/null 2>&1 || true
fi

pnpm install --frozen-lockfile
pnpm build
