"""Files a flag names: reading them, and docker's ``KEY=VALUE`` file format
(``--env-file``, ``--label-file``)."""
from __future__ import annotations

from typing import List

from .errors import TranslateError
from .gocompat import _go_lstrip_space


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
