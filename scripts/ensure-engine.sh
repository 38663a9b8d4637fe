#!/usr/bin/env bash
# Make a local Docker engine answer, starting one when none does.
# As root on Debian: install Debian's docker.io if dockerd is missing, start dockerd in the
# background, and wait for its socket. Does nothing when an engine already answers.
set -euo pipefail
log=${DOCKMAGIC_DOCKERD_LOG:-/tmp/dockmagic-dockerd.log}

answers() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
  echo "engine: answering at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "engine: none answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}, and starting one needs root" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  echo "engine: installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "engine: starting dockerd (log: $log)"
  # no dockerd runs, so pid files left by one that died uncleanly are stale ("pid file found")
  rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
  setsid dockerd >"$log" 2>&1 < /dev/null &
fi
for _ in $(seq 1 60); do
  if answers; then echo "engine: answering"; exit 0; fi
  sleep 1
done
echo "engine: dockerd did not answer within 60 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
