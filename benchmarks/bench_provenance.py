"""What recording provenance costs, in one run, inside a real ipykernel (so each record travels
as display_data on the kernel's iopub socket, as in a notebook).

    .venv/bin/python benchmarks/bench_provenance.py [--runs 300] [--oneshot-runs 20]

Recording on and off alternate cell by cell (``recording.enabled``; the order flips each round),
so drift and load on the shared machine fall on both alike. Medians; besides the on/off
difference, the time spent inside recording's own calls on the cell's path (its begin/finish),
which is what recording adds when the machine is too loaded for the difference to settle:

1. A warm session cell (`%%docker @bench` + `pass`): on - off (target < 1 ms); and what its
   status line adds (`DockerMagics.status_line` on - off, recording on).
2. A one-shot cell (`%%docker IMAGE` + `pass`), cold (spares off) and with its spare ready:
   (on - off) / off (target < 5 %); and, spare ready, what its status line adds.
"""
import argparse
import os
import statistics
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")


def _pair(ip, switch, line, runs, body="pass"):
    """Medians (ms) of the cell with SWITCH(True) and SWITCH(False), alternated."""
    on, off = [], []
    for i in range(runs):
        order = ((True, on), (False, off)) if i % 2 == 0 else ((False, off), (True, on))
        for flag, bucket in order:
            switch(flag)
            t0 = time.perf_counter()
            ip.run_cell_magic("docker", line, body)
            bucket.append(time.perf_counter() - t0)
    switch(True)
    return statistics.median(on) * 1000, statistics.median(off) * 1000


class _Own:
    """Times recording's own calls on the cell's path (begin + finish, enter + exit)."""

    def __init__(self, recording):
        self.spent = []
        self.current = 0.0
        for cls, names in ((recording.CellRecorder, ("__init__", "finish")),
                           (recording.SessionRecorder, ("__enter__", "__exit__"))):
            for name in names:
                setattr(cls, name, self._timed(getattr(cls, name), name in ("finish",
                                                                            "__exit__")))

    def _timed(self, fn, last):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.current += time.perf_counter() - t0
                if last:
                    self.spent.append(self.current)
                    self.current = 0.0
        return run

    def take(self):
        out, self.spent = self.spent, []
        return statistics.median(out) * 1000 if out else float("nan")


def inner(runs, oneshot_runs):
    """Runs inside the kernel."""
    from IPython import get_ipython

    from dockmagic import recording

    own = _Own(recording)

    ip = get_ipython()
    ip.run_line_magic("load_ext", "dockmagic")
    name = f"bench-prov-{uuid.uuid4().hex[:6]}"
    ip.run_line_magic("docker", f"session {name} --rm {IMAGE}")
    try:
        for _ in range(20):
            ip.run_cell_magic("docker", f"@{name}", "pass")
        own.take()
        record = lambda flag: setattr(recording, "enabled", flag)  # noqa: E731
        on, off = _pair(ip, record, f"@{name}", runs)
        print(f"warm session cell: recording on {on:.3f} ms, off {off:.3f} ms median "
              f"({runs} each) -> adds {on - off:.3f} ms   (target < 1 ms); recording's own "
              f"calls {own.take():.3f} ms median", flush=True)
        magics = ip.magics_manager.registry["DockerMagics"]
        on, off = _pair(ip, lambda flag: setattr(magics, "status_line", flag), f"@{name}", runs)
        own.take()
        print(f"warm session cell: status line on {on:.3f} ms, off {off:.3f} ms median "
              f"({runs} each) -> adds {on - off:.3f} ms; the cell with both: {on:.3f} ms "
              "(target < 2 ms)", flush=True)

        ip.run_line_magic("docker", "config --spare off")
        ip.run_cell_magic("docker", IMAGE, "pass")
        own.take()
        on, off = _pair(ip, record, IMAGE, oneshot_runs)
        mine = own.take()
        print(f"one-shot cell, cold (spares off): on {on:.1f} ms, off {off:.1f} ms median "
              f"({oneshot_runs} each) -> {100 * (on - off) / off:+.2f} %   (target < 5 %); "
              f"recording's own calls {mine:.2f} ms = {100 * mine / off:.2f} %", flush=True)

        ip.run_line_magic("docker", "config --spare on")
        from dockmagic import spare
        ip.run_cell_magic("docker", IMAGE, "pass")
        own.take()
        on, off = [], []
        for i in range(oneshot_runs):
            order = ((True, on), (False, off)) if i % 2 == 0 else ((False, off), (True, on))
            for flag, bucket in order:
                spare.SPARES.ready(timeout=30)  # time the cell, not the spare being made
                recording.enabled = flag
                t0 = time.perf_counter()
                ip.run_cell_magic("docker", IMAGE, "pass")
                bucket.append(time.perf_counter() - t0)
        recording.enabled = True
        on, off = statistics.median(on) * 1000, statistics.median(off) * 1000
        mine = own.take()
        print(f"one-shot cell, spare ready:       on {on:.1f} ms, off {off:.1f} ms median "
              f"({oneshot_runs} each) -> {100 * (on - off) / off:+.2f} %   (target < 5 %); "
              f"recording's own calls {mine:.2f} ms = {100 * mine / off:.2f} %", flush=True)
        line = lambda flag: setattr(magics, "status_line", flag)  # noqa: E731
        on, off = [], []
        for i in range(oneshot_runs):
            order = ((True, on), (False, off)) if i % 2 == 0 else ((False, off), (True, on))
            for flag, bucket in order:
                spare.SPARES.ready(timeout=30)
                line(flag)
                t0 = time.perf_counter()
                ip.run_cell_magic("docker", IMAGE, "pass")
                bucket.append(time.perf_counter() - t0)
        line(True)
        on, off = statistics.median(on) * 1000, statistics.median(off) * 1000
        print(f"one-shot cell, spare ready: status line on {on:.1f} ms, off {off:.1f} ms median "
              f"({oneshot_runs} each) -> {100 * (on - off) / off:+.2f} %", flush=True)
        print(f"records published in this kernel: {len(recording.HISTORY)}", flush=True)
    finally:
        ip.run_line_magic("docker", f"session --stop {name}")
        ip.run_line_magic("unload_ext", "dockmagic")


def in_kernel(runs, oneshot_runs):
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'benchmarks')!r})\n"
                f"import bench_provenance\n"
                f"bench_provenance.inner({runs}, {oneshot_runs})\n")
        msg_id = kc.execute(code)
        records = 0
        while True:
            msg = kc.get_iopub_msg(timeout=1200)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                print(msg["content"]["text"], end="", flush=True)
            elif kind in ("display_data", "update_display_data") and \
                    "dockmagic" in msg["content"].get("metadata", {}):
                records += 1
            elif kind == "error":
                print("\n".join(msg["content"]["traceback"]), file=sys.stderr)
                return 1
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        print(f"(the kernel sent {records} messages carrying a record on iopub)")
        return 0
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300, help="session cells per side")
    ap.add_argument("--oneshot-runs", type=int, default=20, help="one-shot cells per side")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    return in_kernel(args.runs, args.oneshot_runs)


if __name__ == "__main__":
    sys.exit(main())
