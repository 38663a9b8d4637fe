"""The tar streams of tcp:// engines' workspaces (dockmagic/remote/tarfiles.py), with archives
made here: what a hostile engine or container could hand the kernel never lands outside the
notebook folder. (The real engine's archives are covered by test_remote_tcp.py.)"""
import io
import os
import tarfile

import pytest

from dockmagic.remote import tarfiles


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if kind == "file":
                data = extra if isinstance(extra, bytes) else b"payload"
                info.size = len(data)
                info.mode = 0o644
            elif kind == "suid":
                data = b"#!/bin/sh\n"
                info.size, info.mode = len(data), 0o4755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "dev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path):
    nb = tmp_path / "notebook"
    nb.mkdir()
    marker = tmp_path / "marker.txt"
    marker.write_text("host only\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    return nb, marker, outside


def _chunks(data: bytes, size=7):
    return (data[i:i + size] for i in range(0, len(data), size))


def test_hostile_members_are_refused_and_nothing_lands_outside(tree):
    nb, marker, outside = tree
    (nb / "linkdir").symlink_to(outside)  # a link found on disk (the user's, or anyone's)
    data = _tar([
        ("ws", "dir", None),
        ("ws/ok.txt", "file", b"fine"),
        ("ws/../escape.txt", "file", b"x"),
        ("/abs.txt", "file", b"x"),
        ("ws//etc/abs2.txt", "file", b"x"),
        ("ws/abs-link", "sym", str(marker)),
        ("ws/up-link", "sym", "../marker.txt"),
        ("ws/sub/deep-up", "sym", "../../../marker.txt"),
        ("ws/inside-link", "sym", "ok.txt"),
        ("ws/hard", "hard", "../marker.txt"),
        ("ws/dev", "dev", None),
        ("ws/fifo", "fifo", None),
        ("ws/tool.sh", "suid", None),
        ("ws/linkdir/through.txt", "file", b"x"),
        ("ws/not-asked.txt", "file", b"x"),
        ("other/x.txt", "file", b"x"),
    ])
    wanted = {r: None for r in ("ok.txt", "escape.txt", "abs-link", "up-link", "sub/deep-up",
                                "inside-link", "hard", "dev", "fifo", "tool.sh",
                                "linkdir/through.txt", "../escape.txt", "etc/abs2.txt")}
    res = tarfiles.extract(_chunks(data), str(nb), "ws", "", wanted)
    assert marker.read_text() == "host only\n"
    assert os.listdir(outside) == []
    assert not (nb.parent / "escape.txt").exists() and not os.path.exists("/abs.txt")
    assert sorted(res.written) == ["inside-link", "ok.txt", "tool.sh"]
    assert (nb / "ok.txt").read_bytes() == b"fine"
    assert os.readlink(nb / "inside-link") == "ok.txt"
    assert not (nb / "tool.sh").stat().st_mode & 0o7000
    for name in ("abs-link", "up-link", "sub/deep-up", "hard", "dev", "fifo", "not-asked.txt"):
        assert not os.path.lexists(nb / name), name
    refused = dict(res.refused)
    assert refused["abs-link"] == "a link to an absolute path"
    assert refused["up-link"] == "a link out of the notebook folder"
    assert "linkdir/through.txt" in refused  # a symlink on the way is never followed
    assert "other/x.txt" in refused
    assert not os.path.exists(nb / "x.txt")


def test_a_member_replaces_a_local_symlink_instead_of_writing_through_it(tree):
    nb, marker, _outside = tree
    (nb / "g.txt").write_text("g stays")
    (nb / "f.txt").symlink_to("g.txt")
    (nb / "out.txt").symlink_to(marker)
    data = _tar([("f.txt", "file", b"new")])
    res = tarfiles.extract(_chunks(data), str(nb), "f.txt", "f.txt",
                           {"f.txt": (1_700_000_000_123_456_789, 3)})
    assert res.written == ["f.txt"]
    assert (nb / "g.txt").read_text() == "g stays"
    assert not (nb / "f.txt").is_symlink() and (nb / "f.txt").read_bytes() == b"new"
    # the listing's exact mtime (tar keeps whole seconds) when the member matches it
    assert (nb / "f.txt").stat().st_mtime_ns == 1_700_000_000_123_456_789
    data = _tar([("out.txt", "file", b"new")])
    res = tarfiles.extract(_chunks(data), str(nb), "out.txt", "out.txt", {"out.txt": None})
    assert res.written == [] and marker.read_text() == "host only\n"
    assert dict(res.refused)["out.txt"] == "a name outside the notebook folder"


def test_rename_writes_a_conflict_copy_beside_the_file(tree):
    nb, _marker, _outside = tree
    (nb / "a.txt").write_text("mine")
    res = tarfiles.extract(_chunks(_tar([("a.txt", "file", b"theirs")])), str(nb), "a.txt",
                           "a.txt", {"a.txt": None}, {"a.txt": "a.e-conflict.txt"})
    assert res.written == ["a.txt"]
    assert (nb / "a.txt").read_text() == "mine"
    assert (nb / "a.e-conflict.txt").read_text() == "theirs"


def test_to_tar_chunks_round_trips_names_modes_and_exact_mtimes(tmp_path):
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f.bin").write_bytes(os.urandom(3 * tarfiles.CHUNK + 5))
    (src / "top.txt").write_text("t")
    os.chmod(src / "top.txt", 0o4755)
    (src / "ln").symlink_to("top.txt")
    os.utime(src / "top.txt", ns=(1, 1_600_000_000_987_654_321))
    sent = {}
    data = b"".join(tarfiles.to_tar_chunks(str(src), ["d/e/f.bin", "top.txt", "ln", "gone"],
                                           "ws", 1234, 5678, sent))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == ["ws", "ws/d", "ws/d/e", "ws/d/e/f.bin", "ws/top.txt", "ws/ln"]
        assert all((m.uid, m.gid) == (1234, 5678) for m in members.values())
        assert tar.extractfile("ws/d/e/f.bin").read() == (src / "d/e/f.bin").read_bytes()
        top = members["ws/top.txt"]
        assert top.mode == 0o755 and top.pax_headers["mtime"] == "1600000000.987654321"
        assert members["ws/ln"].issym() and members["ws/ln"].linkname == "top.txt"
    assert sorted(sent) == ["d/e/f.bin", "ln", "top.txt"]


def test_listing_from_the_helper_drops_unsafe_names():
    data = (b"ok.txt\x001700000000123456789\x005\x00../up\x001\x001\x00/abs\x001\x001\x00"
            b"a//b\x001\x001\x00bad\x00notanint\x001\x00sub/x\x002\x003\x00")
    assert tarfiles.parse_listing(data) == {"ok.txt": (1700000000123456789, 5),
                                            "sub/x": (2, 3)}
