"""What the notebook folder sync leaves out: `.git`, and what `.dockerignore` / `.gitignore`
name. Pure (stdlib `re`), so the same rules pick the files the scan lists and rsync sends.

`.gitignore` files apply in their own folder and below, with git's rules: a pattern without a
slash (other than a trailing one) matches a name at any depth; one with a slash is anchored to
its file's folder; a trailing `/` matches folders only; `*`, `?`, `[...]` and `**`; `!` re-includes;
the last match wins; nothing inside an ignored folder is looked at again. The root
`.dockerignore` uses docker's rules: every pattern is anchored at the root (a leading `/` or
`./` changes nothing), and a pattern that matches a folder covers everything in it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence

#: Never synced, whatever the ignore files say.
ALWAYS_SKIP = (".git",)


@dataclass(frozen=True)
class Rule:
    regex: "re.Pattern"
    negate: bool
    dir_only: bool
    source: str  # the line as written, for messages


def _translate(pat: str) -> str:
    """A glob (git/docker flavour) -> a regex over a relative path (no anchors)."""
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pat.find("]", i + 2 if pat[i + 1:i + 2] in ("!", "^") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:j]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _clean_line(raw: str) -> str:
    line = raw.rstrip("\n").rstrip("\r")
    if not line or line.startswith("#"):
        return ""
    # trailing spaces are dropped unless escaped
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "
    return stripped


def parse_gitignore(text: str, base: str = "") -> List[Rule]:
    """A `.gitignore` found in folder BASE (relative to the root, '' for the root)."""
    rules = []
    prefix = re.escape(base.strip("/") + "/") if base.strip("/") else ""
    for raw in text.splitlines():
        line = _clean_line(raw)
        if not line:
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        elif line.startswith("\\!") or line.startswith("\\#"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        body = _translate(line)
        regex = "^" + prefix + ("" if anchored else "(?:.*/)?") + body + "$"
        rules.append(Rule(re.compile(regex, re.S), negate, dir_only, raw.strip()))
    return rules


def parse_dockerignore(text: str) -> List[Rule]:
    """The root `.dockerignore` (docker's rules: anchored at the root)."""
    rules = []
    for raw in text.splitlines():
        line = _clean_line(raw).strip()
        if not line:
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        while line.startswith("./"):
            line = line[2:]
        line = line.strip("/")
        if not line or line == ".":
            continue
        regex = "^" + _translate(line) + "$"
        rules.append(Rule(re.compile(regex, re.S), negate, False, raw.strip()))
    return rules


def is_ignored(rel: str, is_dir: bool, rules: Sequence[Rule]) -> bool:
    """Whether REL (a path relative to the root, '/'-separated) is left out: the last matching
    rule wins. The caller does not descend into ignored folders."""
    name = rel.rsplit("/", 1)[-1]
    if name in ALWAYS_SKIP:
        return True
    ignored = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.regex.match(rel):
            ignored = not rule.negate
    return ignored


def rsync_literal(rel: str) -> str:
    """A path as an rsync filter pattern that matches only itself (anchored)."""
    return "/" + re.sub(r"([\\*?\[])", r"\\\1", rel)
