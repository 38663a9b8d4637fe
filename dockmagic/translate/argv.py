"""The flag table (every ``docker run`` flag: supported or not, bool or valued, long and short)
and pflag-style argv walking, including ``split_run_args`` for the magics' own flags."""
from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple, Union

from .errors import TranslateError, UnknownFlag
from .gocompat import _go_bool


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


def suggest_flag(name: str, extra=()) -> str:
    """`; did you mean --gpus?` for a misspelt long flag (`--gpu`), or ""; EXTRA: more long
    flags to consider (the magics' own, without their dashes)."""
    close = difflib.get_close_matches(name, [*_LONG, *extra], n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else ""


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
                raise UnknownFlag(f"unknown flag: {'--' + name!r}{suggest_flag(name)} "
                                  "(see docker run --help)", name)
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
