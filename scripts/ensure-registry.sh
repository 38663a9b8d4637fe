#!/usr/bin/env bash
# Make a local Docker registry answer on loopback (for the push/pull tests), starting one when
# none does. Installs Debian's docker-registry if it is missing (needs root), writes a small
# config (filesystem storage in a scratch folder), starts it in the background and waits for
# /v2/. Does nothing when a registry already answers. The engine treats 127.0.0.0/8 registries
# as insecure by default, so `localhost:5000/...` needs no daemon configuration.
set -euo pipefail
addr=${DOCKMAGIC_REGISTRY_ADDR:-127.0.0.1:5000}
dir=${DOCKMAGIC_REGISTRY_DIR:-/tmp/dockmagic-registry}
log=$dir/registry.log

answers() { curl -fsS -m 5 -o /dev/null "http://$addr/v2/" 2>/dev/null; }

if answers; then
  echo "registry: answering at $addr"
  exit 0
fi
if ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "registry: docker-registry is not installed, and installing it needs root" \
         "(apt-get install docker-registry)" >&2
    exit 1
  fi
  echo "registry: installing Debian's docker-registry"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for a concurrent apt/dpkg rather than failing on its lock.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    docker-registry >/dev/null
fi

mkdir -p "$dir/data"
cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
EOF
echo "registry: starting docker-registry on $addr (storage: $dir/data, log: $log)"
setsid docker-registry serve "$dir/config.yml" >"$log" 2>&1 </dev/null &
for _ in $(seq 1 30); do
  if answers; then echo "registry: answering at $addr"; exit 0; fi
  sleep 1
done
echo "registry: docker-registry did not answer at $addr within 30 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
