"""Live check of dockmagic's NVML reader on a GPU machine (called by scripts/gpu-check.sh).

Prints the rendered snapshot, query_snapshot timing (median of 50, ms per GPU), the auto:1
choice, then (if PyTorch sees CUDA) starts a short matmul load in a child process and prints the
snapshot again once NVML lists it. Records go to $OUT (if set) as new fixtures candidates.
Installs nothing and needs no network or Docker engine.
"""
import json
import os
import select
import statistics
import subprocess
import sys
import time

LOAD = r"""
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + float(sys.argv[1])
print("load: running", flush=True)
while time.time() < end:
    for _ in range(10):
        b = a @ a
    torch.cuda.synchronize()
"""
OUT = os.environ.get("OUT")


def save(name, text):
    if OUT:
        with open(os.path.join(OUT, name), "w") as f:
            f.write(text)


def section(title):
    print(f"\n=== {title}", flush=True)


def main():
    try:
        import pynvml  # noqa: F401  (only to say clearly when the bindings are missing)
        print(f"pynvml: {pynvml.__file__}")
    except ImportError as exc:
        print(f"import pynvml FAILS ({exc}): install nvidia-ml-py; dockmagic will show 'NVML "
              "bindings missing'")
    from dockmagic import nvml
    from dockmagic.gpus import choose_gpus, describe_choice, parse_cgroup_container_id

    section("repr(query_snapshot())")
    snap = nvml.query_snapshot()
    print(repr(snap))
    if snap.error:
        return 2
    save("nvml-live-idle.json", json.dumps(nvml.query_record(), indent=1))
    save("gpus-idle.html", snap._repr_html_())

    section("query_snapshot timing (50 runs)")
    times = []
    for _ in range(50):
        t = time.perf_counter()
        nvml.query_snapshot()
        times.append((time.perf_counter() - t) * 1000)
    n = max(len(snap.gpus), 1)
    med = statistics.median(times)
    print(f"median {med:.2f} ms = {med / n:.2f} ms per GPU ({n} GPUs); "
          f"min {min(times):.2f} ms, max {max(times):.2f} ms")

    section('choose_gpus("auto:1", snap)')
    value = choose_gpus("auto:1", snap)
    print(value)
    print(describe_choice(value, snap))

    if os.environ.get("GPU_CHECK_NO_LOAD"):
        return 0
    section("under a torch matmul load")
    try:
        import torch
        ok = torch.cuda.is_available()
    except Exception as exc:
        print(f"skipped: PyTorch unusable here ({exc})")
        return 0
    if not ok:
        print("skipped: torch.cuda.is_available() is False")
        return 0
    load = subprocess.Popen([sys.executable, "-c", LOAD, "30"], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([load.stdout], [], [], 25)
        line = load.stdout.readline() if ready else ""
        if "running" not in line:
            print(f"the torch load did not start within 25 s (exit code {load.poll()})")
            return 1
        time.sleep(2.0)  # NVML utilisation is averaged over about a second
        seen = nvml.query_snapshot()
        print(repr(seen))
        if not any(g.processes for g in seen.gpus):
            print("NOTE: NVML lists no process although the load runs "
                  "(PID namespace or permissions hide it)")
        save("nvml-live-under-load.json", json.dumps(nvml.query_record(), indent=1))
        save("gpus-under-load.html", seen._repr_html_())
        pids = sorted({p.pid for g in seen.gpus for p in g.processes})
        print(f"\nload PID in this namespace: {load.pid}; PIDs NVML lists: {pids}")
        for pid in pids:  # what the join would read for this process
            try:
                with open(f"/proc/{pid}/cgroup") as f:
                    text = f.read()
                shown = f"{text.splitlines()[:2]} -> docker id {parse_cgroup_container_id(text)}"
            except OSError as exc:
                shown = f"unreadable ({exc})"
            print(f"/proc/{pid}/cgroup: {shown}")
        value = choose_gpus("auto:1", seen)
        print(f'auto:1 under load: {value} | {describe_choice(value, seen)}')
    finally:
        load.terminate()
        try:
            load.wait(5)
        except subprocess.TimeoutExpired:
            load.kill()
            load.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
