"""`%gpus` latency with 100 running containers on the engine, and snapshot cost.

    .venv/bin/python benchmarks/bench_gpus.py [--containers 100] [--runs 30]

Without a GPU here, NVML's answer is the recorded H200 under-load reading (its process makes
`%gpus` ask the engine and join every process to a container, the expensive path); on a GPU
machine pass --live to read NVML itself. Containers are labelled dockmagic.bench=gpus and
removed at the end, whatever happens.
"""
import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--live", action="store_true", help="read the real NVML")
    args = ap.parse_args()

    import docker
    from IPython.core.interactiveshell import InteractiveShell
    from dockmagic import nvml

    if not args.live:
        with open(os.path.join(os.path.dirname(HERE), "tests", "fixtures", "nvml-h200.json")) as f:
            rec = next(s for s in json.load(f)["snapshots"] if s["label"] == "under_load")
        nvml.query_record = lambda: dict(rec)
    client = docker.from_env()
    labels = {"dockmagic.managed": "1", "dockmagic.bench": "gpus"}

    def start(i):
        return client.containers.run(IMAGE, ["sleep", "600"], detach=True, labels=labels,
                                     name=f"dm-bench-gpus-{os.getpid()}-{i}")

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(start, range(args.containers)))
        running = len(client.api.containers())
        print(f"started {args.containers} containers in {time.perf_counter() - t0:.1f} s; "
              f"{running} running on the engine")
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "dockmagic")
        devnull = open(os.devnull, "w")
        times = []
        for _ in range(args.runs + 1):
            old, sys.stdout = sys.stdout, devnull
            try:
                t = time.perf_counter()
                snap = ip.run_line_magic("gpus", "")
                snap._repr_html_()
                times.append(time.perf_counter() - t)
            finally:
                sys.stdout = old
        times = times[1:]  # the first call makes the engine client
        med = statistics.median(times) * 1000
        print(f"%gpus (snapshot + engine listing + join + HTML), {args.runs} runs: median "
              f"{med:.1f} ms, max {max(times) * 1000:.1f} ms  (target < 150 ms)")
        t = time.perf_counter()
        n = 200
        for _ in range(n):
            s = nvml.query_snapshot()
        per_gpu = (time.perf_counter() - t) / n / max(1, len(s.gpus)) * 1000
        what = "live NVML" if args.live else "recorded reading (no NVML here)"
        print(f"snapshot from {what}: {per_gpu:.3f} ms per GPU (target <= 2 ms on a GPU)")
    finally:
        for c in client.containers.list(all=True, filters={"label": "dockmagic.bench=gpus"}):
            c.remove(force=True)


if __name__ == "__main__":
    main()
