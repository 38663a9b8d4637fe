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
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from . import errors
from .gpus import container_ref  # the one naming of a listing entry (panel, %gpus)
from .engine.reaper import kernel_alive, parse_kernel_label  # noqa: F401 (one copy)
from .runner import get_client

MANAGED = "dockmagic.managed"
#: The filter for dockmagic's own containers. `=1`, not mere presence: an image committed from a
#: dockmagic container carries these labels blanked (see `commit_container`), and containers run
#: from it outside dockmagic are not dockmagic's.
MANAGED_FILTER = f"{MANAGED}=1"
KERNEL_LABEL = "dockmagic.kernel"
NOTEBOOK_LABEL = "dockmagic.notebook"
CELL_LABEL = "dockmagic.cell"

OnOutput = Callable[[int, bytes], None]  # (1 = stdout | 2 = stderr, raw bytes)


# -- errors ------------------------------------------------------------------------------------
def _explanation(exc) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip()


def _engine_error(exc, what: str):
    text = _explanation(exc)
    low = text.lower()
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if "no such container" in low or (status == 404 and "container" in low):
        return errors.EngineError(f"{what}: no such container; see `%docker ps -a` for names")
    if "no such image" in low or (status == 404 and "image" in low):
        return errors.EngineError(f"{what}: no such image; see `%docker images` for names")
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


@contextmanager
def _engine(what: str, describe: Optional[Callable[[str], str]] = None,
            error: type = errors.EngineError):
    """Turn what docker-py, requests and urllib3 raise into one-line dockmagic errors.

    ``describe`` words the engine's refusals for this call (push/pull/build) as a whole line,
    raised as ``error``; without it they get `_engine_error`'s words. Losing the engine itself
    is `errors.EngineUnavailable`.
    """
    import docker
    import requests
    import urllib3

    try:
        yield
    except docker.errors.APIError as exc:
        if describe is not None:
            raise error(describe(_explanation(exc))) from None
        raise _engine_error(exc, what) from None
    except requests.exceptions.ConnectionError as exc:
        reason = _explanation(exc).splitlines()[0][:200]
        raise errors.EngineUnavailable(f"{what}: " + errors.describe_no_engine(reason)) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError) as exc:
        text = _explanation(exc)
        raise error(describe(text) if describe else f"{what}: {text}") from None


def _call(what: str, fn, *args, **kwargs):
    with _engine(what):
        return fn(*args, **kwargs)


# -- listing -----------------------------------------------------------------------------------
def query_containers(all: bool = True, managed_only: bool = False,
                     labels: Sequence[str] = ()) -> list:
    """The engine's container listing (low-level list format: Id, Names, Image, Labels, State,
    Status, Created, ...), one API call. ``labels``: more `KEY` / `KEY=VALUE` filters."""
    wanted = ([MANAGED_FILTER] if managed_only else []) + list(labels)
    filters = {"label": wanted} if wanted else None
    return _call("listing containers", get_client().api.containers, all=all, filters=filters)


def query_images(name: Optional[str] = None, all: bool = False) -> list:
    """The engine's image listing (low-level: Id, RepoTags, RepoDigests, Created, Size, ...)."""
    return _call("listing images", get_client().api.images, name=name, all=all)


def inspect_containers(container_ids: Iterable[str], workers: int = 8) -> dict:
    """{id: inspect answer} for the given containers: one `inspect_container` each, a few at a
    time (the listing lacks device requests and start times; `panelstate.parse_inspect` reads
    them). Containers gone meanwhile are skipped; losing the engine raises."""
    from concurrent.futures import ThreadPoolExecutor

    def one(cid):
        try:
            return cid, inspect_container(cid)
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
    name = ref.partition("@")[0]
    repo, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:
        return repo, tag
    return name, None


# -- kernels and orphans -----------------------------------------------------------------------
def query_owners(hostname: Optional[str] = None, labels: Sequence[str] = ()) -> list:
    """[(listing entry, `claims.classify` verdict)] for dockmagic's containers (any state):
    ``claimed`` by a live kernel, ``held`` by its own live kernel, a ``session`` or ``job`` that
    persists by design after its kernel, or an ``orphan``."""
    from . import claims

    alive = lambda label: kernel_alive(label, hostname)  # noqa: E731
    return [(e, claims.classify(e.get("Labels") or {}, claims.claimer(e["Id"]), alive))
            for e in query_containers(all=True, managed_only=True, labels=labels)]


def query_orphans(hostname: Optional[str] = None) -> list:
    """dockmagic's containers (any state) whose kernel, on this host, no longer runs and that no
    live kernel claims; sessions started without --rm and `-d` jobs are not orphans."""
    return [e for e, verdict in query_owners(hostname) if verdict == "orphan"]


def _names(entries) -> str:
    return ", ".join(container_ref(e).name for e in entries[:5]) \
        + (", ..." if len(entries) > 5 else "")


def report_orphans() -> Optional[str]:
    """One line about what kernels that are gone left behind, or None: orphans (with how to
    remove them), sessions (they persist; how to reattach) and `-d` jobs. Only reports, never
    removes, and never raises (meant for the first use of the engine)."""
    try:
        owners = query_owners()
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


STOPPED_STATES = ("created", "exited", "dead")


def query_prunable(orphans: bool = False, labels: Sequence[str] = ()) -> list:
    """Listing entries `%docker prune` would remove (rows: `panelstate.build_state`): dockmagic's
    stopped containers, plus (``orphans``) its orphans in any state (`query_owners`); ``labels``
    narrows them. A container a live kernel claimed is never among them."""
    picked = []
    for e, verdict in query_owners(labels=labels):
        stopped = e.get("State") in STOPPED_STATES and verdict != "claimed"
        if stopped or (orphans and verdict == "orphan"):
            picked.append(e)
    return picked


# -- stats ---------------------------------------------------------------------------------------
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


def uptime_seconds(entry: dict, now: Optional[float] = None) -> Optional[float]:
    """Seconds since a listed container was created (the listing has no start time)."""
    created = entry.get("Created")
    return None if created is None else max(0.0, (now or time.time()) - created)


# -- container actions ---------------------------------------------------------------------------
def inspect_container(name: str) -> dict:
    return _call(f"inspect {name}", get_client().api.inspect_container, name)


def stop_container(name: str, timeout: int = 10):
    _call(f"stop {name}", get_client().api.stop, name, timeout=timeout)


def start_container(name: str):
    """`docker start`: start a stopped container (a running one is left as it is)."""
    _call(f"start {name}", get_client().api.start, name)


def restart_container(name: str, timeout: int = 10):
    """`docker restart`: stop (SIGTERM, then SIGKILL after ``timeout``) and start again."""
    _call(f"restart {name}", get_client().api.restart, name, timeout=timeout)


def remove_container(name: str, force: bool = False):
    _call(f"rm {name}", get_client().api.remove_container, name, force=force)


def prune_stopped(names: Iterable[str]) -> list:
    """Remove the given stopped containers; returns the names removed."""
    removed = []
    for n in names:
        remove_container(n)
        removed.append(n)
    return removed


def fetch_logs(name: str, tail: Optional[int] = 100) -> str:
    data = _call(f"logs {name}", get_client().api.logs, name, stdout=True, stderr=True,
                 tail="all" if tail is None else tail)
    return data.decode("utf-8", "replace")


_FRAME = struct.Struct(">BxxxL")


def stream_logs(name: str, on_output: OnOutput, *, follow: bool = False,
                tail: Optional[int] = None, timestamps: bool = False):
    """`docker logs [-f] [--tail N] [-t]`: hand each chunk to ``on_output(stream, data)`` with
    stdout and stderr kept apart. Following ends when the container stops; KeyboardInterrupt
    propagates (the connection is closed first)."""
    api = get_client().api
    tty = bool(inspect_container(name)["Config"].get("Tty"))
    params = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": int(timestamps),
              "tail": "all" if tail is None else int(tail)}

    def request():
        # docker-py's own logs() merges stdout and stderr; its request, read frame by frame.
        res = api._get(api._url("/containers/{0}/logs", name), params=params, stream=True)
        api._raise_for_status(res)
        return res

    res = _call(f"logs {name}", request)
    try:
        with _engine(f"logs {name}"):
            if follow:  # a quiet container must not hit the client's read timeout
                api._disable_socket_timeout(api._get_raw_response_socket(res))
            if tty:
                for chunk in res.iter_content(chunk_size=None):
                    on_output(1, chunk)
                return
            read = res.raw.read
            while True:
                header = read(_FRAME.size)
                if len(header) < _FRAME.size:
                    return
                kind, size = _FRAME.unpack(header)
                data = read(size) if size else b""
                if size and not data:
                    return
                on_output(2 if kind == 2 else 1, data)
    finally:
        res.close()


def run_exec(name: str, cmd: Sequence[str], on_output: OnOutput, *, user: Optional[str] = None,
             workdir: Optional[str] = None, environment: Optional[Sequence[str]] = None) -> int:
    """`docker exec NAME CMD...`: stream its output to ``on_output``; returns the exit code.

    On KeyboardInterrupt the connection is closed and the interrupt propagates; the command
    itself may go on running in the container (the engine has no "kill exec" call).
    """
    api = get_client().api
    exec_id = _call(f"exec {name}", api.exec_create, name, list(cmd), stdout=True, stderr=True,
                    user=user or "", workdir=workdir, environment=list(environment or []))["Id"]
    stream = _call(f"exec {name}", api.exec_start, exec_id, stream=True, demux=True)
    try:
        with _engine(f"exec {name}"):
            for out, err in stream:
                if out:
                    on_output(1, out)
                if err:
                    on_output(2, err)
    finally:
        stream.close()
    code = _call(f"exec {name}", api.exec_inspect, exec_id).get("ExitCode")
    return -1 if code is None else int(code)


# -- images --------------------------------------------------------------------------------------
def commit_container(name: str, repo_tag: str, message: Optional[str] = None,
                     author: Optional[str] = None, changes: Optional[Sequence[str]] = None) -> str:
    """`docker commit -m MSG -a AUTHOR [-c CHANGE] NAME [REPO[:TAG]]`; returns the new image id.

    For one of dockmagic's containers the image keeps the filesystem but not dockmagic's
    plumbing: ENTRYPOINT, CMD, USER and WORKDIR are the source image's again (dockmagic replaced
    them to feed the cell), and the `dockmagic.*` labels are blanked (the engine cannot drop a
    label on commit), so containers later run from the image are not taken for dockmagic's.
    The environment dockmagic set (HOME, USER, ...) stays, as with `docker commit`.
    """
    api = get_client().api
    conf = None
    info = inspect_container(name)
    labels = info.get("Config", {}).get("Labels") or {}
    if labels.get(MANAGED) == "1":
        source = _call(f"commit {name}", api.inspect_image, info["Image"]).get("Config") or {}
        conf = {
            "Entrypoint": source.get("Entrypoint") or [],  # [] (not null): keep none
            "Cmd": source.get("Cmd") or [],
            "WorkingDir": source.get("WorkingDir") or "",
            "User": source.get("User") or "0",  # "" would inherit the container's uid
            "Labels": {**(source.get("Labels") or {}),
                       **{k: "" for k in labels if k.startswith("dockmagic.")}},
        }
    repo, tag = split_reference(repo_tag) if repo_tag else (None, None)
    resp = _call(f"commit {name}", api.commit, name, repository=repo or None, tag=tag,
                 message=message, author=author, changes=list(changes or []) or None, conf=conf)
    return resp["Id"]


def tag_image(source: str, target: str):
    """`docker tag SOURCE TARGET`."""
    repo, tag = split_reference(target)
    _call(f"tag {source}", get_client().api.tag, source, repo, tag or "latest")


def remove_image(image: str, force: bool = False):
    """`docker rmi [-f] IMAGE`."""
    _call(f"rmi {image}", get_client().api.remove_image, image, force=force)


def inspect_image(image: str) -> dict:
    return _call(f"inspect {image}", get_client().api.inspect_image, image)


def describe_registry_error(action: str, ref: str, text: str) -> str:
    """One line for a failed push or pull, naming the likely fix."""
    registry = errors.registry_of(ref)
    low = text.lower()
    first = text.strip().splitlines()[0] if text.strip() else "unknown error"
    if "does not exist locally" in low or "no such image" in low:
        fix = f"there is no local image {ref}; tag one first (`%docker tag IMAGE {ref}`)"
    elif "connection refused" in low or "no such host" in low or "dial tcp" in low \
            or "i/o timeout" in low or "no route to host" in low:
        fix = (f"the registry {registry} does not answer; is it running, and reachable from "
               "the engine?")
    elif "manifest unknown" in low or "not found" in low:
        fix = f"{ref} is not in {registry}; check the name and tag"
    elif "denied" in low or "unauthorized" in low or "authentication required" in low:
        fix = (f"{registry} refused access; log in (`docker login {registry}`), or use a "
               "repository you may write to")
    elif "server gave http response to https client" in low:
        fix = (f"{registry} speaks plain HTTP; list it in the engine's insecure-registries "
               "(loopback registries are insecure by default)")
    else:
        fix = "check the name, and that the registry answers"
    return f"{action} {ref} failed: {first.rstrip('.')}; {fix}"


def _registry_stream(action: str, ref: str, start: Callable, on_progress: Callable[[str], None]
                     ) -> dict:
    """Run a push/pull (``start()`` returns its event stream): one progress line per layer state
    change (not per byte chunk); one line naming the fix on the first error, whether the engine
    refuses the request or reports it mid-stream. Returns the last `aux` payload (push digest)."""
    last_state = {}
    aux = {}
    with _engine(f"{action} {ref}", lambda text: describe_registry_error(action, ref, text)):
        for event in start():
            if "error" in event or "errorDetail" in event:
                text = event.get("error") or (event.get("errorDetail") or {}).get("message", "")
                raise errors.EngineError(describe_registry_error(action, ref, text))
            if "aux" in event:
                aux = event["aux"] or {}
                continue
            status, layer = event.get("status", ""), event.get("id", "")
            if not status or last_state.get(layer) == status:
                continue
            last_state[layer] = status
            on_progress(f"{layer}: {status}" if layer else status)
    return aux


def push_image(ref: str, on_progress: Callable[[str], None]) -> Optional[str]:
    """`docker push REPO[:TAG]` with progress lines; returns the pushed digest (None if the
    engine did not say). Without a tag every tag of REPO is pushed, as the CLI does."""
    repo, tag = split_reference(ref)
    api = get_client().api
    start = lambda: api.push(repo, tag=tag, stream=True, decode=True)  # noqa: E731
    return _registry_stream("push", ref, start, on_progress).get("Digest")


def pull_image(ref: str, on_progress: Callable[[str], None]) -> dict:
    """`docker pull IMAGE` (`:latest` when no tag) with progress lines; returns the image's
    inspect data."""
    if "@" in ref:
        repo, tag, full = ref, None, ref
    else:
        repo, tag = split_reference(ref)
        tag = tag or "latest"  # the API pulls every tag when none is given; the CLI does not
        full = f"{repo}:{tag}"
    api = get_client().api
    start = lambda: api.pull(repo, tag=tag, stream=True, decode=True)  # noqa: E731
    _registry_stream("pull", ref, start, on_progress)
    return inspect_image(full)


# -- build ---------------------------------------------------------------------------------------
_STEP = re.compile(r"^Step (\d+/\d+) : (.*)$", re.M)


def build_context(dockerfile: str, context: Optional[str] = None,
                  dockerfile_name: str = "Dockerfile"):
    """A tar build context: the folder ``context`` (honouring its .dockerignore) with
    ``dockerfile`` as ``dockerfile_name``, or just the Dockerfile when ``context`` is None."""
    from docker.utils.build import create_archive, exclude_paths

    extra = [(dockerfile_name, dockerfile)]
    if context is None:
        return create_archive(root="/", files=[], extra_files=extra)
    root = os.path.abspath(context)
    patterns = []
    ignore = os.path.join(root, ".dockerignore")
    if os.path.exists(ignore):
        with open(ignore) as f:
            patterns = [ln.strip() for ln in f.read().splitlines()
                        if ln.strip() and not ln.strip().startswith("#")]
    files = sorted(exclude_paths(root, patterns, dockerfile=dockerfile_name))
    return create_archive(root=root, files=files, extra_files=extra)


def build_image(dockerfile: str, tag: str, on_output: Callable[[str], None], *,
                context: Optional[str] = None, dockerfile_name: str = "Dockerfile",
                buildargs: Optional[Mapping[str, str]] = None, nocache: bool = False,
                target: Optional[str] = None) -> str:
    """`docker build -t TAG` with the legacy builder (no BuildKit), the Dockerfile given as text.

    The build log goes to ``on_output`` as it arrives. Intermediate containers are removed even
    when a step fails (`--force-rm`). Returns the new image id; a failure raises `BuildFailed`
    naming the step.
    """
    api = get_client().api
    try:
        fileobj = build_context(dockerfile, context, dockerfile_name)
    except OSError as exc:
        raise errors.EngineError(f"build {tag}: cannot read the build context {context}: "
                                 f"{exc}") from None
    step = None
    image_id = None
    describe = lambda text: describe_build_failure(tag, step, text, context is None)  # noqa: E731
    with _engine(f"build {tag}", describe, errors.BuildFailed):
        with fileobj:
            events = api.build(fileobj=fileobj, custom_context=True, dockerfile=dockerfile_name,
                               tag=tag, rm=True, forcerm=True, decode=True, pull=False,
                               buildargs=dict(buildargs or {}) or None, nocache=nocache,
                               target=target)
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
        image_id = inspect_image(tag)["Id"]
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
