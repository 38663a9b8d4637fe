"""IMAGE and ``--platform``: checked the way ``docker create`` checks them, before anything runs."""
from __future__ import annotations

import re

from .errors import TranslateError


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
