"""Where an engine is: an `Endpoint`, found the way the docker CLI finds it.

Pure apart from reading the docker CLI's own config files. The rules, in docker's order:
``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` / ``DOCKER_CERT_PATH`` for tcp), then the context named
by ``DOCKER_CONTEXT``, then the config's ``currentContext`` (``$DOCKER_CONFIG/config.json``, default
``~/.docker``); the context ``default`` (or none) is the local socket.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional

DEFAULT_URL = "unix:///var/run/docker.sock"


class EndpointError(ValueError):
    """A docker context or DOCKER_HOST that cannot be used; one line naming the fix."""


@dataclass(frozen=True)
class Endpoint:
    """One engine's address. ``source`` says where it came from, for messages."""
    url: str
    name: str = "local"
    source: str = "default socket"
    tls_verify: bool = False
    cert_path: Optional[str] = None    # a folder with ca.pem, cert.pem, key.pem
    skip_tls_verify: bool = False

    @property
    def uses_tls(self) -> bool:
        return bool(self.cert_path) or self.tls_verify

    def describe(self) -> str:
        """`URL (engine NAME; SOURCE)`, the way every engine message names it."""
        return f"{self.url} (engine {self.name}; {self.source})"


def docker_config_dir(environ: Mapping[str, str]) -> str:
    return environ.get("DOCKER_CONFIG") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".docker")


def resolve_endpoint(environ: Optional[Mapping[str, str]] = None) -> Endpoint:
    """The endpoint `docker` would talk to, by docker's own rules."""
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host:
        verify = env.get("DOCKER_TLS_VERIFY", "") not in ("", "0")
        return Endpoint(url=host, name="local", source="DOCKER_HOST", tls_verify=verify,
                        cert_path=env.get("DOCKER_CERT_PATH") or None)
    config_dir = docker_config_dir(env)
    context = env.get("DOCKER_CONTEXT")
    source = "DOCKER_CONTEXT"
    if not context:
        context = _current_context(config_dir)
        source = f"current docker context in {os.path.join(config_dir, 'config.json')}"
    if not context or context == "default":
        return Endpoint(url=DEFAULT_URL, name="local", source="default socket")
    return context_endpoint(context, config_dir, source=f"docker context {context!r}, {source}")


def _current_context(config_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as f:
            return (json.load(f) or {}).get("currentContext") or None
    except (OSError, ValueError, AttributeError):
        return None


def context_endpoint(context: str, config_dir: Optional[str] = None,
                     source: Optional[str] = None) -> Endpoint:
    """The endpoint a docker CLI context names (`docker context create ... --docker host=...`)."""
    config_dir = config_dir or docker_config_dir(os.environ)
    digest = hashlib.sha256(context.encode("utf-8")).hexdigest()
    meta = os.path.join(config_dir, "contexts", "meta", digest, "meta.json")
    try:
        with open(meta, encoding="utf-8") as f:
            data = json.load(f)
        docker_ep = data["Endpoints"]["docker"]
        url = docker_ep["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EndpointError(f"docker context {context!r} is not readable at {meta}; list them "
                            "with `docker context ls`, or set DOCKER_HOST") from None
    tls_dir = os.path.join(config_dir, "contexts", "tls", digest, "docker")
    return Endpoint(url=url, name=context, source=source or f"docker context {context!r}",
                    cert_path=tls_dir if os.path.isdir(tls_dir) else None,
                    skip_tls_verify=bool(docker_ep.get("SkipTLSVerify")))
