"""`%docker engines [add NAME URL [--tls*] | add NAME --context CTX | rm NAME]` (thin)."""
from __future__ import annotations

import argparse
from typing import Callable, Optional, Sequence

from . import store, table, urls

USAGE = ("%docker engines                      list engines (reachable, version, GPUs, RTT)\n"
         "%docker engines add NAME URL         ssh://[user@]host[:port] (an ~/.ssh/config alias "
         "works) or tcp://host:port [--tlsverify --tlscacert F --tlscert F --tlskey F]\n"
         "%docker engines add NAME --context CTX   reuse a docker CLI context\n"
         "%docker engines rm NAME              forget one (and remove your workspace volumes "
         "on a tcp:// engine)")


class EnginesUsage(ValueError):
    """A mistake in an `%docker engines` line; shown as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise EnginesUsage(f"%docker engines add: {message}; usage:\n{USAGE}")


def _add_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="%docker engines add", add_help=False)
    p.add_argument("name")
    p.add_argument("url", nargs="?")
    p.add_argument("--context")
    p.add_argument("--tlsverify", action="store_true")
    for key in ("--tlscacert", "--tlscert", "--tlskey"):
        p.add_argument(key)
    return p


def engines_command(args: Sequence[str], *, default: Optional[str] = None,
                    say: Callable[[str], None] = print):
    """Returns what the cell shows (the table), or None after saying what was done."""
    args = list(args)
    if not args or args == ["ls"] or args == ["list"]:
        return table.EnginesTable(table.query_engines(default))
    if args[0] in ("-h", "--help", "help"):
        say(USAGE)
        return None
    sub, rest = args[0], args[1:]
    try:
        if sub == "add":
            ns = _add_parser().parse_args(rest)
            tls = {k: v for k, v in (("tlscacert", ns.tlscacert), ("tlscert", ns.tlscert),
                                     ("tlskey", ns.tlskey)) if v}
            if ns.tlsverify:
                tls["tlsverify"] = "1"
            if ns.context:
                if ns.url or tls:
                    raise EnginesUsage("%docker engines add NAME --context CTX takes no URL or "
                                       "--tls* options (the context has them)")
                ep = store.endpoint_from_context(ns.name, ns.context)
            elif not ns.url:
                raise EnginesUsage(f"%docker engines add {ns.name} needs a URL "
                                   "(ssh://[user@]host[:port] or tcp://host:port) or --context CTX")
            else:
                ep = urls.parse_endpoint(ns.name, ns.url, tls)
            store.add_engine(ep)
            from .engines import forget
            forget(ep.name)  # a changed address takes effect at once
            row = table.probe(ep.name, ep.url)
            state = (f"reachable, Docker {row.version}, {row.running} running, "
                     f"RTT {row.rtt_ms:.1f} ms" if row.reachable
                     else f"not reachable now: {row.error}")
            say(f"engine {ep.name} added ({ep.url}; saved in {store.config_path()}): {state}")
            return table.EnginesTable([row])
        if sub in ("rm", "remove"):
            if len(rest) != 1:
                raise EnginesUsage("usage: %docker engines rm NAME")
            from .engines import forget
            if store.get_engine(rest[0]).kind == "tcp":
                _remove_workspaces(rest[0], say)
            ep = store.remove_engine(rest[0])
            forget(ep.name)
            say(f"engine {ep.name} removed ({ep.url})")
            return None
    except urls.EndpointError as exc:
        raise EnginesUsage(str(exc)) from None
    raise EnginesUsage(f"%docker engines has no subcommand {sub!r}; usage:\n{USAGE}")


def _remove_workspaces(name: str, say: Callable[[str], None]):
    """A tcp:// engine keeps the notebook folders' workspace volumes between kernels: forgetting
    the engine removes this user's there (when it answers; else says how to later)."""
    from .. import errors, spare
    from .engines import get_engine
    from .volume import remove_workspaces
    later = ("later: docker -H URL volume rm $(docker -H URL volume ls -q --filter "
             "label=dockmagic.workspace=1)")
    import threading
    rows = []
    probing = threading.Thread(target=lambda: rows.append(table.probe(
        name, store.get_engine(name).url)), daemon=True)
    probing.start()
    probing.join(6.0)  # a host that drops packets: not the engine client's long timeout
    if not rows or not rows[0].reachable:
        say(f"engine {name}: workspace volumes not removed (not reachable now); {later}")
        return
    spare.SPARES.discard()  # a ready spare for that engine mounts the volume
    try:
        gone = remove_workspaces(get_engine(name))
    except errors.DockmagicError as exc:
        say(f"engine {name}: workspace volumes not removed ({exc}); {later}")
        return
    if gone:
        say(f"engine {name}: removed workspace volume{'s' if len(gone) > 1 else ''} "
            + ", ".join(gone))
