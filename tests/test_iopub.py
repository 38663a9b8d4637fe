"""Records and status lines go out through the kernel's IOPub thread without the cell waiting
on it (dockmagic/iopub.py): in a real ipykernel, what the cell printed still comes first, the
record arrives before the kernel says idle, and IPython's blocking publisher is not used."""
import queue
import time
import uuid

import pytest

from conftest import BASE_IMAGE
from kernels import Kernel

pytestmark = pytest.mark.engine


def messages_of(k, msg_id, timeout=120):
    """Every IOPub message of cell MSG_ID, in arrival order, up to and including idle."""
    out, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = k.kc.get_iopub_msg(timeout=1.0)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        out.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out
    raise TimeoutError(f"no idle for {msg_id}: {[m['msg_type'] for m in out]}")


def kinds(msgs):
    """(kind, what) per message: stream text, 'record' for one carrying a dockmagic record."""
    seen = []
    for m in msgs:
        kind, content = m["msg_type"], m["content"]
        if kind == "stream":
            seen.append(("stream", content["text"]))
        elif kind in ("display_data", "update_display_data"):
            seen.append((kind, "record" if "dockmagic" in content.get("metadata", {}) else ""))
        elif kind == "status":
            seen.append(("status", content["execution_state"]))
    return seen


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(cwd=tmp_path_factory.mktemp("iopub"))
    # count calls of IPython's own (blocking) publisher from here on
    k.run("import dockmagic, IPython\n"
          "_dp = get_ipython().display_pub\n"
          "_calls = []\n"
          "_real = _dp.publish\n"
          "_dp.publish = lambda *a, **kw: (_calls.append(1), _real(*a, **kw))[1]", check=True)
    try:
        yield k
    finally:
        k.close()


def test_a_session_cells_line_precedes_its_output_and_its_record_precedes_idle(kernel):
    name = f"iopub-{uuid.uuid4().hex[:6]}"
    kernel.run(f"%docker session {name} --rm {BASE_IMAGE}", check=True)
    try:
        kernel.run("_calls.clear()", check=True)
        msgs = messages_of(kernel, kernel.send(f"%%docker @{name}\n"
                                               "for i in range(3):\n    print('line', i)\n"))
        seen = kinds(msgs)
        text = "".join(t for k, t in seen if k == "stream")
        assert text == "line 0\nline 1\nline 2\n", seen
        where = [i for i, (k, what) in enumerate(seen) if what == "record"]
        assert len(where) == 1, seen
        last_stream = max(i for i, (k, _) in enumerate(seen) if k == "stream")
        assert last_stream < where[0] < len(seen) - 1, seen   # after the output, before idle
        # on the cell's status line, shown above the output and updated in place
        first_display = next(i for i, (k, _) in enumerate(seen) if k == "display_data")
        first_stream = next(i for i, (k, _) in enumerate(seen) if k == "stream")
        assert first_display < first_stream, seen
        assert seen[where[0]][0] == "update_display_data", seen
        assert seen[-1] == ("status", "idle")
        # IPython's publisher (which waits on the IOPub thread twice per display) was not used
        assert kernel.run("print(len(_calls))", check=True).stdout.strip() == "0"
    finally:
        kernel.run(f"%docker session --stop {name}")


def test_a_one_shot_cells_status_line_comes_before_its_output_and_carries_the_record(kernel):
    kernel.run("_calls.clear()", check=True)
    msgs = messages_of(kernel, kernel.send(f"%%docker {BASE_IMAGE}\nprint('hello')\n"))
    seen = kinds(msgs)
    displays = [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
    assert displays and displays[0]["msg_type"] == "display_data", seen
    first_id = displays[0]["content"]["transient"]["display_id"]
    # every update is of that one line, and the last one carries the record
    assert all(m["content"]["transient"].get("display_id") == first_id for m in displays), seen
    assert "dockmagic" in displays[-1]["content"]["metadata"], seen
    first_display = next(i for i, (k, _) in enumerate(seen) if k == "display_data")
    first_stream = next(i for i, (k, _) in enumerate(seen) if k == "stream")
    assert first_display < first_stream, seen    # the line shows above the container's output
    assert "".join(t for k, t in seen if k == "stream") == "hello\n"
    assert seen[-1] == ("status", "idle")
    assert kernel.run("print(len(_calls))", check=True).stdout.strip() == "0"


def test_an_output_widget_capturing_displays_gets_the_record_through_ipython(kernel):
    """Where a hook captures displays (an ipywidgets Output, or any register_hook), the record
    goes through IPython's publisher, so the hook sees it."""
    kernel.run("_calls.clear()\n_hooked = []\n"
               "def _hook(msg):\n    _hooked.append(msg['msg_type'])\n    return msg\n"
               "get_ipython().display_pub.register_hook(_hook)", check=True)
    try:
        kernel.run(f"%%docker {BASE_IMAGE}\nprint('hooked')\n", check=True)
        hooked = kernel.run("print(sorted(set(_hooked)), len(_calls) > 0)", check=True).stdout
        assert "display_data" in hooked and "True" in hooked, hooked
    finally:
        kernel.run("get_ipython().display_pub.unregister_hook(_hook)", check=True)
