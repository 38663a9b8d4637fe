"""``parse_run_args``: argv -> ``RunSpec``: each flag's value through its parser, then the checks
that span flags (``--rm`` with ``--restart``, one ``--network``, IMAGE), and ``--restart``."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Tuple, Union

from .argv import _as_argv, _walk
from .devices import _is_cdi, _parse_device
from .errors import TranslateError
from .gocompat import _abs, _clean, _go_atoi, _go_bool, _go_parse_int
from .gpus import parse_gpus
from .image import _check_image, _check_platform
from .kvfiles import _parse_kv_file
from .limits import _parse_sysctl, _parse_ulimit
from .mounts import _parse_mount
from .network import _parse_extra_host, _parse_network, _parse_publish
from .quantities import _parse_cpus, parse_size
from .security import _canonical_caps, _parse_security_opt
from .spec import DeviceMapping, PortBinding, RunSpec
from .volumes import _parse_volume


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
