"""The frozen ``RunSpec`` and its parts, and their way out: docker SDK kwargs
(``to_create_kwargs``) and CLI argv (``to_cli``, ``format_cli``)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import TranslateError
from .gocompat import _csv_join
from .quantities import _format_cpus
from .volumes import _volumes_kwarg


@dataclass(frozen=True)
class GpuRequest:
    """One ``--gpus`` value = one Engine API DeviceRequest. Build it with ``parse_gpus``."""
    driver: str = ""
    count: int = 0
    device_ids: Tuple[str, ...] = ()
    capabilities: Tuple[Tuple[str, ...], ...] = (("gpu",),)
    options: Tuple[Tuple[str, str], ...] = ()

    def to_api(self) -> dict:
        return {"Driver": self.driver, "Count": self.count, "DeviceIDs": list(self.device_ids),
                "Capabilities": [list(c) for c in self.capabilities],
                "Options": dict(self.options)}

    def to_cli(self) -> str:
        """The ``--gpus`` value that parses back to this request."""
        fields = []
        default_count = 0 if self.device_ids else 1
        if self.count != default_count:
            fields.append("all" if self.count == -1 else str(self.count))
        if self.device_ids:
            fields.append("device=" + ",".join(self.device_ids))
        if self.driver:
            fields.append("driver=" + self.driver)
        caps = self.capabilities
        if caps != (("gpu",),):
            if len(caps) != 1 or not caps[0] or caps[0][-1] != "gpu":
                raise TranslateError(f"--gpus cannot express capabilities {caps!r}: the CLI form "
                                     f"is one list that ends with 'gpu'")
            fields.append("capabilities=" + ",".join(caps[0][:-1]))
        if self.options:
            fields.append("options=" + _csv_join(f"{k}={v}" for k, v in self.options))
        return _csv_join(fields) if fields else "1"


@dataclass(frozen=True)
class Mount:
    """One ``--mount`` value (HostConfig.Mounts entry), canonical: keys lower-cased, source
    resolved, zero values meaning "not set"."""
    type: str = "volume"
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_propagation: str = ""
    bind_nonrecursive: bool = False
    bind_readonly_nonrecursive: bool = False
    volume_nocopy: bool = False
    volume_labels: Tuple[Tuple[str, str], ...] = ()
    volume_driver: str = ""
    volume_options: Tuple[Tuple[str, str], ...] = ()
    volume_subpath: str = ""
    image_subpath: str = ""
    tmpfs_size: int = 0
    tmpfs_mode: int = 0

    def to_api(self) -> dict:
        out = {"Type": self.type, "Target": self.target}
        if self.source:
            out["Source"] = self.source
        if self.read_only:
            out["ReadOnly"] = True
        if self.consistency:
            out["Consistency"] = self.consistency
        bind = {}
        if self.bind_propagation:
            bind["Propagation"] = self.bind_propagation
        if self.bind_nonrecursive:
            bind["NonRecursive"] = True
        if self.bind_readonly_nonrecursive:
            bind["ReadOnlyNonRecursive"] = True
        if bind:
            out["BindOptions"] = bind
        vol = {}
        if self.volume_nocopy:
            vol["NoCopy"] = True
        if self.volume_labels:
            vol["Labels"] = dict(self.volume_labels)
        driver = {}
        if self.volume_driver:
            driver["Name"] = self.volume_driver
        if self.volume_options:
            driver["Options"] = dict(self.volume_options)
        if driver:
            vol["DriverConfig"] = driver
        if self.volume_subpath:
            vol["Subpath"] = self.volume_subpath
        if vol:
            out["VolumeOptions"] = vol
        if self.image_subpath:
            out["ImageOptions"] = {"Subpath": self.image_subpath}
        tmpfs = {}
        if self.tmpfs_size:
            tmpfs["SizeBytes"] = self.tmpfs_size
        if self.tmpfs_mode:
            tmpfs["Mode"] = self.tmpfs_mode
        if tmpfs:
            out["TmpfsOptions"] = tmpfs
        return out

    def to_cli(self) -> str:
        fields = ["type=" + self.type]
        if self.source:
            fields.append("source=" + self.source)
        fields.append("target=" + self.target)
        if self.read_only:
            fields.append("readonly")
        if self.consistency:
            fields.append("consistency=" + self.consistency)
        if self.bind_propagation:
            fields.append("bind-propagation=" + self.bind_propagation)
        if self.bind_nonrecursive:
            fields.append("bind-recursive=disabled")
        if self.bind_readonly_nonrecursive:
            fields.append("bind-recursive=writable")
        if self.volume_nocopy:
            fields.append("volume-nocopy")
        fields += [f"volume-label={k}={v}" for k, v in self.volume_labels]
        if self.volume_driver:
            fields.append("volume-driver=" + self.volume_driver)
        fields += [f"volume-opt={k}={v}" for k, v in self.volume_options]
        if self.volume_subpath:
            fields.append("volume-subpath=" + self.volume_subpath)
        if self.image_subpath:
            fields.append("image-subpath=" + self.image_subpath)
        if self.tmpfs_size:
            fields.append(f"tmpfs-size={self.tmpfs_size}")
        if self.tmpfs_mode:
            fields.append(f"tmpfs-mode={self.tmpfs_mode:o}")
        return _csv_join(fields)


@dataclass(frozen=True)
class DeviceMapping:
    """One ``--device HOST[:CONTAINER][:PERMS]`` (HostConfig.Devices entry)."""
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str = "rwm"

    def to_api(self) -> dict:
        return {"PathOnHost": self.path_on_host, "PathInContainer": self.path_in_container,
                "CgroupPermissions": self.cgroup_permissions}


@dataclass(frozen=True)
class PortBinding:
    """One published port binding from ``-p``: ``container_port`` is "8888/tcp"."""
    container_port: str
    host_ip: str = ""
    host_port: str = ""

    def to_cli(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        if ip:
            return f"{ip}:{self.host_port}:{self.container_port}"
        if self.host_port:
            return f"{self.host_port}:{self.container_port}"
        return self.container_port


@dataclass(frozen=True)
class Ulimit:
    """One ``--ulimit NAME=SOFT[:HARD]``."""
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class RunSpec:
    """What one `docker run` argv asks for, canonical (so equal argv meaning -> equal spec).

    Maps and sets are sorted tuples; "" for a string flag is None (the engine sees no
    difference); sizes are bytes. ``env`` is the effective environment: env-file entries, then
    ``-e`` entries, one per key (last wins, at the key's first position), bare ``KEY`` kept.
    """
    image: str
    command: Optional[Tuple[str, ...]] = None
    entrypoint: Optional[Tuple[str, ...]] = None
    env: Tuple[str, ...] = ()
    labels: Tuple[Tuple[str, str], ...] = ()
    volumes: Tuple[str, ...] = ()
    mounts: Tuple[Mount, ...] = ()
    workdir: Optional[str] = None
    user: Optional[str] = None
    name: Optional[str] = None
    detach: bool = False
    auto_remove: bool = False
    interactive: bool = False
    tty: bool = False
    gpus: Tuple[GpuRequest, ...] = ()
    cdi_devices: Tuple[str, ...] = ()
    devices: Tuple[DeviceMapping, ...] = ()
    shm_size: Optional[int] = None
    ipc_mode: Optional[str] = None
    network_mode: Optional[str] = None
    ports: Tuple[PortBinding, ...] = ()
    publish_all_ports: bool = False
    mem_limit: Optional[int] = None
    memswap_limit: Optional[int] = None
    mem_swappiness: Optional[int] = None
    nano_cpus: Optional[int] = None
    cpuset_cpus: Optional[str] = None
    cap_add: Tuple[str, ...] = ()
    cap_drop: Tuple[str, ...] = ()
    privileged: bool = False
    ulimits: Tuple[Ulimit, ...] = ()
    runtime: Optional[str] = None
    restart_policy: Optional[Tuple[str, int]] = None
    init: Optional[bool] = None
    tmpfs: Tuple[Tuple[str, str], ...] = ()
    extra_hosts: Tuple[str, ...] = ()
    hostname: Optional[str] = None
    read_only: bool = False
    group_add: Tuple[str, ...] = ()
    pids_limit: Optional[int] = None
    security_opt: Tuple[str, ...] = ()
    seccomp_profiles: Tuple[Tuple[str, str], ...] = ()
    systempaths_unconfined: bool = False
    sysctls: Tuple[Tuple[str, str], ...] = ()
    stop_signal: Optional[str] = None
    platform: Optional[str] = None

    # ---- to the docker SDK -------------------------------------------------------------------
    def to_create_kwargs(self) -> dict:
        """Keyword arguments for ``docker.from_env().containers.create(**kwargs)``.

        Plain data only, docker-py keywords only. ``--security-opt systempaths=unconfined``
        (``systempaths_unconfined``) has no keyword: HostConfig ``MaskedPaths: []`` and
        ``ReadonlyPaths: []`` are added by the engine boundary at create. Also: published ports are left out with
        ``--network host`` (docker-py refuses them; the engine ignores them), and anonymous
        volumes become ``mounts`` entries when a ``-v`` spec needs the dict form of ``volumes``.
        """
        kw: Dict[str, object] = {"image": self.image,
                                 "command": list(self.command) if self.command is not None
                                 else None,
                                 "detach": self.detach}
        if self.entrypoint is not None:
            kw["entrypoint"] = list(self.entrypoint)
        if self.env:
            kw["environment"] = list(self.env)
        if self.labels:
            kw["labels"] = dict(self.labels)
        volumes, anon_mounts = _volumes_kwarg(self.volumes)
        if volumes:
            kw["volumes"] = volumes
        mounts = [m.to_api() for m in self.mounts] + anon_mounts
        if mounts:
            kw["mounts"] = mounts
        for key, value in (("working_dir", self.workdir), ("user", self.user),
                           ("name", self.name), ("hostname", self.hostname),
                           ("ipc_mode", self.ipc_mode), ("network_mode", self.network_mode),
                           ("cpuset_cpus", self.cpuset_cpus), ("runtime", self.runtime),
                           ("stop_signal", self.stop_signal), ("platform", self.platform),
                           ("shm_size", self.shm_size), ("mem_limit", self.mem_limit),
                           ("memswap_limit", self.memswap_limit),
                           ("mem_swappiness", self.mem_swappiness),
                           ("nano_cpus", self.nano_cpus), ("pids_limit", self.pids_limit),
                           ("init", self.init)):
            if value is not None:
                kw[key] = value
        for key, flag in (("auto_remove", self.auto_remove), ("stdin_open", self.interactive),
                          ("tty", self.tty), ("privileged", self.privileged),
                          ("read_only", self.read_only),
                          ("publish_all_ports", self.publish_all_ports)):
            if flag:
                kw[key] = True
        requests = [g.to_api() for g in self.gpus]
        if self.cdi_devices:
            requests.append({"Driver": "cdi", "DeviceIDs": list(self.cdi_devices)})
        if requests:
            kw["device_requests"] = requests
        if self.devices:
            kw["devices"] = [d.to_api() for d in self.devices]
        if self.ports and self.network_mode != "host":
            ports: Dict[str, list] = {}
            for p in self.ports:
                ports.setdefault(p.container_port, []).append(
                    {"HostIp": p.host_ip, "HostPort": p.host_port})
            kw["ports"] = ports
        if self.cap_add:
            kw["cap_add"] = list(self.cap_add)
        if self.cap_drop:
            kw["cap_drop"] = list(self.cap_drop)
        if self.ulimits:
            kw["ulimits"] = [{"Name": u.name, "Soft": u.soft, "Hard": u.hard}
                             for u in self.ulimits]
        if self.restart_policy is not None:
            kw["restart_policy"] = {"Name": self.restart_policy[0],
                                    "MaximumRetryCount": self.restart_policy[1]}
        if self.tmpfs:
            kw["tmpfs"] = dict(self.tmpfs)
        if self.extra_hosts:
            kw["extra_hosts"] = list(self.extra_hosts)
        if self.group_add:
            kw["group_add"] = list(self.group_add)
        if self.security_opt:
            profiles = dict(self.seccomp_profiles)
            kw["security_opt"] = [("seccomp=" + profiles[o[8:]]) if o[8:] in profiles
                                  and o.startswith("seccomp=") else o
                                  for o in self.security_opt]
        if self.sysctls:
            kw["sysctls"] = dict(self.sysctls)
        return kw

    # ---- back to the CLI ---------------------------------------------------------------------
    def to_cli(self) -> List[str]:
        """The argv after ``docker run`` that parses back to this spec.

        A bare ``-e KEY`` (unset KEY) comes back as itself only where KEY is unset in the parsing
        environment, exactly as with the real CLI.
        """
        a: List[str] = []
        flags = ((self.detach, "-d"), (self.interactive, "-i"), (self.tty, "-t"),
                 (self.auto_remove, "--rm"), (self.privileged, "--privileged"),
                 (self.read_only, "--read-only"), (self.publish_all_ports, "-P"))
        a += [f for on, f in flags if on]
        if self.init is not None:
            a.append("--init" if self.init else "--init=false")
        for value, flag in ((self.name, "--name"), (self.hostname, "-h"), (self.user, "-u"),
                            (self.workdir, "-w"), (self.network_mode, "--network"),
                            (self.ipc_mode, "--ipc"), (self.runtime, "--runtime"),
                            (self.platform, "--platform"), (self.stop_signal, "--stop-signal"),
                            (self.cpuset_cpus, "--cpuset-cpus")):
            if value is not None:
                a += [flag, value]
        for value, flag in ((self.shm_size, "--shm-size"), (self.mem_limit, "-m"),
                            (self.memswap_limit, "--memory-swap"),
                            (self.mem_swappiness, "--memory-swappiness"),
                            (self.pids_limit, "--pids-limit")):
            if value is not None:
                a += [flag, str(value)]
        if self.nano_cpus is not None:
            a += ["--cpus", _format_cpus(self.nano_cpus)]
        if self.restart_policy is not None:
            name, count = self.restart_policy
            a += ["--restart", f"{name}:{count}" if count else name]
        for g in self.gpus:
            a += ["--gpus", g.to_cli()]
        for d in self.devices:
            a += ["--device", f"{d.path_on_host}:{d.path_in_container}:{d.cgroup_permissions}"]
        for c in self.cdi_devices:
            a += ["--device", c]
        for v in self.volumes:
            a += ["-v", v]
        for m in self.mounts:
            a += ["--mount", m.to_cli()]
        for path, opts in self.tmpfs:
            a += ["--tmpfs", f"{path}:{opts}" if opts else path]
        for p in self.ports:
            a += ["-p", p.to_cli()]
        for e in self.env:
            a += ["-e", e]
        for k, v in self.labels:
            a += ["-l", f"{k}={v}"]
        for c in self.cap_add:
            a += ["--cap-add", c]
        for c in self.cap_drop:
            a += ["--cap-drop", c]
        for u in self.ulimits:
            a += ["--ulimit", f"{u.name}={u.soft}:{u.hard}"]
        for h in self.extra_hosts:
            a += ["--add-host", h]
        for g in self.group_add:
            a += ["--group-add", g]
        for o in self.security_opt:
            a += ["--security-opt", o]
        if self.systempaths_unconfined:
            a += ["--security-opt", "systempaths=unconfined"]
        for k, v in self.sysctls:
            a += ["--sysctl", f"{k}={v}"]
        if self.entrypoint is not None:
            ep = self.entrypoint[0] if self.entrypoint else ""
            a += ["--entrypoint", ep] if ep else ["--entrypoint="]
        a.append(self.image)
        a += list(self.command or ())
        return a


def format_cli(spec: RunSpec) -> str:
    """``docker run ...`` for display (``--dry-run``), shell-quoted."""
    return "docker run " + shlex.join(spec.to_cli())
