"""Host side of sessions (`%docker session NAME ...`, `%%docker @NAME`).

A **session** is a long-lived container whose main process is dockmagic's agent (``agent.py``,
sent as `python3 -u -c SOURCE session NONCE`; only python3 >= 3.8 is needed in the image). The
kernel keeps ONE attach socket per session: requests go in on stdin as frames, the cell's output
comes back on stdout/stderr as it is written, and each request ends with the agent's end marker
on both streams. A warm cell costs no engine API call at all.

Spares (``spare.py``) use the same agent and attach stream for one-shot cells.

Kernel shutdown (``close_all``, registered with ``kernel.on_shutdown``) removes the sessions
started with ``--rm``; other sessions keep running and are reattached by name.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import sys
import threading
import time
from typing import Callable, Optional

import dataclasses

from . import agent, errors, runner, transfer
from . import labels as L
from .engine import FrameSplitter
from .agentsrc import agent_source as _agent_source
from .kernel import on_shutdown

#: How long an interrupted session cell gets to finish after the agent raised
#: KeyboardInterrupt in it, before the kernel stops waiting (the session stays).
INTERRUPT_WAIT_S = 3.0
#: How long a new or reattached agent gets to answer its first request.
HELLO_TIMEOUT_S = 30.0
#: A session's json-file log keeps at most this much (`%docker logs NAME` shows the latest).
SESSION_LOG_OPTS = {"max-size": "20m", "max-file": "2"}
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_READ_SIZE = 1 << 18
_PYTHON_CELL = {("python",), ("python3",), ("python", "-u"), ("python3", "-u")}


class SessionUsage(ValueError):
    """A mistake in a session line; the magics show it as a one-line UsageError."""


class SessionError(errors.DockmagicError):
    """A session is gone or does not answer."""


class SessionCellFailed(errors.CellFailed):
    """A cell failed inside a session (its traceback was already shown, from the container)."""

    def __init__(self, session: str, exit_code: int, message: str, image: str = ""):
        super().__init__(exit_code, image, "", False, session)
        self.args = (f"cell failed in session {session}: {message}",)




# -- the attach stream: docker's frames -> per-stream bytes, end markers cut out --------------
class _Demux:
    def __init__(self, mark: bytes):
        self.mark = mark
        self.frames = FrameSplitter()
        self.held = {1: b"", 2: b""}

    def feed(self, data: bytes, on_output, on_marker):
        self.frames.feed(data, lambda kind, chunk: self._stream(
            2 if kind == 2 else 1, chunk, on_output, on_marker))

    def _stream(self, kind, chunk, on_output, on_marker):
        data = self.held[kind] + chunk if self.held[kind] else chunk
        mark, start = self.mark, 0
        while True:
            i = data.find(mark, start)
            if i < 0:
                break
            j = data.find(agent.MARK_CLOSE, i + len(mark))
            if j < 0:
                if i > start:
                    on_output(kind, data[start:i])
                self.held[kind] = data[i:]
                return
            if i > start:
                on_output(kind, data[start:i])
            on_marker(kind, data[i + len(mark):j])
            start = j + 1
        rest = data[start:] if start else data
        # Hold back what may be the start of a marker split across frames (the mark has
        # exactly one ESC, at its start, so only the last ESC can begin one).
        keep = 0
        k = rest.rfind(b"\x1b", max(0, len(rest) - len(mark) + 1))
        if k >= 0 and mark.startswith(rest[k:]):
            keep = len(rest) - k
        if len(rest) > keep:
            on_output(kind, rest[:len(rest) - keep] if keep else rest)
        self.held[kind] = rest[len(rest) - keep:] if keep else b""


def strip_markers(text: str) -> str:
    """A session's `docker logs` without the agent's end markers (for `%docker logs`)."""
    return re.sub(r"\x1b\]dm;[0-9a-f]+;[0-9]+;[0-9a-fo]*\x07", "", text)


# -- sessions -----------------------------------------------------------------------------------
class Session:
    """One attached session container and its agent."""

    def __init__(self, engine, name: str, container_id: str, image: str, nonce: str,
                 auto_remove: bool, binds: list, user: Optional[str] = None,
                 fast: Optional[str] = None):
        self.engine = engine
        self.name = name
        self.user = user
        self.fast = fast  # the host tmpfs folder mounted at transfer.FAST_TARGET, if any
        self.id = container_id
        self.image = image
        self.nonce = nonce
        self.auto_remove = auto_remove
        self.binds = binds  # [(host source, container destination, rw)]
        self._att = None
        self._raw = None
        self._demux = _Demux(agent.MARK_OPEN + nonce.encode("ascii") + b";")
        # Request ids start anywhere: two kernels attached to one session see each other's
        # markers, and must not take them for their own.
        self._next = secrets.randbelow(1 << 30)
        self._waiting = set()  # requests given up on after an interrupt; their ends still come
        self._lock = threading.Lock()
        self.info = {}

    # plumbing
    def _attach(self):
        self._att = self.engine.attach(self.id)
        self._raw = self._att.raw

    def _send(self, kind: int, payload: bytes) -> int:
        self._next += 1
        rid = self._next
        try:
            self._raw.sendall(agent.HEADER.pack(agent.MAGIC, kind, rid, len(payload)) + payload)
        except OSError as exc:
            self._gone(f"sending to it failed ({exc.strerror or exc})")
        return rid

    def _gone(self, why: str):
        _SESSIONS.pop(self.name, None)
        self.close_socket()
        state = ""
        try:
            st = self.engine.inspect(self.id)["State"]
            state = f"; it is {st.get('Status')} (exit code {st.get('ExitCode')})"
        except Exception:
            state = "; it no longer exists"
        raise SessionError(f"session {self.name} stopped answering: {why}{state}. Start it "
                           f"again with `%docker session {self.name} ... IMAGE` (its variables "
                           "are gone)")

    def close_socket(self):
        if self._att is not None:
            self._att.close()
        self._att = self._raw = None

    def _exchange(self, kind: int, payload: dict, stdout=None, stderr=None,
                  timeout: Optional[float] = None) -> dict:
        """Send one request, stream its output, return the agent's reply."""
        with self._lock:
            if self._raw is None:
                self._attach()
            stdout = stdout or sys.stdout
            stderr = stderr or sys.stderr
            sinks = {1: runner.OutputSink(stdout), 2: runner.OutputSink(stderr)}
            rid = self._send(kind, json.dumps(payload).encode("utf-8"))
            state = {"out": False, "reply": None}
            if self._waiting:
                print(f"dockmagic: session {self.name} is still finishing an interrupted cell; "
                      "this one runs after it (interrupt again to stop waiting)",
                      file=stderr, flush=True)

            def on_output(k, data):
                sinks[k].write(data)

            def on_marker(k, body):
                r, _, data = body.partition(b";")
                r = int(r)
                if r != rid:
                    if k == 2:
                        self._waiting.discard(r)
                    return
                if k == 1:
                    state["out"] = True
                else:
                    state["reply"] = json.loads(bytes.fromhex(data.decode("ascii")))

            def done():
                return state["out"] and state["reply"] is not None

            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._pump(done, on_output, on_marker, deadline)
            except KeyboardInterrupt:
                self._interrupt(rid, done, on_output, on_marker)
                raise
            finally:
                for sink in sinks.values():
                    sink.write(b"", final=True)
            return state["reply"]

    def _pump(self, done, on_output, on_marker, deadline):
        raw = self._raw
        while not done():
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout
                raw.settimeout(left)
            try:
                data = raw.recv(_READ_SIZE)
            finally:
                if deadline is not None:
                    raw.settimeout(None)
            if not data:
                self._gone("the container's output ended")
            self._demux.feed(data, on_output, on_marker)

    def _interrupt(self, rid, done, on_output, on_marker):
        """KeyboardInterrupt in the kernel: the agent raises it inside the running cell."""
        try:
            self._raw.sendall(agent.HEADER.pack(agent.MAGIC, agent.INTERRUPT, rid, 0))
            self._pump(done, on_output, on_marker, time.monotonic() + INTERRUPT_WAIT_S)
        except (socket.timeout, KeyboardInterrupt):
            self._waiting.add(rid)
            print(f"dockmagic: session {self.name} is still busy with the interrupted cell "
                  "(code that does not check for KeyboardInterrupt); its output will show in "
                  "the next cell", file=sys.stderr, flush=True)
        except (OSError, SessionError):
            pass

    # the public side
    def hello(self, timeout: float = HELLO_TIMEOUT_S) -> dict:
        try:
            self.info = self._exchange(agent.HELLO, {}, timeout=timeout)
        except socket.timeout:
            self.close_socket()
            raise SessionError(
                f"session {self.name} does not answer within {timeout:g} s (a cell from before "
                f"a kernel restart may still run there); wait, or remove it with "
                f"`%docker rm -f {self.name}`") from None
        if self.info.get("version") != agent.VERSION:
            print(f"dockmagic: session {self.name} runs agent version {self.info.get('version')},"
                  f" this dockmagic speaks {agent.VERSION}; restart the session if cells fail",
                  file=sys.stderr)
        return self.info

    def run_python(self, code: str, *, inputs=(), outputs=(), user_ns=None, stdout=None,
                   stderr=None, raise_error: bool = True) -> dict:
        """Run CODE in the session's interpreter; --in/--out via the mounted folder."""
        xchg = None
        payload = {"code": code}
        try:
            if inputs or outputs:
                xchg = transfer.Exchange.create(
                    self.binds, os.getcwd(), shared=transfer.container_user_is_other(self.user),
                    fast=(self.fast, transfer.FAST_TARGET) if self.fast else None)
                payload.update(xdirs=xchg.container_dirs, mapped=xchg.mapped,
                               inputs=xchg.write_inputs(inputs, user_ns),
                               outputs=[[d, s] for d, s in outputs])
            reply = self._exchange(agent.RUN, payload, stdout, stderr)
            status = reply.get("s")
            if status == "ok" and xchg is not None and outputs:
                xchg.read_outputs(reply.get("out") or [], user_ns)
            elif status == "transfer":
                raise transfer.TransferError(reply.get("msg", "transfer failed"))
        finally:
            if xchg is not None:
                xchg.close()
        self._check(reply, raise_error)
        return reply

    def run_command(self, argv, body: str, *, stdout=None, stderr=None,
                    raise_error: bool = True) -> dict:
        """Run BODY through another interpreter (bash, `bash -l`, ...) in the session's
        container, as `docker exec` would (container env and workdir), streaming its output."""
        reply = self._exchange(agent.COMMAND, {"argv": list(argv), "body": body}, stdout, stderr)
        self._check(reply, raise_error)
        return reply

    def _check(self, reply: dict, raise_error: bool):
        status = reply.get("s")
        if status == "interrupted":
            raise KeyboardInterrupt
        if status in ("error", "exit") and raise_error:
            code = reply.get("code", 1)
            raise SessionCellFailed(self.name, code,
                                    reply.get("msg") or errors.describe_exit(code, self.image),
                                    self.image)

    def close(self, remove: bool = False):
        self.close_socket()
        _SESSIONS.pop(self.name, None)
        if remove or self.auto_remove:
            self.engine.remove(self.id)


_SESSIONS: dict = {}


def _binds_from_inspect(info: dict) -> list:
    return [(m["Source"], m["Destination"], bool(m.get("RW")))
            for m in info.get("Mounts", ())
            if m.get("Type") == "bind" and m["Destination"] != transfer.FAST_TARGET]


def _fast_from_inspect(info: dict) -> Optional[str]:
    for m in info.get("Mounts", ()):
        if m.get("Destination") == transfer.FAST_TARGET and m.get("Source") == \
                transfer.fast_root():
            return m["Source"]
    return None


def _from_container(engine, name: str, info: dict) -> Session:
    cmd = (info["Config"].get("Cmd") or [])[-2:]  # [..., "session", NONCE] (see for_session)
    if len(cmd) != 2 or cmd[0] != "session":
        raise SessionUsage(f"container {name} is labelled a dockmagic session but does not run "
                           f"the agent; remove it (`%docker rm -f {name}`) and start it again")
    return Session(engine, name, info["Id"], info["Config"].get("Image", ""), cmd[1],
                   bool(info["HostConfig"].get("AutoRemove")), _binds_from_inspect(info),
                   info["Config"].get("User") or None, _fast_from_inspect(info))


def _inspect(engine, name: str) -> Optional[dict]:
    try:
        return engine.inspect(name)
    except errors.NotFound:
        return None


def _check_session_container(name: str, info: dict):
    labels = info["Config"].get("Labels") or {}
    if labels.get(L.KIND) != "session":
        raise SessionUsage(f"a container named {name} exists and is not a dockmagic session; "
                           f"pick another name, or remove it (`%docker rm -f {name}`)")


def get(engine, name: str) -> Session:
    """The session NAME: this kernel's, or one found running on the engine (reattached)."""
    sess = _SESSIONS.get(name)
    if sess is not None:
        return sess
    info = _inspect(engine, name)
    if info is None:
        raise SessionUsage(f"no session {name}; start one with `%docker session {name} IMAGE`")
    _check_session_container(name, info)
    if not info["State"].get("Running"):
        raise SessionUsage(f"session {name} is {info['State'].get('Status')}; start it again "
                           f"with `%docker session {name} IMAGE` (its variables are gone)")
    return _reattach(engine, name, info)


def _reattach(engine, name: str, info: dict) -> Session:
    sess = _from_container(engine, name, info)
    sess._attach()
    sess.hello()
    _SESSIONS[name] = sess
    _register_atexit()
    return sess


def start(engine, name: str, plan, *, say: Callable[[str], None] = print) -> Session:
    """Start session NAME from PLAN (`plan_cell(..., oneshot=False)` with `--name NAME`), or
    reattach to it if it already runs (after a kernel restart)."""
    sess = _SESSIONS.get(name)
    info = _inspect(engine, name)
    if info is not None:
        _check_session_container(name, info)
        if info["State"].get("Running"):
            if sess is None:
                sess = _reattach(engine, name, info)
                say(f"reattached to session {name} ({sess.image}, {sess.info.get('cells', 0)} "
                    "cells run so far); its variables are still there")
            else:
                say(f"session {name} already runs ({sess.image}); "
                    f"`%docker session --stop {name}` first to start it anew")
            return sess
        # Stopped (engine restart, `docker stop`): start it again; the agent starts fresh.
        if sess is not None:
            sess.close_socket()
        sess = _from_container(engine, name, info)
        sess._attach()
        try:
            engine.start(sess.id, image=sess.image, wants_gpus=plan.wants_gpus)
        except BaseException:
            sess.close_socket()
            raise
        sess.hello()
        _SESSIONS[name] = sess
        _register_atexit()
        say(f"session {name} was {info['State'].get('Status')}; started it again "
            "(its variables are gone)")
        return sess

    spec = plan.spec
    python = (spec.entrypoint or spec.command or ("python3",))[0]
    if not os.path.basename(python).startswith("python"):
        raise SessionUsage(f"a session runs dockmagic's Python agent; after the image name a "
                           f"Python interpreter (default python3), not {python!r}")
    nonce = secrets.token_hex(8)
    run_spec = for_session(spec, python, nonce, transfer.fast_root())
    log_config = None
    # Everything a session prints also lands in its log, for as long as it lives: cap it
    # (docker's json-file default keeps all of it).
    try:
        if engine.info().get("LoggingDriver") == "json-file":
            log_config = {"Type": "json-file", "Config": dict(SESSION_LOG_OPTS)}
    except errors.DockmagicError:
        pass
    cid = None
    try:
        cid = engine.create(run_spec, on_pull=say, wants_gpus=plan.wants_gpus,
                            log_config=log_config)
        sess = Session(engine, name, cid, spec.image, nonce, bool(spec.auto_remove),
                       transfer.binds_from_spec(spec), spec.user, run_spec_fast(run_spec))
        sess._attach()
        engine.start(cid, image=spec.image, wants_gpus=plan.wants_gpus)
        sess.hello()
        _SESSIONS[name] = sess
        _register_atexit()
        cid = None
        return sess
    finally:
        if cid is not None:  # it never answered: take it away again
            engine.remove(cid)


def for_session(spec, python: str, nonce: str, fast: Optional[str]):
    """The session container's spec: the agent as its main process, stdin kept open past this
    kernel's attach (detach: docker-py would otherwise set StdinOnce, and the session must
    outlive the kernel and be reattached), tini as init, the kernel's tmpfs exchange folder
    mounted, and reaped with its kernel when started with --rm."""
    from . import translate

    mounts = spec.mounts
    if fast:  # --in/--out go through the kernel's tmpfs folder (see transfer.fast_root)
        mounts = mounts + (translate.Mount(type="bind", source=fast,
                                           target=transfer.FAST_TARGET),)
    run_labels = spec.labels
    if spec.auto_remove:
        run_labels = tuple(sorted(dict(spec.labels, **{L.REAP: "1"}).items()))
    return dataclasses.replace(
        spec, interactive=True, detach=True, tty=False,
        entrypoint=(python,), command=("-u", "-c", _agent_source(), "session", nonce),
        init=True if spec.init is None else spec.init, mounts=mounts, labels=run_labels)


def run_spec_fast(spec) -> Optional[str]:
    for m in spec.mounts:
        if m.target == transfer.FAST_TARGET:
            return m.source
    return None


def stop(engine, name: str):
    """Stop and remove session NAME (`%docker session --stop NAME`)."""
    sess = _SESSIONS.pop(name, None)
    if sess is not None:
        sess.close_socket()
    info = _inspect(engine, name)
    if info is None:
        if sess is None:
            raise SessionUsage(f"no session {name}")
        return
    _check_session_container(name, info)
    engine.remove(info["Id"], quiet=False)


def query_sessions(engine) -> list:
    """The engine's session containers (low-level list entries)."""
    return engine.containers(all=True, filters={"label": [L.MANAGED_FILTER,
                                                          f"{L.KIND}=session"]})


def describe_sessions(engine) -> str:
    rows = query_sessions(engine)
    if not rows:
        return "no sessions; start one with `%docker session NAME IMAGE`"
    lines = []
    for row in rows:
        name = row["Names"][0].lstrip("/") if row.get("Names") else row["Id"][:12]
        here = "attached" if name in _SESSIONS else ""
        lines.append(f"{name:20s} {row.get('Image', ''):30s} {row.get('Status', ''):24s} {here}")
    return "\n".join(lines)


# -- the magics' side (parsing kept here so magics.py stays a dispatcher) ---------------------
def command(engine, args, plan: Callable[[str], object], say: Callable[[str], None] = print):
    """`%docker session [NAME [docker-run flags] IMAGE [PYTHON]]` / `--stop NAME` / `--list`."""
    if not args or args == ["--list"]:
        say(describe_sessions(engine))
        return None
    if args[0] == "--stop":
        if len(args) != 2:
            raise SessionUsage("usage: %docker session --stop NAME")
        stop(engine, args[1])
        say(f"session {args[1]} stopped and removed")
        return None
    name = args[0]
    if not _NAME.match(name):
        raise SessionUsage(f"%docker session NAME ...: {name!r} is not a container name "
                           "(letters, digits, _ . -; e.g. `%docker session work IMAGE`)")
    rest = args[1:]
    if not rest and name in _SESSIONS:
        say(f"session {name} runs ({_SESSIONS[name].image})")
        return None
    if any(a in ("--name", "--dry-run", "--show-cmd") or a.startswith(("--name=", "--in",
                                                                       "--out")) for a in rest):
        raise SessionUsage("%docker session NAME takes docker-run flags and IMAGE [PYTHON]; "
                           "not --name (NAME is the name), --dry-run or --in/--out (those go "
                           "on `%%docker @NAME` cells)")
    if not rest and _inspect(engine, name) is None:
        raise SessionUsage(f"no session {name}; start one with `%docker session {name} IMAGE`")
    if not rest:
        sess = get(engine, name)
        say(f"reattached to session {name} ({sess.image})")
        return None
    p = plan(shlex.join(["--name", name] + rest))
    sess = start(engine, name, p, say=say)
    if sess.info and sess.name in _SESSIONS and not sess.info.get("cells"):
        say(f"session {name} started ({sess.image}, Python {sess.info.get('python')}); run "
            f"cells in it with `%%docker @{name}`")
    return None


def parse_cell_line(line: str):
    """`@NAME [--in X] [--out Y] [--no-raise-error] [INTERPRETER ...]` -> parts."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise SessionUsage(f"cannot split the magic line: {exc}; check its quotes") from None
    name = argv[0][1:]
    if not name:
        raise SessionUsage("%%docker @NAME: give the session's name, e.g. `%%docker @work`")
    ins, outs, raise_error = [], [], True
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key in ("--in", "--out"):
            if not eq:
                i += 1
                if i == len(argv):
                    raise SessionUsage(f"{key} needs a value, e.g. {key} x,y")
                value = argv[i]
            (ins if key == "--in" else outs).append(value)
        elif arg == "--no-raise-error":
            raise_error = False
        else:
            raise SessionUsage(f"%%docker @{name} takes --in, --out, --no-raise-error and an "
                               f"interpreter, not {arg!r}; container flags belong to "
                               f"`%docker session {name} ...`")
        i += 1
    interpreter = tuple(argv[i:])
    try:
        inputs = transfer.parse_transfers(ins, "--in")
        outputs = transfer.parse_transfers(outs, "--out")
    except transfer.TransferUsage as exc:
        raise SessionUsage(str(exc)) from None
    return name, interpreter, inputs, outputs, raise_error


def run_cell(engine, line: str, body: str, user_ns: dict):
    """`%%docker @NAME ...`: the cell runs in session NAME."""
    name, interpreter, inputs, outputs, raise_error = parse_cell_line(line)
    sess = get(engine, name)
    if not interpreter or interpreter in _PYTHON_CELL:
        sess.run_python(body, inputs=inputs, outputs=outputs, user_ns=user_ns,
                        raise_error=raise_error)
        return None
    if inputs or outputs:
        raise SessionUsage("--in/--out move Python variables; they work in Python session "
                           f"cells, not in {shlex.join(interpreter)} cells")
    sess.run_command(interpreter, body, raise_error=raise_error)
    return None


# -- kernel shutdown --------------------------------------------------------------------------
def close_all():
    """Remove the sessions started with --rm; detach from the others."""
    for sess in list(_SESSIONS.values()):
        try:
            sess.close()
        except Exception:
            pass
    _SESSIONS.clear()


def _register_atexit():
    on_shutdown(close_all)
