"""One-shot cell cost and stdout throughput, against the CLI and the bare SDK, in one run.

    .venv/bin/python benchmarks/bench_cell.py [--runs 15] [--mb 200]

Latency: `%%docker IMAGE` + `print(1)` through a real IPython shell, `docker run --rm IMAGE
python3 -c 'print(1)'` through the CLI, and the SDK floor (create/start/wait/remove), interleaved
so that machine noise hits all three alike; medians and ratios are printed.
Throughput: MB of stdout through a cell (written to /dev/null) vs the CLI piping the same to
/dev/null, each in a fresh process, with that process's peak RSS.
"""
import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import time

IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
# 64 KiB writes of 1 KiB text lines: pipe-bound on both sides whatever stdout's buffering.
PRODUCER = ("import sys\n"
            "block = (b'x' * 1023 + b'\\n') * 64\n"
            "w = sys.stdout.buffer.write\n"
            "for _ in range({n}):\n"
            "    w(block)\n")


def latency(runs):
    import docker
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    # The cold path: spares (benchmarks/bench_session.py) would hide the container start.
    with contextlib.redirect_stdout(io.StringIO()):
        ip.run_line_magic("docker", "config --spare off")
    client = docker.from_env()
    devnull = open(os.devnull, "w")

    def cell():
        old = sys.stdout
        sys.stdout = devnull
        try:
            ip.run_cell_magic("docker", IMAGE, "print(1)")
        finally:
            sys.stdout = old

    def cli():
        subprocess.run(["docker", "run", "--rm", IMAGE, "python3", "-c", "print(1)"],
                       check=True, stdout=subprocess.DEVNULL)

    def sdk():
        c = client.containers.create(IMAGE, ["python3", "-c", "print(1)"])
        c.start()
        c.wait()
        c.remove()

    ways = {"cell": cell, "cli": cli, "sdk floor": sdk}
    for f in ways.values():  # warm caches once
        f()
    times = {k: [] for k in ways}
    for _ in range(runs):
        for name, f in ways.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    spread = {k: (min(v) * 1000, max(v) * 1000) for k, v in times.items()}
    print(f"latency, {runs} interleaved runs each (median ms, [min..max]):")
    for k in ways:
        print(f"  {k:10s} {med[k]:7.1f}  [{spread[k][0]:.0f}..{spread[k][1]:.0f}]")
    print(f"  cell / cli       = {med['cell'] / med['cli']:.2f}x   (target <= 1.0x)")
    print(f"  cell / sdk floor = {med['cell'] / med['sdk floor']:.2f}x   (target <= 1.1x)")


def throughput_child(way, mb):
    code = PRODUCER.format(n=mb * 16)
    if way == "cli":
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", IMAGE, "python3", "-c", code], check=True,
                       stdout=subprocess.DEVNULL)
    else:
        from IPython.core.interactiveshell import InteractiveShell

        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "dockmagic")
        with contextlib.redirect_stdout(io.StringIO()):
            ip.run_line_magic("docker", "config --spare off")
        old = sys.stdout
        sys.stdout = open(os.devnull, "w")
        t0 = time.perf_counter()  # the shell is up, as in a running notebook
        try:
            ip.run_cell_magic("docker", IMAGE, code)
        finally:
            sys.stdout = old
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{dt:.4f} {peak_mb:.1f}")


def throughput(mb, repeats):
    res = {"cell": [], "cli": []}
    for _ in range(repeats):
        for way in res:
            out = subprocess.run([sys.executable, __file__, "--child", way, "--mb", str(mb)],
                                 check=True, capture_output=True, text=True).stdout.split()
            res[way].append((float(out[0]), float(out[1])))
    print(f"stdout throughput, {mb} MB, best of {repeats} (fresh process each):")
    best = {}
    for way, rows in res.items():
        dt, peak = min(rows)
        best[way] = mb / dt
        print(f"  {way:5s} {best[way]:7.1f} MB/s   process peak RSS {peak:.0f} MB")
    print(f"  cell / cli = {best['cell'] / best['cli']:.2f}x   (target >= 0.8x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["cell", "cli"])
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    if args.child:
        return throughput_child(args.child, args.mb)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; image {IMAGE}")
    if not args.skip_latency:
        latency(args.runs)
    throughput(args.mb, args.repeats)


if __name__ == "__main__":
    main()
