"""Host side of sessions (`%docker session NAME ...`, `%%docker @NAME`).

A **session** is a long-lived container whose main process is dockmagic's agent (``agent.py``,
sent as `python3 -u -c SOURCE session NONCE`; only python3 >= 3.8 is needed in the image). The
kernel keeps ONE attach socket per session: requests go in on stdin as frames, the cell's output
comes back on stdout/stderr as it is written, and each request ends with the agent's end marker
on both streams. A warm cell costs no engine API call at all.

Each request carries a fresh random token (sent on stdin, so nothing secret is in argv, the
environment or /proc), and the kernel acts only on end markers carrying the token of the request
in flight. A cell can still fake the end of its own request (it runs in the agent's process):
that ends its display early, nothing more; the reply is read for its status and message only,
and ``--out`` values come from files the kernel names itself, in that cell's own folder
(``transfer``), or as sealed memory files handed over through a socket in that folder
(``handover``). Each session has a private exchange folder, mounted at ``agent.XFER_TARGET``
in it alone, with a fresh sub-folder per cell.

Spares (``spare.py``) use the same agent and attach stream for one-shot cells.

Kernel shutdown (``close_all``, registered with ``kernel.on_shutdown``) removes the sessions
started with ``--rm``; other sessions keep running and are reattached by name.
"""
from __future__ import annotations

import collections
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

from . import agent, errors, handover, runner, transfer
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
#: A reply's hex is at most this long; a longer "marker" is the cell's own output.
_MAX_REPLY_HEX = 1 << 20
_MARK = re.compile(rb"\x1b\]dm;([0-9a-f]{32});([0-9a-fo]{1,%d})\x07" % _MAX_REPLY_HEX)
_MARK_PREFIX = re.compile(
    rb"\x1b(?:\](?:d(?:m(?:;(?:[0-9a-f]{0,32}(?:;[0-9a-fo]{0,%d})?)?)?)?)?)?\Z" % _MAX_REPLY_HEX)


class _Demux:
    """Cuts every well-formed end marker out of the streams; ``on_marker(kind, token, data)``
    decides which (if any) it acts on."""

    def __init__(self):
        self.mark = agent.MARK_OPEN
        self.frames = FrameSplitter()
        self.held = {1: b"", 2: b""}

    def feed(self, data: bytes, on_output, on_marker):
        self.frames.feed(data, lambda kind, chunk: self._stream(
            2 if kind == 2 else 1, chunk, on_output, on_marker))

    def _stream(self, kind, chunk, on_output, on_marker):
        data = self.held[kind] + chunk if self.held[kind] else chunk
        mark, start, pos = self.mark, 0, 0
        while True:
            i = data.find(mark, pos)
            if i < 0:
                break
            m = _MARK.match(data, i)
            if m is None:
                if _MARK_PREFIX.match(data, i):  # a marker cut off by the end of this piece
                    if i > start:
                        on_output(kind, data[start:i])
                    self.held[kind] = data[i:]
                    return
                pos = i + 1  # not a marker: the cell's own text
                continue
            if i > start:
                on_output(kind, data[start:i])
            on_marker(kind, m.group(1).decode("ascii"), m.group(2))
            start = pos = m.end()
        rest = data[start:] if start else data
        # Hold back what may be the start of a marker split across frames (a marker has
        # exactly one ESC, at its start, so only the last ESC can begin one).
        keep = 0
        k = rest.rfind(b"\x1b", max(0, len(rest) - len(mark) + 1))
        if k >= 0 and mark.startswith(rest[k:]):
            keep = len(rest) - k
        if len(rest) > keep:
            on_output(kind, rest[:len(rest) - keep] if keep else rest)
        self.held[kind] = rest[len(rest) - keep:] if keep else b""


# -- sessions -----------------------------------------------------------------------------------
class Session:
    """One attached session container and its agent."""

    def __init__(self, engine, name: str, container_id: str, image: str, auto_remove: bool,
                 xroot: Optional[str], user: Optional[str] = None):
        self.engine = engine
        self.name = name
        self.user = user
        self.xroot = xroot  # its private exchange folder (host path), mounted at XFER_TARGET
        self.binds = []  # [(host source, target, rw)]: a remote engine syncs the notebook folder
        self.sync = "both"  # remote engines: what of the notebook folder travels (--sync)
        self.id = container_id
        self.image = image
        self.auto_remove = auto_remove
        self._att = None
        self._raw = None
        self._demux = _Demux()
        self._next = secrets.randbelow(1 << 30)  # request ids, for interrupts
        self._waiting = set()  # tokens given up on after an interrupt; their ends still come
        self._finished = collections.deque(maxlen=8)  # tokens of the last requests answered
        self._lock = threading.Lock()
        self.info = {}
        self.claimed = False  # by this kernel (claims.py)
        self.last_reply = None
        self.last_moved = None

    # plumbing
    def _attach(self):
        self._att = self.engine.attach(self.id)
        self._raw = self._att.raw
        self._link_gen = getattr(getattr(self.engine, "link", None), "generation", None)

    def _link_dropped(self) -> bool:
        """A remote engine's SSH connection dropped (and came back, or will on the next call)
        since this session's stream was attached: that stream is dead."""
        link = getattr(self.engine, "link", None)
        return link is not None and (link.generation != getattr(self, "_link_gen", None)
                                     or not link.alive())

    def _send(self, kind: int, payload: bytes) -> int:
        self._next += 1
        rid = self._next
        try:
            self._att.send(agent.HEADER.pack(agent.MAGIC, kind, rid, len(payload)) + payload)
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
            if self._raw is None or self._link_dropped():
                self.close_socket()  # between cells, the connection dropped: attach anew
                self._attach()
            stdout = stdout or sys.stdout
            stderr = stderr or sys.stderr
            sinks = {1: runner.OutputSink(stdout), 2: runner.OutputSink(stderr)}
            token = secrets.token_hex(16)  # this request's alone: only its markers end it
            rid = self._send(kind, json.dumps(dict(payload, token=token)).encode("utf-8"))
            state = {"out": False, "reply": None}
            if self._waiting:
                print(f"dockmagic: session {self.name} is still finishing an interrupted cell; "
                      "this one runs after it (interrupt again to stop waiting)",
                      file=stderr, flush=True)

            def on_output(k, data):
                sinks[k].write(data)

            def on_marker(k, tok, data):
                if tok != token:  # another request's (an interrupted one's, another kernel's)
                    if k == 2 and tok in self._finished and tok not in self._waiting:
                        # A second end for a cell already answered: that cell printed a fake
                        # end of its own, and what came since may be its output.
                        print(f"dockmagic: session {self.name}: a cell before this one printed "
                              "a fake end marker; output above may be that cell's",
                              file=stderr, flush=True)
                    if k == 2:
                        self._waiting.discard(tok)
                    return
                if k == 1:
                    state["out"] = True
                elif state["reply"] is None:
                    state["reply"] = _parse_reply(data)

            def done():
                return state["out"] and state["reply"] is not None

            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._pump(done, on_output, on_marker, deadline)
            except KeyboardInterrupt:
                message = self._interrupt(rid, token, done, on_output, on_marker)
                for sink in sinks.values():
                    sink.write(b"", final=True)
                    sink.end_line()
                raise errors.CellInterrupted(message) from None
            finally:
                for sink in sinks.values():
                    sink.write(b"", final=True)
            self._finished.append(token)
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
                if self._reattach_after_drop():
                    raw = self._raw
                    continue
                self._gone("the container's output ended")
            self._demux.feed(data, on_output, on_marker)

    def _reattach_after_drop(self) -> bool:
        """A remote engine's SSH connection dropped under the attach stream: once it is back,
        attach again; the agent's cell ran on, and its end marker arrives on the new stream
        (what it printed meanwhile is missing, and the cell says so)."""
        link = getattr(self.engine, "link", None)
        if link is None or not link.wait_up():
            return False
        try:
            if self.engine.inspect(self.id)["State"].get("Running") is not True:
                return False
            self.close_socket()
            self._attach()
        except (errors.DockmagicError, OSError):
            return False
        print(f"dockmagic: the SSH connection to engine {self.engine.name} dropped during the "
              f"cell; reattached to session {self.name} (output printed meanwhile is missing)",
              file=sys.stderr, flush=True)
        return True

    def _interrupt(self, rid, token, done, on_output, on_marker) -> str:
        """KeyboardInterrupt in the kernel: the agent raises it inside the running cell; its
        traceback streams as the cell's own. Returns the one line that says what happened."""
        t0 = time.monotonic()
        try:
            self._att.send(agent.HEADER.pack(agent.MAGIC, agent.INTERRUPT, rid, 0))
            self._pump(done, on_output, on_marker, time.monotonic() + INTERRUPT_WAIT_S)
        except (socket.timeout, KeyboardInterrupt):
            self._waiting.add(token)
            return (f"interrupted; session {self.name} is still busy with the cell (code that "
                    "does not check for KeyboardInterrupt); its output shows in the next cell")
        except (OSError, SessionError):
            return f"interrupted; session {self.name} did not answer"
        return (f"interrupted; the cell stopped in {time.monotonic() - t0:.1f} s; session "
                f"{self.name} keeps its variables")

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
                   stderr=None, raise_error: bool = True, name: Optional[str] = None) -> dict:
        """Run CODE in the session's interpreter; --in/--out through a fresh folder in the
        session's own. OUTPUTS: ((dest, src, pickle_ok), ...) (or (dest, src): plain data).
        NAME is what its frames are called in tracebacks (the notebook's `<cell [6]>`)."""
        xchg = hand = None
        payload = {"code": code}
        if name:
            payload["name"] = name
        outputs = tuple(o if len(o) == 3 else (o[0], o[1], False) for o in outputs)
        try:
            if inputs or outputs:
                if not self.xroot:
                    raise transfer.TransferError(
                        f"--in/--out: session {self.name} has no exchange folder (it was "
                        f"started by an older dockmagic); start it again with `%docker session "
                        f"--stop {self.name}` and `%docker session {self.name} ... IMAGE`")
                xchg = transfer.Exchange.create(
                    "c-", self.user, parent=self.xroot, container_parent=transfer.XFER_TARGET,
                    tmpfs=transfer.exchange_root()[1])
                payload.update(xdir=xchg.container_dir, mapped=xchg.mapped,
                               inputs=xchg.write_inputs(inputs, user_ns),
                               outputs=[list(o) for o in outputs])
                hand = self._handover(xchg, len(outputs))
                payload["handover"] = hand is not None
            reply = self._run(agent.RUN, payload, stdout, stderr)
            handed = hand.collect() if hand is not None else {}
            if xchg is not None:  # names and sizes, for the cell's provenance record
                self.last_moved = transfer.measure(xchg, payload["inputs"], outputs, handed)
            status = reply.get("s")
            if status == "ok" and xchg is not None and outputs:
                # The session lives on and could still change its files: those are copied
                # first; what it handed over sealed is mapped as it is.
                xchg.read_outputs(outputs, user_ns, writer_gone=False, handed=handed)
            elif status == "transfer":
                raise transfer.TransferError(transfer.clean_text(reply.get("msg")
                                                                 or "transfer failed"))
        finally:
            if hand is not None:
                hand.close()
            if xchg is not None:
                xchg.close()
        self._check(reply, raise_error)
        return reply

    def _handover(self, xchg, outputs: int):
        """A socket for this cell's large --out arrays to come back through sealed (no copy),
        where the container can reach the kernel's folder itself: a local engine and a tmpfs
        exchange (the socket is never synced to a remote one). None: files are copied."""
        if not outputs or not xchg.mapped or getattr(self.engine, "remote", False):
            return None
        try:
            return handover.Handover(xchg.host_dir, outputs)
        except OSError:
            return None

    def run_command(self, argv, body: str, *, stdout=None, stderr=None,
                    raise_error: bool = True) -> dict:
        """Run BODY through another interpreter (bash, `bash -l`, ...) in the session's
        container, as `docker exec` would (container env and workdir), streaming its output."""
        reply = self._run(agent.COMMAND, {"argv": list(argv), "body": body}, stdout, stderr)
        self._check(reply, raise_error)
        return reply

    def _run(self, kind: int, payload: dict, stdout, stderr) -> dict:
        """One cell's request; on a remote engine the notebook folder travels with it (only
        what changed on either side: the agent reports the container's changes), and so does
        this cell's --in/--out folder."""
        if not getattr(self.engine, "remote", False):
            return self._exchange(kind, payload, stdout, stderr)
        from .remote import cells
        return cells.session_exchange(
            self.engine, self.binds, lambda watch: self._exchange(
                kind, dict(payload, watch=watch) if watch else payload, stdout, stderr),
            self.sync, xroot=self.xroot if payload.get("xdir") else None, image=self.image)

    def _check(self, reply: dict, raise_error: bool):
        self.last_reply = reply  # the cell's outcome, for its provenance record
        status = reply.get("s")
        if status == "interrupted":
            raise errors.CellInterrupted(f"interrupted; session {self.name} keeps its variables")
        if status in ("error", "exit") and raise_error:
            code = reply.get("code", 1)
            msg = reply.get("msg") or errors.describe_exit(code, self.image)
            if status == "error":  # its traceback was just shown: name it, do not repeat it
                msg = f"the cell raised {reply_raised(reply)}"
            raise SessionCellFailed(self.name, code, msg, self.image)

    def claim(self):
        """This kernel holds the session (reattached to one another kernel made): `prune
        --orphans` and that kernel's reaper leave it alone (see claims.py)."""
        from . import claims
        self.claimed = claims.claim(self.id)
        reaper = self.engine.reaper()
        if reaper is not None:  # a remote engine's reaper claims it on that host too
            reaper.claim(self.id)
            self.claimed = True
        self.folder_goes_with_it()  # if this kernel dies, its reaper takes a --rm session along

    def folder_goes_with_it(self):
        """A --rm session goes with this kernel (its reaper removes it if the kernel dies):
        its exchange folder then goes too, and not before (another kernel may claim it)."""
        reaper = self.engine.reaper()
        if reaper is not None and self.auto_remove and self.xroot:
            reaper.remove_with(self.id, self.xroot)

    def close(self, remove: bool = False):
        self.close_socket()
        _SESSIONS.pop(self.name, None)
        if remove or self.auto_remove:
            self.engine.remove(self.id)
            transfer.remove_dir(self.xroot)
        if self.claimed:
            from . import claims
            claims.release(self.id)
            from .engine import reaping
            reaper = reaping.reaper_for(self.engine.endpoint.url)  # none started for this
            if reaper is not None:
                reaper.release(self.id)
            self.claimed = False


def reply_raised(reply: dict) -> str:
    """The exception a cell's code raised, as its reply names it (`ValueError`), if it did."""
    name = str(reply.get("msg") or "").partition(":")[0].strip()
    if name and len(name) <= 80 and all(part.isidentifier() for part in name.split(".")):
        return name
    return "an exception"


def reply_peak(reply: dict) -> Optional[int]:
    """The session's largest process so far, in bytes, as its agent reported with REPLY."""
    rss = reply.get("maxrss")  # from the container: a number, or nothing
    return rss if isinstance(rss, int) and not isinstance(rss, bool) and rss > 0 else None


def _parse_reply(data: bytes) -> dict:
    """A reply from the agent, as plain status fields (anything else in it is dropped)."""
    try:
        raw = json.loads(bytes.fromhex(data.decode("ascii")))
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return {"s": "error", "msg": "the session sent a reply dockmagic cannot read"}
    reply = {"s": str(raw.get("s", "error"))}
    if isinstance(raw.get("code"), int) and not isinstance(raw.get("code"), bool):
        reply["code"] = raw["code"] & 0xFF
    if raw.get("msg") is not None:
        reply["msg"] = transfer.clean_text(raw["msg"], 2000)
    for key in ("version", "pid", "cells", "maxrss"):  # maxrss: for the provenance record
        if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool):
            reply[key] = raw[key]
    if isinstance(raw.get("python"), str):
        reply["python"] = transfer.clean_text(raw["python"], 40)
    ws = raw.get("ws")  # a remote engine's workspace changes (names checked where used)
    if isinstance(ws, list) and len(ws) == 2 and all(isinstance(x, list) for x in ws):
        reply["ws"] = ws
    return reply


_SESSIONS: dict = {}


def attached(name: str) -> Optional[Session]:
    """Session NAME if this kernel is attached to it (no engine call), else None."""
    return _SESSIONS.get(name)


def _xroot_from_inspect(info: dict) -> Optional[str]:
    """The session's private exchange folder, as the engine reports its mount: one of this
    kernel user's session folders (``transfer.session_dirs``), or None."""
    src = transfer.exchange_source(info.get("Mounts"))
    return src if src and src in transfer.session_dirs() else None


def _from_container(engine, name: str, info: dict) -> Session:
    cmd = (info["Config"].get("Cmd") or [])[-1:]  # [..., "session"] (see for_session)
    if cmd != ["session"]:
        raise SessionUsage(f"container {name} is labelled a dockmagic session but does not run "
                           f"this dockmagic's agent; remove it (`%docker rm -f {name}`) and "
                           "start it again")
    sess = Session(engine, name, info["Id"], info["Config"].get("Image", ""),
                   bool(info["HostConfig"].get("AutoRemove")), _xroot_from_inspect(info),
                   info["Config"].get("User") or None)
    if getattr(engine, "remote", False):  # workspace paths there -> the notebook folder here
        from .remote.placement import to_local_binds
        sess.binds = to_local_binds(engine, [  # (a tcp:// engine's workspace is a volume)
            (m["Source"] if m.get("Type") == "bind" else m.get("Name", ""), m["Destination"],
             bool(m.get("RW"))) for m in info.get("Mounts", ())
            if m.get("Type") in ("bind", "volume") and m["Destination"] != transfer.XFER_TARGET])
    return sess


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
        engine, info = _elsewhere(engine, name)
    _check_session_container(name, info)
    if not info["State"].get("Running"):
        raise SessionUsage(f"session {name} is {info['State'].get('Status')}; start it again "
                           f"with `%docker session {name} IMAGE` (its variables are gone)")
    return _reattach(engine, name, info)


def _elsewhere(first, name: str):
    """Session NAME on another engine than FIRST (a kernel restarted: it ran on `--engine`):
    (engine, inspect info), or one line saying it runs on none or on several."""
    from .remote import lookup
    found, unreachable, asked = lookup.find_session(first, name)
    if len(found) == 1:
        return found[0]
    if found:
        where = lookup.engine_word(e.name for e, _ in found)
        raise SessionUsage(f"session {name} runs on {where}; say which: `%docker session "
                           f"{name} --engine {found[0][0].name}` reattaches to that one")
    looked = lookup.engine_word([first.name] + asked)
    note = "; ".join(f"{n}: {why}" for n, why in unreachable)
    raise SessionUsage(f"no session {name} on {looked}" + (f" (not asked: {note})" if note else "")
                       + f"; start one with `%docker session {name} IMAGE`")


def _reattach(engine, name: str, info: dict) -> Session:
    sess = _from_container(engine, name, info)
    sess.claim()  # before attaching: the reaper of the kernel that made it must now keep it
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
        sess.claim()
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
    from . import binds
    try:
        binds.ensure_bind_sources(spec)  # missing -v sources: made as you, where you own
    except binds.BindSourceError as exc:
        raise SessionUsage(str(exc)) from None
    log_config = None
    # Everything a session prints also lands in its log, for as long as it lives: cap it
    # (docker's json-file default keeps all of it).
    try:
        if engine.info().get("LoggingDriver") == "json-file":
            log_config = {"Type": "json-file", "Config": dict(SESSION_LOG_OPTS)}
    except errors.DockmagicError:
        pass
    _reap_session_dirs(engine)
    # --in/--out go through a private folder of this session's alone (see transfer)
    try:
        xroot = transfer.make_private_dir(transfer.exchange_root()[0], f"s-{name}-", spec.user)
    except OSError as exc:
        raise transfer.TransferError(f"session {name}: cannot make its exchange folder: "
                                     f"{exc.strerror}") from None
    run_spec = for_session(spec, python, xroot)
    cid, started = None, False
    try:
        cid = engine.create(run_spec, on_pull=say, wants_gpus=plan.wants_gpus,
                            log_config=log_config)
        sess = Session(engine, name, cid, spec.image, bool(spec.auto_remove), xroot, spec.user)
        sess.folder_goes_with_it()
        if getattr(engine, "remote", False):
            from .remote.placement import binds_from_spec
            sess.binds = binds_from_spec(spec)
            sess.sync = getattr(plan, "sync", "both")
        sess._attach()
        engine.start(cid, image=spec.image, wants_gpus=plan.wants_gpus)
        sess.hello()
        _SESSIONS[name] = sess
        _register_atexit()
        started = True
        return sess
    finally:
        if not started:  # it never answered: take it away again
            if cid is not None:
                engine.remove(cid)
            transfer.remove_dir(xroot)


#: A session folder younger than this may belong to a session being started right now.
_ORPHAN_AGE_S = 300.0


def _reap_session_dirs(engine):
    """Remove the exchange folders of sessions that are gone (removed with `docker rm`, or by
    a reaper): no session container mounts them any more."""
    dirs = transfer.session_dirs()
    if not dirs:
        return
    try:
        live = {transfer.exchange_source(row.get("Mounts")) for row in query_sessions(engine)}
    except errors.DockmagicError:
        return
    now = time.time()
    for path in dirs:
        try:
            old = now - os.lstat(path).st_mtime > _ORPHAN_AGE_S
        except OSError:
            continue
        if path not in live and old:
            transfer.remove_dir(path)


def for_session(spec, python: str, xroot: str):
    """The session container's spec: the agent as its main process (no secret on its command
    line: each request brings its own token), stdin kept open past this kernel's attach
    (detach: docker-py would otherwise set StdinOnce, and the session must outlive the kernel
    and be reattached), tini as init, its own private exchange folder XROOT mounted, and
    reaped with its kernel when started with --rm."""
    run_labels = spec.labels
    if spec.auto_remove:
        run_labels = tuple(sorted(dict(spec.labels, **{L.REAP: "1"}).items()))
    return dataclasses.replace(
        transfer.exchange_spec(spec, xroot), interactive=True, detach=True, tty=False,
        entrypoint=(python,), command=("-u", "-c", _agent_source(), "session"),
        init=True if spec.init is None else spec.init, labels=run_labels)


def stop(engine, name: str):
    """Stop and remove session NAME (`%docker session --stop NAME`)."""
    sess = _SESSIONS.pop(name, None)
    if sess is not None:
        sess.close_socket()
        if sess.claimed:
            from . import claims
            claims.release(sess.id)
    info = _inspect(engine, name)
    if info is None:
        if sess is None:
            raise SessionUsage(f"no session {name}")
        return
    _check_session_container(name, info)
    engine.remove(info["Id"], quiet=False)
    transfer.remove_dir(_xroot_from_inspect(info))


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


def run_cell(engine, name: str, body: str, user_ns: dict, *, interpreter=(), inputs=(),
             outputs=(), pickle_outputs=(), raise_error: bool = True,
             cell_name: Optional[str] = None,
             on_ready: Optional[Callable[["Session"], Optional[tuple]]] = None):
    """`%%docker @NAME ...` (parsed by cli.parse_session_cell): the cell runs in session NAME.
    INPUTS/OUTPUTS/PICKLE_OUTPUTS: the `--in`/`--out`/`--out-pickle` values as written
    (``x,cfg``, ``dest=src``). ON_READY(session) is called once the session answered, before
    the cell is sent (the cell's status line); it may return the (stdout, stderr) the cell's
    output goes to."""
    interpreter = tuple(interpreter)
    try:
        inputs = transfer.parse_transfers(inputs, "--in")
        outputs = transfer.parse_outputs(outputs, pickle_outputs)
    except transfer.TransferUsage as exc:
        raise SessionUsage(str(exc)) from None
    sess = get(engine, name)
    if (inputs or outputs) and interpreter and interpreter not in _PYTHON_CELL:
        raise SessionUsage("--in/--out move Python variables; they work in Python session "
                           f"cells, not in {shlex.join(interpreter)} cells")
    stdout, stderr = (on_ready(sess) if on_ready is not None else None) or (None, None)
    if not interpreter or interpreter in _PYTHON_CELL:
        sess.run_python(body, inputs=inputs, outputs=outputs, user_ns=user_ns,
                        raise_error=raise_error, name=cell_name, stdout=stdout, stderr=stderr)
        return None
    sess.run_command(interpreter, body, raise_error=raise_error, stdout=stdout, stderr=stderr)
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
