"""Sessions, --in/--out and spares, against the docker CLI, in one run.

    .venv/bin/python benchmarks/bench_session.py [--runs 200] [--gb 1] [--spare-runs 15]

1. A warm session cell (`%%docker @bench` + `print(1)`, through a real IPython shell) vs
   `docker exec NAME python3 -c 'print(1)'` through the CLI: medians and the ratio
   (targets: < 2 ms, >= 20x faster).
2. A 1 GB float64 array into a session cell and back (`--in x`, `--out y`, both), and the
   same through one-shot cells with their spare ready and cold, in GB/s (target >= 1 GB/s);
   for one-shot --in also over what the same cell takes without --in (its container's start).
3. A repeated identical one-shot cell with its spare ready vs `docker run --rm IMAGE python3 -c
   'print(1)'` through the CLI, interleaved: medians and the ratio (target <= 0.3x).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")


class Quiet:
    """Send the cells' output to /dev/null while timing."""

    def __enter__(self):
        self.old = sys.stdout
        sys.stdout = open(os.devnull, "w")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout = self.old


def med_ms(xs):
    return statistics.median(xs) * 1000


def session_latency(ip, name, runs, cli_runs):
    cell = []
    with Quiet():
        for _ in range(20):  # warm up
            ip.run_cell_magic("docker", f"@{name}", "print(1)")
        for _ in range(runs):
            t0 = time.perf_counter()
            ip.run_cell_magic("docker", f"@{name}", "print(1)")
            cell.append(time.perf_counter() - t0)
    cli = []
    for _ in range(cli_runs):
        t0 = time.perf_counter()
        subprocess.run(["docker", "exec", name, "python3", "-c", "print(1)"], check=True,
                       stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t0)
    c, d = med_ms(cell), med_ms(cli)
    p10, p90 = (sorted(cell)[runs * k // 10] * 1000 for k in (1, 9))
    print(f"warm session cell, print(1): median {c:.2f} ms  [p10 {p10:.2f}, p90 {p90:.2f}]  "
          f"({runs} cells)   target < 2 ms")
    print(f"docker exec via CLI:         median {d:.1f} ms  ({cli_runs} runs)")
    print(f"  exec / session cell = {d / c:.0f}x faster   (target >= 20x)")


def transfer_speed(ip, name, gb, repeats):
    """Every --in/--out path with a 1 GB array: session, and one-shot with its spare ready and
    cold (spares off). One-shot --out alone: the container has to make the array first, so
    what is timed is from the end of the cell's body (a timestamp it prints) to the cell's
    return, against the same for the same cell without --out: what --out adds."""
    import contextlib
    import io

    import numpy as np
    from dockmagic import spare

    n = int(gb * (1 << 30)) // 8
    ip.user_ns["x"] = np.ones(n)
    ip.user_ns["x"][::4096] = np.arange(len(ip.user_ns["x"][::4096]))  # not all the same page
    size = ip.user_ns["x"].nbytes / 1e9
    make = (f"import numpy, time\ny = numpy.ones({n})\ny[::4096] = numpy.arange(len(y[::4096]))\n"
            "print('body-end', time.time())")
    label = f"-l dockmagic.bench=session {IMAGE}"
    cells = [("session in", f"@{name} --in x", "pass", 1),
             ("session out", f"@{name} --out y", "y = x", 1),
             ("session in+out", f"@{name} --in x --out y", "y = x", 2),
             ("one-shot in", f"--in x {label}", "pass", 1),
             ("one-shot in, bare", label, "pass", 0),
             ("one-shot out", f"--out y {label}", make, 1),
             ("one-shot out, bare", label, make, 0),
             ("one-shot in+out", f"--in x --out y {label}", "y = x", 2)]
    rows = {}

    def run(key, line, body):
        if "@" not in line:
            spare.SPARES.ready()  # the cell's spare (made by the cell before) is up
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            t0 = time.perf_counter()
            ip.run_cell_magic("docker", line, body)
            t1, returned = time.perf_counter(), time.time()
        end = [float(w[1]) for w in (ln.split() for ln in out.getvalue().splitlines())
               if len(w) == 2 and w[0] == "body-end"]
        # from the body's end (the container's clock is the host's) to the cell's return
        rows.setdefault(key, []).append(returned - end[0] if end else t1 - t0)
        if "--out" in line:
            assert ip.user_ns["y"].shape == (n,) and ip.user_ns["y"][4096] == 1
            del ip.user_ns["y"]

    for key, line, body, _ in cells:
        if "@" not in line:
            run("warm-up", line, body)  # makes the spare the first timed cell uses
    for _ in range(repeats):
        for key, line, body, _ in cells:
            run(key, line, body)
        ip.run_cell_magic("docker", f"@{name}", "globals().pop('x', None)\n"
                                                 "globals().pop('y', None)")
    with Quiet():
        ip.run_line_magic("docker", "config --spare off")
    try:
        for _ in range(repeats):
            for key, line, body, _ in cells:
                if "@" not in line:
                    run(key + " (cold)", line, body)
    finally:
        with Quiet():
            ip.run_line_magic("docker", "config --spare on")
    print(f"{size:.2f} GB float64 array, {repeats} runs each, median [best] "
          f"(load average now {os.getloadavg()[0]:.2f}):")
    for key, line, body, times in cells + [(k + " (cold)", l, b, t) for k, l, b, t in cells
                                           if "@" not in l]:
        if not times:
            continue
        ts = rows[key]
        what = "the whole cell"
        if key.startswith("one-shot out"):
            bare = statistics.median(rows["one-shot out, bare" + key[len("one-shot out"):]])
            ts = [max(t - bare, 1e-9) for t in ts]
            what = "added by --out"
        moved = size * times
        print(f"  {key:24s} {moved / statistics.median(ts):5.2f} GB/s "
              f"[{moved / min(ts):5.2f}]  {statistics.median(ts):5.2f} s {what} "
              f"({moved:.2f} GB moved)   target >= 1 GB/s")
        if key.startswith("one-shot in") and "," not in key:
            # the same cell without --in/--out (its container's start) taken out: what they add
            bare = statistics.median(rows["one-shot in, bare" + (" (cold)" if key.endswith(
                " (cold)") else "")])
            added = [max(t - bare, 1e-9) for t in ts]
            print(f"  {'  over the bare cell':24s} {moved / statistics.median(added):5.2f} GB/s "
                  f"[{moved / min(added):5.2f}]  {statistics.median(added):5.2f} s over the "
                  f"same cell without --in/--out ({bare:.2f} s)")
    del ip.user_ns["x"]


def spare_vs_cli(ip, runs):
    from dockmagic import spare

    line = f"-l dockmagic.bench=session {IMAGE}"
    with Quiet():
        ip.run_cell_magic("docker", line, "print(1)")  # cold; makes the spare
    cell, cli, cold = [], [], []
    used = spare.SPARES.used
    for _ in range(runs):
        spare.SPARES.ready()
        with Quiet():
            t0 = time.perf_counter()
            ip.run_cell_magic("docker", line, "print(1)")
            cell.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", IMAGE, "python3", "-c", "print(1)"], check=True,
                       stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t0)
    assert spare.SPARES.used == used + runs, "a cell did not use its spare"
    ip.run_line_magic("docker", "config --spare off")
    try:
        with Quiet():
            for _ in range(max(3, runs // 3)):
                t0 = time.perf_counter()
                ip.run_cell_magic("docker", line, "print(1)")
                cold.append(time.perf_counter() - t0)
    finally:
        with Quiet():
            ip.run_line_magic("docker", "config --spare on")
    s, c, k = med_ms(cell), med_ms(cli), med_ms(cold)
    print(f"repeated identical one-shot cell, print(1), {runs} interleaved runs (median ms):")
    print(f"  cell with its spare ready   {s:7.1f}")
    print(f"  docker run --rm via CLI     {c:7.1f}")
    print(f"  same cell, spares off       {k:7.1f}")
    print(f"  spare cell / CLI = {s / c:.2f}x   (target <= 0.3x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--cli-runs", type=int, default=15)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spare-runs", type=int, default=15)
    ap.add_argument("--only", choices=["latency", "transfer", "spare"],
                    help="run one part alone")
    args = ap.parse_args()
    from IPython.core.interactiveshell import InteractiveShell

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; image {IMAGE}")
    folder = tempfile.mkdtemp(prefix="dockmagic-bench-")
    os.chdir(folder)  # the notebook folder (the exchange is a private folder per cell)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        with Quiet():
            ip.run_line_magic("docker", f"session {name} --rm -l dockmagic.bench=session {IMAGE}")
        if args.only in (None, "latency"):
            session_latency(ip, name, args.runs, args.cli_runs)
        if args.only in (None, "transfer"):
            transfer_speed(ip, name, args.gb, args.repeats)
        if args.only in (None, "spare"):
            spare_vs_cli(ip, args.spare_runs)
    finally:
        from dockmagic import kernel
        kernel.shutdown()
        os.chdir("/")
        os.rmdir(folder)


if __name__ == "__main__":
    main()
