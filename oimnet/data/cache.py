"""On-disk cache of parsed annotations, one file per dataset root and kind.

The file lives in the dataset root (``.oimnet-cache-<kind>.pkl``); when the
root is read-only it goes to ``$OIMNET_CACHE_DIR`` or ``~/.cache/oimnet``
under a name derived from the root's absolute path. It is keyed by a
fingerprint of the input files (relative name, size, mtime) and rebuilt
when they change. Writes go to a temporary file renamed into place, so
concurrent processes never see half a file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

CACHE_VERSION = 3  # bump when the cached content or the parsers change


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
    return [os.path.join(root, f".oimnet-cache-{kind}.pkl"), os.path.join(base, "annotations", f"{tag}-{kind}.pkl")]


def load_or_build(root: str, kind: str, key: str, build: Callable[[], Any], use_cache: bool = True) -> Any:
    """The cached value of ``kind`` for ``root`` if its key equals ``key``,
    else ``build()`` (then stored; a failed store is not an error)."""
    if not use_cache:
        return build()
    locations = cache_locations(root, kind)
    for path in locations:
        value = _read(path, key)
        if value is not None:
            return value
    value = build()
    for path in locations:
        if _write(path, key, value):
            break
    return value


def _read(path: str, key: str) -> Any | None:
    try:
        with open(path, "rb") as f:
            stored = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    return stored.get("value")


def _write(path: str, key: str, value: Any) -> bool:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"key": key, "value": value}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
