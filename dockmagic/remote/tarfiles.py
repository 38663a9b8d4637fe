"""The notebook folder as tar streams, both ways, for engines reached without SSH. Stdlib only.

Out (`to_tar_chunks`): the files the sync sends, streamed in 1 MB chunks (never a whole file in
memory), under one top folder (the volume's mount point in the helper), with the folders above
each file so the cell's user owns them there; names and mtimes exact (pax headers, ns).

In (`extract`): a tar the engine made from a volume a container wrote. The container is
untrusted, so every member is checked before anything is written: tarfile's `data` filter
(no absolute names, no `..`, no links out of the folder, no devices; setuid/setgid/sticky bits
dropped), then dockmagic's own rules: only the names asked for, only regular files and symlinks
whose target stays inside the folder, and every folder on the way opened without following a
symlink (`O_NOFOLLOW` from the notebook folder down), so no member can make the kernel write
outside the notebook folder, through a link made by an earlier member or found on disk. Files
are written as the kernel's user, to a temporary name, then renamed over the old one.
"""
from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

CHUNK = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
Entry = Tuple[int, int]  # (mtime_ns, size)


# -- out --------------------------------------------------------------------------------------
def _ns_text(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _info(name: str, st: os.stat_result, uid: int, gid: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime_ns // 1_000_000_000
    info.pax_headers = {"mtime": _ns_text(st.st_mtime_ns)}
    return info


def to_tar_chunks(root: str, rels: Iterable[str], top: str, uid: int, gid: int,
                  sent: Optional[Dict[str, Entry]] = None) -> Iterator[bytes]:
    """RELS (files and symlinks under ROOT) as a tar under TOP/, as chunks. Folders on the way
    (TOP itself included) come first, owned by UID:GID like the files. What was sent, as
    (mtime_ns, size) of the open file, goes into SENT. A file gone since the scan is skipped;
    one that shrank while read is padded (its new mtime sends it again next time)."""
    made = set()

    def header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def folders(rel_dir: str) -> Iterator[bytes]:
        parts = rel_dir.split("/") if rel_dir else []
        for i in range(len(parts) + 1):
            d = "/".join(parts[:i])
            if d in made:
                continue
            made.add(d)
            try:
                st = os.lstat(os.path.join(root, d) if d else root)
            except OSError:
                return
            info = _info(posixpath.join(top, d) if d else top, st, uid, gid)
            info.type = tarfile.DIRTYPE
            yield header(info)

    for rel in rels:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                continue
            yield from folders(posixpath.dirname(rel))
            info = _info(posixpath.join(top, rel), st, uid, gid)
            info.type, info.linkname = tarfile.SYMTYPE, target
            yield header(info)
            if sent is not None:
                sent[rel] = (st.st_mtime_ns, st.st_size)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            yield from folders(posixpath.dirname(rel))
            info = _info(posixpath.join(top, rel), st, uid, gid)
            info.size = st.st_size
            yield header(info)
            left = st.st_size
            while left:
                data = os.read(fd, min(CHUNK, left))
                if not data:  # shrank while read: keep the archive whole
                    data = b"\0" * min(CHUNK, left)
                left -= len(data)
                yield data
            pad = -st.st_size % _BLOCK
            if pad:
                yield b"\0" * pad
            if sent is not None:
                sent[rel] = (st.st_mtime_ns, st.st_size)
        finally:
            os.close(fd)
    yield b"\0" * (2 * _BLOCK)


# -- in ---------------------------------------------------------------------------------------
class ChunkReader(io.RawIOBase):
    """An iterable of byte chunks as a file (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def safe_rel(rel) -> bool:
    """A relative path inside the folder: no absolute path, no `..`, no empty part."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def link_stays_inside(rel: str, target: str) -> bool:
    """Whether a symlink at REL pointing at TARGET resolves inside the folder (lexically)."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../") and not joined.startswith("/")


class Extracted:
    def __init__(self):
        self.written: List[str] = []
        self.refused: List[Tuple[str, str]] = []  # (the name, why it was left out)


def _open_parent(root_fd: int, rel: str) -> int:
    """A descriptor of REL's folder, made as needed, reached from ROOT_FD without following
    any symlink (a link on the way: OSError)."""
    fd = os.dup(root_fd)
    try:
        for part in rel.split("/")[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o777, dir_fd=fd)
                nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _tmp_name(base: str) -> str:
    return f".{base[:200]}.dockmagic-{os.urandom(4).hex()}"


def _write_file(root_fd: int, rel: str, src, size: int, mode: int, mtime_ns: int):
    dfd = _open_parent(root_fd, rel)
    base = rel.rsplit("/", 1)[-1]
    tmp = _tmp_name(base)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=dfd)
        try:
            left = size
            while left:
                data = src.read(min(CHUNK, left))
                if not data:
                    raise OSError("the archive ended inside a file")
                os.write(fd, data)
                left -= len(data)
            os.fchmod(fd, mode & ~_umask() & 0o777)
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        os.rename(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(dfd)


def _write_link(root_fd: int, rel: str, target: str, mtime_ns: int):
    dfd = _open_parent(root_fd, rel)
    base = rel.rsplit("/", 1)[-1]
    tmp = _tmp_name(base)
    try:
        os.symlink(target, tmp, dir_fd=dfd)
        try:
            os.utime(tmp, ns=(mtime_ns, mtime_ns), dir_fd=dfd, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
        os.rename(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(dfd)


_UMASK: List[int] = []


def _umask() -> int:
    if not _UMASK:
        with open("/proc/self/status") as f:  # reading it, unlike os.umask(), changes nothing
            for line in f:
                if line.startswith("Umask:"):
                    _UMASK.append(int(line.split()[1], 8))
                    break
            else:
                _UMASK.append(0o022)
    return _UMASK[0]


_FILTER_WORDS = {
    "AbsolutePathError": "an absolute name",
    "OutsideDestinationError": "a name outside the notebook folder",
    "AbsoluteLinkError": "a link to an absolute path",
    "LinkOutsideDestinationError": "a link out of the notebook folder",
    "SpecialFileError": "a device, FIFO or other special file",
}


def extract(chunks: Iterable[bytes], root: str, top: str, base: str,
            wanted: Dict[str, Optional[Entry]], rename: Optional[Dict[str, str]] = None
            ) -> Extracted:
    """Write the members of the tar CHUNKS that WANTED names into ROOT.

    The tar is the engine's archive of one path in the volume: its members are TOP (that
    path's last name) and TOP/...; TOP stands for BASE (a path relative to ROOT, "" for the
    whole folder). WANTED: rel -> (mtime_ns, size) as the listing saw it (set as the file's
    mtime when the member matches it; tar keeps whole seconds), or None. RENAME: rel -> the
    name to write it as instead (a conflict copy). Everything else is left out, and each
    member refused is named in the result."""
    out = Extracted()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks), CHUNK),
                          mode="r|") as tar:
            for member in tar:
                name = member.name
                if name == top:
                    rel = base
                elif name.startswith(top + "/"):
                    rest = name[len(top) + 1:].rstrip("/")
                    rel = posixpath.join(base, rest) if base else rest
                else:
                    out.refused.append((name, "outside the folder asked for"))
                    continue
                if member.isdir():
                    continue
                if not safe_rel(rel) or rel not in wanted:
                    if safe_rel(rel):
                        continue  # not asked for (unchanged, or ignored): left alone
                    out.refused.append((name, "a name outside the notebook folder"))
                    continue
                try:  # the stdlib's own rules for untrusted archives (PEP 706)
                    member = tarfile.data_filter(member.replace(name=rel, deep=False), root)
                except tarfile.FilterError as exc:
                    out.refused.append((rel, _FILTER_WORDS.get(type(exc).__name__,
                                                               type(exc).__name__)))
                    continue
                dest = (rename or {}).get(rel, rel)
                if not safe_rel(dest):
                    continue
                entry = wanted.get(rel)
                mtime_ns = int(member.mtime) * 1_000_000_000
                if entry is not None and entry[0] // 1_000_000_000 == int(member.mtime) and \
                        (member.issym() or entry[1] == member.size):
                    mtime_ns = entry[0]
                try:
                    if member.isreg():
                        _write_file(root_fd, dest, tar.extractfile(member), member.size,
                                    member.mode if member.mode is not None else 0o644,
                                    mtime_ns)
                    elif member.issym() and link_stays_inside(rel, member.linkname) and \
                            link_stays_inside(dest, member.linkname):
                        _write_link(root_fd, dest, member.linkname, mtime_ns)
                    else:
                        why = "a link out of the folder" if member.issym() else \
                            "a hard link" if member.islnk() else "not a regular file"
                        out.refused.append((rel, why))
                        continue
                except OSError as exc:
                    out.refused.append((rel, exc.strerror or str(exc)))
                    continue
                out.written.append(rel)
    finally:
        os.close(root_fd)
    return out


def parse_listing(data: bytes) -> Dict[str, Entry]:
    """The helper's listing ("rel\\0mtime_ns\\0size\\0" ...) -> {rel: (mtime_ns, size)}, names
    checked, anything malformed dropped (it comes from the untrusted image's interpreter)."""
    parts = data.split(b"\0")
    out: Dict[str, Entry] = {}
    for i in range(0, len(parts) - 2, 3):
        rel = parts[i].decode("utf-8", "surrogateescape")
        try:
            entry = (int(parts[i + 1]), int(parts[i + 2]))
        except ValueError:
            continue
        if safe_rel(rel):
            out[rel] = entry
    return out


#: What the listing helper runs (python3 -I -S -c): every file and symlink under the volume
#: (not following links, `.git` left out) as NUL-separated rel, mtime_ns, size, into a file of
#: its own filesystem, read back with the archive endpoint.
LIST_SCRIPT = r"""
import os, sys
top, out = sys.argv[1], sys.argv[2]
rows = []
def walk(d, rel):
    try:
        it = list(os.scandir(d))
    except OSError:
        return
    for e in it:
        r = rel + "/" + e.name if rel else e.name
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if e.is_dir(follow_symlinks=False):
            if e.name != ".git":
                walk(e.path, r)
        elif e.is_file(follow_symlinks=False) or e.is_symlink():
            rows.append(b"%s\0%d\0%d\0" % (os.fsencode(r), st.st_mtime_ns, st.st_size))
walk(top, "")
with open(out, "wb") as f:
    f.write(b"".join(rows))
"""
