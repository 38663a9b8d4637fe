"""Container and image lifecycle on the engine, through the docker SDK: list, stats, stop, start,
restart, remove, logs, exec, commit, tag, push, pull, build, prune. Shared by the `%docker ...`
subcommands (commands.py) and the panel.

Functions take ids or names and return plain data (dicts as the Engine API gives them, or the
frozen image rows below); output is handed to callbacks, never printed here. Container rows are
built in one place, `panelstate.build_state`, for the panel and `%docker ps` alike. Engine errors
come out as `errors.EngineError` (or a subclass) with one line naming the fix. The `build_*` /
`parse_*` functions are pure.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from . import errors, labels as L
from .engine.reaper import kernel_alive, parse_kernel_label  # noqa: F401 (the one copy)
from .gpus import container_ref  # the one naming of a listing entry (panel, %gpus)

MANAGED = L.MANAGED
MANAGED_FILTER = L.MANAGED_FILTER
KERNEL_LABEL = L.KERNEL
NOTEBOOK_LABEL = L.NOTEBOOK
CELL_LABEL = L.CELL

OnOutput = Callable[[int, bytes], None]  # (1 = stdout | 2 = stderr, raw bytes)


def _engine(engine=None):
    """ENGINE, or the default one (docker's own rules) when a caller has none."""
    if engine is not None:
        return engine
    from . import engine as engines
    return engines.default()


# -- listing -----------------------------------------------------------------------------------
def query_containers(all: bool = True, managed_only: bool = False,
                     labels: Sequence[str] = (), engine=None) -> list:
    """The engine's container listing (low-level list format: Id, Names, Image, Labels, State,
    Status, Created, ...), one API call. ``labels``: more `KEY` / `KEY=VALUE` filters."""
    wanted = ([MANAGED_FILTER] if managed_only else []) + list(labels)
    filters = {"label": wanted} if wanted else None
    return _engine(engine).containers(all=all, filters=filters)


def query_images(name: Optional[str] = None, all: bool = False, engine=None) -> list:
    """The engine's image listing (low-level: Id, RepoTags, RepoDigests, Created, Size, ...)."""
    return _engine(engine).images(name=name, all=all)


def inspect_containers(container_ids: Iterable[str], workers: int = 8, engine=None) -> dict:
    """{id: inspect answer} for the given containers: one `inspect_container` each, a few at a
    time (the listing lacks device requests and start times; `panelstate.parse_inspect` reads
    them). Containers gone meanwhile are skipped; losing the engine raises."""
    from concurrent.futures import ThreadPoolExecutor

    def one(cid):
        try:
            return cid, inspect_container(cid, engine=engine)
        except errors.EngineUnavailable:
            raise
        except errors.EngineError:  # removed between the listing and now
            return cid, None

    ids = list(container_ids)
    if len(ids) <= 1:
        pairs = list(map(one, ids))
    else:  # docker-py's connection pool holds 10; stay under it
        with ThreadPoolExecutor(max_workers=min(workers, len(ids))) as pool:
            pairs = list(pool.map(one, ids))
    return {cid: info for cid, info in pairs if info is not None}


@dataclass(frozen=True)
class ImageRow:
    repository: str
    tag: str
    id: str          # 12 hex characters, without "sha256:"
    created: float   # epoch seconds
    size: int        # bytes


def build_image_rows(entries: Iterable[Mapping]) -> tuple:
    """Rows from the engine's low-level image listing, one per tag like `docker images`."""
    rows = []
    for e in entries:
        short = e.get("Id", "").split(":", 1)[-1][:12]
        created, size = float(e.get("Created") or 0), int(e.get("Size") or 0)
        tags = [t for t in (e.get("RepoTags") or []) if t != "<none>:<none>"]
        if not tags:
            digests = [d for d in (e.get("RepoDigests") or []) if d != "<none>@<none>"]
            repo = digests[0].partition("@")[0] if digests else "<none>"
            rows.append(ImageRow(repo, "<none>", short, created, size))
            continue
        for ref in tags:
            repo, tag = split_reference(ref)
            rows.append(ImageRow(repo, tag or "<none>", short, created, size))
    return tuple(rows)


def split_reference(ref: str) -> tuple:
    """`REPO[:TAG][@DIGEST]` -> (repo, tag or None); a port (`localhost:5000/x`) is no tag."""
    from .engine import split_reference as split  # the engine's own rule, one copy
    return split(ref)


# -- kernels and orphans -----------------------------------------------------------------------
def query_owners(hostname: Optional[str] = None, labels: Sequence[str] = (),
                 engine=None) -> list:
    """[(listing entry, `claims.classify` verdict)] for dockmagic's containers (any state):
    ``claimed`` by a live kernel, ``held`` by its own live kernel, a ``session`` or ``job`` that
    persists by design after its kernel, or an ``orphan``."""
    from . import claims

    alive = lambda label: kernel_alive(label, hostname)  # noqa: E731
    engine = _engine(engine)
    there = {}
    if getattr(engine, "link", None) is not None:  # claims on its host too (remote kernels')
        from .remote import hostreaper
        there = hostreaper.claims_on_host(engine)
    return [(e, claims.classify(e.get("Labels") or {},
                                claims.claimer(e["Id"]) or there.get(e["Id"]), alive))
            for e in query_containers(all=True, managed_only=True, labels=labels, engine=engine)]


def query_orphans(hostname: Optional[str] = None, engine=None) -> list:
    """dockmagic's containers (any state) whose kernel, on this host, no longer runs and that no
    live kernel claims; sessions started without --rm and `-d` jobs are not orphans."""
    return [e for e, verdict in query_owners(hostname, engine=engine) if verdict == "orphan"]


def _names(entries) -> str:
    return ", ".join(container_ref(e).name for e in entries[:5]) \
        + (", ..." if len(entries) > 5 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def report_orphans(engine=None) -> Optional[str]:
    """One line about what kernels that are gone left behind, or None: orphans (with how to
    remove them), sessions (they persist; how to reattach) and `-d` jobs. Only reports, never
    removes, and never raises (meant for the first use of the engine)."""
    try:
        owners = query_owners(engine=engine)
    except Exception:
        return None
    orphans = [e for e, v in owners if v == "orphan"]
    sessions = [e for e, v in owners if v == "session"]
    jobs = [e for e, v in owners if v == "job"]
    parts = []
    if orphans:
        running = sum(e.get("State") == "running" for e in orphans)
        state = f" ({running} still running)" if running else ""
        parts.append(f"{_plural(len(orphans), 'container')} left by kernels that are gone{state}: "
                     f"{_names(orphans)}; remove with `%docker prune --orphans`")
    if sessions:
        parts.append(f"{_plural(len(sessions), 'session')} kept from earlier kernels: "
                     f"{_names(sessions)}; `%docker session NAME` reattaches, "
                     "`%docker session --stop NAME` removes")
    if jobs:
        parts.append(f"{_plural(len(jobs), 'detached job')} of earlier kernels: {_names(jobs)}; "
                     "see `%docker ps -a`")
    return "dockmagic: " + "; ".join(parts) if parts else None


STOPPED_STATES = ("created", "exited", "dead")


def query_prunable(orphans: bool = False, labels: Sequence[str] = (), engine=None) -> list:
    """Listing entries `%docker prune` would remove (rows: `panelstate.build_state`): dockmagic's
    stopped containers, plus (``orphans``) its orphans in any state (`query_owners`); ``labels``
    narrows them. A container a live kernel claimed is never among them."""
    picked = []
    for e, verdict in query_owners(labels=labels, engine=engine):
        stopped = e.get("State") in STOPPED_STATES and verdict != "claimed"
        if stopped or (orphans and verdict == "orphan"):
            picked.append(e)
    return picked


# -- stats ---------------------------------------------------------------------------------------
def query_stats(container_id: str, engine=None) -> Optional[dict]:
    """One stats sample (no streaming) for a running container, or None if it is gone."""
    return _engine(engine).stats(container_id)


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


def uptime_seconds(entry: dict, now: Optional[float] = None) -> Optional[float]:
    """Seconds since a listed container was created (the listing has no start time)."""
    created = entry.get("Created")
    return None if created is None else max(0.0, (now or time.time()) - created)


# -- container actions ---------------------------------------------------------------------------
def inspect_container(name: str, engine=None) -> dict:
    return _engine(engine).inspect(name)


def stop_container(name: str, timeout: int = 10, engine=None):
    _engine(engine).stop(name, timeout=timeout)


def start_container(name: str, engine=None):
    """`docker start`: start a stopped container (a running one is left as it is)."""
    _engine(engine).start_existing(name)


def restart_container(name: str, timeout: int = 10, engine=None):
    """`docker restart`: stop (SIGTERM, then SIGKILL after ``timeout``) and start again."""
    _engine(engine).restart(name, timeout=timeout)


def remove_container(name: str, force: bool = False, engine=None):
    _engine(engine).remove_named(name, force=force)


def prune_stopped(names: Iterable[str], engine=None) -> list:
    """Remove the given stopped containers; returns the names removed."""
    removed = []
    for n in names:
        remove_container(n, engine=engine)
        removed.append(n)
    return removed


def fetch_logs(name: str, tail: Optional[int] = 100, engine=None) -> str:
    """The last TAIL lines of NAME's output as text (the panel's logs pane), without a
    session's end markers."""
    return strip_markers(_engine(engine).logs(name, tail=tail).decode("utf-8", "replace"))


def strip_markers(text: str) -> str:
    """A session's `docker logs` without its agent's end-of-cell markers (`%docker logs`, the
    panel's logs pane)."""
    return re.sub(r"\x1b\]dm;[0-9a-f]{32};[0-9a-fo]+\x07", "", text)


def stream_logs(name: str, on_output: OnOutput, *, follow: bool = False,
                tail: Optional[int] = None, timestamps: bool = False, engine=None):
    """`docker logs [-f] [--tail N] [-t]`: hand each chunk to ``on_output(stream, data)`` with
    stdout and stderr kept apart. Following ends when the container stops; KeyboardInterrupt
    propagates (the connection is closed first)."""
    eng = _engine(engine)
    tty = bool(eng.inspect(name)["Config"].get("Tty"))
    eng.stream_logs(name, on_output, follow=follow, tail=tail, timestamps=timestamps, tty=tty)


def run_exec(name: str, cmd: Sequence[str], on_output: OnOutput, *, user: Optional[str] = None,
             workdir: Optional[str] = None, environment: Optional[Sequence[str]] = None,
             engine=None) -> int:
    """`docker exec NAME CMD...`: stream its output to ``on_output``; returns the exit code.

    On KeyboardInterrupt the connection is closed and the interrupt propagates; the command
    itself may go on running in the container (the engine has no "kill exec" call).
    """
    return _engine(engine).exec_run(name, cmd, on_output, user=user, workdir=workdir,
                                    environment=environment)


# -- images --------------------------------------------------------------------------------------
def commit_container(name: str, repo_tag: str, message: Optional[str] = None,
                     author: Optional[str] = None, changes: Optional[Sequence[str]] = None,
                     engine=None) -> str:
    """`docker commit -m MSG -a AUTHOR [-c CHANGE] NAME [REPO[:TAG]]`; returns the new image id.

    For one of dockmagic's containers the image keeps the filesystem but not dockmagic's
    plumbing: ENTRYPOINT, CMD, USER and WORKDIR are the source image's again (dockmagic replaced
    them to feed the cell), and the `dockmagic.*` labels are blanked (the engine cannot drop a
    label on commit), so containers later run from the image are not taken for dockmagic's.
    The environment dockmagic set (HOME, USER, ...) stays, as with `docker commit`.
    """
    eng = _engine(engine)
    conf = None
    info = eng.inspect(name)
    labels = info.get("Config", {}).get("Labels") or {}
    if L.is_managed(labels):
        source = eng.inspect_image(info["Image"]).get("Config") or {}
        conf = {
            "Entrypoint": source.get("Entrypoint") or [],  # [] (not null): keep none
            "Cmd": source.get("Cmd") or [],
            "WorkingDir": source.get("WorkingDir") or "",
            "User": source.get("User") or "0",  # "" would inherit the container's uid
            "Labels": {**(source.get("Labels") or {}),
                       **{k: "" for k in labels if k.startswith("dockmagic.")}},
        }
    repo, tag = split_reference(repo_tag) if repo_tag else (None, None)
    return eng.commit(name, repo, tag, message=message, author=author, changes=changes, conf=conf)


def tag_image(source: str, target: str, engine=None):
    """`docker tag SOURCE TARGET`."""
    repo, tag = split_reference(target)
    _engine(engine).tag(source, repo, tag)


def remove_image(image: str, force: bool = False, engine=None):
    """`docker rmi [-f] IMAGE`."""
    _engine(engine).remove_image(image, force=force)


def inspect_image(image: str, engine=None) -> dict:
    return _engine(engine).inspect_image(image)


describe_registry_error = errors.describe_registry_error


def push_image(ref: str, on_progress: Callable[[str], None], engine=None) -> Optional[str]:
    """`docker push REPO[:TAG]` with progress lines; returns the pushed digest (None if the
    engine did not say). Without a tag every tag of REPO is pushed, as the CLI does."""
    return _engine(engine).push(ref, on_progress=on_progress)


def pull_image(ref: str, on_progress: Callable[[str], None], engine=None) -> dict:
    """`docker pull IMAGE` (`:latest` when no tag) with progress lines; returns the image's
    inspect data."""
    return _engine(engine).pull(ref, on_progress=on_progress)


# -- build ---------------------------------------------------------------------------------------
_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$", re.M)


def build_context(dockerfile: str, context: Optional[str] = None,
                  dockerfile_name: str = "Dockerfile", engine=None):
    """A tar build context: the folder ``context`` (honouring its .dockerignore) with
    ``dockerfile`` as ``dockerfile_name``, or just the Dockerfile when ``context`` is None."""
    extra = [(dockerfile_name, dockerfile)]
    if context is None:
        return _engine(engine).build_context(None, (), dockerfile_name, extra)
    root = os.path.abspath(context)
    patterns = []
    ignore = os.path.join(root, ".dockerignore")
    if os.path.exists(ignore):
        with open(ignore) as f:
            patterns = [ln.strip() for ln in f.read().splitlines()
                        if ln.strip() and not ln.strip().startswith("#")]
    return _engine(engine).build_context(root, patterns, dockerfile_name, extra)


def build_image(dockerfile: str, tag: str, on_output: Callable[[str], None], *,
                context: Optional[str] = None, dockerfile_name: str = "Dockerfile",
                buildargs: Optional[Mapping[str, str]] = None, nocache: bool = False,
                target: Optional[str] = None, engine=None) -> str:
    """`docker build -t TAG` with the legacy builder (no BuildKit), the Dockerfile given as text.

    The build log goes to ``on_output`` as it arrives. Intermediate containers are removed even
    when a step fails (`--force-rm`). Returns the new image id; a failure raises `BuildFailed`
    naming the step.
    """
    eng = _engine(engine)
    try:
        fileobj = build_context(dockerfile, context, dockerfile_name, engine=eng)
    except OSError as exc:
        raise errors.EngineError(f"build {tag}: cannot read the build context {context}: "
                                 f"{exc}") from None
    step = None
    image_id = None
    describe = lambda text: describe_build_failure(tag, step, text, context is None)  # noqa: E731
    with fileobj:
        events = eng.build(fileobj, tag=tag, dockerfile=dockerfile_name, buildargs=buildargs,
                           nocache=nocache, target=target, describe=describe)
        for event in events:
            if "stream" in event:
                text = event["stream"]
                for m in _STEP.finditer(text):
                    step = (m.group(1), m.group(2).strip())
                on_output(text)
            elif "error" in event or "errorDetail" in event:
                text = event.get("error") or event["errorDetail"].get("message", "")
                raise errors.BuildFailed(describe_build_failure(tag, step, text, context is None))
            elif "aux" in event:
                image_id = (event["aux"] or {}).get("ID") or image_id
            elif event.get("status"):
                on_output(event["status"] + "\n")
    if image_id is None:
        image_id = eng.inspect_image(tag)["Id"]
    return image_id


def describe_build_failure(tag: str, step: Optional[tuple], text: str,
                           empty_context: bool) -> str:
    """One line: which step failed, what the engine said, and the fix where one is known."""
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    where = f" at step {step[0]} ({step[1]})" if step else ""
    low = first.lower()
    hint = ""
    if empty_context and ("copy failed" in low or "add failed" in low
                          or "file not found in build context" in low):
        hint = ("; the build context is empty by default: name a folder to send, e.g. "
                "`%%dockerfile -t NAME:TAG .`")
    elif "pull access denied" in low or "dial tcp" in low or "manifest unknown" in low \
            or "not found" in low and step and step[1].upper().startswith("FROM"):
        hint = "; the FROM image is neither local nor pullable: build or pull it first"
    elif "parse error" in low or "unknown instruction" in low:
        hint = "; fix the Dockerfile in the cell"
    return f"building {tag} failed{where}: {first}{hint}"
