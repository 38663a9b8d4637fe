"""Remote engines against the rig (scripts/ensure-rig.sh), in one run.

    .venv/bin/python benchmarks/bench_remote.py [--parts sync,tcpsync,oneshot,session] [--runs N]

1. sync: a 1 GB notebook folder (100 files of 10 MB) pushed to the rig's workspace once; then
   one 1 MB file changes and the folder is synced again, as a session cell does it (change-only
   push) and as a one-shot cell does it (push + pull of what the cell changed). Target < 1 s.
1b. tcpsync: the same over the rig's tcp:// engine (TLS), no SSH: tar through the engine API into
   the notebook folder's named volume; the one-shot figure includes listing the volume (a
   helper container from the cell's image). Target < 1 s.
2. oneshot: a remote one-shot `%%docker --engine rig IMAGE` cell (`print(1)`, notebook folder
   synced both ways) vs `docker -H ssh://rig run --rm IMAGE python3 -c 'print(1)'` through the
   CLI, interleaved: medians and the ratio (target <= 0.5x).
3. session: a warm `%%docker @S` cell on the rig (`print(1)`) vs `ssh rig docker exec S python3
   -c 'print(1)'`, and the connection's round-trip time (targets: <= 2 ms + one RTT, >= 20x).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

IMAGE = os.environ.get("DOCKMAGIC_BASE_IMAGE", "dockmagic-base:bookworm")
RIG = os.environ.get("DOCKMAGIC_RIG_NAME", "dockmagic-rig")


def med_ms(xs):
    return statistics.median(xs) * 1000


def bench_sync(runs: int):
    from dockmagic.remote.sshlink import SSHLink
    from dockmagic.remote.urls import parse_endpoint
    from dockmagic.remote.workspace import Workspace

    folder = tempfile.mkdtemp(prefix="dm-bench-sync-")
    link = SSHLink(parse_endpoint("rig", f"ssh://{RIG}")).ensure()
    try:
        block = os.urandom(1 << 20)
        for i in range(100):
            with open(os.path.join(folder, f"part{i:03d}.bin"), "wb") as f:
                for _ in range(10):
                    f.write(block)
        ws = Workspace(link, folder, say=lambda s: None)
        t0 = time.perf_counter()
        ws.push()
        first = time.perf_counter() - t0
        print(f"first push of 1.05 GB (100 x 10 MB): {first:.2f} s")
        session, oneshot = [], []
        for r in range(runs):
            path = os.path.join(folder, f"change{r % 3}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(1 << 20))
            t0 = time.perf_counter()
            rep = ws.push(changed_only=True)
            session.append(time.perf_counter() - t0)
            assert rep.sent == 1, rep
            with open(path, "r+b") as f:
                f.write(os.urandom(4096))
            t0 = time.perf_counter()
            ws.push()
            ws.pull()
            oneshot.append(time.perf_counter() - t0)
        noop = []
        for _ in range(runs):
            t0 = time.perf_counter()
            rep = ws.push(changed_only=True)
            noop.append(time.perf_counter() - t0)
            assert rep.rsyncs == 0
        print(f"resync, one 1 MB file changed, session cell (change-only push): median "
              f"{med_ms(session):.0f} ms, max {max(session) * 1000:.0f} ms ({runs} runs)   "
              "target < 1 s")
        print(f"resync, one file changed, one-shot cell (push + pull): median "
              f"{med_ms(oneshot):.0f} ms, max {max(oneshot) * 1000:.0f} ms   target < 1 s")
        print(f"nothing changed (mtime scan of 1 GB folder, no rsync): median "
              f"{med_ms(noop):.2f} ms")
        link.run(f"rm -rf {ws.remote_root}")
    finally:
        link.close()
        shutil.rmtree(folder, ignore_errors=True)


def bench_sync_tcp(runs: int):
    """The same resync over the rig's tcp:// engine (TLS): tar through the engine API into the
    notebook folder's volume (remote/volume.py), with no SSH."""
    from dockmagic.remote.engines import RemoteEngine
    from dockmagic.remote.urls import parse_endpoint
    from dockmagic.remote.volume import VolumeWorkspace
    from dockmagic.engine import volumes

    env = _rig_env()
    tls = env["DOCKMAGIC_RIG_TLS"]
    engine = RemoteEngine(parse_endpoint("rigtcp", f"tcp://127.0.0.1:{env['DOCKMAGIC_RIG_TCP_PORT']}",
                                         {"tlsverify": "1", "tlscacert": f"{tls}/ca.pem",
                                          "tlscert": f"{tls}/cert.pem",
                                          "tlskey": f"{tls}/key.pem"}))
    folder = tempfile.mkdtemp(prefix="dm-bench-tcp-")
    ws = None
    try:
        block = os.urandom(1 << 20)
        for i in range(100):
            with open(os.path.join(folder, f"part{i:03d}.bin"), "wb") as f:
                for _ in range(10):
                    f.write(block)
        ws = VolumeWorkspace(engine, folder, say=lambda s: None)
        ws.image = IMAGE
        t0 = time.perf_counter()
        ws.push()
        first = time.perf_counter() - t0
        print(f"tcp: first push of 1.05 GB (100 x 10 MB) into volume {ws.volume}: {first:.2f} s")
        session, oneshot = [], []
        for r in range(runs):
            path = os.path.join(folder, f"change{r % 3}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(1 << 20))
            t0 = time.perf_counter()
            rep = ws.push(changed_only=True)
            session.append(time.perf_counter() - t0)
            assert rep.sent == 1, rep
            with open(path, "r+b") as f:
                f.write(os.urandom(4096))
            t0 = time.perf_counter()
            ws.sync_cell("both", lambda: None)  # what a one-shot cell does around its run
            oneshot.append(time.perf_counter() - t0)
        noop = []
        for _ in range(runs):
            t0 = time.perf_counter()
            rep = ws.push(changed_only=True)
            noop.append(time.perf_counter() - t0)
            assert rep.rsyncs == 0
        print(f"tcp: resync, one 1 MB file changed, session cell (change-only push by tar): "
              f"median {med_ms(session):.0f} ms, max {max(session) * 1000:.0f} ms ({runs} runs)"
              "   target < 1 s")
        print(f"tcp: resync, one file changed, one-shot cell (push + volume listing + pull): "
              f"median {med_ms(oneshot):.0f} ms, max {max(oneshot) * 1000:.0f} ms   target < 1 s")
        print(f"tcp: nothing changed (mtime scan, no engine call): median {med_ms(noop):.2f} ms")
    finally:
        if ws is not None:
            volumes.remove_volume(engine, ws.volume)
        engine.close()
        shutil.rmtree(folder, ignore_errors=True)


def _rig_env() -> dict:
    import pwd
    path = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", RIG, "env")
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


class Quiet:
    """Send the cells' output to /dev/null while timing."""

    def __enter__(self):
        self.old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout, sys.stderr = self.old


def _shell():
    from IPython.core.interactiveshell import InteractiveShell
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="dm-bench-xdg-")
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "dockmagic")
    with Quiet():
        ip.run_line_magic("docker", f"engines add rig ssh://{RIG}")
    return ip


def bench_oneshot(ip, runs: int):
    from dockmagic import spare
    folder = tempfile.mkdtemp(prefix="dm-bench-nb-")
    os.chdir(folder)
    with open("data.txt", "w") as f:
        f.write("x" * 1000)
    cell, cli = [], []
    with Quiet():
        ip.run_cell_magic("docker", f"--engine rig {IMAGE}", "print(1)")  # workspace, image
    for _ in range(runs):
        spare.SPARES.ready(60)
        t0 = time.perf_counter()
        with Quiet():
            ip.run_cell_magic("docker", f"--engine rig {IMAGE}", "print(1)")
        cell.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["docker", "-H", f"ssh://{RIG}", "run", "--rm", IMAGE, "python3", "-c",
                        "print(1)"], check=True, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t0)
    c, d = med_ms(cell), med_ms(cli)
    print(f"remote one-shot cell (folder synced both ways, spare ready): median {c:.0f} ms "
          f"({runs} runs)")
    print(f"docker -H ssh://{RIG} run --rm via CLI:                  median {d:.0f} ms")
    print(f"ratio cell / CLI: {c / d:.2f}x   target <= 0.5x")
    nospare = []
    with Quiet():
        ip.run_line_magic("docker", "config --spare off")
    for _ in range(max(3, runs // 2)):
        t0 = time.perf_counter()
        with Quiet():
            ip.run_cell_magic("docker", f"--engine rig {IMAGE}", "print(1)")
        nospare.append(time.perf_counter() - t0)
    with Quiet():
        ip.run_line_magic("docker", "config --spare on")
    print(f"same cell with spares off: median {med_ms(nospare):.0f} ms "
          f"({med_ms(nospare) / d:.2f}x the CLI)")


def bench_session(ip, runs: int, cli_runs: int):
    from dockmagic.remote import engines
    folder = tempfile.mkdtemp(prefix="dm-bench-nb-")
    os.chdir(folder)
    with open("data.txt", "w") as f:
        f.write("x")
    name = f"dm-bench-{os.getpid()}"
    with Quiet():
        ip.run_line_magic("docker", f"session {name} --engine rig --rm {IMAGE}")
    try:
        cell = []
        with Quiet():
            for _ in range(20):
                ip.run_cell_magic("docker", f"@{name}", "print(1)")
            for _ in range(runs):
                t0 = time.perf_counter()
                ip.run_cell_magic("docker", f"@{name}", "print(1)")
                cell.append(time.perf_counter() - t0)
        link = engines.get_engine("rig").link
        rtts = [link.ping() for _ in range(50)]
        cli = []
        for _ in range(cli_runs):
            t0 = time.perf_counter()
            subprocess.run(["ssh", RIG, "docker", "exec", name, "python3", "-c", "'print(1)'"],
                           check=True, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t0)
        c, r, d = med_ms(cell), med_ms(rtts), med_ms(cli)
        p90 = sorted(cell)[runs * 9 // 10] * 1000
        print(f"warm remote session cell, print(1): median {c:.2f} ms [p90 {p90:.2f}] "
              f"({runs} cells, folder watched both ways)")
        print(f"round trip on the engine's connection (docker _ping): median {r:.2f} ms; "
              f"cell - RTT = {c - r:.2f} ms   target <= 2 ms + one RTT")
        print(f"ssh {RIG} docker exec via CLI: median {d:.0f} ms ({cli_runs} runs); "
              f"{d / c:.0f}x slower   target >= 20x")
    finally:
        with Quiet():
            ip.run_line_magic("docker", f"session --stop {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="sync,tcpsync,oneshot,session")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(os.path.dirname(__file__), "..", "scripts",
                                         "ensure-rig.sh")], check=True, stdout=subprocess.DEVNULL)
    load = os.getloadavg()[0]
    print(f"bench_remote: rig {RIG}, load average {load:.2f}, {os.cpu_count()} cores")
    parts = args.parts.split(",")
    if "sync" in parts:
        bench_sync(args.runs)
    if "tcpsync" in parts:
        bench_sync_tcp(args.runs)
    if "oneshot" in parts or "session" in parts:
        ip = _shell()
        try:
            if "oneshot" in parts:
                bench_oneshot(ip, args.runs)
            if "session" in parts:
                bench_session(ip, args.runs * 20, args.runs)
        finally:
            ip.run_line_magic("unload_ext", "dockmagic")


if __name__ == "__main__":
    main()
