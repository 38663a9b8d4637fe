"""Networking flags: ``-p/--publish`` (port bindings), ``--add-host`` and ``--network/--net``."""
from __future__ import annotations

import re
from typing import List, Tuple

from .errors import TranslateError
from .gocompat import _csv_record, _is_ip
from .spec import PortBinding


def _parse_port_range(text: str) -> Tuple[int, int]:
    def port(p: str) -> int:
        if not re.fullmatch(r"[0-9]+", p, re.ASCII) or int(p) > 65535:
            raise ValueError
        return int(p)
    if not text:
        raise ValueError
    if "-" not in text:
        n = port(text)
        return n, n
    parts = text.split("-")
    start, end = port(parts[0]), port(parts[1])
    if end < start:
        raise ValueError
    return start, end


def _parse_publish(value: str) -> List[PortBinding]:
    """``-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`` or ``published=,target=,protocol=``."""
    what = f"-p {value!r}"
    spec = value
    if "=" in value:
        params = {"protocol": "tcp"}
        for param in value.split(","):
            k, eq, v = param.partition("=")
            if not eq or not k:
                raise TranslateError(f"{what}: {param!r} should be name=value "
                                     f"(published=8080,target=80)")
            params[k] = v
        spec = f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"
    parts = spec.split(":")
    if len(parts) == 1:
        ip, host_port, ctr = "", "", parts[0]
    elif len(parts) == 2:
        ip, host_port, ctr = "", parts[0], parts[1]
    else:
        ip, host_port, ctr = ":".join(parts[:-2]), parts[-2], parts[-1]
    pp = ctr.split("/")
    if not ctr or not pp[0]:
        raise TranslateError(f"{what}: no container port given")
    port, proto = pp[0], (pp[1] if len(pp) > 1 and pp[1] else "tcp")
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise TranslateError(f"{what}: invalid protocol {proto!r} (tcp, udp or sctp)")
    if ip.startswith("["):
        m = re.fullmatch(r"\[([^\[\]]*)\]", ip)
        if not m:
            raise TranslateError(f"{what}: invalid IP address {ip!r}")
        ip = m.group(1)
    if ip and not _is_ip(ip):
        raise TranslateError(f"{what}: invalid IP address {ip!r}")
    try:
        start, end = _parse_port_range(port)
    except ValueError:
        raise TranslateError(f"{what}: invalid container port {port!r}") from None
    hstart = hend = 0
    if host_port:
        try:
            hstart, hend = _parse_port_range(host_port)
        except ValueError:
            raise TranslateError(f"{what}: invalid host port {host_port!r} (write "
                                 f"IP:HOSTPORT:CONTAINERPORT to give an address)") from None
        if end - start != hend - hstart and end != start:
            raise TranslateError(f"{what}: the container and host port ranges differ in length")
    out = []
    for i in range(end - start + 1):
        hp = ""
        if host_port:
            hp = str(hstart + i)
            if start == end and hstart != hend:
                hp += f"-{hend}"
        out.append(PortBinding(f"{start + i}/{proto}", ip, hp))
    return out


def _parse_extra_host(value: str) -> str:
    """``--add-host HOST:IP`` / ``HOST=IP`` -> ``HOST:IP`` (brackets dropped, as the CLI does)."""
    what = f"--add-host {value!r}"
    host, sep, addr = value.partition("=")
    if not sep:
        host, sep, addr = value.partition(":")
    if not sep or not host or ":" in host:
        raise TranslateError(f"{what}: give HOST:IP or HOST=IP")
    if addr != "host-gateway":
        if len(addr) > 2 and addr[0] == "[" and addr[-1] == "]":
            addr = addr[1:-1]
        if not _is_ip(addr.strip(" \t\n\r\v\f")):
            raise TranslateError(f"{what}: {addr!r} is not an IP address (or host-gateway)")
    return f"{host}:{addr}"


_NETWORK_LONG = re.compile(r"\w+=\w+", re.ASCII)


def _parse_network(value: str) -> str:
    """``--network/--net NAME`` (or the long form with only ``name=``)."""
    what = f"--network {value!r}"
    target = value
    if _NETWORK_LONG.search(value):
        target = ""
        for fld, _q in _csv_record(value, what):
            key, eq, val = fld.partition("=")
            if not eq or not key:
                raise TranslateError(f"{what}: invalid field {fld!r}")
            key, val = key.strip(), val.strip()
            if key == "name":
                target = val
            elif key in ("alias", "ip", "ip6", "driver-opt", "gw-priority", "mac-address",
                         "link-local-ip"):
                raise TranslateError(f"{what}: the {key}= option is not supported by dockmagic; "
                                     f"give only the network name")
            else:
                raise TranslateError(f"{what}: invalid field key {key!r}")
        if not target:
            raise TranslateError(f"{what}: no network name given (name=NAME)")
    if not target.strip():
        raise TranslateError(f"{what}: no network name given")
    return target
