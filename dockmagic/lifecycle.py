"""Container and image lifecycle on the engine, through the docker SDK: list, stats, stop, start,
restart, remove, logs, commit, prune. Shared by `%docker ...` subcommands and the panel.

Every function takes ids or names and returns plain data (dicts as the Engine API gives them);
engine errors come out as `errors.EngineError` with one line naming the fix.
"""
from __future__ import annotations

import time
from typing import Iterable, Optional

from . import errors
from .runner import get_client

MANAGED = "dockmagic.managed"


def _engine_error(exc, what: str):
    text = str(getattr(exc, "explanation", None) or exc).strip()
    if "No such container" in text or "404" in text and "container" in text.lower():
        return errors.EngineError(f"{what}: no such container; see `%docker ps -a` for names")
    return errors.EngineError(f"{what}: {text}")


def _call(what: str, fn, *args, **kwargs):
    import docker

    try:
        return fn(*args, **kwargs)
    except docker.errors.APIError as exc:
        raise _engine_error(exc, what) from None


def query_containers(all: bool = True, managed_only: bool = False) -> list:
    """The engine's container listing (low-level list format: Id, Names, Image, Labels, State,
    Status, Created, ...), one API call."""
    filters = {"label": [MANAGED]} if managed_only else None
    return _call("listing containers", get_client().api.containers, all=all, filters=filters)


def query_stats(container_id: str) -> Optional[dict]:
    """One stats sample (no streaming) for a running container, or None if it is gone."""
    import docker

    try:
        return get_client().api.stats(container_id, stream=False, one_shot=True)
    except docker.errors.APIError:
        return None


def cpu_percent(stats: Optional[dict]) -> Optional[float]:
    """CPU % as `docker stats` computes it, from one sample with precpu filled."""
    try:
        cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre.get("system_cpu_usage", 0)
        ncpu = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
        return (delta / system) * ncpu * 100.0 if system > 0 and delta >= 0 else 0.0
    except (KeyError, TypeError):
        return None


def memory_usage(stats: Optional[dict]) -> Optional[tuple]:
    """(used bytes excluding page cache, limit bytes), as `docker stats` shows them."""
    try:
        mem = stats["memory_stats"]
        cache = mem.get("stats", {}).get("total_inactive_file",
                                         mem.get("stats", {}).get("inactive_file", 0))
        return mem["usage"] - cache, mem["limit"]
    except (KeyError, TypeError):
        return None


def inspect_container(name: str) -> dict:
    return _call(f"inspect {name}", get_client().api.inspect_container, name)


def stop_container(name: str, timeout: int = 10):
    _call(f"stop {name}", get_client().api.stop, name, timeout=timeout)


def start_container(name: str):
    _call(f"start {name}", get_client().api.start, name)


def restart_container(name: str, timeout: int = 10):
    _call(f"restart {name}", get_client().api.restart, name, timeout=timeout)


def remove_container(name: str, force: bool = False):
    _call(f"rm {name}", get_client().api.remove_container, name, force=force)


def fetch_logs(name: str, tail: Optional[int] = 100) -> str:
    data = _call(f"logs {name}", get_client().api.logs, name, stdout=True, stderr=True,
                 tail="all" if tail is None else tail)
    return data.decode("utf-8", "replace")


def commit_container(name: str, repo_tag: str, message: Optional[str] = None,
                     author: Optional[str] = None) -> str:
    """`docker commit -m MSG -a AUTHOR NAME REPO:TAG`; returns the new image id."""
    repo, _, tag = repo_tag.rpartition(":") if ":" in repo_tag.split("/")[-1] else (repo_tag, "", "")
    resp = _call(f"commit {name}", get_client().api.commit, name, repository=repo or repo_tag,
                 tag=tag or None, message=message, author=author)
    return resp["Id"]


def prune_stopped(names: Iterable[str]) -> list:
    """Remove the given stopped containers; returns the names removed."""
    removed = []
    for n in names:
        remove_container(n)
        removed.append(n)
    return removed


def uptime_seconds(entry: dict, now: Optional[float] = None) -> Optional[float]:
    """Seconds since a listed container was created (the listing has no start time)."""
    created = entry.get("Created")
    return None if created is None else max(0.0, (now or time.time()) - created)
