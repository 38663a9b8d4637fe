"""Records -> a bash script that replays the container cells, or a compose file. Pure (stdlib and
the translator).

``build_script(entries)``: each entry is ``{"record": ..., "body": ...}`` (``provenance``'s
records with the cell body they ran). The script needs bash and the docker CLI only (no Jupyter,
no dockmagic), and talks to whatever engine the docker CLI reaches (``DOCKER_HOST``).

- A one-shot cell runs its recorded `docker run` argv, the image replaced by the pinned
  reference (``REPO@sha256:...``, else the image ID ``sha256:...``), its body as a quoted
  here-document on stdin. The notebook's folder is mounted as it was: the argv holds the mount.
- A detached cell (`-d`) runs the same argv without `-d`, in the background, its output left in
  `docker logs` (a `docker run -d` cannot read a body on stdin); the script waits for it at the end.
- A session becomes one `docker run -d` of its recorded argv, running the **replay server**
  (``REPLAY_SERVER``, stdlib Python, instead of dockmagic's agent), and one `docker exec` per
  cell. The server keeps one namespace, so variables and imports carry over from cell to cell as
  they did through the agent. Each `docker exec ... python3 -c CLIENT` hands its own stdin, stdout
  and stderr to the server over a Unix socket (SCM_RIGHTS), so the cell reads its body from the
  here-document and its output streams to the script's own stdout/stderr, and the client exits
  with the cell's status. Non-Python session cells (`bash`) are a plain `docker exec -i`, which
  is what the agent does for them (the container's environment and working directory).
  The session's container gets a name of its own (``dockmagic-replay-NAME-PID``) so a live
  session of the notebook is never touched; the script removes it when it ends.
- `--in`/`--out` cells are skipped with a comment: they move variables between a kernel and the
  container, and a script has no kernel.
- A cell that failed when recorded with `--no-raise-error` may fail again; one whose failure
  stopped the notebook stops the script. Cells recorded as interrupted, or whose container never
  started, are skipped with a comment.
- The recorded lines keep their `dockmagic.*` labels, so a replay's containers show in
  `%docker ps`, and any left over (a `-d` cell's) as an orphan for `%docker prune --orphans`.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Iterable, List, Mapping, Sequence

from . import provenance, translate

#: The replay server: a session's main process in an exported script (see the module doc).
REPLAY_SERVER = r'''
import array, os, socket, sys, types, linecache, traceback, tempfile
path = os.path.join(tempfile.gettempdir(), "dockmagic-replay.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
main = types.ModuleType("__main__")
main.__dict__["__builtins__"] = __builtins__
sys.modules["__main__"] = main
keep = [os.dup(fd) for fd in (0, 1, 2)]
flags, n = 0, 0
while True:
    conn, _ = srv.accept()
    msg, anc, _f, _a = conn.recvmsg(1, socket.CMSG_SPACE(3 * array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    for i, fd in enumerate(fds[:3]):
        os.dup2(fd, i)
    for fd in fds:
        os.close(fd)
    status = 0
    try:
        n += 1
        chunks = []
        while True:
            data = os.read(0, 1 << 16)
            if not data:
                break
            chunks.append(data)
        code = b"".join(chunks).decode("utf-8")
        name = "<cell %d>" % n
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        co = compile(code, name, "exec", flags, True)
        flags |= co.co_flags & 0x3fe0000
        exec(co, main.__dict__)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    for i, fd in enumerate(keep):
        os.dup2(fd, i)
    conn.sendall(bytes([status & 255]))
    conn.close()
'''

#: Run by `docker exec -i CONTAINER PYTHON -c CLIENT` for each session cell.
REPLAY_CLIENT = r'''
import array, os, socket, sys, time, tempfile
path = os.path.join(tempfile.gettempdir(), "dockmagic-replay.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
for _ in range(300):
    try:
        s.connect(path)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("dockmagic replay: the session's replay server does not answer at " + path)
s.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
os.close(0)
os.close(1)
os.close(2)
reply = s.recv(1)
os._exit(reply[0] if reply else 1)
'''

_HEADER = """\
#!/usr/bin/env bash
# Replays the container cells of {source} as dockmagic recorded them.
# Written by dockmagic {version} (`%docker export`). Needs bash and the docker CLI only.
# Recorded on engine {engine}. The docker CLI's engine (DOCKER_HOST) runs this; images are pinned
# by digest (REPO@sha256:...), or by image ID (sha256:...) for images that were built or committed
# on that engine and never pushed: those exist only on an engine that holds the same image.
set -uo pipefail
DM_SESSIONS=()
DM_JOBS=0
dm_cleanup() {{
  [ "$DM_JOBS" -eq 0 ] || wait
  local c
  for c in ${{DM_SESSIONS[@]+"${{DM_SESSIONS[@]}}"}}; do docker rm -f "$c" >/dev/null 2>&1; done
}}
trap dm_cleanup EXIT
# dm_check RC RECORDED_EXIT RAISES LABEL: a cell that stopped the notebook stops the script.
dm_check() {{
  if [ "$1" -ne "$2" ]; then
    echo "dockmagic replay: $4 exited $1; recorded: $2" >&2
  fi
  if [ "$1" -ne 0 ] && [ "$3" = 1 ]; then
    echo "dockmagic replay: stopping after $4 (it raises in the notebook)" >&2
    exit "$1"
  fi
}}
DM_REPLAY_SERVER=$(cat <<'DOCKMAGIC_REPLAY_SERVER'
{server}
DOCKMAGIC_REPLAY_SERVER
)
DM_REPLAY_CLIENT=$(cat <<'DOCKMAGIC_REPLAY_CLIENT'
{client}
DOCKMAGIC_REPLAY_CLIENT
)
"""


class ExportError(ValueError):
    """Nothing to export, or a record that cannot be replayed; the message says which."""


def _parse(argv: Sequence[str]) -> "translate.RunSpec":
    args = list(argv)
    if args[:2] == ["docker", "run"]:
        args = args[2:]
    return translate.parse_run_args(args)


def pinned_ref(record: Mapping) -> str:
    """What the script names the image by: the digest the record resolved, else the name."""
    image = record.get("image") or {}
    return image.get("digest") or image.get("ref") or image.get("named")


def _join(argv: Sequence[str], raw: Mapping[str, str]) -> str:
    """shlex.join, except that the placeholders in RAW are written as given (shell variables)."""
    return " ".join(raw.get(a) or shlex.quote(a) for a in argv)


def _delimiter(body: str, label: str) -> str:
    lines = set(body.splitlines())
    word, n = f"DOCKMAGIC_{label}", 0
    while word in lines:
        n += 1
        word = f"DOCKMAGIC_{label}_{n}"
    return word


def _heredoc(body: str, word: str) -> str:
    return body + ("" if body.endswith("\n") or not body else "\n") + word


def _comment(text: str) -> str:
    return "\n".join("# " + line if line else "#" for line in text.splitlines())


def _label(rec: Mapping, pos: int) -> str:
    cell = rec.get("cell")
    label = f"cell {cell}" if cell is not None else f"record {pos}"
    if rec.get("kind") == "session":
        label += f" @{rec['session'].get('name')}"
    return label


def _var(name: str) -> str:
    return "DM_S_" + "".join(c if c.isalnum() else "_" for c in name)


def _session_start(rec: Mapping) -> List[str]:
    sess = rec["session"]
    argv = provenance.run_argv(rec)
    if not argv:
        raise ExportError(f"session {sess.get('name')}: its `docker run` line was not recorded "
                          "(it was started before this kernel); start it again in the notebook")
    spec = _parse(argv)
    python = (spec.entrypoint or spec.command or ("python3",))[0]
    var = _var(sess["name"])
    spec = dataclasses.replace(
        spec, name="@NAME@", detach=True, interactive=True, image=pinned_ref(rec),
        entrypoint=(python,), command=("-u", "-c", "@SERVER@"),
        init=True if spec.init is None else spec.init)
    cmd = _join(["docker", "run"] + spec.to_cli(),
                {"@NAME@": f'"${var}"', "@SERVER@": '"$DM_REPLAY_SERVER"'})
    return [
        f"# session {sess['name']}, recorded as:",
        _comment(rec["run"].get("line") or shlex.join(argv)),
        "# replayed with the replay server in place of dockmagic's agent (one interpreter: "
        "state carries over)",
        f'{var}="dockmagic-replay-{sess["name"]}-$$"',
        f"{cmd} >/dev/null || {{ echo 'dockmagic replay: session {sess['name']} did not "
        "start' >&2; exit 125; }",
        f'DM_SESSIONS+=("${var}")',
    ]


def build_script(entries: Iterable[Mapping], *, source: str = "the notebook",
                 version: str = "") -> str:
    """The replay script (see the module doc) for ENTRIES, in the order given."""
    entries = [e for e in entries if e.get("record")]
    if not entries:
        raise ExportError("no container cells to export: no dockmagic records here (run the "
                          "notebook's %%docker cells first, or use --from-notebook PATH.ipynb)")
    engines = {f"{(e['record'].get('engine') or {}).get('name')} "
               f"({(e['record'].get('engine') or {}).get('endpoint')})" for e in entries}
    out = [_HEADER.format(source=source, version=version, engine=", ".join(sorted(engines)),
                          server=REPLAY_SERVER.strip("\n"), client=REPLAY_CLIENT.strip("\n"))]
    started = set()
    for pos, entry in enumerate(entries, 1):
        rec, body = entry["record"], entry.get("body") or ""
        kind, label = rec.get("kind"), _label(rec, pos)
        image = rec.get("image") or {}
        out.append("")
        out.append(f"# --- {label} ({kind}), ran {rec.get('started')}, "
                   f"{image.get('named')} = {image.get('digest')}, recorded exit "
                   f"{rec.get('exit_code') if rec.get('status') != 'started' else 'started'}")
        if entry.get("edited"):
            out.append("# NOTE: this cell's text changed after it ran (its hash differs from "
                       "the record); the text below is the current one")
        if rec.get("status") in ("interrupted", "error"):
            out.append(f"# skipped: it was {rec.get('status')} when recorded (it did not run to "
                       "its end)" if rec.get("status") == "interrupted" else
                       "# skipped: its container did not start when recorded")
            continue
        moved = [t["name"] for side in ("in", "out") for t in (rec.get("transfers") or {})
                 .get(side, ())]
        if moved:
            out.append(f"# skipped: --in/--out ({', '.join(moved)}) move variables between a "
                       "Jupyter kernel and the container; outside a kernel there are none to "
                       "move, so this cell is not replayable here")
            continue
        word = _delimiter(body, f"CELL_{pos}")
        raises = 1 if rec.get("raise_error", True) else 0
        want = rec.get("exit_code") or 0
        if kind == "session":
            sess = rec["session"]
            if sess.get("container") not in started:
                try:
                    out += _session_start(rec)
                except ExportError as exc:
                    out.append("# skipped: " + str(exc))
                    continue
                started.add(sess.get("container"))
            var = _var(sess["name"])
            interp = list(sess.get("cell_interpreter") or ())
            spec = _parse(provenance.run_argv(rec))
            python = (spec.entrypoint or spec.command or ("python3",))[0]
            if not interp or interp[0].startswith("python"):
                cmd = f'docker exec -i "${var}" {shlex.quote(python)} -u -c "$DM_REPLAY_CLIENT"'
            else:
                cmd = f'docker exec -i "${var}" {shlex.join(interp)}'
            out.append(f"{cmd} <<'{word}'")
            out.append(_heredoc(body, word))
            out.append(f'dm_check $? {want} {raises} "{label}"')
            continue
        spec = dataclasses.replace(_parse(provenance.run_argv(rec)), image=pinned_ref(rec))
        if kind == "detached":
            spec = dataclasses.replace(spec, detach=False)
            out.append("# a `docker run -d` cannot read its body on stdin: it runs in the "
                       "background instead; its output is in `docker logs`")
            out.append(f"{shlex.join(['docker', 'run'] + spec.to_cli())} >/dev/null 2>&1 "
                       f"<<'{word}' &")
            out.append(_heredoc(body, word))
            out.append("DM_JOBS=$((DM_JOBS + 1))")
            continue
        out.append(f"{shlex.join(['docker', 'run'] + spec.to_cli())} <<'{word}'")
        out.append(_heredoc(body, word))
        out.append(f'dm_check $? {want} {raises} "{label}"')
    out.append("")
    return "\n".join(out)


# -- compose ----------------------------------------------------------------------------------------
def _q(value) -> str:
    """A YAML scalar: JSON's double-quoted strings are valid YAML."""
    return json.dumps(value)


def _service(rec: Mapping) -> List[str]:
    sess = rec["session"]
    spec = _parse(provenance.run_argv(rec))
    lines = [f"  {_q(sess['name'])}:", f"    image: {_q(pinned_ref(rec))}",
             f"    # {rec['image'].get('named')}, session started by: "
             f"{(rec['run'].get('line') or '').replace(chr(10), ' ')}",
             "    stdin_open: true"]
    if spec.entrypoint is not None:
        lines.append(f"    entrypoint: {_q(list(spec.entrypoint))}")
    if spec.command:
        lines.append(f"    command: {_q(list(spec.command))}")
    scalars = (("user", spec.user), ("working_dir", spec.workdir), ("hostname", spec.hostname),
               ("network_mode", spec.network_mode), ("ipc", spec.ipc_mode),
               ("runtime", spec.runtime), ("platform", spec.platform),
               ("stop_signal", spec.stop_signal), ("cpuset", spec.cpuset_cpus),
               ("shm_size", spec.shm_size), ("mem_limit", spec.mem_limit),
               ("memswap_limit", spec.memswap_limit), ("pids_limit", spec.pids_limit),
               ("mem_swappiness", spec.mem_swappiness))
    for key, value in scalars:
        if value is not None:
            lines.append(f"    {key}: {_q(value)}")
    if spec.nano_cpus is not None:
        lines.append(f"    cpus: {spec.nano_cpus / 1e9}")
    for key, on in (("init", spec.init), ("privileged", spec.privileged),
                    ("read_only", spec.read_only)):
        if on:
            lines.append(f"    {key}: true")
    if spec.init is None:
        lines.append("    init: true")  # dockmagic starts sessions with tini
    lists = (("environment", list(spec.env)), ("volumes", list(spec.volumes)),
             ("cap_add", list(spec.cap_add)), ("cap_drop", list(spec.cap_drop)),
             ("extra_hosts", list(spec.extra_hosts)), ("group_add", list(spec.group_add)),
             ("security_opt", list(spec.security_opt)),
             ("ports", [p.to_cli() for p in spec.ports]),
             ("tmpfs", [f"{p}:{o}" if o else p for p, o in spec.tmpfs]),
             ("devices", [f"{d.path_on_host}:{d.path_in_container}:{d.cgroup_permissions}"
                          for d in spec.devices]))
    for key, values in lists:
        if values:
            lines.append(f"    {key}:")
            lines += [f"      - {_q(v)}" for v in values]
    if spec.mounts:
        lines.append("    volumes:" if not spec.volumes else "    # --mount entries:")
        for m in spec.mounts:
            item = {"type": m.type, "target": m.target}
            if m.source:
                item["source"] = m.source
            if m.read_only:
                item["read_only"] = True
            lines.append(f"      - {_q(item)}")
    if spec.labels:
        lines.append("    labels:")
        lines += [f"      {_q(k)}: {_q(v)}" for k, v in spec.labels]
    if spec.sysctls:
        lines.append("    sysctls:")
        lines += [f"      {_q(k)}: {_q(v)}" for k, v in spec.sysctls]
    if spec.ulimits:
        lines.append("    ulimits:")
        lines += [f"      {_q(u.name)}: {{soft: {u.soft}, hard: {u.hard}}}" for u in spec.ulimits]
    if spec.gpus:
        lines += ["    deploy:", "      resources:", "        reservations:", "          devices:"]
        for g in spec.gpus:
            item = {"driver": g.driver or "nvidia", "capabilities": list(g.capabilities[0])}
            if g.device_ids:
                item["device_ids"] = list(g.device_ids)
            else:
                item["count"] = "all" if g.count == -1 else g.count
            lines.append(f"            - {_q(item)}")
    missing = [flag for flag, on in (("--restart", spec.restart_policy), ("-P",
               spec.publish_all_ports), ("--device (CDI)", spec.cdi_devices),
               ("--security-opt systempaths=unconfined", spec.systempaths_unconfined)) if on]
    if missing:
        lines.append(f"    # not written here: {', '.join(missing)} (see the session line above)")
    return lines


def build_compose(entries: Iterable[Mapping], *, source: str = "the notebook",
                  version: str = "") -> str:
    """`compose.yaml` with one service per session the records name (the latest record of each
    wins), running the session's interpreter with stdin open, as `docker run -i` would; reach
    it with `docker compose exec NAME python3`."""
    sessions = {}
    for entry in entries:
        rec = entry.get("record") or {}
        if rec.get("kind") == "session" and provenance.run_argv(rec):
            sessions[rec["session"]["name"]] = rec
    if not sessions:
        raise ExportError("no session containers to export: compose.yaml holds the sessions "
                          "(`%docker session NAME IMAGE`) that cells ran in")
    out = [f"# Session containers of {source}, as dockmagic {version} recorded them.",
           "# Images are pinned by digest (or image ID, for images only the recording engine "
           "has).", "services:"]
    for name in sorted(sessions):
        out += _service(sessions[name])
    return "\n".join(out) + "\n"


def pair_bodies(found: Iterable[Mapping]) -> List[dict]:
    """`records_from_notebook` entries -> export entries, each marked `edited` when the cell's
    text is no longer what ran."""
    entries = []
    for item in found:
        rec, body = item["record"], item["body"]
        entries.append({"record": rec, "body": body,
                        "edited": rec.get("body_sha256") not in (None, provenance.body_sha256(body))})
    return entries


def summarize(entries: Sequence[Mapping]) -> str:
    """One line: how many cells the script replays, and how many it skips."""
    n = len(entries)
    skipped = sum(1 for e in entries if any((e["record"].get("transfers") or {}).get(s)
                                            for s in ("in", "out")))
    return f"{n - skipped} container cells replayed" + (
        f", {skipped} skipped (--in/--out)" if skipped else "")

