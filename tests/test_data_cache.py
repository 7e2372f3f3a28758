"""Annotation cache: reused while the inputs are unchanged, rebuilt when
they change, stored elsewhere when the root cannot take it."""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from oimnet.data import load_records
from oimnet.data.cache import cache_locations


def _cells(names):
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    return arr


def make_prw(root, pid=5):
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for name, rows in (("c1s1_000001", [[pid, 1, 2, 3, 4]]), ("c2s1_000002", [[9, 5, 6, 7, 8]])):
        scipy.io.savemat(os.path.join(root, "annotations", name + ".jpg.mat"), {"box_new": np.array(rows, float)})
    scipy.io.savemat(os.path.join(root, "frame_train.mat"), {"img_index_train": _cells(["c1s1_000001"])})
    scipy.io.savemat(os.path.join(root, "frame_test.mat"), {"img_index_test": _cells(["c2s1_000002"])})
    with open(os.path.join(root, "query_info.txt"), "wb") as f:
        f.write(b"9 5 6 7 8 c2s1_000002\r\n")


def rewrite_annotation(root, pid):
    """Rewrite only c1s1_000001's annotation (same size) with another id."""
    scipy.io.savemat(
        os.path.join(root, "annotations", "c1s1_000001.jpg.mat"), {"box_new": np.array([[pid, 1, 2, 3, 4]], float)}
    )


def _pid(root):
    return int(load_records("PRW", root, "train")[0]["pids"][0])


def test_cache_reused_then_invalidated(tmp_path):
    root = str(tmp_path / "prw")
    make_prw(root, pid=5)
    ann = os.path.join(root, "annotations", "c1s1_000001.jpg.mat")
    assert _pid(root) == 5
    assert os.path.isfile(cache_locations(root, "prw-annotations")[0])
    # same size and mtime: the cache is trusted (proves it is read)
    st = os.stat(ann)
    rewrite_annotation(root, 6)
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(ann).st_size == st.st_size
    assert _pid(root) == 5
    # a changed mtime invalidates it
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _pid(root) == 6
    # so does a new file in annotations/
    rewrite_annotation(root, 7)
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same stat as before ...
    open(os.path.join(root, "annotations", "extra.txt"), "w").close()  # ... but the folder changed
    assert _pid(root) == 7


def test_cache_paths_are_root_relative(tmp_path):
    root = str(tmp_path / "a")
    make_prw(root)
    first = load_records("PRW", root, "gallery")
    os.rename(root, str(tmp_path / "b"))
    moved = load_records("PRW", str(tmp_path / "b"), "gallery")
    assert first[0]["img_path"] == os.path.join(root, "frames", "c2s1_000002.jpg")
    assert moved[0]["img_path"] == os.path.join(str(tmp_path / "b"), "frames", "c2s1_000002.jpg")


def test_unwritable_root_falls_back_to_user_cache(tmp_path, monkeypatch):
    root = str(tmp_path / "prw")
    make_prw(root)
    monkeypatch.setenv("OIMNET_CACHE_DIR", str(tmp_path / "usercache"))
    in_root, fallback = cache_locations(root, "prw-annotations")
    os.makedirs(in_root)  # a directory where the file should go: writing there fails
    assert _pid(root) == 5
    assert os.path.isfile(fallback) and fallback.startswith(str(tmp_path / "usercache"))
    # served from the fallback: same stat, different content
    ann = os.path.join(root, "annotations", "c1s1_000001.jpg.mat")
    st = os.stat(ann)
    rewrite_annotation(root, 8)
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _pid(root) == 5


class _Plant:
    """Unpickling this runs ``open(marker, 'w')``: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickles_never_run(tmp_path):
    import pickle

    root = str(tmp_path / "prw")
    make_prw(root, pid=5)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"key": "x", "value": _Plant(str(marker))})
    in_root, _ = cache_locations(root, "prw-annotations")
    # the old cache name, and a pickle under the new name
    for name in (".oimnet-cache-prw-annotations.pkl", os.path.basename(in_root)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(payload)
    assert _pid(root) == 5
    assert not marker.exists()
    # an .npz whose member is an object array (it would need pickle to load)
    np.savez(
        in_root, __tree__=np.frombuffer(b'{"version": 4}', np.uint8), a0=np.array([_Plant(str(marker))], dtype=object)
    )
    assert _pid(root) == 5
    assert not marker.exists()


def test_well_formed_but_inconsistent_cache_is_rebuilt(tmp_path):
    from oimnet.data import cache

    root = str(tmp_path / "prw")
    make_prw(root, pid=5)
    path = cache_locations(root, "prw-annotations")[0]
    assert _pid(root) == 5
    with np.load(path, allow_pickle=False) as npz:
        import json

        key = json.loads(bytes(npz["__tree__"]).decode())["key"]
    value = cache.read_cache(path, key)
    value["splits"]["train"]["pids"] = np.array([1, 2, 3])  # more pids than boxes
    value["splits"]["train"]["relpaths"] = ["../../etc/passwd"]
    assert cache.write_cache(path, key, value)
    assert _pid(root) == 5
    assert load_records("PRW", root, "train")[0]["img_path"].startswith(root)
