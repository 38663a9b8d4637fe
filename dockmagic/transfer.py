"""`--in` / `--out`: notebook variables into a cell's container and back.

Values travel as files in a hidden folder (``.dockmagic-xfer-*``) made inside a host folder the
container has mounted (the notebook folder by default), removed when the cell ends, whatever
happens. Plain numpy arrays go as ``.npy`` (no pickle; readable by numpy 1.x and 2.x alike),
written straight from the array's memory and read straight into the new array: one copy into
the page cache on one side, one copy out on the other, never to disk on the way. Everything
else goes by pickle, protocol 4 (any Python 3.8+ reads it), with numpy's module rename between
1.x and 2.x (``numpy.core`` / ``numpy._core``) bridged on load. What cannot travel fails with one
line naming the variable, before the cell runs (``--in``) or instead of assigning anything
(``--out``): the notebook gets all outputs or none.

``--in a,b --in c=d.e``: ``a``, ``b`` as themselves, the notebook's ``d.e`` as ``c``.
``--out x,y=z``: the container's ``x`` as ``x``, its ``z`` as ``y``. A dotted source without
``dest=`` lands under its last part; a dotted destination sets an attribute of an existing object.
"""
from __future__ import annotations

import json
import keyword
import os
import posixpath
import secrets
import shutil
import stat
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from . import agent, errors

XFER_PREFIX = ".dockmagic-xfer-"


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


def parse_transfers(values: Iterable[str], flag: str) -> Tuple[Tuple[str, str], ...]:
    """`--in`/`--out` values -> ((dest, src), ...); repeated flags and commas both add."""
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
    seen = set()
    for dest, _ in pairs:
        if dest in seen:
            raise TransferUsage(f"{flag}: {dest} is named twice")
        seen.add(dest)
    return tuple(pairs)


def binds_from_spec(spec) -> list:
    """[(host source, container target, writable)] of a RunSpec's bind mounts."""
    from . import translate

    binds = []
    for vol in spec.volumes:
        src, tgt, opts = translate.split_volume(vol)
        if src.startswith("/"):
            binds.append((src, tgt, "ro" not in opts.split(",")))
    for m in spec.mounts:
        if m.type == "bind":
            binds.append((m.source, m.target, not m.read_only))
    return binds


def pick_exchange_dir(binds: Sequence[Tuple[str, str, bool]], cwd: str) -> Tuple[str, str]:
    """(host folder, the same folder's path in the container) to exchange files through:
    the notebook folder where it is mounted, else the first writable bind mount."""
    best = None
    for src, dst, rw in binds:
        if not rw:
            continue
        root = src.rstrip("/") or "/"
        if cwd == root or cwd.startswith(root.rstrip("/") + "/"):
            rel = os.path.relpath(cwd, root)
            cand = (len(root), cwd, posixpath.normpath(posixpath.join(dst, rel)))
            if best is None or cand[0] > best[0]:
                best = cand
    if best is not None:
        return best[1], best[2]
    for src, dst, rw in binds:
        if rw and os.path.isdir(src):
            return src, dst
    raise TransferError("--in/--out pass variables through a host folder the container mounts, "
                        "and this one mounts none writable: drop --no-mount (the notebook "
                        "folder is mounted by default) or add -v HOST_DIR:DIR")


# -- the fast folder: a host tmpfs ------------------------------------------------------------
#: Where the kernel's tmpfs exchange root appears in a container.
FAST_TARGET = "/.dockmagic-xfer"
_TMPFS = "/dev/shm"


def _is_tmpfs(path: str) -> bool:
    try:
        with open("/proc/mounts") as f:
            return any(len(p) > 2 and p[1] == path and p[2] == "tmpfs"
                       for p in (line.split() for line in f))
    except OSError:
        return False


def fast_root() -> Optional[str]:
    """The kernel's exchange root on a host tmpfs, or None.

    Why not the notebook folder: files written there are dirty page cache of the disk that
    usually also holds /var/lib/docker, and creating or removing *any* container syncs that
    filesystem (overlayfs unmount), so a 1 GB input would be flushed to disk while the cell
    waits (seconds). tmpfs pages are never written back. Mode 0711: other users may pass
    through to a per-cell folder opened for them, not list it.
    """
    if not _is_tmpfs(_TMPFS):
        return None
    root = os.path.join(_TMPFS, f"dockmagic-{os.getuid()}")
    try:
        os.mkdir(root, 0o711)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(root)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None  # not ours (or a symlink planted in the shared /dev/shm): do not use it
    if stat.S_IMODE(st.st_mode) != 0o711:
        os.chmod(root, 0o711)
    return root


def exchange_spec(spec, fast: Optional[str] = "auto"):
    """SPEC with the kernel's tmpfs exchange root mounted, where there is one (a fixed target,
    so that repeated cells keep one spec and their spare). Idempotent."""
    import dataclasses

    from . import translate
    fast = fast_root() if fast == "auto" else fast
    if not fast or any(m.target == FAST_TARGET for m in spec.mounts):
        return spec
    return dataclasses.replace(spec, mounts=spec.mounts + (
        translate.Mount(type="bind", source=fast, target=FAST_TARGET),))


# -- one exchange -------------------------------------------------------------------------------
class Exchange:
    """One hidden folder per place, primary first (the tmpfs, then the mounted notebook
    folder), each seen by the kernel at its host path and by the container at its own.
    A value goes to the first place with room; ``close()`` removes them all."""

    def __init__(self, dirs, mapped=()):
        self.dirs = list(dirs)  # [(host dir, container dir)]
        # per dir: on a tmpfs, so large arrays are mapped, not read (agent.load_value)
        self.mapped = list(mapped) or [False] * len(self.dirs)

    @property
    def host_dirs(self):
        return [h for h, _ in self.dirs]

    @property
    def container_dirs(self):
        return [c for _, c in self.dirs]

    @classmethod
    def create(cls, binds, cwd: str, shared: bool = False,
               fast: Optional[Tuple[str, str]] = None) -> "Exchange":
        places = [fast] if fast else []
        try:
            places.append(pick_exchange_dir(binds, cwd))
        except TransferError:
            if not places:
                raise
        name = XFER_PREFIX + secrets.token_hex(6)
        made, mapped, error = [], [], None
        for host_parent, container_parent in places:
            host_dir = os.path.join(host_parent, name)
            try:
                os.mkdir(host_dir, 0o700)
                if shared:  # the container runs as another (non-root) user: it must write here
                    os.chmod(host_dir, 0o777)
            except OSError as exc:
                error = f"--in/--out: cannot make {host_dir}: {exc.strerror}"
                continue
            made.append((host_dir, posixpath.join(container_parent, name)))
            mapped.append(bool(fast) and host_parent == fast[0])
        if not made:
            raise TransferError(error or "--in/--out: no folder to exchange through")
        return cls(made, mapped)

    def write_inputs(self, pairs, user_ns: Mapping) -> List[list]:
        """Write each (dest, src) notebook value; returns the manifest for the container."""
        manifest = []
        for i, (dest, src) in enumerate(pairs):
            try:
                value = agent.resolve(user_ns, src, "in the notebook")
            except agent.TransferFailed as exc:
                raise TransferError(f"--in {src}: {exc}") from None
            try:
                idx, name, kind = agent.save_into(self.host_dirs, value, f"in-{i}")
            except Exception as exc:
                raise TransferError(
                    f"--in {src}: a {type(value).__name__} cannot travel to the container "
                    f"({agent.one_line(exc)}); pass the data it holds instead") from None
            manifest.append([dest, idx, name, kind])
        return manifest

    def read_outputs(self, manifest, user_ns: dict):
        """Load every output the container wrote, then assign them all (or none)."""
        loaded = []
        for dest, idx, name, kind in manifest:
            try:
                value = agent.load_value(os.path.join(self.host_dirs[idx], name), kind,
                                         self.mapped[idx])
            except ImportError as exc:
                raise TransferError(f"--out {dest}: the kernel cannot load it "
                                    f"({agent.one_line(exc)}); install that module here") from None
            except Exception as exc:
                raise TransferError(f"--out {dest}: the kernel cannot load it: "
                                    f"{agent.one_line(exc)}") from None
            loaded.append((dest, value))
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

    def result(self) -> Optional[dict]:
        for host_dir in self.host_dirs:
            try:
                with open(os.path.join(host_dir, agent.RESULT_FILE)) as f:
                    return json.load(f)
            except (OSError, ValueError):
                continue
        return None

    def close(self):
        for host_dir in self.host_dirs:
            shutil.rmtree(host_dir, ignore_errors=True)


def container_user_is_other(user: Optional[str]) -> bool:
    """Whether files in the exchange folder must be writable by someone other than us."""
    if not user:
        return True  # the image's own user: unknown
    name = user.split(":")[0]
    if name in ("0", "root"):
        return False
    return name != str(os.getuid())


# -- one-shot cells ----------------------------------------------------------------------------
_ONESHOT = (
    "_dm_g = {{'__name__': 'dockmagic_agent', '__builtins__': __builtins__}}\n"
    "exec(compile({source!r}, '<dockmagic>', 'exec'), _dm_g)\n"
    "_dm_g['run_oneshot']({config!r}, {body!r})\n"
)


class OneshotTransfer:
    """--in/--out around one one-shot cell: the body becomes a small program that loads the
    inputs, runs the cell as `python3 -u` would, and saves the outputs."""

    def __init__(self, exchange: Exchange, inputs: list, outputs, fast: Optional[str]):
        self.exchange = exchange
        self.inputs = inputs
        self.outputs = outputs
        self.fast = fast

    def amend(self, spec):
        """SPEC with the tmpfs exchange root mounted (see `exchange_spec`)."""
        return exchange_spec(spec, self.fast)

    def body(self, body: str) -> bytes:
        config = {"xdirs": self.exchange.container_dirs, "mapped": self.exchange.mapped,
                  "inputs": self.inputs,
                  "outputs": [[d, s] for d, s in self.outputs]}
        from .agentsrc import agent_source

        return _ONESHOT.format(source=agent_source(), config=config, body=body).encode("utf-8")

    def finish(self, exit_code: int, user_ns: dict):
        """After the container exited: a transfer failure raises; on success, outputs land."""
        res = self.exchange.result()
        if res is not None and res.get("s") == "transfer":
            raise TransferError(res.get("msg", "transfer failed"))
        if exit_code != 0 or not self.outputs:
            return
        if res is None or res.get("s") != "ok":
            raise TransferError("--out: the cell ended before handing its variables back "
                                "(sys.exit or os._exit in the cell?)")
        self.exchange.read_outputs(res.get("out") or [], user_ns)

    def close(self):
        self.exchange.close()


def prepare_oneshot(plan, user_ns: Mapping, cwd: Optional[str] = None) -> OneshotTransfer:
    """Check and write a one-shot cell's --in values; the caller closes what it gets and
    creates the container with ``amend(kwargs)``."""
    spec = plan.spec
    if spec.detach:
        raise TransferUsage("--in/--out need a cell that waits for its container: drop -d")
    interpreter = (spec.entrypoint or spec.command or ("",))[0]
    if not os.path.basename(interpreter).startswith("python"):
        raise TransferUsage(f"--in/--out move Python variables: they work with a Python "
                            f"interpreter, not {interpreter!r}")
    inputs = parse_transfers(plan.inputs, "--in")
    outputs = parse_transfers(plan.outputs, "--out")
    fast = fast_root()
    exchange = Exchange.create(binds_from_spec(spec), cwd or os.getcwd(),
                               shared=container_user_is_other(spec.user),
                               fast=(fast, FAST_TARGET) if fast else None)
    try:
        manifest = exchange.write_inputs(inputs, user_ns)
    except BaseException:
        exchange.close()
        raise
    return OneshotTransfer(exchange, manifest, outputs, fast)
