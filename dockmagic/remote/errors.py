"""Errors for remote engines: one line each, naming the engine and the fix. Pure."""
from __future__ import annotations

from .. import errors as _errors


class RemoteEngineError(_errors.EngineUnavailable):
    """A remote engine cannot be used; the message names the engine and what to do."""


class EngineUnreachable(RemoteEngineError):
    pass


class AuthRefused(RemoteEngineError):
    pass


class NoRsync(RemoteEngineError):
    pass


class NoDockerThere(RemoteEngineError):
    pass


class ConnectionDropped(RemoteEngineError):
    pass


def classify_ssh_failure(engine: str, target: str, log: str, timeout_s: float,
                         check: str = "") -> RemoteEngineError:
    """What `ssh` printed when it could not connect -> the one error that names the fix."""
    check = check or f"ssh {target} true"
    low = log.lower()
    last = next((ln.strip() for ln in reversed(log.splitlines()) if ln.strip()), "")
    if "permission denied" in low or "too many authentication failures" in low:
        return AuthRefused(
            f"engine {engine}: SSH authentication refused by {target} ({last}); add your key "
            f"there (`ssh-copy-id {target}`), load it into your agent (`ssh-add`), or name it "
            f"with IdentityFile in ~/.ssh/config; check with `{check}`")
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return AuthRefused(
            f"engine {engine}: the host key of {target} is unknown or changed ({last}); connect "
            f"once with `{check}` to accept it, after checking it")
    if "could not resolve hostname" in low:
        return EngineUnreachable(
            f"engine {engine}: cannot resolve {target} ({last}); check the name, or add a Host "
            "alias in ~/.ssh/config")
    return EngineUnreachable(
        f"engine {engine}: {target} unreachable within {timeout_s:g} s"
        f"{' (' + last + ')' if last else ''}; check the host is up and `{check}` "
        "works (VPN, ProxyJump in ~/.ssh/config)")


def no_rsync(engine: str, target: str, where: str = "on the remote host") -> NoRsync:
    fix = ("install it there (`sudo apt-get install rsync`)" if where == "on the remote host"
           else "install it here (`sudo apt-get install rsync`)")
    return NoRsync(f"engine {engine}: no rsync {where} ({target}); {fix}, or run the cell "
                   "with `--sync none`")


def no_docker_there(engine: str, target: str, socket: str, detail: str) -> NoDockerThere:
    return NoDockerThere(
        f"engine {engine}: SSH to {target} works, but no Docker engine answers at {socket} "
        f"there ({detail}); start dockerd there, and make sure your SSH user may use its socket "
        "(the docker group)")


def image_missing(engine: str, image: str) -> str:
    return (f"engine {engine}: image {image!r} is not on that engine and cannot be pulled "
            f"there; push it to a registry that host can reach, pull it there (`%docker pull "
            f"{image} --engine {engine}`), or build it there (`%%dockerfile --engine {engine}`)")


def no_gpu_runtime(engine: str) -> str:
    return (f"engine {engine}: no NVIDIA runtime on that engine for --gpus; install "
            "nvidia-container-toolkit there and run `nvidia-ctk runtime configure "
            "--runtime=docker`, restart its dockerd, or drop --gpus / pick another engine")
