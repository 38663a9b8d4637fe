"""`docker run` argv <-> frozen `RunSpec` <-> docker SDK kwargs / CLI argv.

Pure and stdlib only: no docker, IPython or NVML import. The only I/O is reading the files a
flag names (``--env-file``, ``--label-file``, ``--security-opt seccomp=FILE``).

The real ``docker run`` CLI (v28) is the oracle: every flag below parses the way the CLI parses it
(pflag rules: grouped short flags, ``--f=v`` / ``--f v``, Go bool literals, Go integer prefixes,
``--``, everything after IMAGE is the command) and produces the container configuration the CLI
would send. ``tests/test_translate_cli_diff.py`` checks that against the real CLI and engine.

Supported flags: ``--gpus``, ``-v/--volume``, ``--mount``, ``-e/--env``, ``--env-file``,
``-w/--workdir``, ``-u/--user``, ``--entrypoint``, ``--name``, ``-l/--label``, ``--label-file``,
``--rm``, ``-d/--detach``, ``-i/--interactive``, ``-t/--tty``, ``--shm-size``, ``--ipc``,
``--network/--net``, ``-p/--publish``, ``-P/--publish-all``, ``-m/--memory``, ``--memory-swap``,
``--memory-swappiness``, ``--cpus``, ``--cpuset-cpus``, ``--device`` (paths and CDI names),
``--cap-add``, ``--cap-drop``, ``--privileged``, ``--ulimit``, ``--runtime``, ``--restart``,
``--init``, ``--tmpfs``, ``--add-host``, ``-h/--hostname``, ``--read-only``, ``--group-add``,
``--pids-limit``, ``--security-opt``, ``--sysctl``, ``--stop-signal``, ``--platform``.
Any other flag ``docker run`` knows raises ``TranslateError`` ("... is not supported by
dockmagic"); a flag docker does not know raises "unknown flag". Nothing is dropped silently.

Deliberate departures from the CLI (all of them):

* ``--gpus device=0,1`` (unquoted) means devices 0 and 1, like the quoted ``'"device=0,1"'``.
  The CLI reads it as DeviceIDs ["0"] plus Count 1, which the daemon refuses at start.
* Inputs the CLI accepts but mangles are refused with a message instead: a second CSV record in a
  ``--gpus``/``--mount`` value (the CLI ignores everything after a newline), a ``-v`` source of one
  letter (the CLI reads ``a:/data`` as a Windows drive path), a relative anonymous volume
  (``-v data``), sizes or ``--cpus`` beyond int64 (the CLI wraps them around), a CDI name with a
  one-letter vendor or class (the CLI panics), ``-test.*`` (the CLI ignores it),
  ``--mount ...,bind-recursive=readonly`` (needs API 1.44), and ``--network`` options other than
  the name or a second ``--network`` (``containers.create`` cannot carry them; an API 1.41 engine
  refuses the second network anyway).
* ``-v`` specs are de-duplicated after ``./`` is resolved (the CLI de-duplicates before, and the
  engine then refuses the duplicate mount point).
"""
from __future__ import annotations

import ipaddress
import json
import math
import ntpath
import os
import re
import shlex
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, List, Mapping, Optional, Tuple, Union

__all__ = [
    "TranslateError", "GpuRequest", "Mount", "DeviceMapping", "PortBinding", "Ulimit", "RunSpec",
    "parse_run_args", "parse_gpus", "parse_size", "split_run_args", "format_cli",
]

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)


class TranslateError(ValueError):
    """A `docker run` argv dockmagic cannot translate: one line naming the flag and the fix."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

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

        Plain data only. One key is not a docker-py keyword: ``"_host_config_extra"`` (present
        only for ``--security-opt systempaths=unconfined``) holds HostConfig fields docker-py cannot
        express (``MaskedPaths: []``, ``ReadonlyPaths: []``); a caller pops it and, when present,
        creates through the low-level API: ``ck = docker.models.containers._create_container_args(
        {**kwargs, "version": client.api._version}); ck["host_config"].update(extra);
        client.api.create_container(**ck)``. Also: published ports are left out with
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
        if self.systempaths_unconfined:
            kw["_host_config_extra"] = {"MaskedPaths": [], "ReadonlyPaths": []}
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


# --------------------------------------------------------------------------------------------
# Go-compatible primitives (strconv, encoding/csv, path, net.ParseIP, go-units)
# --------------------------------------------------------------------------------------------

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _go_bool(text: str, what: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise TranslateError(f"{what}: {text!r} is not a boolean (use true or false)")


def _underscore_ok(s: str) -> bool:
    """Go strconv's rule: underscores only between digits (a base prefix counts as a digit)."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _go_parse_int(text: str, base: int = 0, bits: int = 64) -> int:
    """strconv.ParseInt(text, base, bits); ValueError on bad syntax or range."""
    s = text
    if not s:
        raise ValueError("invalid syntax")
    neg = s[0] == "-"
    if s[0] in "+-":
        s = s[1:]
        if not s:
            raise ValueError("invalid syntax")
    base0 = base == 0
    if base0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() == "b":
                base, s = 2, s[2:]
            elif len(s) >= 3 and s[1].lower() == "o":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1].lower() == "x":
                base, s = 16, s[2:]
            else:
                base, s = 8, s[1:]
    digits = []
    underscores = False
    for c in s:
        if c == "_" and base0:
            underscores = True
            continue
        if c not in _DIGITS[base]:
            raise ValueError("invalid syntax")
        digits.append(c)
    if underscores and not _underscore_ok(text):
        raise ValueError("invalid syntax")
    value = int("".join(digits), base) if digits else 0
    if neg:
        value = -value
    if not -(2 ** (bits - 1)) <= value <= 2 ** (bits - 1) - 1:
        raise ValueError("value out of range")
    return value


def _go_atoi(text: str) -> int:
    """strconv.Atoi: optional sign, decimal digits only."""
    if not re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII):
        raise ValueError("invalid syntax")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("value out of range")
    return value


_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9_]+(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][+-]?[0-9_]+)?", re.ASCII)
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+(?:\.[0-9a-fA-F_]*)?|\.[0-9a-fA-F_]+)"
                        r"[pP][+-]?[0-9_]+", re.ASCII)


def _go_float_text(text: str) -> Tuple[str, bool]:
    """Check strconv.ParseFloat's syntax; returns (text without underscores, is_hex)."""
    if _DEC_FLOAT.fullmatch(text):
        hexa = False
    elif _HEX_FLOAT.fullmatch(text):
        hexa = True
    else:
        raise ValueError("invalid syntax")
    if "_" in text and not _underscore_ok(text):
        raise ValueError("invalid syntax")
    return text.replace("_", ""), hexa


def _go_parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): same syntax, same (correctly rounded) value."""
    clean, hexa = _go_float_text(text)
    try:
        value = float.fromhex(clean) if hexa else float(clean)
    except OverflowError:
        raise ValueError("value out of range") from None
    if math.isinf(value):
        raise ValueError("value out of range")
    return value


def _go_parse_rat(text: str) -> Fraction:
    """The decimal / hex-float forms of big.Rat.SetString, exactly."""
    clean, hexa = _go_float_text(text)
    if not hexa:
        mant, _, exp = clean.lower().partition("e")
        if exp and abs(int(exp)) > 4000:
            raise ValueError("value out of range")
        return Fraction(clean)
    sign = -1 if clean[0] == "-" else 1
    body = clean.lstrip("+-")[2:]
    mant, _, exp = re.split(r"([pP])", body, maxsplit=1)
    whole, _, frac = mant.partition(".")
    value = Fraction(int(whole or "0", 16)) + (Fraction(int(frac, 16), 16 ** len(frac))
                                               if frac else 0)
    e = int(exp)
    if abs(e) > 5000:
        raise ValueError("value out of range")
    return sign * value * Fraction(2) ** e


_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """go-units ``RAMInBytes`` (``--shm-size``, ``-m``, ``tmpfs-size``): binary multiples,
    ``8g`` = ``8G`` = ``8gb`` = ``8GiB`` = 8589934592, fractions truncated. TranslateError
    (without a flag name) when invalid."""
    if not isinstance(text, str):
        raise TranslateError(f"invalid size {text!r}: give a string like 8g")
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep == -1:
        raise TranslateError(f"invalid size {text!r}: give a number with an optional unit "
                             f"b, k, m, g, t or p (e.g. 8g)")
    if text[sep] != " ":
        num, sfx = text[:sep + 1], text[sep + 1:]
    else:
        num, sfx = text[:sep], text[sep + 1:]
    try:
        size = _go_parse_float(num)
    except ValueError:
        raise TranslateError(f"invalid size {text!r}: {num!r} is not a number") from None
    if size < 0:
        raise TranslateError(f"invalid size {text!r}: sizes cannot be negative")
    if sfx:
        low = sfx.lower()
        ok = len(sfx) <= 3 and (low == "b" or (low[0] in _SIZE_UNITS and (
            len(low) == 1 or (len(low) == 2 and low[1] == "b") or (len(low) == 3 and
                                                                   low[1:] == "ib"))))
        if not ok:
            raise TranslateError(f"invalid size {text!r}: unknown unit {sfx!r} "
                                 f"(use b, k, m, g, t or p, optionally followed by b or ib)")
        if low[0] != "b":
            size *= _SIZE_UNITS[low[0]]
    if size >= 2.0 ** 63:
        raise TranslateError(f"invalid size {text!r}: too large")
    return int(size)  # truncates toward zero, like Go's int64(float64)


def _parse_cpus(text: str) -> int:
    """``--cpus``: an exact rational (``1.5``, ``.25``, ``1/2``, ``1e-1``) -> nano CPUs."""
    def rat_int(s: str, signed: bool) -> int:
        if not signed and s[:1] in "+-":
            raise ValueError
        return _go_parse_int(s, 0, 4096)

    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = Fraction(rat_int(num, True), rat_int(den, False))
        elif re.fullmatch(r"[+-]?0[bBoO][0-7_]+|[+-]?0[xX][0-9a-fA-F_]+", text, re.ASCII):
            value = Fraction(_go_parse_int(text, 0, 4096))
        else:
            value = _go_parse_rat(text)
    except (ValueError, ZeroDivisionError):
        raise TranslateError(f"--cpus {text!r}: not a number of CPUs (e.g. 1.5 or 0.25)"
                             ) from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise TranslateError(f"--cpus {text!r}: too precise (the unit is 1e-9 CPU)")
    if not INT64_MIN <= nano.numerator <= INT64_MAX:
        raise TranslateError(f"--cpus {text!r}: out of range")
    return nano.numerator


def _format_cpus(nano: int) -> str:
    whole, rest = divmod(abs(nano), 1_000_000_000)
    text = str(whole) + (("." + f"{rest:09d}".rstrip("0")) if rest else "")
    return ("-" if nano < 0 else "") + text


def _csv_record(text: str, what: str) -> List[Tuple[str, bool]]:
    """Go ``encoding/csv`` ``Reader.Read`` of ONE record: [(field, was_quoted)]. A second record
    (text after a newline) is refused instead of being ignored as the CLI does."""
    raw = text.split("\n")
    lines = [x + "\n" for x in raw[:-1]] + ([raw[-1]] if raw[-1] else [])
    pos = 0

    def read_line() -> Optional[str]:
        nonlocal pos
        if pos >= len(lines):
            return None
        line = lines[pos]
        pos += 1
        if not line.endswith("\n"):
            if line.endswith("\r"):
                line = line[:-1]
        elif line.endswith("\r\n"):
            line = line[:-2] + "\n"
        return line

    line = read_line()
    while line == "\n":
        line = read_line()
    if line is None:
        raise TranslateError(f"{what}: the value is empty")
    fields: List[Tuple[str, bool]] = []
    while True:
        if not line.startswith('"'):
            i = line.find(",")
            fld = line[:i] if i >= 0 else (line[:-1] if line.endswith("\n") else line)
            if '"' in fld:
                raise TranslateError(f'{what}: a " inside an unquoted field ({fld!r}); quote the '
                                     f'whole field: "key=a,b"')
            fields.append((fld, False))
            if i >= 0:
                line = line[i + 1:]
                continue
            break
        buf: List[str] = []
        line = line[1:]
        done = False
        while True:
            i = line.find('"')
            if i >= 0:
                buf.append(line[:i])
                line = line[i + 1:]
                if line.startswith('"'):
                    buf.append('"')
                    line = line[1:]
                elif line.startswith(","):
                    line = line[1:]
                    break
                elif line in ("", "\n"):
                    done = True
                    break
                else:
                    raise TranslateError(f'{what}: extraneous or missing " in a quoted field')
            elif line:
                buf.append(line)
                nxt = read_line()
                line = "" if nxt is None else nxt
            else:
                raise TranslateError(f'{what}: a quoted field is not closed (missing ")')
        fields.append(("".join(buf), True))
        if done:
            break
    if any(x.strip("\r\n") for x in lines[pos:]):
        raise TranslateError(f"{what}: the value holds a newline; give one value per flag")
    return fields


def _csv_join(fields) -> str:
    """Write fields as one CSV record that Go's reader reads back unchanged."""
    out = []
    for f in fields:
        if any(c in f for c in ',"\r\n') or f == "":
            f = '"' + f.replace('"', '""') + '"'
        out.append(f)
    return ",".join(out)


def _clean(p: str) -> str:
    """Go ``path.Clean``."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: List[str] = []
    for comp in p.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    out = "/".join(parts)
    return "/" + out if rooted else (out or ".")


def _abs(p: str, cwd: str) -> str:
    """Go ``filepath.Abs`` against ``cwd``."""
    return _clean(p) if p.startswith("/") else _clean(cwd + "/" + p)


def _is_ip(text: str) -> bool:
    """Go ``net.ParseIP``: dotted-quad IPv4 without leading zeros, or IPv6 without a zone."""
    if not text or not re.fullmatch(r"[0-9A-Fa-f:.]+", text, re.ASCII):
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _go_lstrip_space(s: str) -> str:
    i = 0
    while i < len(s) and (s[i] in "\t\n\v\f\r \x85\xa0" or (
            s[i] > "\xff" and unicodedata.category(s[i]) in ("Zs", "Zl", "Zp"))):
        i += 1
    return s[i:]


def _go_upper(s: str) -> str:
    """Go ``strings.ToUpper`` (simple case mapping: one rune to one rune)."""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)


# --------------------------------------------------------------------------------------------
# Per-flag parsers
# --------------------------------------------------------------------------------------------

def _gpu_count(text: str, value: str) -> int:
    if text == "all":
        return -1
    try:
        return _go_atoi(text)
    except ValueError:
        raise TranslateError(f"--gpus {value!r}: invalid count {text!r}; give all, a number, "
                             f"device=IDS, count=, driver=, capabilities= or options=") from None


def parse_gpus(value: str) -> GpuRequest:
    """Parse one ``--gpus`` value exactly as the CLI does (a CSV record of ``key=value`` fields
    and a bare count), with one departure: unquoted ``device=0,1`` means devices 0 and 1 (the CLI
    would read device 0 plus count 1). Examples: ``all``, ``2``, ``device=0,1``,
    ``'"device=GPU-3a2..."'``, ``all,capabilities=utility``, ``count=2,driver=nvidia``."""
    if not isinstance(value, str):
        raise TranslateError(f"--gpus {value!r}: give a string such as all, 2 or device=0,1")
    what = f"--gpus {value!r}"
    fields = _csv_record(value, what)
    seen = set()
    driver, count = "", None
    device_ids: Optional[List[str]] = None
    caps: Optional[Tuple[Tuple[str, ...], ...]] = None
    options: Optional[Dict[str, str]] = None
    i = 0
    while i < len(fields):
        fld, quoted = fields[i]
        i += 1
        key, eq, val = fld.partition("=")
        if key in seen:
            raise TranslateError(f"{what}: {key!r} can be given only once")
        seen.add(key)
        if not eq:
            seen.add("count")
            count = _gpu_count(key, value)
        elif key == "driver":
            driver = val
        elif key == "count":
            count = _gpu_count(val, value)
        elif key == "device":
            device_ids = val.split(",")
            if not quoted:  # the departure: device=0,1 -> both devices
                while i < len(fields) and fields[i][0] and "=" not in fields[i][0]:
                    device_ids.append(fields[i][0])
                    i += 1
        elif key == "capabilities":
            caps = (tuple(val.split(",")) + ("gpu",),)
        elif key == "options":
            opts = _csv_record(val, f"{what}: options")
            options = {}
            for o, _q in opts:
                k, _, v = o.partition("=")
                options[k] = v
        else:
            raise TranslateError(f"{what}: unknown key {key!r} (keys: count, device, driver, "
                                 f"capabilities, options)")
    if count is None:
        count = 0 if device_ids is not None else 1
    return GpuRequest(driver=driver, count=count, device_ids=tuple(device_ids or ()),
                      capabilities=caps if caps is not None else (("gpu",),),
                      options=tuple(sorted((options or {}).items())))


def _is_windows_drive(buffer: List[str], char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer[0].isalpha()


def _split_volume(spec: str) -> Tuple[str, str, str]:
    """compose ``ParseVolume`` as the CLI uses it for ``-v``: (source, target, options)."""
    if not spec:
        raise TranslateError("-v '': empty volume spec; give SOURCE:TARGET[:OPTIONS] or a path")
    if len(spec.encode("utf-8", "surrogatepass")) <= 2:
        return "", spec, ""
    fields: List[str] = []
    buffer: List[str] = []
    for char in spec + "\0":
        if _is_windows_drive(buffer, char):
            buffer.append(char)
        elif char in (":", "\0"):
            if not buffer:
                raise TranslateError(f"-v {spec!r}: empty section between colons")
            if len(fields) == 2 and char == ":":
                raise TranslateError(f"-v {spec!r}: too many colons; give "
                                     f"SOURCE:TARGET[:OPTIONS]")
            fields.append("".join(buffer))
            buffer = []
        else:
            buffer.append(char)
    if len(fields) == 1:
        return "", fields[0], ""
    return fields[0], fields[1], fields[2] if len(fields) == 3 else ""


def _parse_volume(spec: str, cwd: str) -> str:
    """``-v/--volume``: the spec with a ``.``-relative source made absolute (as the CLI does)."""
    source, target, _opts = _split_volume(spec)
    if not source:
        if ":" in target and len(spec.encode("utf-8", "surrogatepass")) > 2:
            raise TranslateError(f"-v {spec!r}: docker reads a one-letter source as a Windows "
                                 f"drive; use a longer volume name or a path")
        if not target.startswith("/"):
            raise TranslateError(f"-v {spec!r}: an anonymous volume needs an absolute "
                                 f"container path (e.g. -v /data)")
        return spec
    if len(source) > 1 and source[1] == ":" and source[0].isalpha():
        raise TranslateError(f"-v {spec!r}: docker reads a one-letter source as a Windows drive; "
                             f"use a longer volume name or a path")
    if source.startswith("."):
        host = _abs(source, cwd)
        if ":" in host:
            raise TranslateError(f"-v {spec!r}: the resolved host path {host!r} contains ':', "
                                 f"which -v cannot carry; use --mount")
        return host + spec[len(source):]
    return spec


_MOUNT_BOOL_KEYS = ("readonly", "ro", "volume-nocopy", "bind-nonrecursive")


def _parse_mount(value: str, cwd: str) -> Mount:
    """``--mount``: one CSV record of key=value fields (keys case-insensitive)."""
    what = f"--mount {value!r}"
    fields = _csv_record(value, what)
    m: Dict[str, object] = {"type": "volume"}
    has_bind = has_vol = has_tmpfs = has_image = readonly_recursive = False
    labels: Dict[str, str] = {}
    vopts: Dict[str, str] = {}
    for fld, _quoted in fields:
        key, eq, val = fld.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["read_only"] = True
            elif key == "volume-nocopy":
                m["volume_nocopy"], has_vol = True, True
            elif key == "bind-nonrecursive":
                m["bind_nonrecursive"], has_bind = True, True
            else:
                raise TranslateError(f"{what}: field {fld!r} must be key=value")
            continue
        if key == "type":
            m["type"] = val.lower()
        elif key in ("source", "src"):
            m["source"] = _abs(val, cwd) if val.startswith(".") else val
        elif key in ("target", "dst", "destination"):
            m["target"] = val
        elif key in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
            try:
                flag = _go_bool(val, key)
            except TranslateError:
                raise TranslateError(f"{what}: invalid value for {key}: {val!r} "
                                     f"(use true or false)") from None
            if key in ("readonly", "ro"):
                m["read_only"] = flag
            elif key == "volume-nocopy":
                m["volume_nocopy"], has_vol = flag, True
            else:
                m["bind_nonrecursive"], has_bind = flag, True
        elif key == "consistency":
            m["consistency"] = val.lower()
        elif key == "bind-propagation":
            m["bind_propagation"], has_bind = val.lower(), True
        elif key == "bind-recursive":
            if val == "enabled":
                pass
            elif val == "disabled":
                m["bind_nonrecursive"], has_bind = True, True
            elif val == "writable":
                m["bind_readonly_nonrecursive"], has_bind = True, True
            elif val == "readonly":
                readonly_recursive, has_bind = True, True
            else:
                raise TranslateError(f"{what}: invalid value for bind-recursive: {val!r} (use "
                                     f"enabled, disabled, writable or readonly)")
        elif key == "volume-subpath":
            m["volume_subpath"], has_vol = val, True
        elif key == "volume-label":
            k, _, v = val.partition("=")
            if k:
                labels[k] = v
            has_vol = True
        elif key == "volume-driver":
            m["volume_driver"], has_vol = val, True
        elif key == "volume-opt":
            k, _, v = val.partition("=")
            if k:
                vopts[k] = v
            has_vol = True
        elif key == "image-subpath":
            m["image_subpath"], has_image = val, True
        elif key == "tmpfs-size":
            try:
                m["tmpfs_size"] = parse_size(val)
            except TranslateError:
                raise TranslateError(f"{what}: invalid value for tmpfs-size: {val!r} "
                                     f"(e.g. 64m)") from None
            has_tmpfs = True
        elif key == "tmpfs-mode":
            try:
                mode = _go_parse_int(val, 8, 33)
                if mode < 0 or val[:1] in "+-" or mode >= 2 ** 32:
                    raise ValueError
            except ValueError:
                raise TranslateError(f"{what}: invalid value for tmpfs-mode: {val!r} (octal, "
                                     f"e.g. 1777)") from None
            m["tmpfs_mode"], has_tmpfs = mode, True
        else:
            raise TranslateError(f"{what}: unknown key {key!r}")
    mtype = m["type"]
    if not mtype:
        raise TranslateError(f"{what}: type is required (bind, volume or tmpfs)")
    if not m.get("target"):
        raise TranslateError(f"{what}: target is required (target=/path/in/container)")
    for present, kind in ((has_vol, "volume"), (has_bind, "bind"), (has_tmpfs, "tmpfs"),
                          (has_image, "image")):
        if present and mtype != kind:
            raise TranslateError(f"{what}: cannot mix '{kind}-*' options with mount type "
                                 f"{mtype!r}")
    if m.get("bind_readonly_nonrecursive") and not m.get("read_only"):
        raise TranslateError(f"{what}: bind-recursive=writable needs readonly as well")
    if readonly_recursive:
        if not m.get("read_only"):
            raise TranslateError(f"{what}: bind-recursive=readonly needs readonly as well")
        if m.get("bind_propagation") != "rprivate":
            raise TranslateError(f"{what}: bind-recursive=readonly needs "
                                 f"bind-propagation=rprivate as well")
        raise TranslateError(f"{what}: bind-recursive=readonly is not supported by dockmagic "
                             f"(it needs Engine API 1.44)")
    m["volume_labels"] = tuple(sorted(labels.items()))
    m["volume_options"] = tuple(sorted(vopts.items()))
    return Mount(**m)  # type: ignore[arg-type]


def _valid_device_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def _cdi_name_part(name: str, extra: str, what: str) -> bool:
    if len(name) == 1:  # the CLI's CDI parser panics on these
        raise TranslateError(f"{what}: a CDI device name needs a vendor and class of at least two "
                             f"characters (vendor.com/class=name)")
    inner_ok = all(c.isascii() and (c.isalnum() or c in extra) for c in name[1:-1])
    return inner_ok and name[-1].isascii() and name[-1].isalnum()


def _is_cdi(device: str) -> bool:
    """CDI ``IsQualifiedName``: ``vendor.com/class=name``."""
    if not device or device[0] == "/":
        return False
    qual, eq, name = device.partition("=")
    if not eq or not qual or not name:
        return False
    vendor, slash, klass = qual.partition("/")
    if not slash or not vendor or not klass:
        return False
    what = f"--device {device!r}"
    for part in (vendor, klass):
        if not (part[0].isascii() and part[0].isalpha()):
            return False
        if not _cdi_name_part(part, "_-.", what):
            return False
    if not (name[0].isascii() and name[0].isalnum()):
        return False
    return len(name) == 1 or (all(c.isascii() and (c.isalnum() or c in "_-.:")
                                  for c in name[1:-1]) and name[-1].isascii()
                              and name[-1].isalnum())


def _parse_device(value: str) -> DeviceMapping:
    """``--device HOST[:CONTAINER][:PERMS]`` (CDI names are caught earlier by ``_is_cdi``)."""
    what = f"--device {value!r}"
    if value.count(":") > 2 or value.split(":", 1)[0] == "":
        raise TranslateError(f"{what}: give HOST[:CONTAINER][:PERMS], e.g. /dev/fuse or "
                             f"/dev/nvidia0:/dev/nvidia0:rwm")
    parts = value.split(":")
    perms = "rwm"
    if len(parts) == 1:
        host = ctr = _clean(parts[0])
        check = parts[0]
    elif len(parts) == 2:
        if _valid_device_mode(parts[1]):
            host = ctr = _clean(parts[0])
            perms, check = parts[1], parts[0]
        else:
            host, ctr, check = parts[0], _clean(parts[1]), parts[1]
    else:
        if not _valid_device_mode(parts[2]):
            raise TranslateError(f"{what}: bad permissions {parts[2]!r} (a set of r, w, m)")
        host, ctr, perms, check = parts[0], parts[1], parts[2], parts[1]
    if not check.startswith("/"):
        raise TranslateError(f"{what}: {check!r} is not an absolute path")
    return DeviceMapping(host, ctr, perms)


def _parse_port_range(text: str) -> Tuple[int, int]:
    def port(p: str) -> int:
        if not re.fullmatch(r"[0-9]+", p, re.ASCII) or int(p) > 65535:
            raise ValueError
        return int(p)
    if not text:
        raise ValueError
    if "-" not in text:
        n = port(text)
        return n, n
    parts = text.split("-")
    start, end = port(parts[0]), port(parts[1])
    if end < start:
        raise ValueError
    return start, end


def _parse_publish(value: str) -> List[PortBinding]:
    """``-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`` or ``published=,target=,protocol=``."""
    what = f"-p {value!r}"
    spec = value
    if "=" in value:
        params = {"protocol": "tcp"}
        for param in value.split(","):
            k, eq, v = param.partition("=")
            if not eq or not k:
                raise TranslateError(f"{what}: {param!r} should be name=value "
                                     f"(published=8080,target=80)")
            params[k] = v
        spec = f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"
    parts = spec.split(":")
    if len(parts) == 1:
        ip, host_port, ctr = "", "", parts[0]
    elif len(parts) == 2:
        ip, host_port, ctr = "", parts[0], parts[1]
    else:
        ip, host_port, ctr = ":".join(parts[:-2]), parts[-2], parts[-1]
    pp = ctr.split("/")
    if not ctr or not pp[0]:
        raise TranslateError(f"{what}: no container port given")
    port, proto = pp[0], (pp[1] if len(pp) > 1 and pp[1] else "tcp")
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise TranslateError(f"{what}: invalid protocol {proto!r} (tcp, udp or sctp)")
    if ip.startswith("["):
        m = re.fullmatch(r"\[([^\[\]]*)\]", ip)
        if not m:
            raise TranslateError(f"{what}: invalid IP address {ip!r}")
        ip = m.group(1)
    if ip and not _is_ip(ip):
        raise TranslateError(f"{what}: invalid IP address {ip!r}")
    try:
        start, end = _parse_port_range(port)
    except ValueError:
        raise TranslateError(f"{what}: invalid container port {port!r}") from None
    hstart = hend = 0
    if host_port:
        try:
            hstart, hend = _parse_port_range(host_port)
        except ValueError:
            raise TranslateError(f"{what}: invalid host port {host_port!r} (write "
                                 f"IP:HOSTPORT:CONTAINERPORT to give an address)") from None
        if end - start != hend - hstart and end != start:
            raise TranslateError(f"{what}: the container and host port ranges differ in length")
    out = []
    for i in range(end - start + 1):
        hp = ""
        if host_port:
            hp = str(hstart + i)
            if start == end and hstart != hend:
                hp += f"-{hend}"
        out.append(PortBinding(f"{start + i}/{proto}", ip, hp))
    return out


_ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
            "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


def _parse_ulimit(value: str) -> Ulimit:
    what = f"--ulimit {value!r}"
    name, eq, limits = value.partition("=")
    if not eq:
        raise TranslateError(f"{what}: give NAME=SOFT[:HARD], e.g. nofile=65536 or memlock=-1")
    if name not in _ULIMITS:
        raise TranslateError(f"{what}: unknown ulimit {name!r} (one of {', '.join(_ULIMITS)})")
    vals = limits.split(":")
    if len(vals) > 2:
        raise TranslateError(f"{what}: at most two values, SOFT[:HARD]")
    try:
        nums = [_go_parse_int(v, 10) for v in vals]
    except ValueError:
        raise TranslateError(f"{what}: limits must be integers (-1 = unlimited)") from None
    soft, hard = nums[0], nums[-1]
    if hard != -1:
        if soft == -1:
            raise TranslateError(f"{what}: soft limit -1 (unlimited) exceeds hard limit {hard}")
        if soft > hard:
            raise TranslateError(f"{what}: soft limit {soft} exceeds hard limit {hard}")
    return Ulimit(name, soft, hard)


def _parse_restart(value: str) -> Optional[Tuple[str, int]]:
    """``--restart POLICY[:N]``; None for no restart ("" or "no")."""
    what = f"--restart {value!r}"
    if value == "":
        return None
    name, colon, count = value.partition(":")
    if colon and name == "":
        raise TranslateError(f"{what}: no policy before the colon (e.g. on-failure:3)")
    retries = 0
    if count:
        try:
            retries = _go_atoi(count)
        except ValueError:
            raise TranslateError(f"{what}: the retry count must be an integer") from None
    if name == "no" and retries == 0:
        return None
    return name, retries


def _parse_extra_host(value: str) -> str:
    """``--add-host HOST:IP`` / ``HOST=IP`` -> ``HOST:IP`` (brackets dropped, as the CLI does)."""
    what = f"--add-host {value!r}"
    host, sep, addr = value.partition("=")
    if not sep:
        host, sep, addr = value.partition(":")
    if not sep or not host or ":" in host:
        raise TranslateError(f"{what}: give HOST:IP or HOST=IP")
    if addr != "host-gateway":
        if len(addr) > 2 and addr[0] == "[" and addr[-1] == "]":
            addr = addr[1:-1]
        if not _is_ip(addr.strip(" \t\n\r\v\f")):
            raise TranslateError(f"{what}: {addr!r} is not an IP address (or host-gateway)")
    return f"{host}:{addr}"


_SYSCTL_OK = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
              "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _parse_sysctl(value: str) -> Tuple[str, str]:
    """``--sysctl KEY=VALUE``, with the CLI's allow-list of namespaced keys."""
    key, eq, val = value.partition("=")
    if not eq or not key or not (key in _SYSCTL_OK or key.startswith(("net.", "fs.mqueue."))):
        raise TranslateError(f"--sysctl {value!r} is not allowed: give KEY=VALUE with a "
                             f"namespaced key (net.*, fs.mqueue.*, kernel.shm*/msg*/sem)")
    return key, val


def _read_file(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, ValueError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TranslateError(f"{flag} {path!r}: cannot read the file ({reason})") from None


def _parse_kv_file(path: str, flag: str, lookup) -> List[str]:
    """docker's key/value file format (``--env-file``, ``--label-file``)."""
    data = _read_file(path, flag)
    out: List[str] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, raw in enumerate(lines, 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > 65535:
            raise TranslateError(f"{flag} {path!r}: line {n} is too long")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TranslateError(f"{flag} {path!r}: line {n} is not valid UTF-8") from None
        if n == 1 and text.startswith("\ufeff"):
            text = text[1:]
        line = _go_lstrip_space(text)
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if " " in key or "\t" in key:
            raise TranslateError(f"{flag} {path!r}: line {n}: the name {key!r} contains "
                                 f"whitespace (write KEY=VALUE, no 'export')")
        if not key:
            raise TranslateError(f"{flag} {path!r}: line {n} has no variable name")
        if eq:
            out.append(f"{key}={value}")
        elif lookup is not None and key in lookup:
            out.append(f"{key}={lookup[key]}")
    return out


_SECCOMP_BUILTIN = ("builtin", "unconfined")


def _compact_json(text: str, what: str) -> str:
    """Go ``json.Compact``: drop insignificant whitespace, keep everything else byte for byte."""
    def bad_constant(name):
        raise ValueError(f"invalid JSON value {name}")
    try:
        json.loads(text, parse_constant=bad_constant)
    except (ValueError, RecursionError) as exc:
        raise TranslateError(f"{what}: the seccomp profile is not valid JSON ({exc})") from None
    out, in_str, esc = [], False, False
    for c in text:
        if in_str:
            out.append(c)
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c in " \t\r\n":
            continue
        else:
            out.append(c)
            in_str = c == '"'
    return "".join(out)


def _parse_security_opt(value: str, cwd: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """``--security-opt``: (canonical option, (profile path, compact JSON) for a seccomp file)."""
    what = f"--security-opt {value!r}"
    key, sep, val = value.partition("=")
    if not sep and key != "no-new-privileges":
        key, sep, val = value.partition(":")
    if (not sep or val == "") and key != "no-new-privileges":
        raise TranslateError(f"{what}: give KEY=VALUE (e.g. seccomp=unconfined, "
                             f"label=disable) or no-new-privileges")
    if key == "seccomp" and val not in _SECCOMP_BUILTIN:
        path = _abs(val, cwd)
        data = _read_file(path, "--security-opt seccomp=")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TranslateError(f"{what}: the seccomp profile is not UTF-8") from None
        return "seccomp=" + path, (path, _compact_json(text, what))
    return value, None


_NETWORK_LONG = re.compile(r"\w+=\w+", re.ASCII)


def _parse_network(value: str) -> str:
    """``--network/--net NAME`` (or the long form with only ``name=``)."""
    what = f"--network {value!r}"
    target = value
    if _NETWORK_LONG.search(value):
        target = ""
        for fld, _q in _csv_record(value, what):
            key, eq, val = fld.partition("=")
            if not eq or not key:
                raise TranslateError(f"{what}: invalid field {fld!r}")
            key, val = key.strip(), val.strip()
            if key == "name":
                target = val
            elif key in ("alias", "ip", "ip6", "driver-opt", "gw-priority", "mac-address",
                         "link-local-ip"):
                raise TranslateError(f"{what}: the {key}= option is not supported by dockmagic; "
                                     f"give only the network name")
            else:
                raise TranslateError(f"{what}: invalid field key {key!r}")
        if not target:
            raise TranslateError(f"{what}: no network name given (name=NAME)")
    if not target.strip():
        raise TranslateError(f"{what}: no network name given")
    return target


# distribution/reference grammar, as `docker create` checks IMAGE
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = (rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
           r"(?::[0-9]+)?")
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"({_NAME})(?::[\w][\w.-]{{0,127}})?(?:@{_DIGEST})?", re.ASCII)


def _check_image(ref: str) -> None:
    """IMAGE must be a valid reference, as ``docker create`` checks before anything else."""
    what = f"image {ref!r}"
    if re.fullmatch(r"[a-f0-9]{64}|sha256:[a-f0-9]{64}", ref, re.ASCII):
        return
    i = ref.find("/")
    if i == -1 or (not any(c in ref[:i] for c in ".:") and ref[:i] != "localhost"
                   and ref[:i].lower() == ref[:i]):
        domain, remainder = "docker.io", ref
        if "/" not in remainder:
            remainder = "library/" + remainder
    else:
        domain, remainder = ref[:i], ref[i + 1:]
    remote = remainder.split(":", 1)[0].split("@", 1)[0]
    if remote.lower() != remote:
        raise TranslateError(f"{what}: invalid reference format: repository names must be "
                             f"lowercase")
    m = _REFERENCE.fullmatch(domain + "/" + remainder)
    if not m:
        raise TranslateError(f"{what}: invalid reference format (expected NAME[:TAG][@DIGEST], "
                             f"e.g. python:3.12-slim)")
    if len(m.group(1)) > 255:
        raise TranslateError(f"{what}: repository name must not be more than 255 characters")


_KNOWN_OS = {"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
             "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos",
             "macos"}
_KNOWN_ARCH = {"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64",
               "ppc64le", "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32",
               "mips64p32le", "ppc", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64",
               "wasm", "i386", "x86_64", "x86-64", "aarch64", "armhf", "armel"}


def _check_platform(value: str) -> None:
    """``--platform OS[/ARCH[/VARIANT]]`` (containerd's ``platforms.Parse`` syntax)."""
    parts = value.split("/")
    bad = "*" in value or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", p, re.ASCII) for p in parts)
    one = len(parts) == 1 and parts[0].lower() not in _KNOWN_OS | _KNOWN_ARCH
    if bad or len(parts) > 3 or one:
        raise TranslateError(f"--platform {value!r}: give OS[/ARCH[/VARIANT]], e.g. linux/amd64")


# --------------------------------------------------------------------------------------------
# The flag table and the argv walker
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Flag:
    name: str            # canonical long name
    is_bool: bool
    supported: bool = True


_SUPPORTED_VALUE = (
    "gpus", "volume", "mount", "env", "env-file", "workdir", "user", "entrypoint", "name",
    "label", "label-file", "shm-size", "ipc", "network", "publish", "memory", "memory-swap",
    "memory-swappiness", "cpus", "cpuset-cpus", "device", "cap-add", "cap-drop", "ulimit",
    "runtime", "restart", "tmpfs", "add-host", "hostname", "group-add", "pids-limit",
    "security-opt", "sysctl", "stop-signal", "platform")
_SUPPORTED_BOOL = ("rm", "detach", "interactive", "tty", "privileged", "init", "read-only",
                   "publish-all")
_UNSUPPORTED_VALUE = (
    "annotation", "attach", "blkio-weight", "blkio-weight-device", "cgroup-parent", "cgroupns",
    "cidfile", "cpu-count", "cpu-percent", "cpu-period", "cpu-quota", "cpu-rt-period",
    "cpu-rt-runtime", "cpu-shares", "cpuset-mems", "detach-keys", "device-cgroup-rule",
    "device-read-bps", "device-read-iops", "device-write-bps", "device-write-iops", "dns",
    "dns-option", "dns-opt", "dns-search", "domainname", "expose", "health-cmd",
    "health-interval", "health-retries", "health-start-interval", "health-start-period",
    "health-timeout", "io-maxbandwidth", "io-maxiops", "ip", "ip6", "isolation",
    "kernel-memory", "link", "link-local-ip", "log-driver", "log-opt", "mac-address",
    "memory-reservation", "net-alias", "network-alias", "oom-score-adj", "pid", "pull",
    "stop-timeout", "storage-opt", "userns", "uts", "volume-driver", "volumes-from")
_UNSUPPORTED_BOOL = ("disable-content-trust", "help", "no-healthcheck", "oom-kill-disable",
                     "quiet", "sig-proxy", "use-api-socket")
_ALIASES = {"net": "network"}

_LONG: Dict[str, _Flag] = {}
for _n in _SUPPORTED_VALUE:
    _LONG[_n] = _Flag(_n, False)
for _n in _SUPPORTED_BOOL:
    _LONG[_n] = _Flag(_n, True)
for _n in _UNSUPPORTED_VALUE:
    _LONG[_n] = _Flag(_n, False, False)
for _n in _UNSUPPORTED_BOOL:
    _LONG[_n] = _Flag(_n, True, False)
for _a, _n in _ALIASES.items():
    _LONG[_a] = _LONG[_n]
_SHORT: Dict[str, _Flag] = {c: _LONG[n] for c, n in {
    "a": "attach", "c": "cpu-shares", "d": "detach", "e": "env", "h": "hostname",
    "i": "interactive", "l": "label", "m": "memory", "p": "publish", "P": "publish-all",
    "q": "quiet", "t": "tty", "u": "user", "v": "volume", "w": "workdir"}.items()}


def _as_argv(args) -> List[str]:
    if isinstance(args, str):
        try:
            return shlex.split(args, posix=True)
        except ValueError as exc:
            raise TranslateError(f"cannot split the arguments: {exc}; check the quotes") from None
    try:
        argv = list(args)
    except TypeError:
        raise TranslateError(f"expected a list of strings or one string, not "
                             f"{type(args).__name__}") from None
    for a in argv:
        if not isinstance(a, str):
            raise TranslateError(f"argument {a!r} is not a string")
    return argv


def _walk(argv: List[str]):
    """pflag's parse loop for `docker run`: yields ("flag", _Flag, value, spelling) for each
    option, then ("args", [IMAGE, COMMAND...]) once."""
    i, n = 0, len(argv)
    while i < n:
        s = argv[i]
        i += 1
        if s == "" or s[0] != "-" or s == "-":
            yield "args", argv[i - 1:]
            return
        if s[1] == "-":
            if s == "--":
                yield "args", argv[i:]
                return
            name = s[2:]
            if name[0] in "-=":
                raise TranslateError(f"bad flag syntax: {s!r}")
            name, eq, val = name.partition("=")
            flag = _LONG.get(name)
            if flag is None:
                raise TranslateError(f"unknown flag: {'--' + name!r} (see docker run --help)")
            if eq:
                value = val
            elif flag.is_bool:
                value = "true"
            elif i < n:
                value = argv[i]
                i += 1
            else:
                raise TranslateError(f"flag needs an argument: --{name}")
            yield "flag", flag, value, "--" + name
            continue
        shorthands = s[1:]
        while shorthands:
            if shorthands.startswith("test."):  # pflag skips these silently; say so instead
                raise TranslateError(f"unknown flag: {s!r}")
            c = shorthands[0]
            flag = _SHORT.get(c)
            if flag is None:
                raise TranslateError(f"unknown shorthand flag: {c!r} in {s!r}")
            if len(shorthands) > 2 and shorthands[1] == "=":
                value, shorthands = shorthands[2:], ""
            elif flag.is_bool:
                value, shorthands = "true", shorthands[1:]
            elif len(shorthands) > 1:
                value, shorthands = shorthands[1:], ""
            elif i < n:
                value, shorthands = argv[i], ""
                i += 1
            else:
                raise TranslateError(f"flag needs an argument: -{c}")
            yield "flag", flag, value, "-" + c
    yield "args", []


# --------------------------------------------------------------------------------------------
# parse_run_args
# --------------------------------------------------------------------------------------------

def parse_run_args(args: Union[str, List[str]], *, cwd: Optional[str] = None,
                   environ: Optional[Mapping[str, str]] = None) -> RunSpec:
    """Parse what follows ``docker run`` (options, IMAGE, COMMAND...) into a ``RunSpec``.

    ``args`` is an argv list or one string (split like a POSIX shell). ``cwd`` (default: the
    current directory) resolves relative host paths (``-v ./x:/y``, ``--mount src=./x``,
    ``--env-file``, seccomp files); ``environ`` (default ``os.environ``) supplies bare ``-e KEY``
    and env-file ``KEY`` values. Raises only ``TranslateError``.
    """
    try:
        return _parse_run_args(args, cwd, environ)
    except TranslateError as exc:
        text = str(exc)
        if "\n" in text or "\r" in text:  # keep the promise of one line
            raise TranslateError(text.replace("\r", "\\r").replace("\n", "\\n")) from None
        raise
    except RecursionError:
        raise TranslateError("the arguments nest too deeply to parse") from None
    except Exception as exc:  # pragma: no cover - a bug; still one line for the user
        raise TranslateError(f"internal error while parsing the arguments "
                             f"({type(exc).__name__}: {exc}); please report it") from None


def _parse_run_args(args, cwd, environ) -> RunSpec:
    argv = _as_argv(args)
    cwd = _clean(os.path.abspath(cwd) if cwd is not None else os.getcwd())
    environ = os.environ if environ is None else environ

    lists: Dict[str, list] = {}
    single: Dict[str, str] = {}
    bools: Dict[str, bool] = {}
    positional: List[str] = []
    for event in _walk(argv):
        if event[0] == "args":
            positional = event[1]
            break
        _, flag, value, spelling = event
        name = flag.name
        if not flag.supported:
            raise TranslateError(f"{spelling} is not supported by dockmagic")
        if flag.is_bool:
            bools[name] = _go_bool(value, spelling)
            continue
        what = f"{spelling} {value!r}"
        if name in ("env",):
            key = value.partition("=")[0]
            if key == "":
                raise TranslateError(f"{what}: invalid environment variable (empty name)")
            if "=" not in value and key in environ:
                value = f"{key}={environ[key]}"
        elif name == "label":
            key = value.partition("=")[0].lstrip(" \t")
            if key == "":
                raise TranslateError(f"{what}: invalid label (empty name)")
            if " " in key or "\t" in key:
                raise TranslateError(f"{what}: the label name {key!r} contains whitespace")
        elif name == "add-host":
            value = _parse_extra_host(value)
        elif name == "sysctl":
            value = _parse_sysctl(value)
        elif name == "ulimit":
            value = _parse_ulimit(value)
        elif name == "gpus":
            value = parse_gpus(value)
        elif name == "mount":
            value = _parse_mount(value, cwd)
        elif name == "network":
            value = _parse_network(value)
        elif name in ("memory", "shm-size"):
            try:
                value = parse_size(value)
            except TranslateError as exc:
                raise TranslateError(f"{spelling} {exc}") from None
        elif name == "memory-swap":
            if value == "-1":
                value = -1
            else:
                try:
                    value = parse_size(value)
                except TranslateError as exc:
                    raise TranslateError(f"{spelling} {exc} (or -1 for unlimited swap)") from None
        elif name == "cpus":
            value = _parse_cpus(value)
        elif name in ("pids-limit", "memory-swappiness"):
            try:
                value = _go_parse_int(value, 0, 64)
            except ValueError as exc:
                raise TranslateError(f"{what}: not an integer ({exc})") from None
        if name in ("env", "label", "volume", "env-file", "label-file", "publish", "device",
                    "cap-add", "cap-drop", "ulimit", "tmpfs", "add-host", "group-add",
                    "security-opt", "sysctl", "gpus", "mount", "network"):
            lists.setdefault(name, []).append(value)
        else:
            single[name] = value

    if not positional:
        raise TranslateError("docker run needs an IMAGE (and optionally a COMMAND)")
    image, command = positional[0], positional[1:]

    swappiness = single.get("memory-swappiness", -1)
    if swappiness != -1 and not 0 <= swappiness <= 100:
        raise TranslateError(f"--memory-swappiness {swappiness}: use 0 to 100 (or -1, the "
                             f"default)")

    volumes: List[str] = []
    for v in lists.get("volume", []):
        nv = _parse_volume(v, cwd)
        if nv not in volumes:
            volumes.append(nv)

    tmpfs: Dict[str, str] = {}
    for t in lists.get("tmpfs", []):
        path, _, opts = t.partition(":")
        tmpfs[path] = opts

    entrypoint = None
    if "entrypoint" in single:
        entrypoint = (single["entrypoint"],)

    ports: List[PortBinding] = []
    for p in lists.get("publish", []):
        ports += _parse_publish(p)

    devices: List[DeviceMapping] = []
    cdi: List[str] = []
    for d in lists.get("device", []):
        if _is_cdi(d):
            cdi.append(d)
        else:
            devices.append(_parse_device(d))

    env: Dict[str, str] = {}
    for f in lists.get("env-file", []):
        for entry in _parse_kv_file(_abs(f, cwd), "--env-file", environ):
            env[entry.partition("=")[0]] = entry
    for entry in lists.get("env", []):
        key = entry.partition("=")[0]
        env[key] = entry

    labels: Dict[str, str] = {}
    for f in lists.get("label-file", []):
        for entry in _parse_kv_file(_abs(f, cwd), "--label-file", None):
            k, _, v = entry.partition("=")
            labels[k] = v
    for entry in lists.get("label", []):
        k, _, v = entry.partition("=")
        labels[k] = v

    restart = None
    if "restart" in single:
        restart = _parse_restart(single["restart"])

    security_opt: List[str] = []
    profiles: Dict[str, str] = {}
    systempaths = False
    for o in lists.get("security-opt", []):
        canon, profile = _parse_security_opt(o, cwd)
        if profile:
            profiles[profile[0]] = profile[1]
        if canon == "systempaths=unconfined":
            systempaths = True
        else:
            security_opt.append(canon)

    auto_remove = bools.get("rm", False)
    if auto_remove and restart is not None and restart[0] not in ("", "no"):
        raise TranslateError("--rm and --restart conflict: a container removed on exit cannot "
                             "be restarted; drop one of them")

    networks = lists.get("network", [])
    if len(networks) > 1:
        raise TranslateError("more than one --network is not supported by dockmagic; give one "
                             "and connect the others after start")

    if "platform" in single and single["platform"] != "":
        _check_platform(single["platform"])
    _check_image(image)

    def opt(name):
        value = single.get(name)
        return None if value in (None, "") else value

    def nonzero(name):
        value = single.get(name)
        return None if value in (None, 0) else value

    return RunSpec(
        image=image,
        command=tuple(command) if command else None,
        entrypoint=entrypoint,
        env=tuple(env.values()),
        labels=tuple(sorted(labels.items())),
        volumes=tuple(volumes),
        mounts=tuple(lists.get("mount", [])),
        workdir=opt("workdir"),
        user=opt("user"),
        name=opt("name"),
        detach=bools.get("detach", False),
        auto_remove=auto_remove,
        interactive=bools.get("interactive", False),
        tty=bools.get("tty", False),
        gpus=tuple(lists.get("gpus", [])),
        cdi_devices=tuple(cdi),
        devices=tuple(devices),
        shm_size=nonzero("shm-size"),
        ipc_mode=opt("ipc"),
        network_mode=networks[0] if networks else None,
        ports=tuple(ports),
        publish_all_ports=bools.get("publish-all", False),
        mem_limit=nonzero("memory"),
        memswap_limit=nonzero("memory-swap"),
        mem_swappiness=None if swappiness == -1 else swappiness,
        nano_cpus=nonzero("cpus"),
        cpuset_cpus=opt("cpuset-cpus"),
        cap_add=_canonical_caps(lists.get("cap-add", [])),
        cap_drop=_canonical_caps(lists.get("cap-drop", [])),
        privileged=bools.get("privileged", False),
        ulimits=tuple(sorted({u.name: u for u in lists.get("ulimit", [])}.values(),
                             key=lambda u: u.name)),
        runtime=opt("runtime"),
        restart_policy=restart,
        init=bools.get("init"),
        tmpfs=tuple(sorted(tmpfs.items())),
        extra_hosts=tuple(lists.get("add-host", [])),
        hostname=opt("hostname"),
        read_only=bools.get("read-only", False),
        group_add=tuple(lists.get("group-add", [])),
        pids_limit=nonzero("pids-limit"),
        security_opt=tuple(security_opt),
        seccomp_profiles=tuple(sorted(profiles.items())),
        systempaths_unconfined=systempaths,
        sysctls=tuple(sorted(dict(lists.get("sysctl", [])).items())),
        stop_signal=opt("stop-signal"),
        platform=opt("platform"),
    )


def _canonical_caps(caps: List[str]) -> Tuple[str, ...]:
    """The Go client's spelling: upper case, ``CAP_`` prefix (except ALL), unique, sorted."""
    out = set()
    for c in caps:
        c = _go_upper(c)
        if c != "ALL" and not c.startswith("CAP_"):
            c = "CAP_" + c
        out.add(c)
    return tuple(sorted(out))


def _volumes_kwarg(volumes: Tuple[str, ...]):
    """docker-py ``volumes=``: the list form when docker-py derives each target correctly
    (otherwise it adds a stray anonymous volume at e.g. ``/c:z``), else the dict form, with
    anonymous volumes moved to ``mounts`` (the dict form cannot hold them)."""
    if not volumes:
        return None, []
    parsed = [_split_volume(v) for v in volumes]
    if all(_docker_py_target(v) == tgt for v, (_s, tgt, _o) in zip(volumes, parsed)):
        return list(volumes), []
    binds: Dict[Union[str, bytes], dict] = {}
    anon = []
    for src, tgt, opts in parsed:
        if not src:
            anon.append({"Type": "volume", "Target": tgt})
            continue
        key: Union[str, bytes] = src
        if key in binds:
            key = src.encode("utf-8", "surrogateescape")
            if key in binds:
                raise TranslateError(f"-v: {src!r} is mounted more than twice with options "
                                     f"docker-py cannot pass; use --mount for the others")
        binds[key] = {"bind": tgt, "mode": opts or "rw"}
    return binds, anon


def _docker_py_target(bind: str) -> str:
    """What docker-py's ``_host_volume_from_bind`` puts in Config.Volumes for a list entry."""
    drive, rest = ntpath.splitdrive(bind)
    bits = rest.split(":", 1)
    if len(bits) == 1 or bits[1] in ("ro", "rw"):
        return drive + bits[0]
    if bits[1].endswith(":ro") or bits[1].endswith(":rw"):
        return bits[1][:-3]
    return bits[1]


# --------------------------------------------------------------------------------------------
# split_run_args (for the magics)
# --------------------------------------------------------------------------------------------

def split_run_args(argv: Union[str, List[str]], own_flags: Mapping[str, bool]
                   ) -> Tuple[Dict[str, object], List[str]]:
    """Take dockmagic's own long flags out of a `docker run` argv.

    ``own_flags`` maps each own flag (``"--in"``) to whether it takes a value. Walking the
    options with docker's arity rules (``-v X`` consumes X, ``-it`` is a group), every own flag
    before IMAGE is removed (``--in a``, ``--in=a``, ``--dry-run``, ``--dry-run=false``); own
    flags after IMAGE belong to the command and stay. Returns ``({flag: [values...]} for value
    flags, {flag: bool} for valueless ones, the remaining argv unchanged)``. Docker flags it does
    not know are left in place for ``parse_run_args`` to report.
    """
    try:
        items = _as_argv(argv)
        found: Dict[str, object] = {}
        out: List[str] = []
        i, n = 0, len(items)
        while i < n:
            s = items[i]
            if s == "" or s[0] != "-" or s == "-" or s == "--":
                out += items[i:]
                break
            i += 1
            if s.startswith("--"):
                name, eq, val = s.partition("=")
                if name in own_flags:
                    if own_flags[name]:
                        if eq:
                            value = val
                        elif i < n:
                            value, i = items[i], i + 1
                        else:
                            raise TranslateError(f"flag needs an argument: {name}")
                        found.setdefault(name, [])
                        found[name].append(value)  # type: ignore[union-attr]
                    else:
                        found[name] = _go_bool(val, name) if eq else True
                    continue
                out.append(s)
                flag = _LONG.get(name[2:])
                if flag is not None and not flag.is_bool and not eq and i < n:
                    out.append(items[i])
                    i += 1
                continue
            out.append(s)
            j = 1
            while j < len(s):
                flag = _SHORT.get(s[j])
                if flag is None or (len(s) - j > 2 and s[j + 1] == "="):
                    break
                if flag.is_bool:
                    j += 1
                    continue
                if j + 1 == len(s) and i < n:
                    out.append(items[i])
                    i += 1
                break
        return found, out
    except TranslateError:
        raise
    except Exception as exc:  # pragma: no cover - a bug; still one line for the user
        raise TranslateError(f"internal error while splitting the arguments "
                             f"({type(exc).__name__}: {exc}); please report it") from None
