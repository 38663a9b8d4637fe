"""`--in` / `--out`: notebook variables into a cell's container and back.

**Private exchange.** Each container gets its own fresh folder, made by the kernel and mounted
into that container only, at ``agent.XFER_TARGET``: a one-shot cell's container (cold or spare)
gets ``k-<kernel>-<random>``, a session ``s-<name>-<random>`` (with a fresh ``c-<random>``
inside per cell). Mode 0700 and the kernel's own uid when the container runs as that uid (or as
root); chowned to the container's numeric uid when the kernel is root; 0777 otherwise (its name
is random and its parent is not listable). The folders live in the kernel's exchange root,
``/dev/shm/dockmagic-<uid>`` (a tmpfs: never written back to disk; see ``exchange_root``), and
are removed after the cell or with their container; ``exchange_dirs_of(kernel_id)`` finds a dead
kernel's, ``session_dirs()`` the sessions'.

**The kernel decides what comes back.** The I-th name of ``--out`` is read from ``out-I.npy``
or ``out-I.pkl`` in that cell's folder and nowhere else, opened without following links, and
assigned to the name the kernel asked for. ``.npy`` loads with ``allow_pickle=False``; ``.pkl``
with an unpickler that can build plain data only (None, bool, int, float, complex, str, bytes,
list, tuple, dict, set, frozenset, numpy arrays, scalars and dtypes) and can call nothing else.
Only the names given to ``--out-pickle`` are unpickled in full, which runs code the container
chose, in this kernel. Nothing the container writes picks a path, a decoder or a name.

Plain numpy arrays go as ``.npy`` (readable by numpy 1.x and 2.x alike), written straight from
the array's memory (a one-shot cell's large ones by a thread, while its container starts);
large ones come back mapped copy-on-write from what nobody can change any more: a one-shot
cell's file (its container has exited), a sealed memory file a session hands over
(``handover``), or a private copy of a session's file. A folder is taken out of every
container's sight when its cell ends, and its pages are freed off the cell's path
(``sweeper``). Everything else goes by pickle,
protocol 4 (any Python 3.8+ reads it), with numpy's module rename between 1.x and 2.x
(``numpy.core`` / ``numpy._core``) bridged on load. What cannot travel fails with one line
naming the variable, before the cell runs (``--in``) or instead of assigning anything
(``--out``): the notebook gets all outputs or none.

``--in a,b --in c=d.e``: ``a``, ``b`` as themselves, the notebook's ``d.e`` as ``c``.
``--out x,y=z``: the container's ``x`` as ``x``, its ``z`` as ``y``. A dotted source without
``dest=`` lands under its last part; a dotted destination sets an attribute of an existing object.
"""
from __future__ import annotations

import json
import keyword
import os
import pickle
import posixpath
import re
import secrets
import shutil
import stat
import tempfile
import threading
from typing import Iterable, List, Mapping, Optional, Tuple

from . import agent, errors, handover, npyfile
from .engine import reaping  # removes this kernel's folders if the kernel dies (reaper.py)

#: Where a container's private exchange folder appears in it.
XFER_TARGET = agent.XFER_TARGET
_TMPFS = "/dev/shm"
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class TransferUsage(ValueError):
    """A malformed --in/--out value; the magics show it as a UsageError."""


class TransferError(errors.DockmagicError):
    """A variable cannot travel; the message names it."""


# -- parsing (pure) -----------------------------------------------------------------------------
def _check_name(name: str, flag: str, item: str) -> str:
    parts = name.split(".")
    if not name or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise TransferUsage(f"{flag} {item!r}: {name!r} is not a variable name (give names "
                            f"like x, cfg.lr or dest=src, separated by commas)")
    return name


def parse_transfers(values: Iterable[str], flag: str,
                    seen: Iterable[str] = ()) -> Tuple[Tuple[str, str], ...]:
    """`--in`/`--out` values -> ((dest, src), ...); repeated flags and commas both add.
    SEEN: destinations already named (by ``--out`` for ``--out-pickle``)."""
    pairs = []
    for value in values:
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                raise TransferUsage(f"{flag} {value!r}: empty name (give e.g. {flag} x,y)")
            dest, eq, src = (s.strip() for s in item.partition("="))
            if not eq:
                src = dest
                dest = src.rsplit(".", 1)[-1]
            pairs.append((_check_name(dest, flag, item), _check_name(src, flag, item)))
    seen = set(seen)
    for dest, _ in pairs:
        if dest in seen:
            raise TransferUsage(f"{flag}: {dest} is named twice (a name goes to --out or to "
                                f"--out-pickle, once)" if seen else f"{flag}: {dest} is named twice")
        seen.add(dest)
    return tuple(pairs)


def parse_outputs(outs: Iterable[str], pickled: Iterable[str] = ()):
    """`--out` and `--out-pickle` values -> ((dest, src, pickle_ok), ...)."""
    plain = parse_transfers(outs, "--out")
    full = parse_transfers(pickled, "--out-pickle", seen=[d for d, _ in plain])
    return tuple((d, s, False) for d, s in plain) + tuple((d, s, True) for d, s in full)


# -- the exchange root and its folders ---------------------------------------------------------
def _is_tmpfs(path: str) -> bool:
    try:
        with open("/proc/mounts") as f:
            return any(len(p) > 2 and p[1] == path and p[2] == "tmpfs"
                       for p in (line.split() for line in f))
    except OSError:
        return False


def _own_dir(path: str, mode: int) -> bool:
    """PATH is (now) a real folder of ours with MODE (never a planted link or someone else's)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return True


def exchange_root() -> Tuple[str, bool]:
    """(the kernel's exchange root, whether it is a tmpfs).

    ``/dev/shm/dockmagic-<uid>``: files written to the notebook's disk are dirty page cache of
    the disk that usually also holds /var/lib/docker, and creating or removing *any* container
    syncs that filesystem, so a 1 GB input would be flushed to disk while the cell waits; tmpfs
    pages are never written back. Without a tmpfs there: ``<tempdir>/dockmagic-<uid>``.
    ``$DOCKMAGIC_XFER_ROOT`` names another parent (for inputs larger than /dev/shm holds).
    Mode 0711: other users may pass through to a folder opened for them, not list it.
    """
    parent = os.environ.get("DOCKMAGIC_XFER_ROOT")
    tmpfs = False
    if not parent:
        tmpfs = _is_tmpfs(_TMPFS)
        parent = _TMPFS if tmpfs else tempfile.gettempdir()
    root = os.path.join(parent, f"dockmagic-{os.getuid()}")
    if not _own_dir(root, 0o711):
        raise TransferError(f"--in/--out: cannot use {root} for the exchange (it must be a "
                            f"folder of uid {os.getuid()}); remove it, or set "
                            "DOCKMAGIC_XFER_ROOT to another folder")
    reaping.add_globs([os.path.join(root, cell_dir_prefix() + "*")])  # one-shot and spare folders
    return root, tmpfs or _is_tmpfs(parent)


def kernel_tag(kernel_id: str) -> str:
    """KERNEL_ID (the ``dockmagic.kernel`` label) as it appears in exchange folder names."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", kernel_id or "")[:120]


def cell_dir_prefix() -> str:
    """The name prefix of this kernel's one-shot and spare exchange folders."""
    from .kernel import kernel_id
    return f"k-{kernel_tag(kernel_id())}-"


def exchange_dirs_of(kernel_id: str, root: Optional[str] = None) -> List[str]:
    """The exchange folders of the one-shot cells and spares of kernel KERNEL_ID (the
    ``dockmagic.kernel`` label), for a reaper to remove once that kernel is dead. Session
    folders (``session_dirs``) belong to their session container, not to a kernel."""
    if root is None:
        try:
            root = exchange_root()[0]
        except TransferError:
            return []
    prefix = f"k-{kernel_tag(kernel_id)}-"
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(os.path.join(root, n) for n in names
                  if n.startswith(prefix) and re.fullmatch(r"[0-9a-f]{32}", n[len(prefix):]))


def session_dirs(root: Optional[str] = None) -> List[str]:
    """Every session's exchange folder (``s-<name>-<random>``); each is mounted at XFER_TARGET
    in its session container, so one no container mounts any more is an orphan."""
    if root is None:
        try:
            root = exchange_root()[0]
        except TransferError:
            return []
    try:
        return sorted(os.path.join(root, n) for n in os.listdir(root) if n.startswith("s-"))
    except OSError:
        return []


def _numeric_user(user: Optional[str]):
    """-u UID[:GID] -> (uid, gid or None); a name (known only inside the image) -> None."""
    name, _, group = (user or "").partition(":")
    if not name.isdigit() or (group and not group.isdigit()):
        return None
    return int(name), int(group) if group else None


def make_private_dir(parent: str, prefix: str, user: Optional[str]) -> str:
    """A fresh folder PARENT/PREFIX<random> only the container's user (USER: its `-u`, None for
    the image's own) can use: see the module docstring."""
    path = os.path.join(parent, prefix + secrets.token_hex(16))
    os.mkdir(path, 0o700)
    try:
        me = os.getuid()
        numeric = _numeric_user(user)
        if numeric is not None and numeric[0] in (me, 0):
            pass  # the kernel's own uid, or root (which passes any mode)
        elif numeric is not None and me == 0:
            os.chown(path, numeric[0], numeric[1] if numeric[1] is not None else -1)
        else:
            os.chmod(path, 0o777)  # another (or unknown) user and no right to chown
    except BaseException:
        remove_dir(path)
        raise
    return path


def remove_dir(path: Optional[str]):
    if path:
        shutil.rmtree(path, ignore_errors=True)


def without_exchange(spec):
    """SPEC without a private exchange folder mounted (what a spare's key compares)."""
    import dataclasses

    if not any(m.target == XFER_TARGET for m in spec.mounts):
        return spec
    return dataclasses.replace(spec, mounts=tuple(m for m in spec.mounts
                                                  if m.target != XFER_TARGET))


def exchange_spec(spec, host_dir: str):
    """SPEC with HOST_DIR (and nothing else of the exchange root) mounted at XFER_TARGET."""
    import dataclasses

    from . import translate
    spec = without_exchange(spec)
    return dataclasses.replace(spec, mounts=spec.mounts + (
        translate.Mount(type="bind", source=host_dir, target=XFER_TARGET),))


def exchange_source(mounts) -> Optional[str]:
    """The host folder a container's inspected ``Mounts`` show at XFER_TARGET, or None."""
    for m in mounts or ():
        if m.get("Destination") == XFER_TARGET and m.get("Type") == "bind":
            return m.get("Source")
    return None


# -- what the kernel reads back: safe decoders only ---------------------------------------------
class _Refused(Exception):
    def __init__(self, what):
        Exception.__init__(self, what)
        self.what = what


_PLAIN_BUILTINS = {"complex": complex, "set": set, "frozenset": frozenset}
_NUMPY_MODULES = ("numpy._core.multiarray", "numpy.core.multiarray")


def _safe_global(module: str, name: str):
    """The few callables plain data needs: none of them can run code of the container's."""
    if module == "builtins":
        return _PLAIN_BUILTINS.get(name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        import numpy
        return getattr(numpy, name)
    if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar"):
        import importlib
        for candidate in _NUMPY_MODULES:  # numpy 2's own name first (its `core` shim warns)
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
    return None


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _safe_global(module, name)
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


def clean_text(text: str, limit: int = 500) -> str:
    """Text from the container, as one printable line."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _private_copy(fd: int, size: int) -> int:
    """A memfd holding the first SIZE bytes of FD: a copy made in the kernel (no page faults
    in this process, no huge-page compaction), that nobody else holds a descriptor of."""
    mfd = os.memfd_create("dockmagic-out", getattr(os, "MFD_CLOEXEC", 0))
    try:
        done = 0
        while done < size:
            n = os.sendfile(mfd, fd, done, size - done)
            if n == 0:
                raise ValueError("the file is shorter than its header says")
            done += n
    except BaseException:
        os.close(mfd)
        raise
    return mfd


def _read_npy(f, how: str):
    """An array from a .npy file, never unpickling. HOW: "map" (the writer is gone: large
    arrays are mapped copy-on-write straight from the file), "copy" (the writer may still
    write: large arrays are copied into a private memfd first, then mapped), "read"."""
    import numpy as np

    size = os.fstat(f.fileno()).st_size
    if how in ("map", "copy") and size >= agent.MAP_MIN_BYTES:
        try:
            layout = npyfile.read_layout(f)
        except ValueError as exc:
            if "unsupported" not in str(exc):
                raise
            layout = None  # numpy's own reader below says what is wrong with it
        if layout is not None:
            shape, dtype, offset, need = layout.shape, layout.dtype, layout.offset, layout.end
            if size < need:
                raise ValueError("the file is shorter than its header says")
            src = f
            if how == "copy":
                src = os.fdopen(_private_copy(f.fileno(), need), "rb")
            try:
                return np.memmap(src, dtype=dtype, mode="c", offset=offset, shape=shape,
                                 order=layout.order).view(np.ndarray)
            except (ValueError, OSError):
                pass
            finally:
                if src is not f:
                    src.close()  # the mapping keeps the memfd's pages
        f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def load_output(dir_fd: int, index: int, dest: str, pickle_ok: bool, how: str = "read",
                handed: Optional[int] = None):
    """The I-th output of a cell: HANDED (a descriptor the container handed over, which must
    be a sealed memory file: ``handover``), else from its own folder: ``out-I.npy`` (no
    pickle), else ``out-I.pkl`` (plain data only, unless PICKLE_OK). Raises KeyError when
    there is none."""
    if handed is not None:
        return handover.load_sealed(handed)
    for ext in (".npy", ".pkl"):
        try:
            fd = os.open(f"out-{index}{ext}", _OPEN_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TransferError(f"--out {dest}: what the container left cannot be opened "
                                f"({exc.strerror}); nothing was assigned") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TransferError(f"--out {dest}: what the container left is not a file; "
                                    "nothing was assigned")
            os.set_blocking(fd, True)
            if ext == ".npy":
                return _read_npy(f, how)
            if pickle_ok:
                return agent.load_pickle_file(f)
            return _PlainUnpickler(f).load()
    raise KeyError(index)


def _contiguous_array(value) -> bool:
    """A plain array numpy writes straight from its memory (what a thread may write)."""
    return agent.is_plain_array(value) and (value.flags.c_contiguous or value.flags.f_contiguous)


# -- one exchange -------------------------------------------------------------------------------
class Exchange:
    """One cell's private folder: at ``host_dir`` for the kernel, at ``container_dir`` in the
    container; ``close()`` removes it. MAPPED: on a tmpfs (large arrays are mapped there)."""

    def __init__(self, host_dir: str, container_dir: str = XFER_TARGET, mapped: bool = False,
                 root: Optional[str] = None):
        self.host_dir = host_dir
        self.container_dir = container_dir
        self.mapped = mapped
        self.root = root  # the exchange root: close() leaves the removal to the sweeper
        self.writing = False  # inputs still being written (``write_inputs(background=True)``)
        self._writer = None
        self._write_error = None
        self._lock = threading.Lock()  # the writer's renames vs move_to

    @classmethod
    def create(cls, prefix: str, user: Optional[str], parent: Optional[str] = None,
               container_parent: Optional[str] = None, tmpfs: bool = False) -> "Exchange":
        """A fresh private folder PREFIX<random> in PARENT (default: the exchange root), seen
        in the container as CONTAINER_PARENT/<its name> (default: it is XFER_TARGET)."""
        if parent is None:
            parent, tmpfs = exchange_root()
        try:
            host_dir = make_private_dir(parent, prefix, user)
        except OSError as exc:
            raise TransferError(f"--in/--out: cannot make a folder in {parent}: "
                                f"{exc.strerror}") from None
        reaping.track([host_dir])  # a session cell's too: it goes if this kernel dies mid-cell
        inside = XFER_TARGET if container_parent is None else posixpath.join(
            container_parent, os.path.basename(host_dir))
        # a one-shot folder is in the exchange root; a session's cell folder in its session's
        root = parent if container_parent is None else os.path.dirname(parent)
        return cls(host_dir, inside, tmpfs, root)

    def write_inputs(self, pairs, user_ns: Mapping, background: bool = False) -> List[list]:
        """Write each (dest, src) notebook value as ``in-I``; returns the container's list.
        BACKGROUND: when every value is a plain contiguous array, they are written by a thread
        while the container starts (``in-I.npy`` appears once complete; the agent waits for
        it, see ``agent.load_inputs``); ``wait_written`` joins it."""
        values = []
        for dest, src in pairs:
            try:
                values.append(agent.resolve(user_ns, src, "in the notebook"))
            except agent.TransferFailed as exc:
                raise TransferError(f"--in {src}: {exc}") from None
        if background and values and all(_contiguous_array(v) for v in values) and any(
                v.nbytes >= agent.MAP_MIN_BYTES for v in values):
            return self._write_in_background(pairs, values)
        manifest = []
        for i, ((dest, src), value) in enumerate(zip(pairs, values)):
            base = os.path.join(self.host_dir, f"in-{i}")
            try:
                path, kind = agent.save_value(value, base)
            except Exception as exc:
                for ext in (".npy", ".pkl"):
                    agent.unlink_quietly(base + ext)
                raise TransferError(
                    f"--in {src}: a {type(value).__name__} cannot travel to the container "
                    f"({agent.one_line(exc)}); pass the data it holds instead") from None
            manifest.append([dest, os.path.basename(path), kind])
        return manifest

    def _write_in_background(self, pairs, values) -> List[list]:
        files = []  # opened here, before any container can see this folder
        try:
            for i in range(len(values)):
                files.append(os.open(os.path.join(self.host_dir, f".in-{i}.npy.part"),
                                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                     | getattr(os, "O_CLOEXEC", 0), 0o666))
        except OSError as exc:
            for fd in files:
                os.close(fd)
            raise TransferError(f"--in: cannot write in {self.host_dir}: {exc.strerror}") from None
        self.writing = True
        self._writer = threading.Thread(target=self._write_all, name="dockmagic-inputs",
                                        args=(files, [src for _, src in pairs], values),
                                        daemon=True)
        self._writer.start()
        return [[dest, f"in-{i}.npy", "npy"] for i, (dest, _) in enumerate(pairs)]

    def _write_all(self, files, sources, values):
        import numpy as np

        done = 0  # descriptors handed to a file object (which closes them)
        try:
            for i, value in enumerate(values):
                with open(files[i], "wb") as f:
                    done = i + 1
                    np.lib.format.write_array(f, value, allow_pickle=False)
                with self._lock:  # (into the spare's folder, if the cell moved there)
                    os.rename(os.path.join(self.host_dir, f".in-{i}.npy.part"),
                              os.path.join(self.host_dir, f"in-{i}.npy"))
        except Exception as exc:
            self._write_error = (f"--in {sources[max(done - 1, 0)]}: cannot be written for "
                                 f"the container ({agent.one_line(exc)})")
            with self._lock:
                try:  # the container's agent waits for the inputs: this ends its wait
                    os.close(os.open(os.path.join(self.host_dir, agent.INPUT_FAILED_FILE),
                                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666))
                except OSError:
                    pass
        finally:
            for fd in files[done:]:
                os.close(fd)

    def wait_written(self, raise_error: bool = True):
        """Wait until the inputs are written (or failed); TransferError if they failed."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._write_error and raise_error:
            raise TransferError(self._write_error)

    def move_to(self, host_dir: str):
        """Hand the inputs over to another fresh folder in the same root (a spare's); inputs
        still being written move too, and land there."""
        with self._lock:
            for name in os.listdir(self.host_dir):
                os.rename(os.path.join(self.host_dir, name), os.path.join(host_dir, name))
            remove_dir(self.host_dir)
            reaping.untrack([self.host_dir])
            self.host_dir = host_dir
            reaping.track([host_dir])

    def read_outputs(self, outputs, user_ns: dict, writer_gone: bool = False,
                     handed: Optional[Mapping[int, int]] = None):
        """Load every requested output (``(dest, src, pickle_ok)``, in request order) from this
        folder, then assign them all (or none). WRITER_GONE: no process can write this folder
        any more (the container exited), so large arrays on a tmpfs are mapped from it; else
        they are copied into private memory first (then mapped). HANDED: {position: sealed
        memory file} a session's container handed over instead of a file (``handover``)."""
        handed = handed or {}
        how = ("map" if writer_gone else "copy") if self.mapped else "read"
        loaded = []
        try:
            dir_fd = os.open(self.host_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise TransferError(f"--out: the exchange folder is gone ({exc.strerror})") from None
        try:
            for i, (dest, _src, pickle_ok) in enumerate(outputs):
                try:
                    value = load_output(dir_fd, i, dest, pickle_ok, how, handed.get(i))
                except KeyError:
                    raise TransferError(f"--out {dest}: the cell ended before handing its "
                                        "variables back (sys.exit or os._exit in the cell?)"
                                        ) from None
                except _Refused as exc:
                    raise TransferError(
                        f"--out {dest}: the container sent a {clean_text(exc.what, 120)}, which is "
                        f"not plain data; loading it would run code from the container in your "
                        f"kernel. If you trust the image: --out-pickle {dest}") from None
                except TransferError:
                    raise
                except ImportError as exc:
                    raise TransferError(f"--out {dest}: the kernel cannot load it "
                                        f"({clean_text(agent.one_line(exc))}); install that module "
                                        "here") from None
                except Exception as exc:
                    raise TransferError(f"--out {dest}: the kernel cannot load what the "
                                        f"container wrote: {clean_text(agent.one_line(exc))}"
                                        ) from None
                loaded.append((dest, value))
        finally:
            os.close(dir_fd)
        for dest, _ in loaded:
            parent = dest.rpartition(".")[0]
            if parent:
                try:
                    agent.resolve(user_ns, parent, "in the notebook")
                except agent.TransferFailed as exc:
                    raise TransferError(f"--out {dest}: {exc}") from None
        for dest, value in loaded:
            try:
                agent.assign(user_ns, dest, value, "in the notebook")
            except agent.TransferFailed as exc:
                raise TransferError(f"--out {dest}: {exc}") from None

    def read_small(self, name: str, limit: int = 1 << 16) -> Optional[bytes]:
        """A small regular file the container may have left here (never through a link)."""
        try:
            fd = os.open(os.path.join(self.host_dir, name), _OPEN_FLAGS)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def result(self) -> Optional[dict]:
        """The container's own word on the transfer (advisory: only its message is shown)."""
        data = self.read_small(agent.RESULT_FILE)
        try:
            res = json.loads(data) if data else None
        except ValueError:
            return None
        return res if isinstance(res, dict) else None

    def close(self):
        """Remove this folder: out of every container's sight at once; its files' pages are
        freed off the cell's path (``sweeper``) when it was made in an exchange root."""
        self.wait_written(raise_error=False)
        if self.root is not None:
            from . import sweeper
            sweeper.discard(self.host_dir, self.root)
        else:
            remove_dir(self.host_dir)
        reaping.untrack([self.host_dir])


def measure(exchange: "Exchange", inputs, outputs, handed=None) -> dict:
    """Names and sizes (bytes in the cell's exchange folder) of what one cell moved, for its
    record; call before ``close``. INPUTS: the manifest ``write_inputs`` made ([dest, file,
    kind]); OUTPUTS: the requested ``(dest, src, pickle_ok)``, whose files are ``out-I.npy`` or
    ``out-I.pkl`` (or HANDED[I], a descriptor handed over). Only those names are looked at,
    with lstat (a link the container left is not followed): a size is None where no regular
    file is there."""
    handed = handed or {}
    exchange.wait_written(raise_error=False)  # (sizes of complete files)

    def size(name):
        try:
            st = os.lstat(os.path.join(exchange.host_dir, name))
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    moved_in = [{"name": dest, "bytes": size(os.path.basename(fname))}
                for dest, fname, _kind in (inputs or ())]
    moved_out = []
    for i, out in enumerate(outputs or ()):
        found = [n for n in (size(f"out-{i}.npy"), size(f"out-{i}.pkl")) if n is not None]
        if i in handed:
            try:
                found.insert(0, os.fstat(handed[i]).st_size)
            except OSError:
                pass
        moved_out.append({"name": out[0], "bytes": found[0] if found else None})
    return {"in": moved_in, "out": moved_out}


# -- one-shot cells ----------------------------------------------------------------------------
_ONESHOT = (
    "_dm_g = {{'__name__': 'dockmagic_agent', '__builtins__': __builtins__}}\n"
    "exec(compile({source!r}, '<dockmagic>', 'exec'), _dm_g)\n"
    "_dm_g['run_oneshot']({config!r}, {body!r})\n"
)


class OneshotTransfer:
    """--in/--out around one one-shot cell: the body becomes a small program that loads the
    inputs, runs the cell as `python3 -u` would, and saves the outputs. The inputs are written
    at once into a fresh folder; the cell's container gets that folder mounted (``amend``), or,
    when a spare runs the cell, the inputs move into the spare's own folder (``move_to``)."""

    def __init__(self, exchange: Exchange, inputs: list, outputs):
        self.exchange = exchange
        self.inputs = inputs
        self.outputs = outputs  # ((dest, src, pickle_ok), ...)

    def amend(self, spec):
        """SPEC with this cell's private folder mounted."""
        return exchange_spec(spec, self.exchange.host_dir)

    def move_to(self, host_dir: str):
        self.exchange.move_to(host_dir)

    def body(self, body: str, filename: str = "<stdin>") -> bytes:
        config = {"xdir": XFER_TARGET, "mapped": self.exchange.mapped, "inputs": self.inputs,
                  "name": filename, "outputs": [list(o) for o in self.outputs],
                  "wait": self.exchange.writing}
        from .agentsrc import agent_source

        return _ONESHOT.format(source=agent_source(), config=config, body=body).encode("utf-8")

    def finish(self, exit_code: int, user_ns: dict):
        """After the container exited: a transfer failure raises; on success, outputs land."""
        self.exchange.wait_written()
        res = self.exchange.result()
        if res is not None and res.get("s") == "transfer":
            raise TransferError(clean_text(res.get("msg") or "transfer failed"))
        if exit_code != 0 or not self.outputs:
            return
        # The container has exited: nobody writes its folder any more, so arrays may be mapped.
        self.exchange.read_outputs(self.outputs, user_ns, writer_gone=True)

    def close(self):
        self.exchange.close()


def prepare_oneshot(plan, user_ns: Mapping, local: bool = False) -> OneshotTransfer:
    """Check and write a one-shot cell's --in values; the caller closes what it gets and runs
    the cell with it (``spare.run_cold`` / ``SPARES.run_oneshot``). LOCAL: the container sees
    this folder itself (not a synced copy), so large arrays are written while it starts."""
    spec = plan.spec
    if spec.detach:
        raise TransferUsage("--in/--out need a cell that waits for its container: drop -d")
    interpreter = (spec.entrypoint or spec.command or ("",))[0]
    if not os.path.basename(interpreter).startswith("python"):
        raise TransferUsage(f"--in/--out move Python variables: they work with a Python "
                            f"interpreter, not {interpreter!r}")
    inputs = parse_transfers(plan.inputs, "--in")
    outputs = parse_outputs(plan.outputs, getattr(plan, "pickle_outputs", ()))
    exchange = Exchange.create(cell_dir_prefix(), spec.user)
    try:
        manifest = exchange.write_inputs(inputs, user_ns, background=local and exchange.mapped)
    except BaseException:
        exchange.close()
        raise
    return OneshotTransfer(exchange, manifest, outputs)
