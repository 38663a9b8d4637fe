"""The one mapping from docker-py / requests / urllib3 / socket errors to dockmagic's error tree.

Every engine call goes through `mapped(...)`: no library traceback reaches a user. Engine gone,
timeouts and refusals each become one line that names the engine (``Endpoint.describe()``) and
the fix.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Callable, Optional

from .. import errors


def explanation(exc) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip()


def short_reason(exc) -> str:
    """A transport failure in a few words."""
    text = explanation(exc)
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError)) or \
            "Connection aborted" in text or "FileNotFoundError" in text or "No such file" in text \
            or "Connection refused" in text:
        return "the socket is missing or refuses connections"
    if "Permission denied" in text or isinstance(exc, PermissionError):
        return "permission denied on the socket (add yourself to the docker group)"
    if "Connection reset" in text or isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "the engine closed the connection (did dockerd stop?)"
    first = text.splitlines()[0][:200] if text else type(exc).__name__
    return first


def _status(exc) -> Optional[int]:
    return getattr(getattr(exc, "response", None), "status_code", None)


def refusal(exc, what: str) -> errors.EngineError:
    """An engine's refusal of a lifecycle call, in words naming the fix."""
    text = explanation(exc)
    low = text.lower()
    status = _status(exc)
    if "no such container" in low or (status == 404 and "container" in low):
        return errors.NotFound(f"{what}: no such container; see `%docker ps -a` for names")
    if "no such image" in low or (status == 404 and "image" in low):
        return errors.NotFound(f"{what}: no such image; see `%docker images` for names")
    if status == 404:
        return errors.NotFound(f"{what}: {text.splitlines()[0] if text else 'not found'}")
    if "is not running" in low:
        return errors.EngineError(f"{what}: the container is not running; start it first "
                                  "(`%docker start NAME`)")
    if "is paused" in low:
        return errors.EngineError(f"{what}: the container is paused; `docker unpause` it first")
    if "you cannot remove a running container" in low or "stop the container before" in low:
        return errors.EngineError(f"{what}: the container is running; stop it first, or use "
                                  "`%docker rm -f NAME`")
    if "image is being used" in low or "image is referenced" in low:
        return errors.EngineError(f"{what}: {text.splitlines()[0]}; remove those containers "
                                  "first, or use `%docker rmi -f`")
    return errors.EngineError(f"{what}: {text.splitlines()[0] if text else type(exc).__name__}")


def unavailable(exc, where: str, what: str = "") -> errors.EngineUnavailable:
    prefix = f"{what}: " if what else ""
    if _is_timeout(exc):
        return errors.EngineTimeout(
            f"{prefix}the Docker engine at {where} did not answer in time ({short_reason(exc)}); is it overloaded or "
            "unreachable? Check with `docker info`, or raise the timeout "
            "(`%config DockerMagics.engine_timeout`)")
    return errors.EngineUnavailable(prefix + errors.describe_no_engine(short_reason(exc), where))


def _is_timeout(exc) -> bool:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return True
    name = type(exc).__name__
    return "Timeout" in name


def map_error(exc: BaseException, where: str, what: str = "",
              describe: Optional[Callable[[str], str]] = None,
              error: type = errors.EngineError) -> Exception:
    """EXC (from docker-py, requests, urllib3 or the socket) as one dockmagic error.

    ``describe(text)`` words the engine's refusals for this call as a whole line, raised as
    ``error``; without it they get `refusal`'s words.
    """
    if isinstance(exc, errors.DockmagicError):
        return exc
    from .sdk import import_docker

    docker = import_docker()
    import requests
    import urllib3

    if isinstance(exc, docker.errors.APIError):
        if describe is not None:
            return error(describe(explanation(exc)))
        return refusal(exc, what or "the engine")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        urllib3.exceptions.HTTPError, OSError)):
        return unavailable(exc, where, what)
    if isinstance(exc, docker.errors.DockerException):  # e.g. no client could be made
        text = explanation(exc)
        if "Error while fetching server API version" in text or "Connection" in text:
            return unavailable(exc, where, what)
        return error(describe(text) if describe else f"{what}: {text.splitlines()[0]}")
    if isinstance(exc, requests.exceptions.RequestException):
        return unavailable(exc, where, what)
    return error(f"{what}: {type(exc).__name__}: {explanation(exc).splitlines()[0][:200]}")


def is_engine_failure(exc: BaseException) -> bool:
    """True for what `map_error` handles (SDK, transport, socket), False for the rest."""
    if isinstance(exc, OSError):
        return True
    mod = type(exc).__module__ or ""
    return mod.startswith(("docker", "requests", "urllib3"))


@contextmanager
def mapped(where: str, what: str = "", describe: Optional[Callable[[str], str]] = None,
           error: type = errors.EngineError):
    """Run the block; what the SDK or the transport raises comes out as one dockmagic error."""
    try:
        yield
    except errors.DockmagicError:
        raise
    except Exception as exc:
        if not is_engine_failure(exc):
            raise
        raise map_error(exc, where, what, describe, error) from None
