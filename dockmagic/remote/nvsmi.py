"""A remote host's GPUs: `nvidia-smi -q -x` text -> the record `nvml.snapshot_from_record`
takes, so `%gpus`, `auto:N` and the panel treat remote GPUs exactly like local ones. Pure.

One command over the engine's SSH connection reads the XML and, for every GPU process, its
`/proc/PID/cgroup` there (`query_command`), so processes join to the containers of *that*
host's engine (`parse_output`).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Dict, Optional, Tuple

#: Separates nvidia-smi's XML from the cgroup lines in the one command's output.
_MARK = "--dockmagic-cgroups--"

#: Runs on the remote host (POSIX sh): the XML, then "PID<TAB>cgroup lines joined by ';'".
QUERY_COMMAND = (
    "x=$(nvidia-smi -q -x 2>&1) || { printf 'nvidia-smi failed: %s\\n' \"$x\" >&2; exit 3; }; "
    "printf '%s\\n' \"$x\"; echo '" + _MARK + "'; "
    "for p in $(printf '%s' \"$x\" | sed -n 's:.*<pid>\\([0-9][0-9]*\\)</pid>.*:\\1:p' | sort -u); do "
    "printf '%s\\t' \"$p\"; tr '\\n' ';' < /proc/$p/cgroup 2>/dev/null; echo; done"
)
#: What a host without the driver answers (exit 127: no nvidia-smi).
NO_NVIDIA_SMI = 127

_UNITS = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}


def _na(reason: str = "N/A") -> dict:
    return {"nvml_error": reason}


def _text(node: Optional[ET.Element], path: str) -> Optional[str]:
    if node is None:
        return None
    found = node.find(path)
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return None if value in ("", "N/A", "[N/A]", "Not Supported", "[Not Supported]") else value


def _number(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    m = re.match(r"\s*(-?[0-9]+(?:\.[0-9]+)?)", text)
    return float(m.group(1)) if m else None


def _bytes(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)", text)
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS.get(m.group(2).lower() or "b", 1))


def _or_na(value):
    return _na() if value is None else value


def record_from_xml(xml_text: str, when: float = 0.0) -> dict:
    """`nvidia-smi -q -x` -> the snapshot record format (see `nvml.snapshot_from_record`)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        return {"time": when, "error": f"nvidia-smi's XML could not be read ({exc})"}
    devices = []
    for position, gpu in enumerate(root.findall("gpu")):
        mem = gpu.find("fb_memory_usage")
        util = gpu.find("utilization")
        power = gpu.find("gpu_power_readings")
        if power is None:
            power = gpu.find("power_readings")
        draw = _number(_text(power, "instant_power_draw") or _text(power, "power_draw")
                       or _text(power, "average_power_draw"))
        limit = _number(_text(power, "current_power_limit") or _text(power, "power_limit"))
        procs = []
        for p in gpu.findall("processes/process_info"):
            pid = _number(_text(p, "pid"))
            if pid is None:
                continue
            used = _bytes(_text(p, "used_memory"))
            procs.append({"pid": int(pid), "usedGpuMemory": used})
        util_gpu, util_mem = _number(_text(util, "gpu_util")), _number(_text(util, "memory_util"))
        temp = _number(_text(gpu, "temperature/gpu_temp"))
        devices.append({
            "index": position,
            "name": _or_na(_text(gpu, "product_name")),
            "uuid": _or_na(_text(gpu, "uuid")),
            "pci_bus_id": _or_na(_text(gpu, "pci/pci_bus_id") or gpu.get("id")),
            "memory": {"total": _or_na(_bytes(_text(mem, "total"))),
                       "used": _or_na(_bytes(_text(mem, "used"))),
                       "free": _or_na(_bytes(_text(mem, "free")))},
            "utilization": {"gpu": _or_na(None if util_gpu is None else int(util_gpu)),
                            "memory": _or_na(None if util_mem is None else int(util_mem))},
            "temperature_gpu": _or_na(None if temp is None else int(temp)),
            "power_usage_mw": _or_na(None if draw is None else int(round(draw * 1000))),
            "power_limit_mw": _or_na(None if limit is None else int(round(limit * 1000))),
            "compute_processes": procs,
            "graphics_processes": [],
        })
    cuda = _text(root, "cuda_version")
    major, _, minor = (cuda or "").partition(".")
    return {
        "time": when,
        "driver": _or_na(_text(root, "driver_version")),
        "cuda_driver": int(major) * 1000 + int(minor or 0) * 10 if major.isdigit() and
        (minor or "0").isdigit() else None,
        "devices": devices,
    }


def parse_output(text: str, when: float = 0.0) -> Tuple[dict, Dict[int, str]]:
    """The output of `QUERY_COMMAND` -> (snapshot record, {pid: /proc/PID/cgroup text})."""
    xml_text, _, rest = text.partition(_MARK)
    cgroups = {}
    for line in rest.splitlines():
        pid, tab, groups = line.partition("\t")
        if tab and pid.strip().isdigit():
            cgroups[int(pid)] = groups.replace(";", "\n")
    return record_from_xml(xml_text.strip(), when), cgroups
