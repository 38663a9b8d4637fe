"""Host side of sessions (`%docker session NAME ...`, `%%docker @NAME`) and of spares.

A **session** is a long-lived container whose main process is dockmagic's agent (``agent.py``,
sent as `python3 -u -c SOURCE session NONCE`; only python3 >= 3.8 is needed in the image). The
kernel keeps ONE attach socket per session: requests go in on stdin as frames, the cell's output
comes back on stdout/stderr as it is written, and each request ends with the agent's end marker
on both streams. A warm cell costs no engine API call at all.

A **spare** is a fresh container made in the background after a one-shot cell, with the same
spec, running the agent in ``spare`` mode: the next identical one-shot cell sends it its
interpreter argv and the cell's environment, the agent exec()s the interpreter, which reads the
cell body from stdin as in a cold `docker run -i --rm`. So the cell runs in a brand-new container
without paying for create + start.

Kernel shutdown (``close_all``, also registered with atexit) removes spares and the sessions
started with ``--rm``; other sessions keep running and are reattached by name.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import re
import secrets
import select
import shlex
import socket
import struct
import sys
import threading
import time
from typing import Callable, Optional

from . import agent, errors, runner, transfer

#: How long an interrupted session cell gets to finish after the agent raised
#: KeyboardInterrupt in it, before the kernel stops waiting (the session stays).
INTERRUPT_WAIT_S = 3.0
#: How long a new or reattached agent gets to answer its first request.
HELLO_TIMEOUT_S = 30.0
#: An unused spare is removed after this long.
SPARE_IDLE_S = 600.0
#: A session's json-file log keeps at most this much (`%docker logs NAME` shows the latest).
SESSION_LOG_OPTS = {"max-size": "20m", "max-file": "2"}
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_DOCKER_FRAME = struct.Struct(">BxxxL")
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


def _agent_source() -> str:
    global _SOURCE
    if _SOURCE is None:
        with open(agent.__file__, encoding="utf-8") as f:
            _SOURCE = f.read()
    return _SOURCE


_SOURCE = None


# -- the attach stream: docker's frames -> per-stream bytes, end markers cut out --------------
class _Demux:
    def __init__(self, mark: bytes):
        self.mark = mark
        self.buf = bytearray()
        self.held = {1: b"", 2: b""}

    def feed(self, data: bytes, on_output, on_marker):
        buf = self.buf
        buf += data
        n, pos = len(buf), 0
        while n - pos >= 8:
            kind, size = _DOCKER_FRAME.unpack_from(buf, pos)
            if n - pos - 8 < size:
                break
            self._stream(2 if kind == 2 else 1, bytes(buf[pos + 8:pos + 8 + size]),
                         on_output, on_marker)
            pos += 8 + size
        if pos:
            del buf[:pos]

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

    def __init__(self, name: str, container_id: str, image: str, nonce: str,
                 auto_remove: bool, binds: list, user: Optional[str] = None,
                 fast: Optional[str] = None):
        self.name = name
        self.user = user
        self.fast = fast  # the host tmpfs folder mounted at transfer.FAST_TARGET, if any
        self.id = container_id
        self.image = image
        self.nonce = nonce
        self.auto_remove = auto_remove
        self.binds = binds  # [(host source, container destination, rw)]
        self._sock = None
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
        api = runner.get_client().api
        self._sock = api.attach_socket(
            self.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._raw = runner._raw_socket(self._sock)

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
            st = runner.get_client().api.inspect_container(self.id)["State"]
            state = f"; it is {st.get('Status')} (exit code {st.get('ExitCode')})"
        except Exception:
            state = "; it no longer exists"
        raise SessionError(f"session {self.name} stopped answering: {why}{state}. Start it "
                           f"again with `%docker session {self.name} ... IMAGE` (its variables "
                           "are gone)")

    def close_socket(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except Exception:
                pass
        self._sock = self._raw = None

    def _exchange(self, kind: int, payload: dict, stdout=None, stderr=None,
                  timeout: Optional[float] = None) -> dict:
        """Send one request, stream its output, return the agent's reply."""
        with self._lock:
            if self._raw is None:
                self._attach()
            stdout = stdout or sys.stdout
            stderr = stderr or sys.stderr
            sinks = {1: runner._Sink(stdout), 2: runner._Sink(stderr)}
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
            runner._remove_quietly(runner.get_client().api, self.id)


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


def _from_container(name: str, info: dict) -> Session:
    cmd = info["Config"].get("Cmd") or []
    if len(cmd) != 2 or cmd[0] != "session":
        raise SessionUsage(f"container {name} is labelled a dockmagic session but does not run "
                           f"the agent; remove it (`%docker rm -f {name}`) and start it again")
    return Session(name, info["Id"], info["Config"].get("Image", ""), cmd[1],
                   bool(info["HostConfig"].get("AutoRemove")), _binds_from_inspect(info),
                   info["Config"].get("User") or None, _fast_from_inspect(info))


def _inspect(name: str) -> Optional[dict]:
    import docker

    try:
        return runner.get_client().api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise errors.EngineError(f"looking up session {name}: {runner._short(exc)}") from None


def _check_session_container(name: str, info: dict):
    labels = info["Config"].get("Labels") or {}
    if labels.get("dockmagic.kind") != "session":
        raise SessionUsage(f"a container named {name} exists and is not a dockmagic session; "
                           f"pick another name, or remove it (`%docker rm -f {name}`)")


def get(name: str) -> Session:
    """The session NAME: this kernel's, or one found running on the engine (reattached)."""
    sess = _SESSIONS.get(name)
    if sess is not None:
        return sess
    info = _inspect(name)
    if info is None:
        raise SessionUsage(f"no session {name}; start one with `%docker session {name} IMAGE`")
    _check_session_container(name, info)
    if not info["State"].get("Running"):
        raise SessionUsage(f"session {name} is {info['State'].get('Status')}; start it again "
                           f"with `%docker session {name} IMAGE` (its variables are gone)")
    return _reattach(name, info)


def _reattach(name: str, info: dict) -> Session:
    sess = _from_container(name, info)
    sess._attach()
    sess.hello()
    _SESSIONS[name] = sess
    _register_atexit()
    return sess


def start(name: str, plan, *, say: Callable[[str], None] = print) -> Session:
    """Start session NAME from PLAN (`plan_cell(..., oneshot=False)` with `--name NAME`), or
    reattach to it if it already runs (after a kernel restart)."""
    import docker

    sess = _SESSIONS.get(name)
    info = _inspect(name)
    if info is not None:
        _check_session_container(name, info)
        if info["State"].get("Running"):
            if sess is None:
                sess = _reattach(name, info)
                say(f"reattached to session {name} ({sess.image}, {sess.info.get('cells', 0)} "
                    "cells run so far); its variables are still there")
            else:
                say(f"session {name} already runs ({sess.image}); "
                    f"`%docker session --stop {name}` first to start it anew")
            return sess
        # Stopped (engine restart, `docker stop`): start it again; the agent starts fresh.
        if sess is not None:
            sess.close_socket()
        sess = _from_container(name, info)
        sess._attach()
        try:
            runner.get_client().api.start(sess.id)
        except docker.errors.APIError as exc:
            sess.close_socket()
            raise runner._api_error(exc, sess.image, plan.wants_gpus) from None
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
    # detach=True: docker-py would otherwise set StdinOnce, and the agent's stdin would close
    # with this kernel's attach (the session must outlive the kernel and be reattached).
    kw = dict(spec.to_create_kwargs(), stdin_open=True, detach=True, tty=False,
              entrypoint=[python, "-u", "-c", _agent_source()], command=["session", nonce])
    if spec.init is None:
        kw["init"] = True  # tini reaps what cells leave behind and forwards signals
    fast = transfer.fast_root()
    if fast:  # --in/--out go through the kernel's tmpfs folder (see transfer.fast_root)
        kw["mounts"] = list(kw.get("mounts") or []) + [transfer.fast_mount(fast)]
    client = runner.get_client()
    api = client.api
    if "log_config" not in kw:
        # Everything a session prints also lands in its log, for as long as it lives: cap it
        # (docker's json-file default keeps all of it).
        try:
            if api.info().get("LoggingDriver") == "json-file":
                kw["log_config"] = {"Type": "json-file", "Config": dict(SESSION_LOG_OPTS)}
        except Exception:
            pass
    cid = None
    try:
        try:
            cid = runner._create(client, kw, say)
        except docker.errors.APIError as exc:
            raise runner._api_error(exc, spec.image, plan.wants_gpus) from None
        sess = Session(name, cid, spec.image, nonce, bool(spec.auto_remove),
                       transfer.binds_from_spec(spec), spec.user, fast)
        sess._attach()
        try:
            api.start(cid)
        except docker.errors.APIError as exc:
            raise runner._api_error(exc, spec.image, plan.wants_gpus) from None
        sess.hello()
        _SESSIONS[name] = sess
        _register_atexit()
        cid = None
        return sess
    finally:
        if cid is not None:  # it never answered: take it away again
            runner._remove_quietly(api, cid)


def stop(name: str):
    """Stop and remove session NAME (`%docker session --stop NAME`)."""
    sess = _SESSIONS.pop(name, None)
    if sess is not None:
        sess.close_socket()
    info = _inspect(name)
    if info is None:
        if sess is None:
            raise SessionUsage(f"no session {name}")
        return
    _check_session_container(name, info)
    runner._remove_quietly(runner.get_client().api, info["Id"])


def query_sessions() -> list:
    """The engine's session containers (low-level list entries)."""
    api = runner.get_client().api
    return api.containers(all=True, filters={"label": ["dockmagic.managed",
                                                       "dockmagic.kind=session"]})


def describe_sessions() -> str:
    rows = query_sessions()
    if not rows:
        return "no sessions; start one with `%docker session NAME IMAGE`"
    lines = []
    for row in rows:
        name = row["Names"][0].lstrip("/") if row.get("Names") else row["Id"][:12]
        here = "attached" if name in _SESSIONS else ""
        lines.append(f"{name:20s} {row.get('Image', ''):30s} {row.get('Status', ''):24s} {here}")
    return "\n".join(lines)


# -- the magics' side (parsing kept here so magics.py stays a dispatcher) ---------------------
def command(args, plan: Callable[[str], object], say: Callable[[str], None] = print):
    """`%docker session [NAME [docker-run flags] IMAGE [PYTHON]]` / `--stop NAME` / `--list`."""
    if not args or args == ["--list"]:
        say(describe_sessions())
        return None
    if args[0] == "--stop":
        if len(args) != 2:
            raise SessionUsage("usage: %docker session --stop NAME")
        stop(args[1])
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
    if not rest and _inspect(name) is None:
        raise SessionUsage(f"no session {name}; start one with `%docker session {name} IMAGE`")
    if not rest:
        sess = get(name)
        say(f"reattached to session {name} ({sess.image})")
        return None
    p = plan(shlex.join(["--name", name] + rest))
    sess = start(name, p, say=say)
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


def run_cell(line: str, body: str, user_ns: dict):
    """`%%docker @NAME ...`: the cell runs in session NAME."""
    name, interpreter, inputs, outputs, raise_error = parse_cell_line(line)
    sess = get(name)
    if not interpreter or interpreter in _PYTHON_CELL:
        sess.run_python(body, inputs=inputs, outputs=outputs, user_ns=user_ns,
                        raise_error=raise_error)
        return None
    if inputs or outputs:
        raise SessionUsage("--in/--out move Python variables; they work in Python session "
                           f"cells, not in {shlex.join(interpreter)} cells")
    sess.run_command(interpreter, body, raise_error=raise_error)
    return None


# -- spares -------------------------------------------------------------------------------------
class _Spare:
    __slots__ = ("key", "id", "sock", "image", "image_id", "client", "made")

    def __init__(self, key, cid, sock, image, image_id, client):
        self.key, self.id, self.sock, self.client = key, cid, sock, client
        self.image, self.image_id = image, image_id
        self.made = time.monotonic()


def spare_key(kwargs: dict) -> Optional[str]:
    """What must match for a spare to stand in for a cold start: everything fixed at create
    time. The environment is not (the agent applies the cell's own when it runs), nor the
    per-cell label. None: this cell never gets a spare."""
    if (kwargs.get("name") or kwargs.get("detach") or kwargs.get("ports")
            or kwargs.get("publish_all_ports") or not kwargs.get("entrypoint")
            or kwargs.get("tty") or "_host_config_extra" in kwargs):
        return None
    kw = {k: v for k, v in kwargs.items() if k not in ("environment", "auto_remove")}
    labels = dict(kw.get("labels") or {})
    labels.pop("dockmagic.cell", None)
    kw["labels"] = labels
    return json.dumps(kw, sort_keys=True, default=repr) + f"@{id(runner.get_client())}"


class SparePool:
    """At most one spare container, made and removed by one background worker."""

    def __init__(self):
        self._cond = threading.Condition()
        self._spare: Optional[_Spare] = None
        self._making: Optional[str] = None  # the key the worker is making a spare for
        self._wanted = None                 # (key, kwargs) to make next
        self._removals = collections.deque()
        self._busy = 0                      # removals taken by the worker, not yet done
        self._generation = 0                # bumped by discard/close: a make in flight is void
        self._never = set()                 # keys whose spare could not start (no python3)
        self._worker = None
        self._closed = False
        self.used = 0                       # cells that ran in a spare (for tests and %docker)

    # cell side
    def run_oneshot(self, kwargs: dict, body: bytes, **kw) -> runner.CellResult:
        """`runner.run_oneshot`, in a spare when one with the same spec is ready."""
        key = spare_key(kwargs)
        if key is None or key in self._never:
            return runner.run_oneshot(kwargs, body, **kw)
        spare = self._take(key)
        result = None
        if spare is not None:
            result = self._run_in(spare, kwargs, body, **kw)
        if result is None:
            result = runner.run_oneshot(kwargs, body, **kw)
        self._want(key, kwargs)  # only after a cell that ran (not interrupted, not refused)
        return result

    def _take(self, key) -> Optional[_Spare]:
        with self._cond:
            deadline = time.monotonic() + 30
            while self._making == key and self._spare is None and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            spare, self._spare = self._spare, None
            if spare is not None and spare.key != key:
                self._removals.append(spare)
                self._cond.notify_all()
                spare = None
            if self._wanted is not None and self._wanted[0] != key:
                self._wanted = None
        if spare is None:
            return None
        if not self._fresh(spare):
            self._discard(spare)
            return None
        return spare

    def _fresh(self, spare: _Spare) -> bool:
        """Alive and not stale: nothing arrived on its stream (an agent that died says so on
        stdout/stderr, then EOF) and IMAGE still names the image it was made from."""
        raw = runner._raw_socket(spare.sock)
        try:
            readable, _, _ = select.select([raw], [], [], 0)
        except (OSError, ValueError):
            return False
        if readable:
            return False
        try:
            return runner.get_client().api.inspect_image(spare.image)["Id"] == spare.image_id
        except Exception:
            return False

    def _run_in(self, spare: _Spare, kwargs, body, *, stdout=None, stderr=None,
                wants_gpus=False, on_pull=None, on_interrupt=None, remove=True):
        """The cold path's stream/wait/remove, minus create/attach/start."""
        api = runner.get_client().api
        stdout = stdout or sys.stdout
        stderr = stderr or sys.stderr
        argv = list(kwargs.get("entrypoint") or []) + list(kwargs.get("command") or [])
        req = json.dumps({"argv": argv, "env": list(kwargs.get("environment") or [])}).encode()
        raw = runner._raw_socket(spare.sock)
        try:
            raw.sendall(agent.HEADER.pack(agent.MAGIC, agent.SPAWN, 0, len(req)) + req)
        except OSError:
            self._discard(spare)
            return None  # it died: the cold path it is
        self.used += 1
        cid, removed = spare.id, False
        try:
            if body:
                raw.sendall(body)
            raw.shutdown(socket.SHUT_WR)
            out, err = runner._Sink(stdout), runner._Sink(stderr, keep_tail=True)
            failed = []

            def on_frame(kind, data):
                if kind == 2 and not failed and data.startswith(
                        agent.SPARE_EXEC_FAILED.encode()):
                    failed.append(data.decode("utf-8", "replace"))
                    return
                (err if kind == 2 else out).write(data)

            try:
                runner.read_frames(spare.sock, on_frame)
                out.write(b"", final=True)
                err.write(b"", final=True)
            except KeyboardInterrupt:
                runner._interrupt(api, cid)
                if on_interrupt:
                    on_interrupt(cid)
                raise
            code = api.wait(cid)["StatusCode"]
            if failed:
                text = failed[0][len(agent.SPARE_EXEC_FAILED):].strip()
                raise errors.EngineError(errors.describe_api_error(
                    f"OCI runtime create failed: {text}", kwargs.get("image", ""), wants_gpus))
            oom = False
            if code == 137:
                oom = bool(api.inspect_container(cid)["State"].get("OOMKilled"))
            result = runner.CellResult(code, cid[:12], oom, err.tail_text())
            if remove:  # the cell is over; the engine's clean-up need not hold the kernel
                self._discard(spare)
                removed = True
            return result
        finally:
            if not removed:
                try:
                    spare.sock.close()
                except Exception:
                    pass
                if remove:
                    runner._remove_quietly(api, cid)

    # worker side
    def _want(self, key, kwargs):
        with self._cond:
            if self._closed or key in self._never:
                return
            if self._spare is not None and self._spare.key == key:
                return
            self._wanted = (key, dict(kwargs))
            self._ensure_worker()
            self._cond.notify_all()

    def _discard(self, spare: _Spare):
        with self._cond:
            self._removals.append(spare)
            self._ensure_worker()
            self._cond.notify_all()

    def _ensure_worker(self):
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="dockmagic-spares",
                                            daemon=True)
            self._worker.start()
            _register_atexit()

    def _work(self):
        while True:
            with self._cond:
                while not (self._wanted or self._removals or self._closed):
                    if self._spare is not None:
                        idle = SPARE_IDLE_S - (time.monotonic() - self._spare.made)
                        if idle <= 0:
                            self._removals.append(self._spare)
                            self._spare = None
                            continue
                        self._cond.wait(idle)
                    else:
                        self._cond.wait()
                if self._closed and not self._removals:
                    return
                if self._wanted is not None and not self._closed:
                    (key, kwargs), self._wanted = self._wanted, None
                    self._making = key
                    job = ("make", key, kwargs, self._generation)
                else:
                    job = ("remove", self._removals.popleft())
                    self._busy += 1
            if job[0] == "make":
                spare = self._make(job[1], job[2])
                with self._cond:
                    self._making = None
                    if spare is not None:
                        if (self._closed or job[3] != self._generation
                                or (self._wanted and self._wanted[0] != job[1])):
                            self._removals.append(spare)
                        else:
                            if self._spare is not None:
                                self._removals.append(self._spare)
                            self._spare = spare
                    self._cond.notify_all()
            else:
                try:
                    _remove_spare(job[1])
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()

    def _make(self, key, kwargs) -> Optional[_Spare]:
        import docker

        client = runner.get_client()
        api = client.api
        labels = dict(kwargs.get("labels") or {})
        labels.pop("dockmagic.cell", None)
        labels["dockmagic.kind"] = "spare"
        kw = {k: v for k, v in kwargs.items() if k != "environment"}
        kw.update(labels=labels, stdin_open=True, detach=False, tty=False, auto_remove=False,
                  entrypoint=["python3", "-I", "-c", _agent_source()], command=["spare"])
        cid = None
        try:
            cid = runner._create(client, kw)
            sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                                  "stream": 1})
            try:
                api.start(cid)
                image_id = api.inspect_container(cid)["Image"]
            except Exception:
                sock.close()
                raise
            spare, cid = _Spare(key, cid, sock, kwargs["image"], image_id, client), None
            return spare
        except docker.errors.APIError:
            self._never.add(key)  # no python3 in the image, or a spec only a cold start takes
            return None
        except Exception:
            return None
        finally:
            if cid is not None:
                runner._remove_quietly(api, cid)

    # lifecycle
    def ready(self, timeout: float = 30.0) -> bool:
        """Wait until no spare is being made; True if one is ready (benchmarks, tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._making is not None or self._wanted is not None) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            return self._spare is not None

    @property
    def spare_id(self) -> Optional[str]:
        spare = self._spare
        return spare.id if spare is not None else None

    def discard(self):
        """Remove the spare (`%docker config --spare off`) and wait for the removals."""
        with self._cond:
            self._wanted = None
            self._generation += 1
            if self._spare is not None:
                self._removals.append(self._spare)
                self._spare = None
            self._ensure_worker()
            self._cond.notify_all()
        self.drain()

    def drain(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while ((self._removals or self._making or self._busy)
                   and time.monotonic() < deadline):
                self._cond.wait(0.05)

    def close(self):
        with self._cond:
            self._closed = True
            self._generation += 1
            self._wanted = None
            if self._spare is not None:
                self._removals.append(self._spare)
                self._spare = None
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(60)
        while self._removals:  # worker gone or stuck: do it here
            _remove_spare(self._removals.popleft())
        with self._cond:
            self._closed = False  # a later cell may make spares again
            self._worker = None


def _remove_spare(spare: _Spare):
    try:
        spare.sock.close()
    except Exception:
        pass
    try:
        spare.client.api.remove_container(spare.id, force=True)
    except Exception:
        runner._remove_quietly(runner.get_client().api, spare.id)


SPARES = SparePool()


def runner_for(spec, enabled: bool = True):
    """The one-shot runner for SPEC: through the spare pool where spares apply."""
    if (not enabled or spec.detach or spec.name or spec.ports or spec.publish_all_ports):
        return runner.run_oneshot
    return SPARES.run_oneshot


# -- kernel shutdown --------------------------------------------------------------------------
def close_all():
    """Remove the spare and the sessions started with --rm; detach from the others."""
    SPARES.close()
    for sess in list(_SESSIONS.values()):
        try:
            sess.close()
        except Exception:
            pass
    _SESSIONS.clear()


_atexit_done = False


def _register_atexit():
    global _atexit_done
    if not _atexit_done:
        _atexit_done = True
        atexit.register(close_all)
