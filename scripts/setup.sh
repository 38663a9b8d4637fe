#!/usr/bin/env bash
# Everything dockmagic's demo and tests need on a fresh Debian machine, as root; idempotent, and
# quick when already done: Debian packages, the project's venv, a running engine, the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
want_browser=${DOCKMAGIC_BROWSER:-1}

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)   # the local registry push/pull tests use
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v rsync >/dev/null 2>&1 || need+=(rsync)            # remote engines sync files with rsync over ssh
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)     # ... through one OpenSSH connection per engine
command -v openssl >/dev/null 2>&1 || need+=(openssl)           # the test rig's TCP engine: its TLS certificates
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)  # `%docker export compose.yaml` is checked with it
if [ "$want_browser" = 1 ]; then command -v chromium >/dev/null 2>&1 || need+=(chromium); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.dockmagic-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: pip install -e .[test]"
  # (grep: this machine's pip config names a local index folder that may be absent; say so once)
  quiet() {
    local log rc=0
    log=$(mktemp)
    "$@" >"$log" 2>&1 || rc=$?
    grep -v "^WARNING: Location 'file:" "$log" || true
    rm -f "$log"
    return "$rc"
  }
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

bash scripts/ensure-engine.sh
bash scripts/build-base-image.sh
