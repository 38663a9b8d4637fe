"""Differential test: dockmagic.translate against the real `docker` CLI, on the real engine.

For every case one container is made by `docker create ARGV` and one by
`containers.create(**parse_run_args(ARGV).to_create_kwargs())`; both are inspected and their
Config and HostConfig compared by the rules of docs/docker-run-semantics.md section 6 (each side
against a no-flags baseline made the same way). Bad inputs must make the CLI fail and
`parse_run_args` raise TranslateError. Everything runs in one batch per module (CLI calls in a
thread pool, one `docker inspect`); containers and named volumes are removed in `finally`.
"""
import concurrent.futures
import json
import os
import shlex
import subprocess
import uuid

import pytest

from dockmagic import translate as T

pytestmark = pytest.mark.engine

RUN = uuid.uuid4().hex[:8]
LABELS = {"dockmagic.test": "diff", "dockmagic.diffrun": RUN}
ENTRYPOINT_IMAGE = "dockmagic-test:entrypoint"
NAME = f"dmdiff-{RUN}"          # prefix for names, named volumes and networks of this run

# Each case: the argv after `docker run` ({img} base image, {ep} entrypoint image, {dir} the
# scratch directory that is also the current directory, {run} this run's prefix, {platform} the
# base image's own OS/arch: any other makes the CLI try to pull). Without {img}
# or {ep}, " {img}" is appended. A tuple (argv, cli_argv) gives the CLI a different argv: the
# one place dockmagic departs on purpose (unquoted --gpus device=0,1).
VALID = [
    # --gpus
    "--gpus all", "--gpus 2", "--gpus 0", "--gpus -1", "--gpus count=all", "--gpus count=1",
    "--gpus +3", "--gpus device=0", "--gpus '\"device=0,1\"'",
    ("--gpus device=0,1", "--gpus '\"device=0,1\"'"),
    ("--gpus device=0,1,2", "--gpus '\"device=0,1,2\"'"),
    ("--gpus device=0,1,capabilities=utility", "--gpus '\"device=0,1\",capabilities=utility'"),
    "--gpus device=GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a", "--gpus driver=nvidia",
    "--gpus all,driver=nvidia", "--gpus all,capabilities=utility",
    "--gpus 'all,\"capabilities=compute,utility\"'", "--gpus '\"capabilities=compute,video\"'",
    "--gpus '\"options=foo=bar,baz=qux\"'", "--gpus all --gpus device=1", "--gpus count=3,2",
    "--gpus '\"device=0,1\",2'", "--gpus=all", "--gpus device=1 --device nvidia.com/gpu=all",
    # -v
    "-v {dir}/data:/data", "-v {dir}/data:/data:ro", "-v {dir}/data:/data:rw", "-v ./data:/data",
    "-v .:/work -w /work", "-v ..:/up", "-v ./data/../models:/m", "-v ./data/:/d",
    "-v {dir}/data/:/d2/", "-v /anon", "-v /anon -v /anon2", "-v {run}-vol:/v",
    "-v {run}-vol:/v:ro", "-v {run}-vol:/v:nocopy", "-v {dir}/data:/z:z", "-v {dir}/data:/Z:Z",
    "-v {dir}/data:/p:rshared", "-v {dir}/data:/p:ro,rslave",
    "-v {dir}/data:/a -v {dir}/data:/b:ro", "-v {dir}/data:/a:z -v {dir}/data:/b",
    "-v {dir}/data:/a -v {dir}/data:/a", "-v {dir}/data:/z:z -v /anon",
    "-v ./x:/x -v {dir}/x:/x2", "--volume={dir}/data:/data", "-v={dir}/data:/b",
    # --mount
    "--mount type=bind,src={dir}/data,dst=/data",
    "--mount type=bind,source={dir}/data,target=/data,readonly",
    "--mount type=bind,src=./data,dst=/data,ro=true",
    "--mount Type=BIND,Source={dir}/data,Destination=/d",
    "--mount type=bind,src={dir}/data,dst=/d,bind-propagation=rslave",
    "--mount type=bind,src={dir}/data,dst=/d,bind-nonrecursive",
    "--mount type=bind,src={dir}/data,dst=/d,bind-recursive=disabled",
    "--mount type=bind,src={dir}/data,dst=/d,consistency=cached",
    "--mount type=volume,dst=/anon", "--mount dst=/anon2",
    "--mount type=volume,src={run}-m,dst=/m",
    "--mount type=volume,src={run}-m,dst=/m,volume-nocopy",
    "--mount type=volume,src={run}-m2,dst=/m,volume-label=a=b,volume-driver=local",
    "--mount type=volume,dst=/v,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
    "--mount type=volume,dst=/y,volume-nocopy=false", "--mount type=tmpfs,dst=/t",
    "--mount type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770",
    "--mount type=tmpfs,destination=/t,tmpfs-size=1g --mount type=bind,src={dir}/data,dst=/d",
    "--mount 'type=bind,\"src={dir}/data\",dst=/q'",
    # -e / --env-file
    "-e A=1", "-e A=1 -e B=2 -e A=3", "-e DM_FROM_HOST", "-e DM_UNSET",
    "-e 'MSG=hello world' -e 'Q=\"quoted\"'", "-e EMPTY=", "-e X=a=b=c", "--env-file env.list",
    "--env-file ./env.list -e A=override", "--env-file env.list --env-file {dir}/env2.list",
    "--env=A=1 --env B=2", "-eA=1 -eB=2", "--env-file env.list -e DM_FROM_HOST -e DM_UNSET",
    "-e PATH=/opt/bin:/usr/bin", "-e LANG", "-e HOME=/root -e HOME",
    # -w -u --name --entrypoint
    "-w /work", "--workdir=/tmp", "-u 1000", "-u 1000:1000", "--user nobody:nogroup",
    "--name {run}-n1", "--name={run}-n2 --rm", "--entrypoint '' {ep} echo hi",
    "--entrypoint= {ep} python3 -c 1", "--entrypoint python3 {ep}",
    "--entrypoint 'python3 -u' {img}",
    "--entrypoint /bin/sh {img} -c 'echo hi'", "{ep}", "{ep} custom args",
    "--entrypoint '' {img} python3 -c 'print(1)'",
    # labels
    "-l a=b", "-l a -l b=", "-l 'desc=my experiment, v2'", "-l a=1 -l a=2",
    "--label-file labels.list", "--label-file labels.list -l L1=override", "--label=x=y",
    # run flags
    "--rm", "--rm=true", "--rm=false", "-i", "-t", "-it", "-ti", "-d", "-itd", "-d --rm", "-di",
    "--interactive=true --tty=false", "--detach -i", "--init", "--init=false", "--privileged",
    "--read-only", "--rm=T -i=false -t=1", "-ti=false",
    # resources
    "--shm-size 8g", "--shm-size=1.5g", "--shm-size 64M", "--shm-size 1gb", "--shm-size 0",
    "--ipc host", "--ipc private", "--ipc shareable", "--ipc none", "-m 1g", "--memory=512m",
    "-m 1g --memory-swap 2g", "-m 1g --memory-swap -1", "-m=64m", "--memory-swappiness 0",
    "--memory-swappiness 60", "--cpus 1", "--cpus .5", "--cpus 1/2", "--cpus 1e-1",
    "--cpuset-cpus 0", "--pids-limit 100", "--pids-limit -1", "--pids-limit 0x40",
    "--ulimit nofile=1024:2048", "--ulimit memlock=-1",
    "--ulimit memlock=-1 --ulimit stack=67108864",
    "--ulimit nofile=1 --ulimit nofile=2", "--ulimit core=0 --ulimit nproc=100:200",
    # network and ports
    "--network host", "--net=none", "--network bridge", "--network default",
    "--network {run}-net", "--network name={run}-net", "-p 8888:8888", "-p 127.0.0.1:8888:8888",
    "-p 8888", "-p 127.0.0.1::8888", "-p '[::1]:8888:8888'", "-p 8000-8001:8000-8001",
    "-p 8000-8010:8888", "-p 8888/udp -p 8888/tcp", "-p 8888:8888 -p 9999:8888",
    "-p 8888:8888 -p 8888:8888", "-p published=8080,target=80",
    "-p published=8080,target=80,protocol=udp", "-P", "-P -p 80", "--network host -p 8888:8888",
    "-p8888:8888", "-p 0.0.0.0:80:80/sctp",
    # devices
    "--device /dev/null", "--device /dev/null:/dev/xnull", "--device /dev/null:r",
    "--device /dev/null:/dev/x:rw", "--device /dev/nvidia0 --device /dev/nvidiactl",
    "--device nvidia.com/gpu=all", "--device nvidia.com/gpu=0 --device nvidia.com/gpu=1",
    "--device /dev//null/", "--device /dev/fuse --gpus all",
    # capabilities
    "--cap-add SYS_PTRACE", "--cap-add sys_ptrace --cap-add CAP_SYS_ADMIN",
    "--cap-drop ALL --cap-add NET_BIND_SERVICE", "--cap-add ALL",
    "--cap-add sys_ptrace --cap-add SYS_PTRACE", "--cap-drop net_raw",
    # the rest
    "--runtime runc", "--restart always", "--restart on-failure", "--restart on-failure:3",
    "--restart unless-stopped", "--restart no", "--rm --restart no", "--tmpfs /run",
    "--tmpfs /run:rw,size=64m", "--tmpfs /a:size=1m --tmpfs /a:size=2m", "--add-host a:1.2.3.4",
    "--add-host a=1.2.3.4 --add-host 'v6:[::1]'", "--add-host host.docker.internal:host-gateway",
    "-h myhost", "--hostname=box", "-h=box2", "--group-add video",
    "--group-add 44 --group-add users", "--security-opt no-new-privileges",
    "--security-opt seccomp=unconfined", "--security-opt seccomp=seccomp.json",
    "--security-opt seccomp:seccomp.json", "--security-opt label=disable",
    "--security-opt apparmor=unconfined", "--security-opt systempaths=unconfined",
    "--sysctl net.core.somaxconn=1024",
    "--sysctl net.ipv4.ip_unprivileged_port_start=0 --sysctl kernel.shmmax=68719476736",
    "--stop-signal SIGINT", "--stop-signal 2", "--platform {platform}",
    # argv shapes
    "-- {img} python3 x.py", "{img} -- python3 x.py", "{img} echo '' done",
    "{img} --gpus 2 -e X=1", "-eFOO=bar -e=X=1 -p8888:8888 -v={dir}/data:/b",
    # what people type
    "--rm --gpus all -v {dir}/data:/data -w /data {img} python3 train.py",
    "--rm -it --gpus '\"device=0,1\"' --shm-size 16g --ipc host {img} bash",
    "--gpus all --ulimit memlock=-1 --ulimit stack=67108864 --shm-size 1g",
    "--rm -d --name {run}-jup -p 8888:8888 -v .:/work -w /work {img} jupyter lab",
    "--gpus all -e NVIDIA_VISIBLE_DEVICES=0 -e CUDA_VISIBLE_DEVICES=0",
    "--rm --gpus 1 --cpus 1 -m 4g --pids-limit 256 --read-only --tmpfs /tmp",
    "--rm --runtime runc --init --cap-drop ALL --security-opt no-new-privileges -u 65534:65534",
    "--gpus all --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined",
    "--net host --ipc host --gpus all --shm-size 8g",
    "--rm -i -v ./models:/models:ro -e HF_HOME=/models --entrypoint python3 {img} -u -",
    "--mount type=bind,src=./data,dst=/data --mount type=tmpfs,dst=/scratch,tmpfs-size=1g",
    "--env-file env.list --label-file labels.list --rm",
    "--add-host db:10.0.0.5 --restart unless-stopped -d",
    "--gpus all -v {run}-cache:/root/.cache --rm",
    "-itd --gpus all --name {run}-dev -v .:/w:z -w /w -e TERM=xterm-256color",
]

# Inputs the CLI refuses before it reaches the engine; parse_run_args must refuse them too.
BAD = [
    "--gpus ALL {img}", "--gpus 0x2 {img}", "--gpus '' {img}", "--gpus 2,count=3 {img}",
    "--gpus driver=a,driver=b {img}", "--gpus all,all {img}", "--gpus 'device=\"0,1\"' {img}",
    "--gpus 'all, capabilities=utility' {img}", "--gpus x=1 {img}", "--gpus options= {img}",
    "--gpus capabilities=compute,utility {img}", "--gpus '\"device=0,1' {img}",
    "--gpus device=1,, {img}",
    "-p 8888/icmp {img}", "-p 127.0.0.1:8888 {img}", "-p '' {img}", "-p 65536 {img}",
    "-p +80 {img}", "-p 8001-8000 {img}", "-p a:80 {img}", "-p 01.2.3.4:80:80 {img}",
    "-p 80- {img}", "-p /udp {img}", "-p 80:80:80:80 {img}", "-p published=8080 {img}",
    "-p target=80,=x {img}", "-p 8000-8001:9000-9005 {img}",
    "--ulimit nofile=2048:1024 {img}", "--ulimit memlock=-1:100 {img}", "--ulimit nofile {img}",
    "--ulimit nofile=1:2:3 {img}", "--ulimit as=1 {img}", "--ulimit nofile=a {img}",
    "--restart :3 {img}", "--restart on-failure:x {img}", "--rm --restart always {img}",
    "--rm --restart on-failure:2 {img}",
    "--add-host a {img}", "--add-host a: {img}", "--add-host :1.2.3.4 {img}",
    "--add-host a:01.2.3.4 {img}",
    "--security-opt seccomp=bad.json {img}", "--security-opt seccomp=missing.json {img}",
    "--security-opt label= {img}", "--security-opt foo {img}",
    "--sysctl vm.overcommit_memory=1 {img}", "--sysctl net.ipv4.ip_forward {img}",
    "--network '' {img}", "--network 'name=foo,x=1' {img}", "--network a=b {img}",
    "--platform bogus {img}",
    "--rm=yes {img}", "-itx {img}", "-gpus all {img}", "-m -1 {img}", "---rm {img}",
    "--=x {img}", "--cap_add X {img}", "--pids-limit 1.5 {img}",
    "--memory-swappiness 101 {img}", "--memory-swappiness -2 {img}", "--cpus 1/3 {img}",
    "--cpus inf {img}", "--cpus 0.0000000001 {img}", "--cpus '' {img}",
    "--shm-size 8gigs {img}", "--shm-size 1gbb {img}", "--shm-size -1 {img}",
    "--shm-size 16x {img}", "--memory-swap -2 {img}",
    "--device /dev/null:/dev/x:rwx {img}", "--device dev/null {img}",
    "--device /dev/null:x {img}", "--device :/x {img}", "--device /a:/b:r:w {img}",
    "--device a/bb=c {img}",
    "--mount '' {img}", "--mount src=/x {img}",
    "--mount type=bind,src=/x,dst=/y,volume-nocopy {img}",
    "--mount type=tmpfs,dst=/y,tmpfs-mode=8 {img}", "--mount dst=/a,ro= {img}",
    "--mount type=,dst=/y {img}", "--mount 'type=bind, src=/x,dst=/y' {img}",
    "--mount type=bind,src=/x,dst=/y,bind-recursive=Enabled {img}",
    "--mount type=bind,src=/x,dst=/y,bind-recursive=writable {img}",
    "-v '' {img}", "-v /a::/b {img}", "-v :/data {img}", "-v /a:/b:ro:x {img}", "-v vol: {img}",
    "-e =x {img}", "-e= {img}", "-l =x {img}", "-l 'a b=1' {img}", "-l '' {img}",
    "--env-file export.env {img}", "--env-file missing.env {img}", "--env-file badkey.env {img}",
    "--label-file missing.list {img}",
    "Ubuntu", "foo/Bar", "img:", "a___b", "--rm", "-e", "--rm -- --",
]


def _case_id(case):
    text = case if isinstance(case, str) else case[0]
    return text.replace("{img}", "IMG").replace("{ep}", "EP").replace("{dir}", "DIR") \
        .replace("{run}", "RUN").replace("{platform}", "OS/ARCH")[:90]


def _fill(text, world, add_image=True):
    if add_image and "{img}" not in text and "{ep}" not in text:
        text += " {img}"
    return shlex.split(text.format(img=world["image"], ep=ENTRYPOINT_IMAGE, dir=world["dir"],
                                   run=NAME, platform=world["platform"]))


def _without_detach(argv):
    """`docker create` has no -d: drop it (the cases keep -d before IMAGE, alone or in -itd)."""
    out = []
    for a in argv:
        if a in ("-d", "--detach", "--detach=true"):
            continue
        if len(a) > 2 and a[0] == "-" and a[1] != "-" and set(a[1:]) <= set("itd"):
            a = a.replace("d", "")
        out.append(a)
    return out


# ---- the batch ------------------------------------------------------------------------------

def _label_args(tag):
    out = []
    for k, v in dict(LABELS, **{"dockmagic.case": tag}).items():
        out += ["--label", f"{k}={v}"]
    return out


def _make_world(tmp_path_factory, base_image, docker_client):
    d = tmp_path_factory.mktemp("diff")
    for sub in ("data", "models", "x", "home", "dockercfg"):
        (d / sub).mkdir()
    (d / "env.list").write_text("A=from-file\nB=2 \n# comment\nHOME\nDM_FROM_HOST\nDM_UNSET\n"
                                "Q=\"quoted\"\n")
    (d / "env2.list").write_text("A=second\n")
    (d / "labels.list").write_text("L1=a\nL2='q'\n")
    (d / "seccomp.json").write_text('{ "defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": [] }\n')
    (d / "bad.json").write_text("{bad")
    (d / "export.env").write_text("export A=1\n")
    (d / "badkey.env").write_text("=x\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d / "home"),
           "DOCKER_CONFIG": str(d / "dockercfg"), "DM_FROM_HOST": "host-value",
           "LANG": "C.UTF-8"}
    for k in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        if k in os.environ:
            env[k] = os.environ[k]
    attrs = docker_client.images.get(base_image).attrs
    return {"dir": str(d), "env": env, "image": base_image,
            "platform": f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}"}


def _sdk_client(world):
    import docker

    old = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = world["env"]["DOCKER_CONFIG"]  # no proxy settings merged
    try:
        return docker.from_env()
    finally:
        if old is None:
            os.environ.pop("DOCKER_CONFIG", None)
        else:
            os.environ["DOCKER_CONFIG"] = old


def _cli_create(world, argv, tag):
    r = subprocess.run(["docker", "create", *_label_args(tag), *argv], cwd=world["dir"],
                       env=world["env"], capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return r.stdout.strip().splitlines()[-1], None
    return None, (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}")


def _sdk_create(client, spec, tag):
    from docker.models.containers import _create_container_args

    kw = spec.to_create_kwargs()
    kw["labels"] = dict(kw.get("labels") or {}, **LABELS, **{"dockmagic.case": tag})
    if kw.get("name"):
        kw["name"] += "-py"  # the CLI's container already holds the name
    extra = {"MaskedPaths": [], "ReadonlyPaths": []} if spec.systempaths_unconfined else None
    if extra:
        ck = _create_container_args(dict(kw, version=client.api._version))
        ck["host_config"].update(extra)
        return client.api.create_container(**ck)["Id"]
    return client.containers.create(**kw).id


def _cleanup(client):
    try:
        out = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=dockmagic.diffrun={RUN}"],
                             capture_output=True, text=True, timeout=60).stdout.split()
        if out:
            subprocess.run(["docker", "rm", "-fv", *out], capture_output=True, timeout=300)
    finally:
        vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name={NAME}"],
                              capture_output=True, text=True, timeout=60).stdout.split()
        vols = [v for v in vols if v.startswith(NAME)]
        if vols:
            subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True,
                           timeout=120)
        if client is not None:
            client.close()


@pytest.fixture(scope="module")
def diff(tmp_path_factory, base_image, docker_client):
    world = _make_world(tmp_path_factory, base_image, docker_client)
    client = None
    try:
        client = _sdk_client(world)
        results = {"valid": {}, "bad": {}, "world": world}
        jobs = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            for img in (world["image"], ENTRYPOINT_IMAGE):
                jobs[("base", img)] = pool.submit(_cli_create, world, [img], f"cli-base-{img}")
            for n, case in enumerate(VALID):
                text, cli_text = (case, case) if isinstance(case, str) else case
                argv, cli_argv = _fill(text, world), _fill(cli_text, world)
                entry = {"argv": argv}
                try:
                    spec = T.parse_run_args(argv, cwd=world["dir"], environ=world["env"])
                except T.TranslateError as exc:
                    entry["error"] = f"parse_run_args refused a valid case: {exc}"
                    results["valid"][n] = entry
                    continue
                entry["spec"] = spec
                if spec.detach:
                    cli_argv = _without_detach(cli_argv)
                jobs[("cli", n)] = pool.submit(_cli_create, world, cli_argv, f"cli{n}")
                results["valid"][n] = entry
            for n, case in enumerate(BAD):
                jobs[("bad", n)] = pool.submit(_cli_create, world, _fill(case, world, False),
                                               f"bad{n}")
            # the SDK side, meanwhile, in this thread
            base_py = {img: client.containers.create(img, labels=dict(
                LABELS, **{"dockmagic.case": f"py-base-{img}"})).id
                for img in (world["image"], ENTRYPOINT_IMAGE)}
            for n, entry in results["valid"].items():
                if "spec" in entry:
                    try:
                        entry["py"] = _sdk_create(client, entry["spec"], f"py{n}")
                    except Exception as exc:  # reported by the case's test
                        entry["error"] = f"containers.create failed: {type(exc).__name__}: {exc}"
            outcomes = {key: fut.result() for key, fut in jobs.items()}
        base_cli = {img: outcomes[("base", img)][0] for img in (world["image"], ENTRYPOINT_IMAGE)}
        for n, entry in results["valid"].items():
            if ("cli", n) in outcomes:
                entry["cli"], err = outcomes[("cli", n)]
                if err:
                    entry.setdefault("error", f"the CLI refused it: {err}")
        for n in range(len(BAD)):
            results["bad"][n] = outcomes[("bad", n)]
        ids = [i for i in list(base_cli.values()) + list(base_py.values()) if i]
        for entry in results["valid"].values():
            ids += [entry[k] for k in ("cli", "py") if entry.get(k)]
        inspected = {}
        if ids:
            out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                 timeout=300, check=True).stdout
            inspected = {c["Id"]: c for c in json.loads(out)}
        results["inspect"] = inspected
        results["base_cli"], results["base_py"] = base_cli, base_py
        yield results
    finally:
        _cleanup(client)


# ---- comparison (docs/docker-run-semantics.md section 6) ------------------------------------

_MAPS = ("Options", "Labels")


def _norm(value):
    """Inside structs, null / [] / {} / "" are the same: drop them (maps keep their entries)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = dict(v) if k in _MAPS and isinstance(v, dict) else _norm(v)
            if v not in (None, "", [], {}):
                out[k] = v
        return out
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _caps(values):
    return sorted({T._canonical_caps([v])[0] for v in values or []}) or None


def _effective_env(env):
    out = {}
    for e in env or []:
        k, eq, v = e.partition("=")
        out[k] = v if eq else None
    return out


def _fields(obj, detach=False):
    cfg, hc = dict(obj["Config"]), dict(obj["HostConfig"])
    if cfg.get("Hostname") == obj["Id"][:12]:
        cfg["Hostname"] = "<own id>"
    cfg["Image"] = obj["Image"]
    labels = dict(cfg.get("Labels") or {})
    labels.pop("dockmagic.case", None)
    cfg["Labels"] = labels
    if detach:  # what `docker run -d` clears
        for k in ("AttachStdin", "AttachStdout", "AttachStderr", "StdinOnce"):
            cfg[k] = False
    binds, mounts = hc.pop("Binds", None) or [], hc.pop("Mounts", None) or []
    volumes = cfg.pop("Volumes", None) or {}
    anon, bindset, mountset = set(), [], []
    for b in binds:
        parts = b.split(":")
        if len(parts) == 1:
            anon.add(b)
            continue
        opts = sorted(set(parts[2].split(",")) - {"rw"}) if len(parts) > 2 else []
        bindset.append(":".join(parts[:2] + ([",".join(opts)] if opts else [])))
    for m in mounts:
        nm = _norm(m)
        if nm.get("Type") == "volume" and set(nm) <= {"Type", "Target"}:
            anon.add(nm["Target"])
        else:
            mountset.append(json.dumps(nm, sort_keys=True))
    targets = {b.split(":")[1] for b in binds if ":" in b} | {m.get("Target") for m in mounts}
    anon |= {v for v in volumes if v not in targets}
    fields = {"Config." + k: v for k, v in cfg.items()}
    fields.update({"HostConfig." + k: v for k, v in hc.items()})
    fields.update({"_binds": sorted(bindset), "_mounts": sorted(mountset),
                   "_anonymous_volumes": sorted(anon), "_name": obj["Name"]})
    if hc.get("NetworkMode") == "host":
        for k in ("HostConfig.PortBindings", "Config.ExposedPorts"):
            fields.pop(k, None)
    return fields


def _canon(key, value):
    if key == "Config.Env":
        return _effective_env(value)
    if key in ("HostConfig.CapAdd", "HostConfig.CapDrop"):
        return _caps(value)
    if key in ("HostConfig.GroupAdd", "HostConfig.SecurityOpt"):
        return sorted(value) if value else None
    if key in ("HostConfig.Devices", "HostConfig.DeviceRequests", "HostConfig.Ulimits"):
        return sorted(json.dumps(_norm(x), sort_keys=True) for x in value) if value else None
    if key == "HostConfig.PortBindings":
        return {k: sorted(json.dumps(_norm(b), sort_keys=True) for b in v or [])
                for k, v in value.items()} if value else None
    if key == "Config.ExposedPorts":
        return sorted(value) if value else None
    if key == "HostConfig.RestartPolicy":
        value = dict(value or {})
        if value.get("Name") == "no":
            value["Name"] = ""
        return _norm(value)
    if key == "_name":
        return value[:-3] if value.endswith("-py") else value
    return value


def _differences(cli, py, cli_base, py_base):
    diffs = []
    for key in sorted(set(cli) | set(py) | set(cli_base) | set(py_base)):
        if key == "_name":
            continue
        changed = cli.get(key) != cli_base.get(key) or py.get(key) != py_base.get(key)
        if changed and _canon(key, cli.get(key)) != _canon(key, py.get(key)):
            diffs.append(f"{key}: CLI {cli.get(key)!r} != SDK {py.get(key)!r}")
    return diffs


@pytest.mark.parametrize("n", range(len(VALID)), ids=[_case_id(c) for c in VALID])
def test_same_container_as_the_cli(diff, n):
    entry = diff["valid"][n]
    assert "error" not in entry, entry["error"]
    spec, ins = entry["spec"], diff["inspect"]
    image = ENTRYPOINT_IMAGE if ENTRYPOINT_IMAGE in entry["argv"] else diff["world"]["image"]
    cli = _fields(ins[entry["cli"]], detach=spec.detach)
    py = _fields(ins[entry["py"]])
    cli_base = _fields(ins[diff["base_cli"][image]])
    py_base = _fields(ins[diff["base_py"][image]])
    diffs = _differences(cli, py, cli_base, py_base)
    if spec.name:
        assert _canon("_name", py["_name"]) == cli["_name"] == "/" + spec.name
    assert not diffs, "\n".join([shlex.join(entry["argv"])] + diffs)
    # and the spec survives its own CLI form
    assert T.parse_run_args(spec.to_cli(), cwd=diff["world"]["dir"],
                            environ=diff["world"]["env"]) == spec


@pytest.mark.parametrize("n", range(len(BAD)), ids=[_case_id(c) for c in BAD])
def test_refused_like_the_cli(diff, n):
    argv = _fill(BAD[n], diff["world"], False)
    cid, cli_error = diff["bad"][n]
    assert cid is None, f"the CLI accepted {shlex.join(argv)}"
    with pytest.raises(T.TranslateError) as err:
        T.parse_run_args(argv, cwd=diff["world"]["dir"], environ=diff["world"]["env"])
    assert "\n" not in str(err.value) and "internal error" not in str(err.value)


def test_case_counts():
    assert len(VALID) >= 150 and len(BAD) >= 40
