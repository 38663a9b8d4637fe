"""What ran: the provenance record of one container cell, built from plain data. Pure (stdlib).

Every one-shot, detached and session cell attaches one record to its output as display metadata
under the key ``dockmagic`` (``KEY``), so it is saved in the .ipynb and survives nbclient and
nbconvert. A person sees one short line of it (``summary_line``); ``%docker history`` and
``%docker export`` read the rest. The I/O that gathers the facts (engine, image inspect, times)
lives in ``recording.py``; this module only shapes them.

A record (``SCHEMA`` 1) is a JSON object::

    schema, dockmagic (version), kind ("oneshot" | "detached" | "session"), cell (execution
    count), line (the magic line as typed), body_sha256, raise_error,
    engine {name, endpoint, id, version},
    image {named, ref (what the engine was asked for: the pin when pinned), id (image ID),
           repo_digest (REPO@sha256:... or null), digest (repo_digest, else id), pinned},
    run {line}: the `docker run ...` line that ran, shell-quoted (what --dry-run prints);
        ``run_argv(record)`` splits it back into the argv, exactly,
    interpreter [...],
    session {name, container, cell_interpreter, agent} (session cells only; `run` is the
             session's planned `docker run`; `agent` says what dockmagic changed in it to run its
             agent: main process, --init, -d, added labels and mounts),
    container {id, name},
    gpus [{request, index, uuid, model}],
    started, ended (UTC, ISO 8601 with Z), duration_s, exit_code, status,
    peak_memory {bytes, source} (null where the engine reports none),
    transfers {in: [{name, bytes}], out: [{name, bytes}]}
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import shlex
from typing import Iterable, List, Mapping, Optional, Sequence

KEY = "dockmagic"
SCHEMA = 1


# -- small builders --------------------------------------------------------------------------------
def to_utc(timestamp: Optional[float]) -> Optional[str]:
    """Seconds since the epoch -> `2026-11-30T08:01:02.123456Z`."""
    if timestamp is None:
        return None
    when = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def body_sha256(body: str) -> str:
    """SHA-256 of a cell body, trailing newlines aside (IPython hands a cell magic its body with
    one added; the saved notebook's source has none)."""
    return hashlib.sha256(body.rstrip("\n").encode("utf-8")).hexdigest()


def split_repo(named: str) -> str:
    """`host:5000/a/b:tag` -> `host:5000/a/b`; `a@sha256:..` -> `a` (the repository part)."""
    ref = named.split("@", 1)[0]
    head, sep, tail = ref.rpartition(":")
    if sep and "/" not in tail:
        ref = head
    return ref


def _normal_repo(repo: str) -> str:
    # `busybox` and `docker.io/library/busybox` are one repository to the engine.
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
    return repo


def to_image_facts(named: str, image_info: Optional[Mapping], ref: Optional[str] = None,
                   pinned: bool = False) -> dict:
    """An image's record part from its `docker image inspect` (None: not known)."""
    info = image_info or {}
    image_id = info.get("Id")
    repo_digest = pick_repo_digest(named, info.get("RepoDigests") or ())
    return {"named": named, "ref": ref or named, "id": image_id, "repo_digest": repo_digest,
            "digest": repo_digest or image_id, "pinned": bool(pinned)}


def pick_repo_digest(named: str, repo_digests: Sequence[str]) -> Optional[str]:
    """The RepoDigest of NAMED's own repository (an image can carry others' too), else None."""
    if not repo_digests:
        return None
    if "@" in named and not named.startswith("sha256:"):
        return named if named in repo_digests else None
    want = _normal_repo(split_repo(named))
    for rd in repo_digests:
        if _normal_repo(rd.split("@", 1)[0]) == want:
            return rd
    return None


def to_pin(named: str, image_info: Mapping) -> str:
    """The reference that keeps meaning this image when the tag moves: REPO@sha256:... where the
    image has a RepoDigest of NAMED's repository, else its image ID (`sha256:...`), which
    `docker run` takes as an image reference too (images built or committed here have no
    RepoDigest until they are pushed)."""
    return pick_repo_digest(named, info_digests(image_info)) or image_info["Id"]


def info_digests(image_info: Mapping) -> Sequence[str]:
    return image_info.get("RepoDigests") or ()


def to_gpus(requests: Iterable[Mapping], devices: Optional[Sequence[Mapping]] = None) -> List[dict]:
    """GPUs granted. REQUESTS are the spec's `--gpus` values as {request (CLI text), count
    (-1: all), device_ids}; DEVICES are the GPUs NVML knows ({index, uuid, model}) where there
    is a driver. Without one, the request alone is recorded, index/uuid/model left null where
    unknown: not guessed."""
    rows = []
    devices = list(devices or ())
    for req in requests:
        text, ids = req.get("request"), list(req.get("device_ids") or ())
        if not ids:  # `all` or a count: which ones is the runtime's choice, in index order
            count = req.get("count", 1)
            picked = devices if count == -1 else devices[:count]
            if not picked:
                rows.append({"request": text, "index": None, "uuid": None, "model": None})
            rows += [{"request": text, **_gpu(d)} for d in picked]
            continue
        for ident in ids:
            match = next((d for d in devices if str(d.get("index")) == ident
                          or d.get("uuid") == ident), None)
            if match is not None:
                rows.append({"request": text, **_gpu(match)})
            elif ident.isdigit():
                rows.append({"request": text, "index": int(ident), "uuid": None, "model": None})
            else:
                rows.append({"request": text, "index": None, "uuid": ident, "model": None})
    return rows


def _gpu(d: Mapping) -> dict:
    return {"index": d.get("index"), "uuid": d.get("uuid"), "model": d.get("model")}


def build_record(*, version: str, kind: str, cell, line: Optional[str], body: str,
                 engine: Mapping, image: Mapping, run_argv: Optional[Sequence[str]],
                 interpreter: Sequence[str],
                 started: float, ended: Optional[float], exit_code: Optional[int], status: str,
                 container: Optional[Mapping] = None, gpus: Sequence[Mapping] = (),
                 peak_memory: Optional[Mapping] = None, transfers: Optional[Mapping] = None,
                 session: Optional[Mapping] = None, raise_error: bool = True,
                 run_line: Optional[str] = None) -> dict:
    """One record, JSON-ready. RUN_ARGV is the full `docker run ...` argv that ran (None: not
    known, a session started before this kernel); RUN_LINE its shell-quoted form, if already
    made."""
    if run_line is None and run_argv is not None:
        run_line = shlex.join(run_argv)
    rec = {
        "schema": SCHEMA,
        "dockmagic": version,
        "kind": kind,
        "cell": cell,
        "line": line,
        "body_sha256": body_sha256(body),
        "raise_error": bool(raise_error),
        "engine": dict(engine),
        "image": dict(image),
        "run": {"line": run_line},
        "interpreter": list(interpreter),
        "container": dict(container or {}),
        "gpus": [dict(g) for g in gpus],
        "started": to_utc(started),
        "ended": to_utc(ended),
        "duration_s": None if ended is None else round(ended - started, 6),
        "exit_code": exit_code,
        "status": status,
        "peak_memory": dict(peak_memory) if peak_memory else None,
        "transfers": {"in": list((transfers or {}).get("in", ())),
                      "out": list((transfers or {}).get("out", ()))},
    }
    if session is not None:
        rec["session"] = dict(session)
    return rec


def run_argv(record: Mapping) -> Optional[List[str]]:
    """The recorded `docker run` argv (`shlex.split` undoes `shlex.join` exactly)."""
    line = (record.get("run") or {}).get("line")
    return shlex.split(line) if line else None


# -- what a person sees ----------------------------------------------------------------------------
def to_short_digest(image: Mapping) -> str:
    """`named@sha256:0123456789ab` (12 hex digits), or the name when nothing was resolved."""
    digest = image.get("digest") or ""
    named = image.get("named") or image.get("ref") or "?"
    if not digest:
        return named
    hexpart = digest.rsplit("sha256:", 1)[-1][:12]
    return f"{named}@sha256:{hexpart}"


def to_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def to_exit(record: Mapping) -> str:
    status = record.get("status")
    if status in ("started", "interrupted", "error"):
        return status
    code = record.get("exit_code")
    return "-" if code is None else str(code)


def to_gpu_text(gpus: Sequence[Mapping]) -> str:
    if not gpus:
        return "-"
    parts = []
    for g in gpus:
        if g.get("index") is not None:
            parts.append(str(g["index"]))
        elif g.get("uuid"):
            parts.append(str(g["uuid"])[:12])
        else:
            parts.append(str(g.get("request")))
    return ",".join(dict.fromkeys(parts))


def summary_line(record: Mapping) -> str:
    """The one short line a person sees; the rest of the record is metadata."""
    where = record.get("session", {}).get("name") if record.get("kind") == "session" else None
    head = f"@{where} " if where else ""
    engine = (record.get("engine") or {}).get("name") or "?"
    text = (f"dockmagic: {head}{to_short_digest(record.get('image') or {})} on {engine}, "
            f"exit {to_exit(record)}, {to_duration(record.get('duration_s'))}")
    gpus = to_gpu_text(record.get("gpus") or ())
    return text + (f", GPUs {gpus}" if gpus != "-" else "")


def to_summary_html(line: str) -> str:
    """The summary line as a notebook shows it: small and grey, under the cell's output."""
    return (f"<div class='dockmagic-summary' style='font-size:smaller;opacity:0.7'>"
            f"{html.escape(line)}</div>")


HISTORY_COLUMNS = ("cell", "image@digest", "engine", "GPUs", "exit", "duration")


def to_history_rows(records: Iterable[Mapping]) -> List[tuple]:
    """`%docker history`: one row per record, in the order given."""
    rows = []
    for rec in records:
        kind = rec.get("kind")
        cell = "-" if rec.get("cell") is None else str(rec.get("cell"))
        if kind == "session":
            cell += f" @{(rec.get('session') or {}).get('name', '?')}"
        elif kind == "detached":
            cell += " -d"
        rows.append((cell, to_short_digest(rec.get("image") or {}),
                     (rec.get("engine") or {}).get("name") or "?",
                     to_gpu_text(rec.get("gpus") or ()), to_exit(rec),
                     to_duration(rec.get("duration_s"))))
    return rows


# -- reading a saved notebook ----------------------------------------------------------------------
def parse_notebook(text: str) -> dict:
    try:
        nb = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a notebook (.ipynb is JSON): {exc}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a notebook: it has no list of cells")
    return nb


def _source(cell: Mapping) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def cell_body(source: str) -> str:
    """A `%%docker` cell's body: what follows its first line."""
    return source.split("\n", 1)[1] if "\n" in source else ""


def records_from_notebook(nb: Mapping) -> List[dict]:
    """Every record in a notebook, in notebook order, as {"index", "source", "body", "record"}
    (index: the cell's position). A cell run several times in a loop, e.g. with `%run`, can
    hold several."""
    found = []
    for i, cell in enumerate(nb.get("cells", ())):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", ()):
            rec = (out.get("metadata") or {}).get(KEY)
            if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
                source = _source(cell)
                found.append({"index": i, "source": source, "body": cell_body(source),
                              "record": rec})
    return found
