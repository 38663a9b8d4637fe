#!/usr/bin/env bash
# A second, private Docker engine for tests that stop an engine mid-cell.
#
#   scripts/second-engine.sh start   start it (if not running), load the base image; prints the
#                                    DOCKER_HOST to use
#   scripts/second-engine.sh stop    stop it (SIGTERM; it stops its containers first)
#   scripts/second-engine.sh purge   stop it and remove its folder (images, containers, all)
#
# It runs in its OWN network and mount namespaces (`unshare --net --mount`) with `--bridge none`
# and iptables off: a second dockerd in the host's network namespace deletes the main engine's
# docker0 bridge. Its data, exec root, pidfile and socket live in $DOCKMAGIC_ENGINE2_DIR (default
# /tmp/dockmagic-engine2). It never touches the main engine, except to `docker save` the base
# image from it. Needs root.
set -euo pipefail

DIR=${DOCKMAGIC_ENGINE2_DIR:-/tmp/dockmagic-engine2}
BASE=${DOCKMAGIC_BASE_IMAGE:-dockmagic-base:bookworm}
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/docker.pid"
HOST="unix://$SOCK"

running() {
    [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
    docker -H "$HOST" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start() {
    mkdir -p "$DIR"
    if ! running; then
        rm -f "$SOCK" "$PIDFILE"
        # Inside the new mount namespace a tmpfs hides the host's /run/containerd, so this
        # dockerd starts its own containerd (under its exec root) instead of sharing one.
        setsid unshare --net --mount --propagation private -- sh -c '
            mount -t tmpfs tmpfs /run/containerd 2>/dev/null || true
            ip link set lo up 2>/dev/null || true
            exec dockerd --bridge none --iptables=false --ip6tables=false --ip-masq=false \
                --data-root "$1/data" --exec-root "$1/exec" --pidfile "$1/docker.pid" \
                -H "unix://$1/docker.sock" --shutdown-timeout 2 \
                --cgroup-parent dockmagic-engine2 --storage-driver overlay2 --log-level warn
        ' sh "$DIR" >>"$DIR/dockerd.log" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 120); do
        answers && break
        sleep 0.5
    done
    if ! answers; then
        echo "second-engine: dockerd did not answer on $HOST; see $DIR/dockerd.log" >&2
        tail -n 20 "$DIR/dockerd.log" >&2 || true
        exit 1
    fi
    if ! docker -H "$HOST" image inspect "$BASE" >/dev/null 2>&1; then
        docker save "$BASE" | docker -H "$HOST" load >/dev/null
    fi
    echo "$HOST"
}

stop() {
    if running; then
        local pid
        pid=$(cat "$PIDFILE")
        kill -TERM "$pid"
        for _ in $(seq 1 120); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "second-engine: dockerd $pid did not stop within 30 s" >&2
            exit 1
        fi
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    purge) stop; rm -rf "$DIR" ;;
    *) echo "usage: $0 start|stop|purge" >&2; exit 2 ;;
esac
