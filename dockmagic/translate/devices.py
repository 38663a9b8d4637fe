"""``--device``: host device paths (``DeviceMapping``) and CDI names (``vendor.com/class=name``)."""
from __future__ import annotations

from .errors import TranslateError
from .gocompat import _clean
from .spec import DeviceMapping


def _valid_device_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def _cdi_name_part(name: str, extra: str, what: str) -> bool:
    if len(name) == 1:  # the CLI's CDI parser panics on these
        raise TranslateError(f"{what}: a CDI device name needs a vendor and class of at least two "
                             f"characters (vendor.com/class=name)")
    inner_ok = all(c.isascii() and (c.isalnum() or c in extra) for c in name[1:-1])
    return inner_ok and name[-1].isascii() and name[-1].isalnum()


def _is_cdi(device: str) -> bool:
    """CDI ``IsQualifiedName``: ``vendor.com/class=name``."""
    if not device or device[0] == "/":
        return False
    qual, eq, name = device.partition("=")
    if not eq or not qual or not name:
        return False
    vendor, slash, klass = qual.partition("/")
    if not slash or not vendor or not klass:
        return False
    what = f"--device {device!r}"
    for part in (vendor, klass):
        if not (part[0].isascii() and part[0].isalpha()):
            return False
        if not _cdi_name_part(part, "_-.", what):
            return False
    if not (name[0].isascii() and name[0].isalnum()):
        return False
    return len(name) == 1 or (all(c.isascii() and (c.isalnum() or c in "_-.:")
                                  for c in name[1:-1]) and name[-1].isascii()
                              and name[-1].isalnum())


def _parse_device(value: str) -> DeviceMapping:
    """``--device HOST[:CONTAINER][:PERMS]`` (CDI names are caught earlier by ``_is_cdi``)."""
    what = f"--device {value!r}"
    if value.count(":") > 2 or value.split(":", 1)[0] == "":
        raise TranslateError(f"{what}: give HOST[:CONTAINER][:PERMS], e.g. /dev/fuse or "
                             f"/dev/nvidia0:/dev/nvidia0:rwm")
    parts = value.split(":")
    perms = "rwm"
    if len(parts) == 1:
        host = ctr = _clean(parts[0])
        check = parts[0]
    elif len(parts) == 2:
        if _valid_device_mode(parts[1]):
            host = ctr = _clean(parts[0])
            perms, check = parts[1], parts[0]
        else:
            host, ctr, check = parts[0], _clean(parts[1]), parts[1]
    else:
        if not _valid_device_mode(parts[2]):
            raise TranslateError(f"{what}: bad permissions {parts[2]!r} (a set of r, w, m)")
        host, ctr, perms, check = parts[0], parts[1], parts[2], parts[1]
    if not check.startswith("/"):
        raise TranslateError(f"{what}: {check!r} is not an absolute path")
    return DeviceMapping(host, ctr, perms)
