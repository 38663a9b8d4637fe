"""Privileges: ``--security-opt`` (seccomp profile files read and compacted) and the canonical
spelling of ``--cap-add`` / ``--cap-drop``."""
from __future__ import annotations

import json
from typing import List, Optional, Tuple

from .errors import TranslateError
from .gocompat import _abs, _go_upper
from .kvfiles import _read_file


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


def _canonical_caps(caps: List[str]) -> Tuple[str, ...]:
    """The Go client's spelling: upper case, ``CAP_`` prefix (except ALL), unique, sorted."""
    out = set()
    for c in caps:
        c = _go_upper(c)
        if c != "ALL" and not c.startswith("CAP_"):
            c = "CAP_" + c
        out.add(c)
    return tuple(sorted(out))
