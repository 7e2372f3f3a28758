"""Reading MATLAB v5 files as ``scipy.io.loadmat`` returns them (default
options: every value an at-least-2-D array, strings as 1-element unicode
arrays, cell arrays as object arrays, structs as structured arrays).

The helpers unwrap these nestings and turn every surprise into a
:class:`DatasetError` naming the file and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import scipy.io

from .records import DatasetError


def load_mat(path: str, label: str | None = None) -> dict:
    """``scipy.io.loadmat(path)``; a missing or unreadable file raises
    DatasetError naming ``label`` (default: the path)."""
    label = label or path
    if not os.path.isfile(path):
        raise DatasetError(f"{label}: file not found (expected a MATLAB .mat file)")
    try:
        return scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for broken files
        raise DatasetError(f"{label}: not a readable MATLAB .mat file ({exc})") from exc


def get_var(mat: dict, name: str, label: str) -> np.ndarray:
    """The variable ``name`` of a loaded .mat dict, or a DatasetError."""
    if name not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{label}: variable {name!r} not found (found: {found})")
    return mat[name]


def unwrap(value):
    """Strip 1-element object/array wrappers: array([[array(['x'])]]) -> 'x' array."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def mat_str(value, label: str) -> str:
    """A MATLAB char array (as loadmat gives it) -> str."""
    value = unwrap(value)
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        return str(value.reshape(-1)[0])
    raise DatasetError(f"{label}: expected a string, found {_describe(value)}")


def mat_box(value, label: str, allow_empty: bool = False) -> np.ndarray | None:
    """A 1x4 numeric array -> float64 (4,); an empty array -> None when allowed."""
    value = unwrap(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size not in (0, 4):
        raise DatasetError(f"{label}: expected a 1x4 box (x, y, w, h), found {_describe(value)}")
    if arr.size == 0:
        if allow_empty:
            return None
        raise DatasetError(f"{label}: expected a 1x4 box (x, y, w, h), found an empty array")
    return arr.astype(np.float64).reshape(4)


def struct_items(value, label: str) -> Iterator[np.void]:
    """Iterate the elements of a struct array (or a cell array of structs),
    in MATLAB column-major order; each item supports ``item["field"]``."""
    value = np.asarray(value)
    if value.dtype.names is not None:
        yield from value.reshape(-1, order="F")
        return
    if value.dtype == object:
        for cell in value.reshape(-1, order="F"):
            yield from struct_items(cell, label)
        return
    if value.size == 0:
        return
    raise DatasetError(f"{label}: expected a struct array, found {_describe(value)}")


def field(item, name: str, label: str):
    """Field ``name`` of one struct element, or a DatasetError listing the fields."""
    names = item.dtype.names or ()
    if name not in names:
        raise DatasetError(f"{label}: struct has no field {name!r} (fields: {list(names)})")
    return item[name]


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return repr(type(value).__name__)
