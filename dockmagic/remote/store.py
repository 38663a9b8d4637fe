"""The engines a user added, saved in the user's config folder (not in the notebook).

`$XDG_CONFIG_HOME/dockmagic/engines.toml` (default `~/.config/dockmagic/engines.toml`):

    [engines.gpu1]
    url = "ssh://me@gpu1.lab"

    [engines.ci]
    url = "tcp://10.0.0.5:2376"
    tlsverify = "1"
    tlscacert = "/home/me/.docker/ca.pem"

    [engines.prod]
    url = "ssh://deploy@prod"   # resolved from the docker CLI context when added
    context = "prod"

Read with `tomllib`; written here (the file holds only tables of strings). `--context CTX`
reuses a docker CLI context (`~/.docker/contexts`, or `$DOCKER_CONFIG`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Dict, Optional

from .urls import LOCAL, Endpoint, EndpointError, check_name, parse_endpoint

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - 3.9/3.10
    tomllib = None


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dockmagic", "engines.toml")


def _read_toml(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    if tomllib is not None:
        return tomllib.loads(data.decode("utf-8"))
    return _parse_own_toml(data.decode("utf-8"))  # pragma: no cover


def _parse_own_toml(text: str) -> dict:  # pragma: no cover - only without tomllib
    """The subset this module writes: [engines.NAME] tables of "string" values."""
    out: dict = {}
    table = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.strip().startswith('"') else raw.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            keys = line[1:-1].strip().split(".")
            table = out
            for k in keys:
                table = table.setdefault(k, {})
            continue
        key, _, value = line.partition("=")
        if table is not None:
            table[key.strip()] = json.loads(value.strip())
    return out


def load_engines(path: Optional[str] = None) -> Dict[str, Endpoint]:
    """name -> Endpoint, in the file's order. A broken file is one error naming the file."""
    path = path or config_path()
    if not os.path.exists(path):
        return {}
    try:
        data = _read_toml(path)
    except (OSError, ValueError) as exc:
        raise EndpointError(f"cannot read {path}: {exc}; fix or remove the file") from None
    engines = {}
    for name, rec in (data.get("engines") or {}).items():
        if not isinstance(rec, dict) or not isinstance(rec.get("url"), str):
            raise EndpointError(f"{path}: [engines.{name}] needs url = \"...\"")
        tls = {k: str(v) for k, v in rec.items() if k.startswith("tls")}
        engines[name] = parse_endpoint(name, rec["url"], tls, context=rec.get("context"))
    return engines


def _toml_string(value: str) -> str:
    # A TOML basic string: json's escapes are TOML's (\" \\ \n \uXXXX), minus "\/" (not emitted).
    return json.dumps(value, ensure_ascii=False)


def dump_engines(engines: Dict[str, Endpoint]) -> str:
    lines = ["# dockmagic's engines: `%docker engines add NAME URL` / `%docker engines rm NAME`",
             ""]
    for name, ep in engines.items():
        lines.append(f"[engines.{check_name(name)}]")
        for key, value in ep.to_record().items():
            lines.append(f"{key} = {_toml_string(str(value))}")
        lines.append("")
    return "\n".join(lines)


def save_engines(engines: Dict[str, Endpoint], path: Optional[str] = None):
    """Write the file atomically (a crash never leaves half a file), mode 0600."""
    path = path or config_path()
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".engines.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump_engines(engines))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def add_engine(endpoint: Endpoint, path: Optional[str] = None) -> Endpoint:
    if endpoint.name == LOCAL:
        raise EndpointError(f"{LOCAL!r} is the local engine's name (DOCKER_HOST, then the "
                            "current docker context); pick another name")
    engines = load_engines(path)
    engines[endpoint.name] = endpoint
    save_engines(engines, path)
    return endpoint


def remove_engine(name: str, path: Optional[str] = None) -> Endpoint:
    engines = load_engines(path)
    if name not in engines:
        known = ", ".join(engines) or "none yet"
        raise EndpointError(f"no engine named {name!r} (engines: {known}); "
                            "`%docker engines` lists them")
    ep = engines.pop(name)
    save_engines(engines, path)
    return ep


def get_engine(name: str, path: Optional[str] = None) -> Endpoint:
    engines = load_engines(path)
    if name not in engines:
        known = ", ".join([LOCAL, *engines])
        raise EndpointError(f"no engine named {name!r} (engines: {known}); add it with "
                            f"`%docker engines add {name} ssh://[user@]host`")
    return engines[name]


# -- docker CLI contexts --------------------------------------------------------------------
def _docker_config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def endpoint_from_context(name: str, context: str) -> Endpoint:
    """A docker CLI context (`docker context create CTX --docker host=...`) -> Endpoint."""
    if context == "default":
        raise EndpointError("the `default` context is the local engine; name another context")
    digest = hashlib.sha256(context.encode("utf-8")).hexdigest()
    base = _docker_config_dir()
    meta = os.path.join(base, "contexts", "meta", digest, "meta.json")
    try:
        with open(meta, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise EndpointError(f"no docker context {context!r} (looked in {os.path.dirname(meta)}); "
                            "`docker context ls` lists them") from None
    except (OSError, ValueError) as exc:
        raise EndpointError(f"docker context {context!r}: cannot read {meta}: {exc}") from None
    docker_ep = (data.get("Endpoints") or {}).get("docker") or {}
    host = docker_ep.get("Host")
    if not host:
        raise EndpointError(f"docker context {context!r} names no docker host")
    tls = {}
    tls_dir = os.path.join(base, "contexts", "tls", digest, "docker")
    for key, fname in (("tlscacert", "ca.pem"), ("tlscert", "cert.pem"), ("tlskey", "key.pem")):
        if os.path.exists(os.path.join(tls_dir, fname)):
            tls[key] = os.path.join(tls_dir, fname)
    if host.startswith("tcp://") and tls and not docker_ep.get("SkipTLSVerify"):
        tls["tlsverify"] = "1"
    if not host.startswith("tcp://"):
        tls = {}
    return parse_endpoint(name, host, tls, context=context)
