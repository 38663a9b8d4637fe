"""Engine addresses -> `Endpoint`. Pure.

`ssh://[user@]host[:port]` (host may be an ~/.ssh/config alias: ssh resolves it, so ProxyJump,
keys and agents apply), `tcp://host:port` (with `--tlsverify`/`--tlscacert`/`--tlscert`/`--tlskey`
as docker's own flags), `unix:///path`. A docker CLI context is resolved by `store`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
#: The local engine's name (docker's own rules: DOCKER_HOST, then the current context).
LOCAL = "local"
TLS_KEYS = ("tlsverify", "tlscacert", "tlscert", "tlskey")
DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"


class EndpointError(ValueError):
    """A bad engine name or address; shown as one line."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    kind: str  # ssh | tcp | unix | context | local
    host: str = ""
    user: Optional[str] = None
    port: Optional[int] = None
    path: str = ""
    context: Optional[str] = None
    tls: Tuple[Tuple[str, str], ...] = field(default=())

    @property
    def ssh_target(self) -> str:
        """How `ssh` names the host: `[user@]host` (the port goes in -p)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def remote_socket(self) -> str:
        return self.path or DEFAULT_REMOTE_SOCKET

    @property
    def is_remote(self) -> bool:
        return self.kind in ("ssh", "tcp")

    def to_record(self) -> dict:
        rec = {"url": self.url}
        if self.context:
            rec["context"] = self.context
        rec.update(dict(self.tls))
        return rec


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise EndpointError(f"engine name {name!r}: use letters, digits, '-' and '_' "
                            "(at most 63), starting with a letter or digit")
    return name


def parse_endpoint(name: str, url: str, tls: Mapping[str, str] = (),
                   context: Optional[str] = None) -> Endpoint:
    """`NAME URL [--tls*]` -> Endpoint; every mistake is one line naming the fix."""
    check_name(name)
    tls = dict(tls)
    bad = sorted(set(tls) - set(TLS_KEYS))
    if bad:
        raise EndpointError(f"engine {name}: unknown option {bad[0]!r}; TLS options are "
                            + ", ".join("--" + k for k in TLS_KEYS))
    parts = urlsplit(url or "")
    scheme = parts.scheme.lower()
    if scheme == "ssh":
        if tls:
            raise EndpointError(f"engine {name}: --tls* options are for tcp:// engines; ssh:// "
                                "engines use your SSH keys")
        if not parts.hostname:
            raise EndpointError(f"engine {name}: {url!r} names no host; use ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise EndpointError(f"engine {name}: bad port in {url!r}") from None
        path = parts.path if parts.path not in ("", "/") else ""
        # urlsplit lowercases hostname; an ~/.ssh/config alias is case-sensitive.
        host = parts.netloc.rpartition("@")[2]
        host = host.rsplit(":", 1)[0] if port is not None else host
        return Endpoint(name, url, "ssh", host=host, user=parts.username or None, port=port,
                        path=path, context=context)
    if scheme == "tcp":
        if not parts.hostname or parts.port is None:
            raise EndpointError(f"engine {name}: {url!r}: use tcp://host:port (2376 with TLS)")
        if tls.get("tlsverify") and not tls.get("tlscacert"):
            raise EndpointError(f"engine {name}: --tlsverify needs --tlscacert FILE (and "
                                "--tlscert/--tlskey for a client certificate)")
        return Endpoint(name, url, "tcp", host=parts.hostname, port=parts.port,
                        tls=tuple(sorted(tls.items())), context=context)
    if scheme == "unix":
        if not parts.path:
            raise EndpointError(f"engine {name}: {url!r}: use unix:///path/to/docker.sock")
        return Endpoint(name, url, "unix", path=parts.path, context=context)
    raise EndpointError(f"engine {name}: {url!r} is not an engine address; use "
                        "ssh://[user@]host[:port], tcp://host:port, or --context CTX")
