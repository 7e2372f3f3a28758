"""On-disk cache of parsed annotations, one file per dataset root and kind.

The file lives in the dataset root (``.oimnet-cache-<kind>.npz``); when the
root is read-only it goes to ``$OIMNET_CACHE_DIR`` or ``~/.cache/oimnet``
under a name derived from the root's absolute path. It is keyed by a
fingerprint of the input files (relative name, size, mtime) and rebuilt
when they change. Writes go to a temporary file renamed into place, so
concurrent processes never see half a file.

Anyone who can write to a shared dataset folder can plant a cache file, so
the cache holds plain data only: a NumPy ``.npz`` read with
``allow_pickle=False`` whose ``__tree__`` member is a JSON description of
the value (dicts with string keys, lists, strings, numbers, None) pointing
at the other members (numeric or string arrays). Nothing in it can run
code; a file that does not decode, or whose value fails the caller's
``validate``, is ignored and rebuilt. Caches of older versions
(``.oimnet-cache-*.pkl``, pickles) are never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

CACHE_VERSION = 4  # bump when the cached content or the parsers change
_TREE = "__tree__"
_ARRAY, _STRINGS = "$array", "$strings"  # markers in the JSON tree


class CacheFormatError(ValueError):
    """A value that cannot be stored as plain data, or a file that is not a valid cache."""


def fingerprint(root: str, files: Iterable[str], dirs: Iterable[str] = ()) -> str:
    """Hash of (path relative to root, size, mtime_ns) of ``files`` and of
    every entry of each directory in ``dirs``; a missing input hashes as such."""
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for path in files:
        h.update(_stat_line(root, path))
    for d in dirs:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            h.update(f"{os.path.relpath(d, root)} missing\n".encode())
            continue
        rel = os.path.relpath(d, root)
        lines = []
        for e in entries:
            st = e.stat()
            lines.append(f"{rel}/{e.name} {st.st_size} {st.st_mtime_ns}\n")
        h.update("".join(lines).encode())
    return h.hexdigest()


def _stat_line(root: str, path: str) -> bytes:
    rel = os.path.relpath(path, root)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{rel} missing\n".encode()
    return f"{rel} {st.st_size} {st.st_mtime_ns}\n".encode()


def cache_locations(root: str, kind: str) -> list[str]:
    """Candidate cache files, preferred first: in the root, then the user cache."""
    root = os.path.abspath(root)
    base = os.environ.get("OIMNET_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "oimnet")
    tag = hashlib.sha1(root.encode()).hexdigest()[:16]
    return [os.path.join(root, f".oimnet-cache-{kind}.npz"), os.path.join(base, "annotations", f"{tag}-{kind}.npz")]


def load_or_build(
    root: str,
    kind: str,
    key: str,
    build: Callable[[], Any],
    use_cache: bool = True,
    validate: Callable[[Any], bool] | None = None,
) -> Any:
    """The cached value of ``kind`` for ``root`` if its key equals ``key``
    (and ``validate(value)`` holds), else ``build()`` (then stored; a failed
    store is not an error). Tuples come back as lists."""
    if not use_cache:
        return build()
    locations = cache_locations(root, kind)
    for path in locations:
        value = read_cache(path, key)
        if value is not None and (validate is None or _valid(validate, value)):
            return value
    value = build()
    for path in locations:
        if write_cache(path, key, value):
            break
    return value


def _valid(validate: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(validate(value))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------ plain-data codec
def encode(value: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """value -> (JSON-able tree, arrays by member name). Raises CacheFormatError
    for anything but dicts (str keys), lists/tuples, str, int, float, bool,
    None and non-object NumPy arrays."""
    arrays: dict[str, np.ndarray] = {}

    def enc(v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, float, np.integer, np.floating)):
            return v.item() if isinstance(v, np.generic) else v
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise CacheFormatError(f"cannot cache an object array (dtype {v.dtype})")
            name = f"a{len(arrays)}"
            arrays[name] = v
            return {_ARRAY: name}
        if isinstance(v, (list, tuple)):
            if v and all(isinstance(x, str) for x in v):
                name = f"a{len(arrays)}"
                arrays[name] = np.array(v, dtype=str)
                return {_STRINGS: name}
            return [enc(x) for x in v]
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v) or _ARRAY in v or _STRINGS in v:
                raise CacheFormatError("cannot cache a dict with non-string or reserved keys")
            return {k: enc(x) for k, x in v.items()}
        raise CacheFormatError(f"cannot cache a {type(v).__name__}")

    return enc(value), arrays


def decode(tree: Any, arrays: Any) -> Any:
    """Inverse of encode (lists for tuples). Raises CacheFormatError on a bad tree."""

    def dec(v):
        if isinstance(v, dict):
            if _ARRAY in v or _STRINGS in v:
                name = v.get(_ARRAY, v.get(_STRINGS))
                if len(v) != 1 or not isinstance(name, str) or name not in arrays:
                    raise CacheFormatError(f"bad array reference {v!r}")
                arr = arrays[name]
                return arr.tolist() if _STRINGS in v else arr
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    return dec(tree)


def read_cache(path: str, key: str) -> Any | None:
    """The value stored at path under key, or None (missing, other key, not a valid cache)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = {n: npz[n] for n in npz.files}
        stored = json.loads(bytes(members.pop(_TREE)).decode("utf-8"))
        if not isinstance(stored, dict) or stored.get("key") != key or stored.get("version") != CACHE_VERSION:
            return None
        return decode(stored.get("value"), members)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        return None  # CacheFormatError and json errors are ValueErrors


def write_cache(path: str, key: str, value: Any) -> bool:
    """Store value under key at path (atomic rename); False when it cannot be written."""
    tree, arrays = encode(value)
    meta = json.dumps({"version": CACHE_VERSION, "key": key, "value": tree}).encode("utf-8")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_TREE: np.frombuffer(meta, dtype=np.uint8)}, **arrays)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
