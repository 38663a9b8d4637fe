"""#9: the container is untrusted. Each exploit found on the old main, reproduced and shown
closed, in real kernels (jupyter_client + ipykernel) or a real IPython shell, against the real
engine. Payloads that would run on the host touch a host-only marker file (never mounted into
any container), which must never appear."""
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from conftest import BASE_IMAGE, as_kernel_user, remove_labelled
from dockmagic import engine as engines
from dockmagic import errors, session, spare

LABEL = "dockmagic.test=security"
ROGUE = f"dockmagic-sec-rogue:{uuid.uuid4().hex[:8]}"

#: Runs in the rogue image's every Python process (it is its sitecustomize): rewrites every
#: JSON, .npy and .pkl file it can see, all the time and once more at exit, with payloads that
#: would touch MARKER on whichever machine unpickles them.
ROGUE_SITECUSTOMIZE = r'''
import atexit, json, os, pickle, threading, time

MARKER = os.environ.get("ROGUE_MARKER", "/nonexistent")

class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))

def evil_npy(path):
    import numpy
    with open(path, "wb") as f:
        numpy.lib.format.write_array(f, numpy.array([Payload()], dtype=object),
                                     allow_pickle=True)

def sweep():
    for top in ("/", ):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in
                       ("/proc", "/sys", "/usr", "/lib", "/bin", "/sbin", "/etc", "/var")]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    if name.endswith(".pkl"):
                        with open(path, "wb") as f:
                            pickle.dump(Payload(), f)
                    elif name.endswith(".npy"):
                        evil_npy(path)
                    elif name.endswith(".json"):
                        with open(path, "w") as f:
                            json.dump({"s": "ok", "out": [["keep", 0, "../evil.pkl", "pkl"]]}, f)
                        with open(os.path.join(folder, "evil.pkl"), "wb") as f:
                            pickle.dump(Payload(), f)
                    else:
                        continue
                except OSError:
                    pass

def loop():
    while True:
        sweep()
        time.sleep(0.05)

threading.Thread(target=loop, daemon=True).start()
atexit.register(sweep)
'''


@pytest.fixture(scope="module")
def rogue_image(docker_client, base_image, tmp_path_factory):
    ctx = tmp_path_factory.mktemp("rogue")
    (ctx / "rogue.py").write_text(ROGUE_SITECUSTOMIZE)
    (ctx / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY rogue.py /opt/rogue.py\n"
        "RUN ln -sf /opt/rogue.py \"$(python3 -c 'import sysconfig; "
        "print(sysconfig.get_paths()[\"stdlib\"])')/sitecustomize.py\" && "
        "python3 -c 'import sitecustomize, sys; assert \"rogue\" in sitecustomize.__file__ or "
        "sitecustomize.Payload'\n")
    subprocess.run(["docker", "build", "-q", "-t", ROGUE, str(ctx)], check=True,
                   capture_output=True, timeout=300)
    yield ROGUE
    subprocess.run(["docker", "rmi", "-f", ROGUE], capture_output=True, timeout=120)


@pytest.fixture
def marker(tmp_path_factory):
    """A host-only path: no container mounts its folder."""
    path = tmp_path_factory.mktemp("host-only") / f"PWNED-{uuid.uuid4().hex[:8]}"
    yield str(path)
    assert not os.path.exists(path), "code from a container ran in the kernel"


# -- real kernels ---------------------------------------------------------------------------------
class Kernel:
    def __init__(self, cwd, env=None):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd),
                                            env=dict(os.environ, **(env or {})))
        self.run("%load_ext dockmagic")

    def run(self, code, timeout=120):
        """-> (stdout, stderr, error 'Name: value' or None)"""
        out = {"stdout": [], "stderr": [], "error": None}

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]].append(content["text"])
            elif kind == "error":
                out["error"] = f"{content['ename']}: {content['evalue']}"

        self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return "".join(out["stdout"]), "".join(out["stderr"]), out["error"]

    def value(self, expr):
        out, err, error = self.run(f"print(repr({expr}))")
        assert error is None, error
        return out.strip()

    def close(self):
        try:
            self.run("from dockmagic import kernel; kernel.shutdown()", timeout=60)
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernels(docker_client, tmp_path):
    made = []

    def make(name, env=None):
        folder = tmp_path / name
        folder.mkdir()
        k = Kernel(folder, env)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()
    remove_labelled(docker_client, LABEL)


def cell(flags, body):
    return f"%%docker -l {LABEL} {flags}\n{body}"


@pytest.mark.engine
def test_a_rogue_image_cannot_run_code_in_the_kernel_through_out(kernels, rogue_image, marker):
    k = kernels("rogue", {"ROGUE_MARKER": marker})
    k.run("keep = 'untouched'\nimport numpy")
    seen = []
    for flags in ["", "--no-mount"]:
        for _ in range(2):  # cold, then in the spare (the rogue code runs in both)
            _out, _err, error = k.run(cell(
                f"-e ROGUE_MARKER {flags} --out x {rogue_image}",
                "import numpy, time\nx = numpy.arange(1000.0)\ntime.sleep(0.3)"))
            if error is None:  # it came back intact, or not at all
                assert k.value("float(x.sum())") == repr(float(np.arange(1000.0).sum()))
            else:
                assert error.startswith("TransferError: --out x:") and "\n" not in error
            seen.append(error)
            assert k.value("keep") == "'untouched'"
            k.run("x = None")
    assert any(seen), "the rogue image rewrote nothing: the test shows nothing"
    # a session of the rogue image: its thread rewrites files while the cell is in flight
    k.run(f"%docker session secrogue -l {LABEL} -e ROGUE_MARKER {rogue_image}")
    for _ in range(3):
        # (the rogue code may rewrite the container's own inputs too: that is its own harm)
        _out, _err, error = k.run(cell_at("secrogue", "--in keep --out y",
                                          "import numpy, time\ny = numpy.arange(1000.0)\n"
                                          "time.sleep(0.3)"))
        assert error is None or (error.startswith("TransferError: --out y:")
                                 and "\n" not in error)
        if error is None:
            assert k.value("float(y.sum())") == repr(float(np.arange(1000.0).sum()))
        k.run("y = None")
        assert k.value("keep") == "'untouched'"
    k.run("%docker session --stop secrogue")


def cell_at(name, flags, body):
    return f"%%docker @{name} {flags}\n{body}"


@pytest.mark.engine
def test_reduce_objects_need_out_pickle_and_plain_data_round_trips(kernels, marker):
    k = kernels("reduce")
    k.run("keep = 'untouched'")
    _o, _e, error = k.run(cell(f"--out o {BASE_IMAGE}", textwrap.dedent(f"""
        import os
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        o = Evil()""")))
    assert error.startswith("TransferError: --out o:") and "--out-pickle o" in error
    assert "Evil" in error and "\n" not in error
    assert k.value("keep") == "'untouched'" and k.value("'o' in dir()") == "False"
    body = ("import numpy\n"
            "d = {'a': [1, 2.5, None, True], 'b': ('t', b'\\x00', 3j, {1, 2})}\n"
            "s = 'héllo ✓'\nn = 2 ** 70\nf = 0.1\narr = numpy.arange(12).reshape(3, 4)\n"
            "sc = numpy.float32(1.5)\ndt = numpy.dtype('<f4')\n"
            "import uuid\nu = uuid.UUID(int=5)\n")
    _o, _e, error = k.run(cell(f"--out d,s,n,f,arr,sc,dt --out-pickle u {BASE_IMAGE}", body))
    assert error is None, error
    assert k.value("d") == repr({'a': [1, 2.5, None, True], 'b': ('t', b'\x00', 3j, {1, 2})})
    assert k.value("(s, n, f)") == repr(("héllo ✓", 2 ** 70, 0.1))
    assert k.value("arr.tolist()") == repr(np.arange(12).reshape(3, 4).tolist())
    assert k.value("(sc, type(sc).__name__, dt)") == "(np.float32(1.5), 'float32', dtype('float32'))"
    assert k.value("u") == "UUID('00000000-0000-0000-0000-000000000005')"
    # the same in a session, where the cell's objects live on
    k.run(f"%docker session secreduce -l {LABEL} {BASE_IMAGE}")
    _o, _e, error = k.run(cell_at("secreduce", "--out o", textwrap.dedent(f"""
        import os
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        o = {{'k': [Evil()]}}""")))
    assert error.startswith("TransferError: --out o:") and "--out-pickle o" in error
    _o, _e, error = k.run(cell_at("secreduce", "--out d2=d", "d = {'x': [1, 'y']}"))
    assert error is None and k.value("d2") == repr({'x': [1, 'y']})
    k.run("%docker session --stop secreduce")


@pytest.mark.engine
def test_a_session_of_another_notebook_sees_nothing_of_this_ones_exchange(kernels, marker):
    """Kernel A's session scans every file it can see while kernel B's --in/--out cell is in
    flight; it must find A's own input (the scan works) and nothing of B's."""
    a, b = kernels("notebook-a"), kernels("notebook-b")
    tag_a, tag_b = f"A-OWN-{uuid.uuid4().hex}", f"B-SECRET-{uuid.uuid4().hex}"
    a.run(f"mine = {tag_a!r}.encode()")
    b.run(f"secret = {tag_b!r}.encode()\nimport numpy\n"
          f"arr = numpy.frombuffer(secret * 1000, dtype=numpy.uint8).copy()")
    a.run(f"%docker session secscan -l {LABEL} {BASE_IMAGE}")
    # B's cell holds its exchange open for a while, inputs in, outputs written early
    b.kc.execute(cell(f"--in secret,arr --out y {BASE_IMAGE}",
                      "import time\ny = secret + b'-out'\n"
                      "import pickle, os\n"
                      "pickle.dump(y, open('/.dockmagic-xfer/early.pkl', 'wb'))\n"
                      "time.sleep(6)"))
    scan = textwrap.dedent(f"""
        import os, stat, time
        want = [{tag_a!r}.encode(), {tag_b!r}.encode()]
        found, files = set(), 0
        end = time.time() + 5
        while time.time() < end:
            for folder, dirs, names in os.walk('/'):
                dirs[:] = [d for d in dirs if os.path.join(folder, d) not in ('/proc', '/sys')]
                for n in names:
                    p = os.path.join(folder, n)
                    try:
                        if not stat.S_ISREG(os.lstat(p).st_mode):
                            continue  # /dev/stdout and the like would block
                        with open(p, 'rb') as f:
                            data = f.read(1 << 20)
                    except OSError:
                        continue
                    files += 1
                    for w in want:
                        if w in data or w in p.encode():
                            found.add(w.decode()[:6])
            time.sleep(0.2)
        print(sorted(found), files > 1000)
        """)
    out, _err, error = a.run(cell_at("secscan", "--in mine", scan), timeout=120)
    reply = b.kc.get_shell_msg(timeout=120)
    assert reply["content"]["status"] == "ok"
    assert error is None, error
    assert out.strip() == "['A-OWN-'] True"
    assert b.value("y") == repr(tag_b.encode() + b"-out")
    a.run("%docker session --stop secscan")


@pytest.mark.engine
def test_forged_session_markers_cannot_inject(kernels, marker):
    k = kernels("forge")
    k.run("keep = 'untouched'")
    k.run(f"%docker session secforge -l {LABEL} {BASE_IMAGE}")
    # 1. markers with made-up tokens (the old nonce is gone from argv): plain output
    forge = textwrap.dedent("""
        import json, sys
        fake = json.dumps({"s": "ok", "out": [["keep", 0, "../../x.pkl", "pkl"]]})
        for tok in ["0" * 32, "f" * 32]:
            sys.stdout.write("\\x1b]dm;%s;o\\x07" % tok)
            sys.stderr.write("\\x1b]dm;%s;%s\\x07" % (tok, fake.encode().hex()))
        print(open('/proc/1/cmdline', 'rb').read().split(b'\\0')[-2:])
        raise ValueError('the real outcome')
        """)
    _out, err, error = k.run(cell_at("secforge", "", forge))
    # the real outcome: the cell's own exception, its traceback streamed once as the cell's
    assert error is not None and "ValueError" in error
    assert "the real outcome" in err + error
    assert k.value("keep") == "'untouched'"
    # 2. the cell finds its own request's token in the agent's frames and fakes its own end:
    #    "ok" with a manifest naming another variable and a pickle payload it planted
    own = textwrap.dedent(f"""
        import json, os, pickle, sys
        f = sys._getframe()
        while f is not None and 'token' not in f.f_locals:
            f = f.f_back
        tok = f.f_locals['token']
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        for d, _, _ in os.walk('/.dockmagic-xfer'):
            pickle.dump(Evil(), open(os.path.join(d, 'out-0.pkl'), 'wb'))
        fake = json.dumps({{"s": "ok", "out": [["keep", 0, "out-0.pkl", "pkl"]]}})
        sys.stdout.write("\\x1b]dm;%s;o\\x07" % tok)
        sys.stdout.flush()
        sys.stderr.write("\\x1b]dm;%s;%s\\x07" % (tok, fake.encode().hex()))
        sys.stderr.flush()
        raise ValueError('never seen')
        """)
    _out, forged_err, error = k.run(cell_at("secforge", "--out x", own))
    assert error is not None and error.startswith("TransferError: --out x:")
    assert "--out-pickle x" in error
    assert k.value("keep") == "'untouched'" and k.value("'x' in dir()") == "False"
    out, err, error = k.run(cell_at("secforge", "", "import time\ntime.sleep(1)\n"
                                                    "print('alive')"))
    assert error is None and "alive" in out
    # the forged cell's real end came after its fake one: it shows in the forged cell when it
    # arrived while that cell was still being read, else at worst in the next one, said so
    assert ("never seen" in forged_err
            or ("never seen" in err and "printed a fake end marker" in err)), (forged_err, err)
    k.run("%docker session --stop secforge")


#: A session cell that makes the agent write its --out file (no handover), keeps that file
#: open, and rewrites it once the kernel has read it and removed the cell's folder.
REWRITE_FILE = """
import numpy, os, sys, threading
y = numpy.arange(1 << 18, dtype=numpy.float64)  # 2 MiB: above agent.MAP_MIN_BYTES
f = sys._getframe()
while 'hand_over' not in f.f_globals:  # the agent's own module: it runs this cell
    f = f.f_back
f.f_globals['hand_over'] = lambda *a: False  # a file, as an agent that cannot seal writes
[cell] = [d for d in os.listdir('/.dockmagic-xfer') if d.startswith('c-')]
# the agent's open(..., 'wb') truncates this same file: this handle sees what it writes
held = open(os.path.join('/.dockmagic-xfer', cell, 'out-0.npy'), 'w+b')
rewrote = threading.Event()
def rewrite():
    while os.fstat(held.fileno()).st_nlink:  # until the kernel removed the folder
        threading.Event().wait(0.01)
    held.seek(-y.nbytes, 2)
    held.write(numpy.full_like(y, -1.0).tobytes())
    held.flush()
    rewrote.set()
threading.Thread(target=rewrite, daemon=True).start()
"""
REWRITE_FILE_CHECK = """
header = os.fstat(held.fileno()).st_size - y.nbytes
now = numpy.frombuffer(os.pread(held.fileno(), y.nbytes, header))
print(rewrote.wait(30), 0 < header <= 4096, float(now.sum()) == -y.size)
"""
#: A session cell that keeps a descriptor of the memory file the agent hands over, and tries
#: to change it in every way once the kernel has read it and removed the cell's folder.
REWRITE_HANDED = """
import errno, numpy, mmap, os, threading
y = numpy.arange(1 << 18, dtype=numpy.float64)
[cell] = [d for d in os.listdir('/.dockmagic-xfer') if d.startswith('c-')]
grabbed, real = [], os.memfd_create
def spy(*a):
    fd = real(*a)
    grabbed.append(os.dup(fd))
    return fd
os.memfd_create = spy
rewrote, tries = threading.Event(), []
def attempt(name, act):
    try:
        act()
        tries.append(name + ':done')
    except OSError as exc:
        tries.append(name + ':' + errno.errorcode[exc.errno])
def rewrite():
    while os.path.exists(os.path.join('/.dockmagic-xfer', cell)):
        threading.Event().wait(0.01)
    os.memfd_create = real
    fd = grabbed[0]
    attempt('pwrite', lambda: os.pwrite(fd, numpy.full(512, -1.0).tobytes(), 4096))
    attempt('truncate', lambda: os.ftruncate(fd, 0))
    attempt('mmap', lambda: mmap.mmap(fd, 8192, flags=mmap.MAP_SHARED))
    again = os.open('/proc/self/fd/%d' % fd, os.O_RDWR)
    attempt('reopened-pwrite', lambda: os.pwrite(again, b'x' * 4096, 4096))
    rewrote.set()
threading.Thread(target=rewrite, daemon=True).start()
"""
REWRITE_HANDED_CHECK = """
print(rewrote.wait(30), len(grabbed) == 1, ','.join(tries))
"""


@pytest.mark.engine
@pytest.mark.parametrize("way", ["file", "handed-over"])
def test_a_session_changing_its_out_data_after_the_cell_cannot_change_the_array(kernels, way):
    """A session lives on after its cell. Its cell keeps its --out data reachable and, once
    the kernel has read it and removed the cell's folder, changes it: a file (written when
    nothing is handed over) is rewritten in place and then truncated; a sealed memory file
    handed over refuses every write. The array the user got must not change, and must stay
    readable (a mapping of a truncated file would raise SIGBUS in the kernel)."""
    k = kernels("rewrite")
    name = f"secrewrite-{uuid.uuid4().hex[:6]}"
    k.run(f"%docker session {name} -l {LABEL} {BASE_IMAGE}")
    body, check = ((REWRITE_FILE, REWRITE_FILE_CHECK) if way == "file"
                   else (REWRITE_HANDED, REWRITE_HANDED_CHECK))
    _out, _err, error = k.run(cell_at(name, "--out y", body))
    assert error is None, error
    out, _err, error = k.run(cell_at(name, "", check))
    assert error is None, error
    if way == "file":  # the file really was rewritten
        assert out.split() == ["True", "True", "True"], out
    else:  # the agent handed it over sealed: nothing could change it
        assert out.split() == ["True", "True", "pwrite:EPERM,truncate:EPERM,mmap:EPERM,"
                                               "reopened-pwrite:EPERM"], out
    want = repr(float(np.arange(1 << 18, dtype=np.float64).sum()))
    assert k.value("float(y.sum())") == want
    assert k.value("float(y[-1])") == repr(float((1 << 18) - 1))
    if way == "file":
        _out, _err, error = k.run(cell_at(name, "", "held.truncate(0)"))
        assert error is None, error
        assert k.value("float(y.sum())") == want
    k.run(f"%docker session --stop {name}")


@pytest.mark.engine
def test_a_session_cell_handing_over_an_unsealed_file_is_refused(kernels):
    """The cell itself connects to its folder's handover socket first and sends a memory file
    it can still write (a valid .npy): the kernel refuses it in one line; nothing is assigned."""
    k = kernels("forge-handover")
    k.run("keep = 'untouched'")
    name = f"secforgefd-{uuid.uuid4().hex[:6]}"
    k.run(f"%docker session {name} -l {LABEL} {BASE_IMAGE}")
    body = textwrap.dedent("""
        import array, numpy, os, socket
        y = numpy.arange(1 << 18, dtype=numpy.float64)
        [cell] = [d for d in os.listdir('/.dockmagic-xfer') if d.startswith('c-')]
        fd = os.memfd_create('forged')
        with open(os.dup(fd), 'wb') as f:
            numpy.save(f, numpy.zeros(1 << 18))
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.path.join('/.dockmagic-xfer', cell, 'out.sock'))
        s.sendmsg([b'0'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [fd]))])
        s.close()
        """)
    _out, _err, error = k.run(cell_at(name, "--out y", body))
    assert error is not None and error.startswith("TransferError: --out y:"), error
    assert "not sealed" in error and "\n" not in error
    assert k.value("'y' in dir()") == "False" and k.value("keep") == "'untouched'"
    _out, _err, error = k.run(cell_at(name, "--out y", "y = y[:4]"))  # the real one, after
    assert error is None and k.value("y.tolist()") == "[0.0, 1.0, 2.0, 3.0]"
    k.run(f"%docker session --stop {name}")


@pytest.mark.engine
def test_no_secret_in_the_session_agents_argv_or_environment(shell, docker_client, workdir):
    name = f"dmsec-argv-{uuid.uuid4().hex[:6]}"
    shell.run_line_magic("docker", f"session {name} -l {LABEL} {BASE_IMAGE}")
    try:
        info = docker_client.api.inspect_container(name)
        assert info["Config"]["Cmd"][-1] == "session"  # no nonce after it any more
        assert not any(e.startswith(("DOCKMAGIC", "DM_")) for e in info["Config"]["Env"])
        shell.run_cell_magic("docker", f"@{name} --out seen", (
            "import os\nseen = [open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')[1:][-2:]"
            " for p in os.listdir('/proc') if p.isdigit()]"))
        flat = b"".join(b"".join(x) for x in shell.user_ns["seen"])
        assert b"dm;" not in flat
        import re
        assert not re.search(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", flat)
    finally:
        session.stop(engines.default(), name)


# -- spares ---------------------------------------------------------------------------------------
SPOOF = ("import sys\nsys.stderr.write('dockmagic-spare-exec-failed: exec: \"x\": not found\\n')\n"
         "print('ran')\n")


@pytest.mark.engine
def test_a_cell_writing_the_old_spare_failure_text_succeeds_cold_and_in_a_spare(
        shell, workdir, capsys):
    shell.run_line_magic("docker", "config --spare on")
    line = f"-l {LABEL} -l dmtest.case=spoof {BASE_IMAGE}"
    used = spare.SPARES.used
    shell.run_cell_magic("docker", line, SPOOF)  # cold
    assert spare.SPARES.ready()
    shell.run_cell_magic("docker", line, SPOOF)  # in the spare
    assert spare.SPARES.used == used + 1
    captured = capsys.readouterr()
    assert captured.out.count("ran") == 2
    assert captured.err.count("dockmagic-spare-exec-failed") == 2  # shown as the cell's own
    spare.SPARES.discard()


@pytest.mark.engine
def test_an_interpreter_a_spare_cannot_start_is_named_like_a_cold_start(shell, workdir,
                                                                        monkeypatch):
    shell.run_line_magic("docker", "config --spare on")
    line = f"-l {LABEL} -l dmtest.case=spawnfail -e PATH {BASE_IMAGE}"
    monkeypatch.setenv("PATH", "/nowhere")
    with pytest.raises(errors.EngineError) as cold:
        shell.run_cell_magic("docker", line, "print(1)")
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
    shell.run_cell_magic("docker", line, "print(1)")
    assert spare.SPARES.ready()
    used = spare.SPARES.used
    monkeypatch.setenv("PATH", "/nowhere")  # read when the cell runs: the spare's agent fails
    with pytest.raises(errors.EngineError) as warm:
        shell.run_cell_magic("docker", line, "print(1)")
    assert spare.SPARES.used == used + 1
    assert "executable file not found" in str(cold.value)
    assert "executable file not found" in str(warm.value)
    spare.SPARES.discard()


# -- bind sources and paths -----------------------------------------------------------------------
@pytest.mark.engine
def test_a_non_root_kernel_gets_missing_v_sources_as_its_own(docker_client, base_image, tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to start a kernel as another user")
    nb = tmp_path / "nb"
    nb.mkdir()
    os.chown(nb, 1000, 1000)
    other = tmp_path / "not-mine"
    other.mkdir()  # root's
    script = textwrap.dedent(f"""
        from IPython.core.interactiveshell import InteractiveShell
        from IPython.core.error import UsageError
        ip = InteractiveShell.instance()
        ip.run_line_magic('load_ext', 'dockmagic')
        ip.run_cell_magic('docker', '-l {LABEL} -v ./newdir/deeper:/data {BASE_IMAGE}',
                          'open("/data/f.txt", "w").write("hi")')
        try:
            ip.run_cell_magic('docker', '-l {LABEL} -v {other}/sub:/data {BASE_IMAGE}', 'pass')
        except UsageError as exc:
            print('REFUSED', exc)
        ip.run_line_magic('unload_ext', 'dockmagic')
        """)
    env = dict(os.environ, HOME=str(nb), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(as_kernel_user(1000, [sys.executable, "-c", script]), cwd=nb,
                          env=env, timeout=180, capture_output=True, text=True)
    remove_labelled(docker_client, LABEL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in (nb / "newdir", nb / "newdir" / "deeper", nb / "newdir" / "deeper" / "f.txt"):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (1000, 1000), path
    assert (nb / "newdir" / "deeper" / "f.txt").read_text() == "hi"
    (refused,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("REFUSED")]
    assert f"{other}/sub" in refused and "mkdir -p" in refused
    assert not os.path.exists(other / "sub")


@pytest.mark.engine
@pytest.mark.parametrize("name", ["has:colon", "has,comma", "both:a,b"])
def test_a_notebook_folder_with_colon_or_comma_runs_a_default_cell(shell, tmp_path, monkeypatch,
                                                                   capsys, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "here.txt").write_text("found")
    monkeypatch.chdir(folder)
    shell.run_cell_magic("docker", f"-l {LABEL} {BASE_IMAGE}",
                         "import os\nprint(os.getcwd(), open('here.txt').read())\n"
                         "open('back.txt', 'w').write('ok')")
    assert capsys.readouterr().out.strip() == f"{folder} found"
    assert (folder / "back.txt").read_text() == "ok"
    shell.run_cell_magic("docker", f"--dry-run -l {LABEL} {BASE_IMAGE}", "x")
    printed = capsys.readouterr().out.split("  < cell-body")[0]
    import shlex
    argv = shlex.split(printed)
    # the CLI reads the printed line back to the same mount (docker create, not run)
    cid = subprocess.run(["docker", "create", *argv[2:]], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        mounts = subprocess.run(["docker", "inspect", "-f",
                                 "{{range .Mounts}}{{.Source}}|{{.Destination}}{{end}}", cid],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert mounts == f"{folder}|{folder}"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
