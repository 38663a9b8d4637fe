"""Where an array's bytes lie in a `.npy` file, from its header alone: never unpickled.

Shared by the kernel's readers of `--out` data (`transfer` for files, `handover` for sealed
memory files), which map or read the bytes themselves."""
from __future__ import annotations

from typing import NamedTuple, Tuple


class Layout(NamedTuple):
    shape: Tuple[int, ...]
    fortran: bool
    dtype: object   # numpy.dtype
    offset: int     # the first byte of the data
    end: int        # one past the last byte of the data

    @property
    def order(self) -> str:
        return "F" if self.fortran else "C"


def read_layout(f) -> Layout:
    """The layout of the `.npy` file F (a file object at its start; left after the header).
    ValueError for a version numpy does not know or an object dtype (which only pickle
    could read)."""
    import numpy as np

    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0,
              (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran, dtype = reader(f)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    offset = f.tell()
    count = 1
    for n in shape:
        count *= n
    return Layout(tuple(shape), bool(fortran), dtype, offset, offset + count * dtype.itemsize)
