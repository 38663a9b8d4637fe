#!/usr/bin/env bash
# Build dockmagic's base image (Debian bookworm, python3, numpy) from Debian packages with
# debootstrap, using the mirror this machine's apt sources name. No registry is involved.
# Skips the work when the image already exists. Also builds the small test images on top.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${DOCKMAGIC_BASE_IMAGE:-dockmagic-base:bookworm}
suite=${DOCKMAGIC_SUITE:-bookworm}

mirror() {
  # deb822 sources first, then the one-line format.
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                      | grep -v security | sed -E 's/\[[^]]*\]//' | awk '{print $2}' | head -n1 || true)
  [ -n "$m" ] || { echo "base image: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
  echo "$m"
}

if ! docker image inspect "$image" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  root=$(mktemp -d /tmp/dockmagic-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  m=$(mirror)
  echo "base image: debootstrap $suite from $m (a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-numpy,procps \
    "$suite" "$root" "$m" > "$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' - "$image" >/dev/null
  rm -f "$root.log"
  echo "base image: built $image"
else
  echo "base image: $image already present"
fi

# Small images the tests use, built FROM the base (no registry).
build() {  # name dockerfile-text
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  printf '%s\n' "$2" | docker build -q -t "$1" - >/dev/null
  echo "test image: built $1"
}
build dockmagic-test:entrypoint "FROM $image
ENTRYPOINT [\"echo\", \"entrypoint-said\"]
CMD [\"default-cmd\"]"
build dockmagic-test:env "FROM $image
ENV FROM_IMAGE=image-value NVIDIA_VISIBLE_DEVICES=all
RUN echo 'export FROM_BASHRC=bashrc-value' >> /root/.bashrc && echo 'export FROM_BASHRC=bashrc-value' >> /etc/bash.bashrc
LABEL org.example.kind=test"
