# dockmagic agent: the in-container side of sessions, spares and --in/--out (stdlib, Python 3.8+)
"""The in-container side of dockmagic: sessions, spares and `--in`/`--out`.

Stdlib only, Python 3.8+: nothing is installed in the image. dockmagic sends this file's text
into the container (`python3 -u -c SOURCE MODE ...`, or as the prelude of a one-shot cell's
stdin), so it must stay one self-contained file. Modes:

``session``
    One persistent interpreter. Requests arrive as frames on stdin (``HEADER`` + JSON payload);
    each carries a fresh random ``token`` chosen by the kernel (nothing secret is ever in argv,
    the environment or /proc). A reply is the cell's own output on stdout/stderr, then an end
    marker on *both* streams: docker carries stdout and stderr on separate pipes with no order
    between them, so only a marker at the end of each stream says that stream is complete. The
    stderr marker carries the outcome (hex of JSON). Markers look like an OSC escape
    (``ESC ] dm;TOKEN;DATA BEL``), which terminals showing `docker logs` swallow. A cell can read
    its own request's token (it runs in this process) and so fake its own end: the kernel trusts
    nothing in a reply beyond what that cell's display shows (see dockmagic/session.py).

``spare``
    A started container waiting for one one-shot cell: it reads exactly one request (argv, env)
    from stdin and exec()s the interpreter, which then reads the cell body from the same stdin,
    as in a cold `docker run -i`; exit code, PID and signals are the interpreter's own. When the
    interpreter cannot be started, the agent says why in ``SPAWN_FAILED_FILE`` in its private
    exchange folder (never on the cell's stderr, which the cell owns) and exits 127 or 126.

(no mode)
    Imported as the prelude of a one-shot cell with ``--in``/``--out``: see ``run_oneshot``.
"""
import os
import struct
import sys

VERSION = 2  # 2: a token per request (no nonce in argv); --out files named by the kernel
MAGIC = b"dm"
#: Host -> agent frame header: magic, kind, request id, payload length.
HEADER = struct.Struct(">2sBII")
RUN, COMMAND, INTERRUPT, HELLO, QUIT, SPAWN = (ord(c) for c in "RCIHQX")
MARK_OPEN = b"\x1b]dm;"
MARK_CLOSE = b"\x07"
#: Where a container's own private exchange folder is mounted (one per container, see
#: dockmagic/transfer.py).
XFER_TARGET = "/.dockmagic-xfer"
#: Written into XFER_TARGET by a spare that cannot exec the interpreter; the host reads it only
#: when the cell ended with 126 or 127, and turns it into the error a cold start gives.
SPAWN_FAILED_FILE = "spawn-failed"
#: Files of one --in/--out exchange: inputs (``in-N.npy|.pkl``) are written by the host, outputs
#: (``out-N.npy|.pkl``, N = the position of the name in the cell's request) by the container.
#: The host picks the file names and decoders itself; RESULT_FILE only carries a message.
RESULT_FILE = "result.json"
#: A unix socket the kernel may listen on in a session cell's folder: large --out arrays are
#: handed over through it as sealed memory files instead of files (see dockmagic/handover.py).
HANDOVER_SOCKET = "out.sock"
#: Written by the host into a one-shot cell's folder when it could not finish writing the
#: inputs the agent waits for (``load_inputs(..., wait=True)``).
INPUT_FAILED_FILE = "in-failed"

#: The filename this agent's own frames carry, so tracebacks can leave them out.
_AGENT_FILE = sys._getframe().f_code.co_filename
_PICKLE_PROTOCOL = 4  # readable by every Python 3.4+, whichever side loads it


class TransferFailed(Exception):
    """One variable could not cross; the message names it."""


# -- exact reads on fd 0 (never through sys.stdin's buffer: a spare leaves the rest for the
#    interpreter it becomes) ----------------------------------------------------------------
def read_exact(fd, n):
    chunks = []
    while n:
        data = os.read(fd, n)
        if not data:
            raise EOFError
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def read_frame(fd):
    """One request frame; resynchronises on the magic if a writer died mid-frame."""
    head = read_exact(fd, HEADER.size)
    while head[:2] != MAGIC:
        head = head[1:] + read_exact(fd, 1)
    _magic, kind, rid, size = HEADER.unpack(head)
    return kind, rid, read_exact(fd, size) if size else b""


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- variables across the boundary ------------------------------------------------------------
def _numpy_class(module, name):
    """numpy 1.x pickles name `numpy.core`, numpy 2.x `numpy._core`: load either on either."""
    if not module.startswith(("numpy.core", "numpy._core")):
        return None
    import importlib
    tail = module.split(".", 2)[2:]
    # numpy 2's own name first: its `numpy.core` shim warns on every use.
    for candidate in (".".join(["numpy", "_core"] + tail), ".".join(["numpy", "core"] + tail)):
        try:
            mod = importlib.import_module(candidate)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


def load_pickle(path):
    with open(path, "rb") as f:
        return load_pickle_file(f)


def load_pickle_file(f):
    """Unpickle in full (runs whatever the pickle names: only for trusted files)."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            found = _numpy_class(module, name)
            if found is not None:
                return found
            return super().find_class(module, name)

    return Unpickler(f).load()


def is_plain_array(value):
    """An ndarray that .npy holds without pickle (exact type: subclasses keep their pickle)."""
    np = sys.modules.get("numpy")
    return (np is not None and type(value) is np.ndarray
            and not value.dtype.hasobject)


class NotPlain(Exception):
    """A value holds something other than plain data; ``obj`` is the offending part."""

    def __init__(self, obj):
        Exception.__init__(self)
        self.obj = obj


def describe_type(obj):
    """The type of OBJ as a user reads it: `Foo (from m)`, `dict`, `type (m.Foo)`."""
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return "%s (%s.%s)" % (type(obj).__name__, getattr(obj, "__module__", "?"),
                               getattr(obj, "__qualname__", "?"))
    kind = type(obj)
    module = getattr(kind, "__module__", "")
    name = getattr(kind, "__qualname__", kind.__name__)
    return "%s (from %s)" % (name, module) if module and module != "builtins" else name


def _plain_pickler(f):
    """A pickler that writes plain data only (what the kernel's safe loader reads): None, bool,
    int, float, complex, str, bytes, list, tuple, dict, set, frozenset, numpy arrays (exact
    ndarray), scalars and dtypes. Anything else raises NotPlain before it is written."""
    import pickle

    np = sys.modules.get("numpy")
    allowed = set()
    if np is not None:
        allowed.update((np.ndarray, np.dtype))
        for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
            m = sys.modules.get(mod)
            if m is not None:
                allowed.update(getattr(m, n) for n in ("_reconstruct", "scalar") if hasattr(m, n))

    class Plain(pickle.Pickler):
        # Called for every object except None, bools and exact int, float, bytes, str, dict,
        # set, frozenset, list and tuple (which are plain by definition).
        def reducer_override(self, obj):
            kind = type(obj)
            if kind is complex or kind is set or kind is frozenset:
                return NotImplemented
            if np is not None and (kind is np.ndarray or isinstance(obj, np.dtype) or (
                    isinstance(obj, np.generic) and kind.__module__ == "numpy")):
                return NotImplemented
            try:
                if obj in allowed or obj is complex or obj is set or obj is frozenset:
                    return NotImplemented
            except TypeError:  # unhashable
                pass
            raise NotPlain(obj)

    return Plain(f, protocol=_PICKLE_PROTOCOL)


def save_value(value, base, pickle_ok=True):
    """Write VALUE to BASE.npy (plain arrays) or BASE.pkl; returns (filename, kind). Without
    PICKLE_OK only plain data is written (NotPlain otherwise)."""
    if is_plain_array(value):
        import numpy as np
        path = base + ".npy"
        # A real file object: numpy writes the array's memory straight into the page cache
        # (tofile), without the chunked tobytes() copies it makes for other writers.
        with open(path, "wb") as f:
            np.lib.format.write_array(f, value, allow_pickle=False)
        return path, "npy"
    import pickle
    path = base + ".pkl"
    with open(path, "wb") as f:
        if pickle_ok:
            pickle.dump(value, f, protocol=_PICKLE_PROTOCOL)
        else:
            _plain_pickler(f).dump(value)
    return path, "pkl"


#: Arrays at least this big are mapped rather than read, where mapping is allowed.
MAP_MIN_BYTES = 1 << 20


def load_value(path, kind, mapped=False):
    """MAPPED (only for files on a tmpfs): a large array becomes a private copy-on-write
    mapping of the file: no read, no copy; pages are shared with the tmpfs until written,
    and stay valid after the file is unlinked (tmpfs pages are never written back to a
    disk). Otherwise one read straight into the final array."""
    if kind == "npy":
        import numpy as np
        if mapped and os.path.getsize(path) >= MAP_MIN_BYTES:
            try:
                return np.load(path, mmap_mode="c", allow_pickle=False).view(np.ndarray)
            except (ValueError, OSError):
                pass
        with open(path, "rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    return load_pickle(path)


def _memory_limited():
    """Whether this container has a memory limit: handed-over pages stay charged to it."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        return text != "max" and not (text.isdigit() and int(text) >= 1 << 60)
    return False


def hand_over(sock_path, index, value):
    """Write the plain array VALUE as .npy into a memfd, seal it so that nobody can change it
    any more, and pass it to the kernel listening at SOCK_PATH as output INDEX. False when
    that cannot be done here (the caller writes a file instead)."""
    import socket

    try:
        import array
        import fcntl
        import numpy as np
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
        fd = os.memfd_create("dockmagic-out-%d" % index, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (ImportError, AttributeError, OSError):
        return False
    try:
        with open(os.dup(fd), "wb") as f:
            np.lib.format.write_array(f, value, allow_pickle=False)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock_path)
            s.sendmsg([b"%d" % index],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            s.close()
        return True
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)


def resolve(ns, dotted, where):
    first, *rest = dotted.split(".")
    if first not in ns:
        raise TransferFailed("no variable %s %s" % (first, where))
    value = ns[first]
    for i, attr in enumerate(rest):
        try:
            value = getattr(value, attr)
        except AttributeError:
            raise TransferFailed("%s has no attribute %s %s"
                                 % (".".join([first] + rest[:i]), attr, where)) from None
    return value


def assign(ns, dotted, value, where):
    parent, _, attr = dotted.rpartition(".")
    if not parent:
        ns[dotted] = value
        return
    target = resolve(ns, parent, where)
    try:
        setattr(target, attr, value)
    except Exception as exc:
        raise TransferFailed("cannot set %s %s: %s" % (dotted, where, one_line(exc))) from None


def one_line(exc):
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0]) if text else type(exc).__name__


def _wait_for(xdir, name, dest):
    """Until the host has written XDIR/NAME (it renames it there once complete)."""
    import time

    pause = 0.0005
    while not os.path.exists(os.path.join(xdir, name)):
        if os.path.exists(os.path.join(xdir, INPUT_FAILED_FILE)):
            raise TransferFailed("--in %s: the kernel could not write it" % dest)
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def load_inputs(xdir, inputs, ns, mapped=False, wait=False):
    """INPUTS: [[dest, file, kind], ...] written by the host into XDIR; assigned only if all
    load. MAPPED: XDIR is a tmpfs (see load_value). WAIT: the host may still be writing them
    (a one-shot cell's container starts meanwhile)."""
    loaded = []
    if wait and any(kind == "npy" for _dest, _name, kind in inputs):
        try:  # while the host still writes: numpy takes a while to import
            import numpy  # noqa: F401
        except ImportError:
            pass  # (load_value says so, for the variable it is missing for)
    for dest, name, kind in inputs:
        if wait:
            _wait_for(xdir, name, dest)
        try:
            value = load_value(os.path.join(xdir, name), kind, bool(mapped))
        except ImportError as exc:
            raise TransferFailed("--in %s: the container cannot load it (%s); install that "
                                 "module in the image" % (dest, one_line(exc))) from None
        except Exception as exc:
            hint = ""
            if "__main__" in str(exc):
                hint = " (classes and functions defined in the notebook do not exist there)"
            raise TransferFailed("--in %s: the container cannot load it: %s%s"
                                 % (dest, one_line(exc), hint)) from None
        loaded.append((dest, value))
    for dest, value in loaded:
        try:
            assign(ns, dest, value, "in the container")
        except TransferFailed as exc:
            raise TransferFailed("--in %s: %s" % (dest, exc)) from None


def save_outputs(xdir, outputs, ns, handover=False):
    """OUTPUTS: [[dest, src, pickle_ok], ...]: the I-th goes to XDIR/out-I.npy or .pkl, or,
    with HANDOVER (a session whose kernel listens at XDIR/HANDOVER_SOCKET), a large plain
    array as a sealed memory file (``hand_over``).

    Nothing is left unless every variable was written; a failure removes what was written.
    """
    written = []
    sock = os.path.join(xdir, HANDOVER_SOCKET) if handover and not _memory_limited() else None
    try:
        for i, (dest, src, pickle_ok) in enumerate(outputs):
            try:
                value = resolve(ns, src, "in the container")
            except TransferFailed as exc:
                raise TransferFailed("--out %s: %s" % (src, exc)) from None
            if (sock and is_plain_array(value) and value.nbytes >= MAP_MIN_BYTES
                    and hand_over(sock, i, value)):
                continue
            base = os.path.join(xdir, "out-%d" % i)
            try:
                path, _kind = save_value(value, base, pickle_ok)
                written.append(path)
            except NotPlain as exc:
                for ext in (".npy", ".pkl"):
                    unlink_quietly(base + ext)
                part = "" if exc.obj is value else ", which holds one of type %s" % describe_type(exc.obj)
                raise TransferFailed(
                    "--out %s: %s is of type %s%s, not plain data; loading it would run code "
                    "from the container in your kernel. If you trust the image: --out-pickle %s"
                    % (dest, src, describe_type(value), part, dest)) from None
            except Exception as exc:
                for ext in (".npy", ".pkl"):
                    unlink_quietly(base + ext)
                raise TransferFailed("--out %s: cannot send %s back from the container: %s"
                                     % (src, type(value).__name__, one_line(exc))) from None
    except BaseException:
        for path in written:
            unlink_quietly(path)
        raise
    return written


def unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# -- tracebacks as the user's own --------------------------------------------------------------
def format_error(exc):
    """The traceback without the agent's own frames (anywhere, chained ones too), and its
    last line."""
    import traceback

    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    seen = set()

    def clean(t):
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if f.filename != _AGENT_FILE])
        clean(t.__cause__)
        clean(t.__context__)
        for sub in getattr(t, "exceptions", None) or ():
            clean(sub)

    clean(te)
    text = "".join(te.format())
    last = "".join(te.format_exception_only()).strip().splitlines()[-1]
    return text, last


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write("%s\n" % (code,))
    return 1


# -- one-shot cells with --in/--out ------------------------------------------------------------
def run_oneshot(config, body):
    """Run BODY as `python3 -u` would (a fresh __main__, exit codes 1 / 130 / sys.exit's; its
    frames named as the notebook's cell, with source lines), with inputs loaded before and
    outputs saved after."""
    import json
    import types

    xdir = config["xdir"]
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    ns = module.__dict__

    def report(result):
        path = os.path.join(xdir, RESULT_FILE)
        try:
            with open(path + ".tmp", "w") as f:
                f.write(json.dumps(result))
            os.replace(path + ".tmp", path)
        except OSError:
            unlink_quietly(path + ".tmp")

    try:
        load_inputs(xdir, config["inputs"], ns, config.get("mapped", False),
                    config.get("wait", False))
    except TransferFailed as exc:
        report({"s": "transfer", "msg": str(exc)})
        sys.stderr.write("dockmagic: %s\n" % exc)
        sys.exit(1)
    name = config.get("name") or "<stdin>"
    if name != "<stdin>":  # the notebook's cell: its lines show in tracebacks
        import linecache
        linecache.cache[name] = (len(body), None, body.splitlines(True), name)
    try:
        exec(compile(body, name, "exec"), ns)
    except SystemExit:
        raise
    except BaseException as exc:
        sys.stdout.flush()
        text, _ = format_error(exc)
        sys.stderr.write(text)
        sys.stderr.flush()
        sys.exit(130 if isinstance(exc, KeyboardInterrupt) else 1)
    try:
        save_outputs(xdir, config["outputs"], ns)
    except TransferFailed as exc:
        report({"s": "transfer", "msg": str(exc)})
        sys.stderr.write("dockmagic: %s\n" % exc)
        sys.exit(1)
    report({"s": "ok"})


# -- spare: become the interpreter -------------------------------------------------------------
def _which(name, path):
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for folder in (path or os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_spare():
    import json
    import signal

    # Interrupted before the cell was handed over: end like an interrupted interpreter.
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    try:
        kind, _rid, payload = read_frame(0)
    except EOFError:
        os._exit(0)
    if kind != SPAWN:
        os._exit(2)
    req = json.loads(payload.decode("utf-8"))
    env = dict(os.environ)
    for item in req.get("env", ()):  # the cell's -e, read when the cell ran, over the image's
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
        else:
            env.pop(key, None)
    argv = req["argv"]
    path = _which(argv[0], env.get("PATH"))
    if path is None:
        _spawn_failed('exec: "%s": executable file not found in $PATH' % argv[0], 127)
    # Python ignores SIGPIPE and SIGXFSZ; the interpreter must start with docker's defaults.
    for sig in (signal.SIGINT, signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(path, argv, env)
    except OSError as exc:
        _spawn_failed("exec: %s: %s" % (argv[0], exc.strerror), 126)


def _spawn_failed(text, code):
    """Out of band: the reason goes to the spare's private exchange folder, not to stderr."""
    try:
        fd = os.open(os.path.join(XFER_TARGET, SPAWN_FAILED_FILE),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass
    os._exit(code)


def workspace_state(root):
    """{rel: (mtime_ns, size)} of the files and links under ROOT, `.git` left out."""
    import stat

    now = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            it = os.scandir(os.path.join(root, rel) if rel else root)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name == ".git":
                    continue
                r = rel + "/" + e.name if rel else e.name
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(r)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    now[r] = (st.st_mtime_ns, st.st_size)
    return now


# -- session: one persistent interpreter -------------------------------------------------------
class Session:
    def __init__(self):
        import queue
        import threading
        import types

        self.requests = queue.Queue()
        self.lock = threading.Lock()
        self.main_ident = threading.get_ident()
        self.current = None
        self.in_cell = False
        self.cells = 0
        self.flags = 0
        self.watched = {}  # workspace root -> {rel: (mtime_ns, size)} at the last cell's end
        # Cells run in a module of their own, registered as __main__ so that classes they
        # define pickle (for --out) under the name the notebook would use.
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = self.module
        # Other interpreters run as `docker exec` would: the container's environment and
        # working directory, whatever Python cells did to their own.
        self.env0 = dict(os.environ)
        self.cwd0 = os.getcwd()
        # Requests are read from a private copy of stdin; a cell that reads stdin (input(),
        # a child process) gets /dev/null instead of eating the protocol.
        self.fd = os.dup(0)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.argv = [""]

    # reader thread: requests in, interrupts acted on at once
    def read_requests(self):
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # SIGINT is the main thread's
        while True:
            try:
                kind, rid, payload = read_frame(self.fd)
            except (EOFError, OSError):
                self.requests.put(None)
                return
            if kind == INTERRUPT:
                self.interrupt(rid)
            else:
                self.requests.put((kind, rid, payload))

    def interrupt(self, rid):
        import signal

        with self.lock:
            if self.in_cell and (rid == 0 or rid == self.current):
                signal.pthread_kill(self.main_ident, signal.SIGINT)

    def on_sigint(self, signum, frame):
        # Only a running cell is interrupted; a late or stray SIGINT between cells is dropped.
        if self.in_cell:
            raise KeyboardInterrupt

    def serve(self):
        import json
        import signal
        import threading

        signal.signal(signal.SIGINT, self.on_sigint)
        threading.Thread(target=self.read_requests, name="dockmagic-requests",
                         daemon=True).start()
        while True:
            item = self.requests.get()
            if item is None:
                return 0  # stdin closed for good: nobody can reach this session any more
            kind, rid, payload = item
            req = None
            token = ""
            try:
                req = json.loads(payload.decode("utf-8")) if payload else {}
                token = str(req.get("token", ""))
                if kind == RUN:
                    reply = self.run_python(rid, req)
                elif kind == COMMAND:
                    reply = self.run_command(rid, req)
                elif kind in (HELLO, QUIT):
                    reply = {"s": "ok", "version": VERSION, "pid": os.getpid(),
                             "python": sys.version.split()[0], "cells": self.cells}
                else:
                    reply = {"s": "error", "msg": "unknown request %r" % kind}
            except KeyboardInterrupt:
                reply = {"s": "interrupted"}
            except BaseException as exc:  # the agent itself must survive anything a cell does
                reply = {"s": "error", "msg": "dockmagic agent: %s" % one_line(exc)}
            if kind in (RUN, COMMAND) and isinstance(req, dict) and req.get("watch"):
                try:  # a remote engine's workspace: say what the cell changed in it
                    reply["ws"] = self.changes(req["watch"])
                except Exception:
                    reply["ws"] = None
            self.finish(token, reply)
            if kind == QUIT:
                return 0

    def changes(self, root):
        """What changed under ROOT (a remote engine's workspace, mounted at the notebook's path)
        since the last call: [[[rel, mtime_ns, size], ...], [deleted rel, ...]], or None the
        first time (the host then lists the workspace itself). The host compares with what it
        synced, so a warm cell that changed nothing costs no rsync."""
        now = workspace_state(root)
        before = self.watched.get(root)
        self.watched[root] = now
        if before is None:
            return None
        return [[[r, m, n] for r, (m, n) in sorted(now.items()) if before.get(r) != (m, n)],
                sorted(r for r in before if r not in now)]

    def finish(self, token, reply):
        import json

        if not (len(token) == 32 and all(c in "0123456789abcdef" for c in token)):
            return  # not a request from dockmagic's kernel side: nobody waits for an answer
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        if _is_cell_reply(reply):
            reply["maxrss"] = _maxrss()
        head = MARK_OPEN + token.encode("ascii") + b";"
        _write_all(1, head + b"o" + MARK_CLOSE)
        _write_all(2, head + json.dumps(reply).encode("utf-8").hex().encode("ascii")
                   + MARK_CLOSE)

    def run_python(self, rid, req):
        import linecache

        code = req.get("code", "")
        self.cells += 1
        name = req.get("name") or "<cell %d>" % self.cells
        lines = code.splitlines(True)
        held = linecache.cache.get(name)
        if held is not None and held[2] != lines:
            # The same name for other code (a cell run outside a notebook, where the number
            # does not advance): the earlier cell's functions keep their own source lines.
            name = "%s #%d>" % (name[:-1], self.cells)
        linecache.cache[name] = (len(code), None, lines, name)
        ns = self.module.__dict__
        with self.lock:
            self.current = rid
        try:
            try:
                self.in_cell = True
                if req.get("inputs"):
                    load_inputs(req["xdir"], req["inputs"], ns, req.get("mapped", False))
                co = compile(code, name, "exec", self.flags, True)
                self.flags |= co.co_flags & _FUTURE_FLAGS
                exec(co, ns)
            finally:
                self.in_cell = False
        except TransferFailed as exc:
            return {"s": "transfer", "msg": str(exc)}
        except SystemExit as exc:
            code = _exit_code(exc)
            if code:
                return {"s": "exit", "code": code, "msg": "SystemExit: %s" % code}
        except BaseException as exc:
            text, last = format_error(exc)
            sys.stdout.flush()
            sys.stderr.write(text)
            return {"s": "interrupted" if isinstance(exc, KeyboardInterrupt) else "error",
                    "msg": last}
        if req.get("outputs"):
            try:
                save_outputs(req["xdir"], req["outputs"], ns, req.get("handover", False))
            except TransferFailed as exc:
                return {"s": "transfer", "msg": str(exc)}
        return {"s": "ok"}

    def run_command(self, rid, req):
        import errno
        import signal
        import subprocess

        argv = req["argv"]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, env=self.env0, cwd=self.cwd0,
                                    start_new_session=True)
        except OSError as exc:
            sys.stderr.write("%s: %s\n" % (argv[0], exc.strerror))
            code = 127 if exc.errno == errno.ENOENT else 126
            return {"s": "exit", "code": code, "msg": "%s: %s" % (argv[0], exc.strerror)}
        with self.lock:
            self.current = rid
        try:
            self.in_cell = True
            try:
                try:
                    proc.stdin.write(req.get("body", "").encode("utf-8"))
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                code = proc.wait()
            finally:
                self.in_cell = False
        except KeyboardInterrupt:
            # Ctrl-C in a terminal: SIGINT to the whole foreground group, a grace, then SIGKILL.
            for sig, grace in ((signal.SIGINT, 2.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
                try:
                    proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return {"s": "interrupted", "code": _status(proc.returncode)}
        code = _status(code)
        if code:
            return {"s": "exit", "code": code}
        return {"s": "ok"}


def _status(returncode):
    if returncode is None:
        return 137
    return 128 - returncode if returncode < 0 else returncode


def _is_cell_reply(reply):
    return "version" not in reply  # HELLO/QUIT replies carry the version; cells do not


def _maxrss():
    """Peak resident memory (bytes) of the largest process this session ran so far: the
    interpreter itself, or a child (a `bash` cell) that has been waited for."""
    try:
        import resource
        return 1024 * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    except Exception:
        return None


def _future_flags():
    import __future__
    flags = 0
    for name in __future__.all_feature_names:
        flags |= getattr(__future__, name).compiler_flag
    return flags


_FUTURE_FLAGS = _future_flags()


def main(argv):
    if not argv:
        return None  # imported as a prelude
    if argv[0] == "spare":
        return run_spare()
    if argv[0] == "session":
        sys.exit(Session().serve())
    sys.stderr.write("dockmagic agent: unknown mode %r\n" % argv[0])
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
