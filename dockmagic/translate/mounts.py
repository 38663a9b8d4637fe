"""``--mount``: one CSV record of ``key=value`` fields -> one ``Mount``."""
from __future__ import annotations

from typing import Dict

from .errors import TranslateError
from .gocompat import _abs, _csv_record, _go_bool, _go_parse_int
from .quantities import parse_size
from .spec import Mount


_MOUNT_BOOL_KEYS = ("readonly", "ro", "volume-nocopy", "bind-nonrecursive")


def _parse_mount(value: str, cwd: str) -> Mount:
    """``--mount``: one CSV record of key=value fields (keys case-insensitive)."""
    what = f"--mount {value!r}"
    fields = _csv_record(value, what)
    m: Dict[str, object] = {"type": "volume"}
    has_bind = has_vol = has_tmpfs = has_image = readonly_recursive = False
    labels: Dict[str, str] = {}
    vopts: Dict[str, str] = {}
    for fld, _quoted in fields:
        key, eq, val = fld.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                m["read_only"] = True
            elif key == "volume-nocopy":
                m["volume_nocopy"], has_vol = True, True
            elif key == "bind-nonrecursive":
                m["bind_nonrecursive"], has_bind = True, True
            else:
                raise TranslateError(f"{what}: field {fld!r} must be key=value")
            continue
        if key == "type":
            m["type"] = val.lower()
        elif key in ("source", "src"):
            m["source"] = _abs(val, cwd) if val.startswith(".") else val
        elif key in ("target", "dst", "destination"):
            m["target"] = val
        elif key in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
            try:
                flag = _go_bool(val, key)
            except TranslateError:
                raise TranslateError(f"{what}: invalid value for {key}: {val!r} "
                                     f"(use true or false)") from None
            if key in ("readonly", "ro"):
                m["read_only"] = flag
            elif key == "volume-nocopy":
                m["volume_nocopy"], has_vol = flag, True
            else:
                m["bind_nonrecursive"], has_bind = flag, True
        elif key == "consistency":
            m["consistency"] = val.lower()
        elif key == "bind-propagation":
            m["bind_propagation"], has_bind = val.lower(), True
        elif key == "bind-recursive":
            if val == "enabled":
                pass
            elif val == "disabled":
                m["bind_nonrecursive"], has_bind = True, True
            elif val == "writable":
                m["bind_readonly_nonrecursive"], has_bind = True, True
            elif val == "readonly":
                readonly_recursive, has_bind = True, True
            else:
                raise TranslateError(f"{what}: invalid value for bind-recursive: {val!r} (use "
                                     f"enabled, disabled, writable or readonly)")
        elif key == "volume-subpath":
            m["volume_subpath"], has_vol = val, True
        elif key == "volume-label":
            k, _, v = val.partition("=")
            if k:
                labels[k] = v
            has_vol = True
        elif key == "volume-driver":
            m["volume_driver"], has_vol = val, True
        elif key == "volume-opt":
            k, _, v = val.partition("=")
            if k:
                vopts[k] = v
            has_vol = True
        elif key == "image-subpath":
            m["image_subpath"], has_image = val, True
        elif key == "tmpfs-size":
            try:
                m["tmpfs_size"] = parse_size(val)
            except TranslateError:
                raise TranslateError(f"{what}: invalid value for tmpfs-size: {val!r} "
                                     f"(e.g. 64m)") from None
            has_tmpfs = True
        elif key == "tmpfs-mode":
            try:
                mode = _go_parse_int(val, 8, 33)
                if mode < 0 or val[:1] in "+-" or mode >= 2 ** 32:
                    raise ValueError
            except ValueError:
                raise TranslateError(f"{what}: invalid value for tmpfs-mode: {val!r} (octal, "
                                     f"e.g. 1777)") from None
            m["tmpfs_mode"], has_tmpfs = mode, True
        else:
            raise TranslateError(f"{what}: unknown key {key!r}")
    mtype = m["type"]
    if not mtype:
        raise TranslateError(f"{what}: type is required (bind, volume or tmpfs)")
    if not m.get("target"):
        raise TranslateError(f"{what}: target is required (target=/path/in/container)")
    for present, kind in ((has_vol, "volume"), (has_bind, "bind"), (has_tmpfs, "tmpfs"),
                          (has_image, "image")):
        if present and mtype != kind:
            raise TranslateError(f"{what}: cannot mix '{kind}-*' options with mount type "
                                 f"{mtype!r}")
    if m.get("bind_readonly_nonrecursive") and not m.get("read_only"):
        raise TranslateError(f"{what}: bind-recursive=writable needs readonly as well")
    if readonly_recursive:
        if not m.get("read_only"):
            raise TranslateError(f"{what}: bind-recursive=readonly needs readonly as well")
        if m.get("bind_propagation") != "rprivate":
            raise TranslateError(f"{what}: bind-recursive=readonly needs "
                                 f"bind-propagation=rprivate as well")
        raise TranslateError(f"{what}: bind-recursive=readonly is not supported by dockmagic "
                             f"(it needs Engine API 1.44)")
    m["volume_labels"] = tuple(sorted(labels.items()))
    m["volume_options"] = tuple(sorted(vopts.items()))
    return Mount(**m)  # type: ignore[arg-type]
