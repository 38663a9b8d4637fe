"""``-v/--volume``: compose's spec splitting, ``./`` resolution, and the docker-py
``volumes=`` form the spec is handed over in."""
from __future__ import annotations

import ntpath
from typing import Dict, List, Tuple, Union

from .errors import TranslateError
from .gocompat import _abs


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
