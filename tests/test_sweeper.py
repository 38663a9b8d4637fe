"""Exchange folders removed off the cell's path (dockmagic/sweeper.py): out of sight at once,
gone soon after, and all gone once flushed (kernel shutdown)."""
import os

from dockmagic import sweeper, transfer


def test_a_discarded_folder_leaves_at_once_and_is_removed_by_the_thread(tmp_path):
    root = tmp_path / "root"
    session = root / "s-name-0123"
    cells = []
    for i in range(5):
        cell = session / f"c-{i}"
        cell.mkdir(parents=True)
        (cell / "in-0.npy").write_bytes(b"x" * (1 << 20))
        cells.append(cell)
    for cell in cells:
        sweeper.discard(str(cell), str(root))
        assert not cell.exists()  # out of the session's folder (the container's view) at once
    assert sweeper.flush(30)
    assert sorted(os.listdir(root)) == ["s-name-0123"] and os.listdir(session) == []


def test_a_folder_that_cannot_be_renamed_is_removed_in_place(tmp_path):
    cell = tmp_path / "c-1"
    cell.mkdir()
    (cell / "f").write_text("x")
    sweeper.discard(str(cell), str(tmp_path / "no-such-root"))
    assert not cell.exists() and not (tmp_path / "no-such-root").exists()


def test_an_exchange_made_in_a_root_is_swept_and_one_made_by_hand_removed_now(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("DOCKMAGIC_XFER_ROOT", str(tmp_path))
    ex = transfer.Exchange.create("k-test-", None)
    root = os.path.dirname(ex.host_dir)
    (open(os.path.join(ex.host_dir, "in-0.npy"), "wb")).close()
    ex.close()
    assert not os.path.exists(ex.host_dir)
    assert sweeper.flush(30) and os.listdir(root) == []
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    transfer.Exchange(str(by_hand)).close()
    assert not by_hand.exists()
