"""Records what each container cell ran and attaches it to the cell's output; this kernel's
history; image pinning (`%docker config --pin on`, `%docker pin`).

The record's shape is ``provenance``'s (pure); this module gathers the facts: the engine's name,
endpoint and identity (asked once per engine), the image's ID and RepoDigest (one image inspect per
one-shot cell, overlapping its run; a session's are asked once, at its first cell, so a warm
session cell makes no engine call), times, exit status, GPUs (NVML, only for cells that asked for
GPUs), --in/--out sizes. Engine calls go through the cell's `Engine`.

The record travels as display metadata under ``provenance.KEY``: it is saved in the .ipynb and
survives nbclient/nbconvert; its text/plain is the one summary line.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Optional

from . import __version__, errors, provenance

#: This kernel's records, in the order the cells ran: [{"record", "body"}].
HISTORY: list = []
#: Off only to measure what recording costs (benchmarks/bench_provenance.py).
enabled = True
_engines: dict = {}
_engine_lock = threading.Lock()
#: Per session container: (the record part that stays the same for all its cells).
_session_base: dict = {}
#: `docker run` argv of the sessions this kernel started, by session name: (image, argv).
_session_argv: dict = {}


# -- facts ---------------------------------------------------------------------------------------
def query_engine(engine) -> dict:
    """{name, endpoint, host, id, version} of ENGINE; asked once per engine."""
    key = (engine.name, engine.url)
    facts = _engines.get(key)
    if facts is not None:
        return facts
    with _engine_lock:
        if key not in _engines:
            facts = {"name": engine.name, "endpoint": engine.url}
            try:
                info = engine.info()
            except errors.DockmagicError as exc:  # the cell ran, so this is rare: keep what is known
                return dict(facts, host=None, id=None, version=None, error=str(exc)[:200])
            _engines[key] = dict(facts, host=info.get("Name"), id=info.get("ID"),
                                 version=info.get("ServerVersion"))
    return _engines[key]


def query_image(engine, ref: str) -> Optional[dict]:
    """`docker image inspect REF`, or None when the engine does not have it. A reference by
    digest or image ID always means the same image, so its answer is kept."""
    key = (engine.endpoint.url, ref)
    info = _by_digest.get(key)
    if info is not None:
        return info
    try:
        info = engine.inspect_image(ref)
    except errors.DockmagicError:
        return None
    if _is_pinned(ref):
        _by_digest[key] = info
    return info


_by_digest: dict = {}


class _ImageLookup:
    """`query_image` on dockmagic's one lookup thread, asked when the cell starts, so the round
    trip overlaps the container's run instead of adding to the cell's time (a thread started
    per cell would cost its start-up, which a loaded machine makes long)."""

    def __init__(self, engine, ref: str):
        self.engine, self.ref = engine, ref
        self.info = _by_digest.get((engine.endpoint.url, ref))
        self.future = None
        if self.info is None:
            self.future = _lookups().submit(query_image, engine, ref)

    def result(self) -> Optional[dict]:
        if self.future is not None:
            try:
                self.info = self.future.result(30)
            except Exception:
                self.info = None
        if self.info is None:  # not local when the cell started: pulled since, ask again
            self.info = query_image(self.engine, self.ref)
        return self.info


_pool = None


def _lookups():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockmagic-record")
    return _pool


def query_gpus(spec) -> list:
    """GPUs the spec asked for, with index/UUID/model from NVML where there is a driver."""
    if not spec.gpus:
        return []
    requests = [{"request": g.to_cli(), "count": g.count, "device_ids": list(g.device_ids)}
                for g in spec.gpus]
    from . import nvml
    return provenance.to_gpus(requests, to_devices(nvml.query_snapshot()))


def to_devices(snap) -> list:
    """An NVML snapshot's GPUs as {index, uuid, model}; none without a driver."""
    if snap.error:
        return []
    return [{"index": g.index, "uuid": g.uuid, "model": g.name} for g in snap.gpus if not g.lost]


def publish(record: dict, body: str):
    """Attach RECORD to the cell's output (one short line shows) and keep it in HISTORY.

    In a kernel the line is text/plain and text/html, sent without making the cell wait on the
    kernel's I/O thread (`iopub.publish`). A terminal IPython prints text/plain into the
    cell's own output, which a script may be reading, so there the record goes out with the
    HTML line only (not printed; `%docker history` shows it)."""
    from IPython.core.getipython import get_ipython

    from . import iopub

    HISTORY.append({"record": record, "body": body})
    line = provenance.summary_line(record)
    data = {"text/html": provenance.to_summary_html(line)}
    if getattr(get_ipython(), "kernel", None) is not None:
        data["text/plain"] = line
    iopub.publish(data, {provenance.KEY: record})


# -- one-shot and detached cells ------------------------------------------------------------------
class CellRecorder:
    """Started before a one-shot or detached cell runs; ``finish`` publishes its record."""

    def __init__(self, engine, plan, body: str):
        self.engine, self.plan, self.body = engine, plan, body
        self.started = time.time()
        self.image = _ImageLookup(engine, plan.spec.image)

    def finish(self, result=None, *, name: Optional[str] = None, xfer=None, live=None):
        """RESULT: runner's CellResult (None: the cell did not end normally); NAME: a detached
        container's name; LIVE: the cell's status line (`status.CellStatus`), which then carries
        the record: one line shows. Never raises: a record must not break the cell it
        describes."""
        try:
            self._publish(result, name, xfer, live)
        except Exception as exc:  # pragma: no cover - said, not raised
            import sys
            print(f"dockmagic: could not record this cell's provenance: {exc}", file=sys.stderr)

    def _publish(self, result, name, xfer, live):
        ended = time.time()
        spec = self.plan.spec
        detached = spec.detach
        if detached:
            status, code, ended = ("started", None, None) if name else ("error", None, ended)
            container = {"id": None, "name": name}
        elif result is None:  # it raised before it ended: interrupted, or never started
            import sys
            exc = sys.exc_info()[1]
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            code, container = None, {}
        else:
            code = result.exit_code
            status = "ok" if code == 0 else "failed"
            container = {"id": result.name, "name": None}
        named = PINS.named(spec.image)
        info = self.image.result()
        if PINS.on and info is not None and not _is_pinned(named):
            PINS.learn(named, info)
        image = provenance.to_image_facts(named, info, ref=spec.image,
                                          pinned=spec.image != named)
        moved = None
        if xfer is not None:
            from . import transfer
            moved = transfer.measure(xfer.exchange, xfer.inputs, xfer.outputs)
        record = provenance.build_record(
            version=__version__, kind="detached" if detached else "oneshot",
            cell=_prompt_number(), line=None, body=self.body, engine=query_engine(self.engine),
            image=image, run_argv=["docker", "run"] + spec.to_cli(),
            interpreter=_interpreter(spec), started=self.started, ended=ended,
            exit_code=code, status=status, container=container, gpus=query_gpus(spec),
            peak_memory=_live_peak(live), transfers=moved, raise_error=self.plan.raise_error)
        deliver(record, self.body, live)


def deliver(record: dict, body: str, live=None):
    """LIVE (the cell's status line) shows the end of the cell and the record rides on it; with
    none, the record's own short line is published."""
    if live is not None:
        HISTORY.append({"record": record, "body": body})
        live.attach(provenance.KEY, record)
    else:
        publish(record, body)


class _Off:
    def finish(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _live_peak(live) -> Optional[dict]:
    """Peak memory the engine reported while the cell ran, sampled by its status line (none
    without one, or for a cell over before the first sample: the engine keeps no figure for a
    removed container)."""
    peak = getattr(live, "peak", None)
    if not isinstance(peak, int) or peak <= 0:
        return None
    return {"bytes": peak, "source": "engine stats sampled while the cell ran (cgroup v1: "
                                     "max_usage; v2: the largest usage sampled)"}


def begin(engine, plan, body: str) -> CellRecorder:
    return CellRecorder(engine, plan, body) if enabled else _Off()


def _interpreter(spec) -> list:
    if spec.entrypoint:
        return list(spec.entrypoint) + list(spec.command or ())
    return list(spec.command or ())


# -- session cells ------------------------------------------------------------------------------
def remember_session(plan):
    """`%docker session NAME ...` planned PLAN: keep its `docker run` argv for the records, and
    what dockmagic changes in it to run its agent there (``session.for_session``)."""
    spec = plan.spec
    if spec.name:
        _session_argv[spec.name] = (spec.image, ["docker", "run"] + spec.to_cli(),
                                    to_agent_changes(spec))
    return plan


def to_agent_changes(spec) -> dict:
    """What `session.for_session` does to a session's planned spec, in docker-run words: its
    main process becomes dockmagic's agent (source elided: it is dockmagic's, versioned),
    plus the flags, labels and mounts it adds (the private exchange folder is named by its
    role: it is made when the session starts)."""
    from . import agent, session
    python = (spec.entrypoint or spec.command or ("python3",))[0]
    xroot = "<the session's private exchange folder>"
    run = session.for_session(spec, python, xroot)
    planned = dict(spec.labels)
    long_args = [c for c in run.command if len(c) > 200]  # the agent's source
    return {"main_process": list(run.entrypoint) + [
                f"<dockmagic agent v{agent.VERSION}>" if c in long_args else c
                for c in run.command],
            "init": run.init, "detach": run.detach, "interactive": run.interactive,
            "labels": {k: v for k, v in run.labels if planned.get(k) != v},
            "mounts": [m.to_cli() for m in run.mounts if m not in spec.mounts]}


class SessionRecorder:
    """Around one `%%docker @NAME` cell: a context manager that records it when it ran."""

    def __init__(self, engine, name: str, args, line: str, body: str):
        """ARGS: the cell line as `cli.parse_session_cell` parsed it."""
        self.engine, self.name, self.args, self.line, self.body = engine, name, args, line, body
        self.live = None  # the cell's status line, once the session answered

    def __enter__(self):
        self.started = time.time()
        return self

    def __exit__(self, kind, exc, tb):
        ended = time.time()
        from . import session
        if kind is not None and issubclass(kind, session.SessionUsage):
            return False  # a mistake in the line: nothing ran
        try:
            self._publish(ended, kind, exc)
        except Exception as err:  # pragma: no cover - said, not raised
            import sys
            print(f"dockmagic: could not record this cell's provenance: {err}", file=sys.stderr)
        return False

    def _publish(self, ended, kind, exc):
        from . import session
        name, args = self.name, self.args
        interpreter, raise_error = tuple(args.interpreter), not args.no_raise_error
        moves = bool(args.inputs or args.outputs or args.pickle_outputs)
        sess = session.attached(name)
        if sess is None:
            return  # it never answered: nothing ran there
        if kind is None:
            status, code = "ok", 0
        elif issubclass(kind, KeyboardInterrupt):
            status, code = "interrupted", None
        else:
            status, code = "failed", getattr(exc, "exit_code", None)
        reply = getattr(sess, "last_reply", None) or {}
        if kind is None and reply.get("s") in ("error", "exit"):  # --no-raise-error
            status, code = "failed", reply.get("code", 1)
        base = _session_base.get(sess.id)
        if base is None:
            # the session's own engine: `@NAME` follows the session wherever it runs
            base = _session_base[sess.id] = _build_session_base(sess.engine or self.engine, sess)
        rss = session.reply_peak(reply)
        record = provenance.build_record(
            version=__version__, kind="session", cell=_prompt_number(), line=self.line,
            body=self.body, engine=base["engine"], image=base["image"],
            run_argv=None, run_line=base["line"], interpreter=base["interpreter"],
            started=self.started, ended=ended, exit_code=code, status=status,
            container={"id": sess.id, "name": name}, gpus=base["gpus"],
            peak_memory={"bytes": rss, "source": "session agent: getrusage ru_maxrss, largest "
                         "process of the session so far"} if rss else None,
            transfers=getattr(sess, "last_moved", None) if moves else None,
            session={"name": name, "container": sess.id, "cell_interpreter": list(interpreter),
                     "agent": base["agent"]},
            raise_error=raise_error)
        deliver(record, self.body, self.live)


def session_cell(engine, name: str, args, line: str, body: str) -> SessionRecorder:
    return SessionRecorder(engine, name, args, line, body) if enabled else _Off()


def _prompt_number() -> Optional[int]:
    """The notebook's prompt number of the running cell: the count IPython gave the running
    cell's result (IPython 9 moves `execution_count` on before the cell runs, 8 after it)."""
    from IPython.core.getipython import get_ipython
    ip = get_ipython()
    if ip is None:
        return None
    running = getattr(getattr(ip, "displayhook", None), "exec_result", None)
    count = getattr(running, "execution_count", None)
    return count if isinstance(count, int) else ip.execution_count


def _build_session_base(engine, sess) -> dict:
    """What stays the same for every cell of one session container: asked once."""
    import shlex

    info = engine.inspect(sess.id)
    named = info["Config"].get("Image") or sess.image
    image_info = query_image(engine, info.get("Image") or named) or {}
    facts = provenance.to_image_facts(PINS.named(named), image_info, ref=named,
                                      pinned=PINS.named(named) != named)
    known = _session_argv.get(sess.name)
    argv, agent = (known[1], known[2]) if known and known[0] == named else (None, None)
    spec = None
    if argv:
        from . import translate
        spec = translate.parse_run_args(argv[2:])
    return {"engine": query_engine(engine), "image": facts, "argv": argv, "agent": agent,
            "line": shlex.join(argv) if argv else None,
            "interpreter": _interpreter(spec) if spec else list(info["Config"].get(
                "Entrypoint") or [])[:1],
            "gpus": query_gpus(spec) if spec else []}


# -- pinning --------------------------------------------------------------------------------------
class Pins:
    """`%docker config --pin on`: each tag resolves to its digest the first time the notebook
    uses it, and later cells run that digest even if the tag moves."""

    def __init__(self):
        self.on = False
        self.pins = {}   # named -> pinned reference
        self.names = {}  # pinned reference -> named

    def named(self, ref: str) -> str:
        return self.names.get(ref, ref)

    def learn(self, named: str, image_info: dict):
        if named in self.pins or _is_pinned(named):
            return
        ref = provenance.to_pin(named, image_info)
        self.pins[named] = ref
        self.names[ref] = named

    def apply(self, engine, plan):
        """PLAN with its image replaced by the pin (a RunSpec transform); resolves the tag the
        first time. An image that is not local yet is pinned after its first cell pulls it."""
        if not self.on:
            return plan
        import dataclasses
        named = plan.spec.image
        if _is_pinned(named):
            return plan
        if named not in self.pins:
            info = query_image(engine, named)
            if info is None:
                return plan
            self.learn(named, info)
        spec = dataclasses.replace(plan.spec, image=self.pins[named])
        return dataclasses.replace(plan, spec=spec)

    def refresh(self):
        self.pins.clear()
        self.names.clear()

    def describe(self) -> str:
        head = f"image pinning: {'on' if self.on else 'off'}"
        rows = [f"  {named} -> {ref}" for named, ref in self.pins.items()]
        return "\n".join([head] + rows)


def _is_pinned(ref: str) -> bool:
    return ref.startswith("sha256:") or "@sha256:" in ref


PINS = Pins()
