"""The reaper's cost to the kernel, and how soon it cleans up, in one run.

    .venv/bin/python benchmarks/bench_reaper.py [--runs 20] [--remote]

1. `ensure_reaper` on first use (a Popen, nothing waited on) and on later calls (a dict lookup
   and a waitpid): what the first cell and every later one pay, in the kernel.
2. The reaper process itself: its peak RSS while it waits (from /proc).
3. Kernel gone -> its reapable container removed: a Python "kernel" that started a reaper is
   SIGKILLed with its process group; time until the engine no longer lists the container
   (grace 2 s included).

With ``--remote`` (against the rig, scripts/ensure-rig.sh), a remote engine's reaper, which
runs on the engine's host (dockmagic/remote/hostreaper.py):
4. starting it (the python3 check there and the ssh Popen through the engine's ControlMaster):
   what the first remote cell pays, in the kernel;
5. the ControlMaster killed (the kernel lives and reconnects) -> the new reaper there took over
   and the old one exited without reaping (polled with `docker exec rig pgrep`, ~0.1 s steps);
6. a kernel (plain Python, with its remote engine and reaper) SIGKILLed with its process group
   -> its reapable container on the rig gone (the remote grace included).
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dockmagic.engine import reaper, reaping  # noqa: E402

IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
ENDPOINT = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--remote", action="store_true", help="sections 4-6, against the rig")
    args = p.parse_args()
    run = uuid.uuid4().hex[:8]
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    if args.remote:
        return remote(args.runs, run)
    kernel = f"{socket.gethostname()}-bench:{run}:0"

    first, later, rss = [], [], []
    for i in range(args.runs):
        reaping._REAPERS.clear()
        t0 = time.perf_counter()
        r = reaping.ensure_reaper(ENDPOINT, f"{kernel}{i}")
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(1000):
            reaping.ensure_reaper(ENDPOINT, f"{kernel}{i}")
        later.append((time.perf_counter() - t0) / 1000)
        time.sleep(0.3)  # let it reach its wait on stdin
        rss.append(rss_kib(r.pid))
        r.close(reap=False, wait=30)
    print(f"ensure_reaper, first call (Popen):   median {statistics.median(first) * 1e3:.2f} ms "
          f"(max {max(first) * 1e3:.2f} ms, {args.runs} runs)")
    print(f"ensure_reaper, later calls:          median {statistics.median(later) * 1e6:.2f} us")
    print(f"reaper process peak RSS while waiting: median {statistics.median(rss) / 1024:.1f} MiB")

    took = []
    for i in range(max(3, args.runs // 5)):
        label = f"{kernel}k{i}"
        cid = subprocess.run(
            ["docker", "run", "-d", "--init", "-l", "dockmagic.managed=1", "-l",
             f"dockmagic.kernel={label}", "-l", "dockmagic.reap=1", "-l",
             f"dockmagic.bench={run}", IMAGE, "sleep", "300"],
            check=True, capture_output=True, text=True).stdout.strip()
        code = ("import time; from dockmagic.engine import reaping; "
                f"r = reaping.ensure_reaper({ENDPOINT!r}, {label!r}); print(r.pid, flush=True); "
                "time.sleep(600)")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                start_new_session=True, cwd=os.path.dirname(reaper.__file__)
                                + "/../..")
        proc.stdout.readline()
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        while subprocess.run(["docker", "ps", "-aq", "--filter", f"id={cid}"],
                             capture_output=True, text=True).stdout.strip():
            if time.monotonic() - t0 > 60:
                break
            time.sleep(0.1)
        took.append(time.monotonic() - t0)
    print(f"kernel SIGKILLed -> its container gone: median {statistics.median(took):.2f} s "
          f"(max {max(took):.2f} s, {len(took)} runs; grace {reaper.GRACE_S:g} s)")


RIG = os.environ.get("DOCKMAGIC_RIG_NAME", "dockmagic-rig")


def rig(*argv, check=True) -> str:
    return subprocess.run(["docker", "exec", RIG, *argv], capture_output=True, text=True,
                          check=check).stdout


def rig_reapers(kernel: str) -> list:
    return rig("pgrep", "-f", "--", f"--kernel {kernel}", check=False).split()


def wait_for(predicate, timeout: float = 90.0, step: float = 0.1) -> float:
    t0 = time.monotonic()
    while not predicate() and time.monotonic() - t0 < timeout:
        time.sleep(step)
    return time.monotonic() - t0


def remote(runs: int, run: str):
    """Sections 4-6 (see the module docstring)."""
    import tempfile

    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="bench-reaper-")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "ensure-rig.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    from dockmagic.remote import engines, hostreaper, store, urls

    store.add_engine(urls.parse_endpoint("rig", f"ssh://{RIG}"))
    eng = engines.get_engine("rig")
    eng.link.ensure()
    eng.exchange_roots()  # asked once per kernel anyway (the --in/--out folder there)
    kernel = f"{socket.gethostname()}-bench:{run}:0"
    starts, handovers = [], []
    for i in range(runs):
        label = f"{kernel}r{i}"
        t0 = time.perf_counter()
        r = hostreaper.start(eng, label)
        starts.append(time.perf_counter() - t0)
        wait_for(lambda: rig_reapers(label))
        (old,) = rig_reapers(label)
        os.kill(eng.link.pid, signal.SIGKILL)  # the ControlMaster only
        handovers.append(wait_for(lambda: old not in rig_reapers(label)))
        r.close(reap=False, wait=30)
    print(f"remote reaper start (check + ssh Popen): median {statistics.median(starts) * 1e3:.1f}"
          f" ms (max {max(starts) * 1e3:.1f} ms, {runs} runs)")
    print(f"ControlMaster killed -> new reaper there took over, old one gone: median "
          f"{statistics.median(handovers):.2f} s (max {max(handovers):.2f} s, {runs} runs; the "
          f"old one would reap after {reaper.REMOTE_GRACE_S:g} s)")
    engines.close_all()

    label = f"{kernel}k"
    cid = rig("docker", "run", "-d", "--init", "-l", "dockmagic.managed=1", "-l",
              f"dockmagic.kernel={label}", "-l", "dockmagic.reap=1", "-l",
              f"dockmagic.bench={run}", IMAGE, "sleep", "300").strip()
    code = ("import time; from dockmagic.remote import engines, hostreaper; "
            "e = engines.get_engine('rig'); "
            f"r = hostreaper.start(e, {label!r}); print(r.pid, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    if not proc.stdout.readline().strip():
        raise SystemExit("the kernel process could not start its reaper on the rig")
    wait_for(lambda: rig_reapers(label), 30)
    if not rig_reapers(label):
        raise SystemExit("no reaper on the rig for the kernel process")
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not rig("docker", "ps", "-aq", "--filter", f"id={cid}").strip(), 90, 0.2)
    took = time.monotonic() - t0
    if rig("docker", "ps", "-aq", "--filter", f"id={cid}").strip():
        print(rig("sh", "-c", f"tail -n 20 /dev/shm/dockmagic-run-0/reapers/"
                              f"{reaper.kernel_tag(label)}-*.log", check=False))
    rig("docker", "rm", "-f", cid, check=False)
    print(f"kernel SIGKILLed -> its container on the rig gone: {took:.1f} s (1 run; remote grace "
          f"{reaper.REMOTE_GRACE_S:g} s)")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    main()
