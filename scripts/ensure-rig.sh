#!/usr/bin/env bash
# The test rig for remote engines (#10): a "remote GPU server" in a container, with its own
# dockerd (data on the docker volume dockmagic-rig-docker, so overlay2 works) and sshd on a
# loopback port, and the same engine on a loopback TCP port with mutual TLS (for `tcp://` engines).
# Idempotent: builds the image, (re)starts the container, and writes
#   ~/.ssh/dockmagic-rig/{id_ed25519,known_hosts,env}   the key it generated, the rig's host key
#   ~/.ssh/dockmagic-rig/tls/{ca,cert,key}.pem          the client certificate for its TCP engine
#   ~/.ssh/config                                        a `Host dockmagic-rig` alias (marked block)
# so `ssh dockmagic-rig` and `%docker engines add rig ssh://dockmagic-rig` work. The rig gets the
# base image loaded into its own engine. `--down` removes the container (and `--purge` its volume).
# Where apt cannot reach a mirror from inside `docker build` (or DOCKMAGIC_RIG_DEBOOTSTRAP=1),
# the same Debian packages are debootstrapped from this machine's mirror instead.
# The rig's dockerd runs inside the rig's network namespace, never the host's. Its TCP socket
# demands a client certificate signed by the rig's own CA: it is reachable from the docker bridge
# (and from the rig's own containers), so without TLS any container could drive the rig's engine.
# The env file records DOCKMAGIC_RIG_TCP_PORT and DOCKMAGIC_RIG_TLS (the client folder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=${DOCKMAGIC_RIG_NAME:-dockmagic-rig}
image=${DOCKMAGIC_RIG_IMAGE:-dockmagic-rig:bookworm}
base=${DOCKMAGIC_BASE_IMAGE:-dockmagic-base:bookworm}
volume=$name-docker
home_ssh=$(getent passwd "$(id -u)" | cut -d: -f6)/.ssh   # ssh reads the passwd home, not $HOME
dir=$home_ssh/$name
config=$home_ssh/config
tmp_log=$(mktemp /tmp/dockmagic-rig-build.XXXXXX)
trap 'rm -f "$tmp_log"' EXIT

case "${1:-}" in
  --down|--purge)
    docker rm -f "$name" >/dev/null 2>&1 || true
    if [ "$1" = --purge ]; then  # its volume, key, and Host block too
      docker volume rm "$volume" >/dev/null 2>&1 || true
      rm -rf "$dir"
      [ -f "$config" ] && python3 - "$config" "$name" <<'PY'
import re, sys
path, name = sys.argv[1:]
text = open(path).read()
pat = re.compile(r"\n*# >>> %s .*?# <<< %s <<<\n?" % (re.escape(name), re.escape(name)), re.S)
open(path, "w").write(pat.sub("\n", text).strip("\n") + "\n")
PY
    fi
    echo "rig: removed $name"; exit 0 ;;
esac

command -v ssh >/dev/null && command -v rsync >/dev/null && command -v openssl >/dev/null || {
  echo "rig: needs ssh, rsync and openssl on this machine (bash scripts/setup.sh installs them)" >&2; exit 1; }

missing_caps() {  # capabilities docker knows that this machine's bounding set lacks
  python3 - <<'PY'
names = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
         "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
         "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
         "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
         "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE").split()
status = open("/proc/self/status").read()
bnd = int(status.split("CapBnd:")[1].split()[0], 16)
print(" ".join(n for i, n in enumerate(names) if not bnd >> i & 1))
PY
}

# 1. the image, FROM the base image, with Debian's docker.io, openssh-server and rsync
if ! docker image inspect "$image" >/dev/null 2>&1 || \
   [ "$(docker image inspect -f '{{index .Config.Labels "dockmagic.rig.recipe"}}' "$image")" != "$(cat "$here"/rig/* | sha256sum | cut -c1-16)" ]; then
  recipe=$(cat "$here"/rig/* | sha256sum | cut -c1-16)
  echo "rig: building $image from $base (apt inside docker build)"
  if [ -n "${DOCKMAGIC_RIG_DEBOOTSTRAP:-}" ] || ! docker build -q --build-arg BASE="$base" \
       --label dockmagic.rig.recipe="$recipe" -t "$image" "$here/rig" >"$tmp_log" 2>&1; then
    # No Debian mirror from inside a container: debootstrap the same packages from this
    # machine's mirror (as build-base-image.sh does), import that, and add the rig's files.
    echo "rig: apt inside docker build failed ($(tail -n1 "$tmp_log")); debootstrap instead" >&2
    root=$(mktemp -d /tmp/dockmagic-rig-rootfs.XXXXXX)
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
    [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list | grep -v security | sed -E 's/\[[^]]*\]//' | awk '{print $2}' | head -n1)
    debootstrap --variant=minbase --include=python3,python3-numpy,procps,docker.io,openssh-server,rsync,iptables,ca-certificates \
      bookworm "$root" "$m" >"$tmp_log" 2>&1 || { tail -n 20 "$tmp_log" >&2; rm -rf "$root"; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/etc/ssh/ssh_host_*
    tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'ENV LANG=C.UTF-8' - "$image-rootfs" >/dev/null
    rm -rf "$root"
    printf 'FROM %s\n%s\n' "$image-rootfs" "$(sed -n '/^COPY/,$p' "$here/rig/Dockerfile")" |
      docker build -q --label dockmagic.rig.recipe="$recipe" -t "$image" -f - "$here/rig" >/dev/null
  fi
fi

# 2. the key (generated once) and the container
mkdir -p "$dir"; chmod 700 "$home_ssh" "$dir"
[ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/id_ed25519"
pub=$(cat "$dir/id_ed25519.pub")
# the TCP engine's certificates (made once): a CA, the server's (IP 127.0.0.1), the client's
tls=$dir/tls
if [ ! -f "$tls/key.pem" ] || [ ! -f "$tls/server/server-key.pem" ]; then
  rm -rf "$tls"; mkdir -p -m 700 "$tls" "$tls/server"
  ( cd "$tls" && umask 077
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 3650 -subj "/CN=$name CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout server/server-key.pem -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out server/server-cert.pem 2>/dev/null
    openssl req "${ec[@]}" -keyout key.pem -out client.csr -subj "/CN=$name client" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile client.ext -out cert.pem 2>/dev/null
    cp ca.pem server/ca.pem
    rm -f ./*.csr ./*.ext ca.srl )
fi
tcp_flags="-H tcp://0.0.0.0:2376 --tlsverify --tlscacert /etc/rig-tls/ca.pem --tlscert /etc/rig-tls/server-cert.pem --tlskey /etc/rig-tls/server-key.pem"
want=$(printf '%s %s %s %s' "$(docker image inspect -f '{{.Id}}' "$image")" "$pub" "$tcp_flags" \
       "$(cat "$tls/server/server-cert.pem")" | sha256sum | cut -c1-16)
have=$(docker inspect -f '{{index .Config.Labels "dockmagic.rig.want"}} {{.State.Running}}' "$name" 2>/dev/null || true)
start_rig() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  common=(-d --name "$name" --hostname "$name" --init --restart unless-stopped
          --label dockmagic.rig=1 --label dockmagic.rig.want="$want"
          -e RIG_AUTHORIZED_KEY="$pub" -v "$volume:/var/lib/docker" -p 127.0.0.1::22
          -e RIG_DOCKERD_FLAGS="$tcp_flags" -v "$tls/server:/etc/rig-tls:ro" -p 127.0.0.1::2376)
  if ! docker run "${common[@]}" --privileged "$image" >/dev/null 2>"$dir/run.err"; then
    # Where --privileged is refused (the host engine lacks a capability): the equivalent flags --
    # every capability this machine's bounding set holds, seccomp and AppArmor unconfined, all
    # devices, /proc unmasked and the cgroup tree writable.
    echo "rig: --privileged refused ($(grep -o 'unable to [^:]*' "$dir/run.err" | head -n1)); using the equivalent flags" >&2
    docker rm -f "$name" >/dev/null 2>&1 || true
    drop=()
    for c in $(missing_caps); do drop+=(--cap-drop "$c"); done
    docker run "${common[@]}" --cap-add ALL "${drop[@]}" --security-opt seccomp=unconfined \
      --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
      --device-cgroup-rule 'a *:* rwm' --mount type=bind,src=/sys/fs/cgroup,dst=/sys/fs/cgroup \
      "$image" >/dev/null
  fi
  echo "rig: started $name"
}
[ "$have" = "$want true" ] || start_rig

# 3. wait for its sshd and engine; record the port, the host key, the alias
wait_rig() {  # $1 seconds for its sshd port and its engine
  port=
  for _ in $(seq 1 "$1"); do
    port=$(docker port "$name" 22/tcp 2>/dev/null | grep -m1 '^127.0.0.1:' | cut -d: -f2 || true)
    tcp_port=$(docker port "$name" 2376/tcp 2>/dev/null | grep -m1 '^127.0.0.1:' | cut -d: -f2 || true)
    [ -n "$port" ] && [ -n "$tcp_port" ] && docker exec "$name" docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}
if ! wait_rig 60; then
  # A rig container left over from an earlier run (restarted by --restart unless-stopped when
  # this engine came up) may be wedged; start a fresh one once before giving up.
  echo "rig: its dockerd did not answer within 60 s; starting a fresh $name:" >&2
  docker exec "$name" tail -n 3 /var/log/dockerd.log >&2 2>/dev/null || docker logs --tail 3 "$name" >&2 || true
  start_rig
  wait_rig 60 || {
    echo "rig: its dockerd did not answer within 60 s:" >&2
    docker exec "$name" tail -n 20 /var/log/dockerd.log >&2 || docker logs --tail 20 "$name" >&2; exit 1; }
fi
hostkey=$(docker exec "$name" cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1,2)
echo "[127.0.0.1]:$port $hostkey" > "$dir/known_hosts"
printf 'DOCKMAGIC_RIG_NAME=%s\nDOCKMAGIC_RIG_PORT=%s\nDOCKMAGIC_RIG_KEY=%s\nDOCKMAGIC_RIG_HOST=%s\nDOCKMAGIC_RIG_TCP_PORT=%s\nDOCKMAGIC_RIG_TLS=%s\n' \
  "$name" "$port" "$dir/id_ed25519" "$name" "$tcp_port" "$tls" > "$dir/env"
block="# >>> $name (written by dockmagic scripts/ensure-rig.sh) >>>
Host $name
  HostName 127.0.0.1
  Port $port
  User root
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking yes
# <<< $name <<<"
touch "$config"; chmod 600 "$config"
python3 - "$config" "$name" "$block" <<'PY'
import re, sys
path, name, block = sys.argv[1:]
text = open(path).read()
pat = re.compile(r"# >>> %s .*?# <<< %s <<<\n?" % (re.escape(name), re.escape(name)), re.S)
text = pat.sub("", text).rstrip("\n")
open(path, "w").write((text + "\n\n" if text else "") + block + "\n")
PY
for _ in $(seq 1 20); do
  ssh -o BatchMode=yes -o ConnectTimeout=5 "$name" true 2>/dev/null && break; sleep 0.5
done
ssh -o BatchMode=yes -o ConnectTimeout=5 "$name" true

# 4. the base image in the rig's own engine (no registry: docker save | docker load)
if ! docker exec "$name" docker image inspect "$base" >/dev/null 2>&1; then
  echo "rig: loading $base into the rig's engine"
  docker save "$base" | docker exec -i "$name" docker load -q >/dev/null
fi
echo "rig: $name answers: ssh $name (127.0.0.1:$port), tcp://127.0.0.1:$tcp_port (TLS: $tls), engine $(docker exec "$name" docker version -f '{{.Server.Version}}')"
