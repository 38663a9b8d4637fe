"""``--gpus``: one CSV value -> one ``GpuRequest`` (Engine API DeviceRequest)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .errors import TranslateError
from .gocompat import _csv_record, _go_atoi
from .spec import GpuRequest


def _gpu_count(text: str, value: str) -> int:
    if text == "all":
        return -1
    try:
        return _go_atoi(text)
    except ValueError:
        raise TranslateError(f"--gpus {value!r}: invalid count {text!r}; give all, a number, "
                             f"device=IDS, count=, driver=, capabilities= or options=") from None


def parse_gpus(value: str) -> GpuRequest:
    """Parse one ``--gpus`` value exactly as the CLI does (a CSV record of ``key=value`` fields
    and a bare count), with one departure: unquoted ``device=0,1`` means devices 0 and 1 (the CLI
    would read device 0 plus count 1). Examples: ``all``, ``2``, ``device=0,1``,
    ``'"device=GPU-3a2..."'``, ``all,capabilities=utility``, ``count=2,driver=nvidia``."""
    if not isinstance(value, str):
        raise TranslateError(f"--gpus {value!r}: give a string such as all, 2 or device=0,1")
    what = f"--gpus {value!r}"
    fields = _csv_record(value, what)
    seen = set()
    driver, count = "", None
    device_ids: Optional[List[str]] = None
    caps: Optional[Tuple[Tuple[str, ...], ...]] = None
    options: Optional[Dict[str, str]] = None
    i = 0
    while i < len(fields):
        fld, quoted = fields[i]
        i += 1
        key, eq, val = fld.partition("=")
        if key in seen:
            raise TranslateError(f"{what}: {key!r} can be given only once")
        seen.add(key)
        if not eq:
            seen.add("count")
            count = _gpu_count(key, value)
        elif key == "driver":
            driver = val
        elif key == "count":
            count = _gpu_count(val, value)
        elif key == "device":
            device_ids = val.split(",")
            if not quoted:  # the departure: device=0,1 -> both devices
                while i < len(fields) and fields[i][0] and "=" not in fields[i][0]:
                    device_ids.append(fields[i][0])
                    i += 1
        elif key == "capabilities":
            caps = (tuple(val.split(",")) + ("gpu",),)
        elif key == "options":
            opts = _csv_record(val, f"{what}: options")
            options = {}
            for o, _q in opts:
                k, _, v = o.partition("=")
                options[k] = v
        else:
            raise TranslateError(f"{what}: unknown key {key!r} (keys: count, device, driver, "
                                 f"capabilities, options)")
    if count is None:
        count = 0 if device_ids is not None else 1
    return GpuRequest(driver=driver, count=count, device_ids=tuple(device_ids or ()),
                      capabilities=caps if caps is not None else (("gpu",),),
                      options=tuple(sorted((options or {}).items())))
