"""PRW loader on hand-made fixtures covering every quirk of data-formats.md."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from oimnet.data import DatasetError, load_records, num_train_ids

U = 5555


def _cells(names):
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    return arr


def write_prw(root, train, test, queries_text, images=True):
    """train/test: {frame name without .jpg: (variable name, rows)}."""
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "frames"), exist_ok=True)
    for name, (var, rows) in {**train, **test}.items():
        scipy.io.savemat(
            os.path.join(root, "annotations", name + ".jpg.mat"), {var: np.asarray(rows, dtype=np.float64)}
        )
        if images:
            Image.new("RGB", (64, 48), (100, 120, 140)).save(os.path.join(root, "frames", name + ".jpg"))
    scipy.io.savemat(os.path.join(root, "frame_train.mat"), {"img_index_train": _cells(list(train))})
    scipy.io.savemat(os.path.join(root, "frame_test.mat"), {"img_index_test": _cells(list(test))})
    with open(os.path.join(root, "query_info.txt"), "wb") as f:
        f.write(queries_text.encode())


TRAIN = {
    "c1s1_000151": ("box_new", [[5, 10, 20, 30, 40], [-2, -3, 5, 20, 30], [483, 1, 1, 10, 10]]),
    "c2s1_000002": ("anno_file", [[932, 0, 0, 5, 5], [7, 1.5, 2.5, 10.6, 20], [-2, -1.5, 3.7, 4.9, 5.2]]),
    "c3s2_000003": ("anno_previous", [[-2, 4, -6, 10, 12]]),
}
TEST = {
    "c4s1_000004": ("box_new", [[483, 10, 10, 20, 30], [600, 2, 2, 8, 8], [-2, 30, 1, 5, 6]]),
    "c6s3_000005": ("box_new", [[932, 3, 4, 5, 6]]),
}
QUERIES = (
    "600 2 2 8 8 c4s1_000004\r\n483 -1 10 20 30 c4s1_000004\r\n932 3 4 5 6 c6s3_000005\r\n"
    "600 1.7 -1.5 10.6 3.2 c4s1_000004\r\n"
)


@pytest.fixture
def prw_root(tmp_path):
    root = str(tmp_path / "PRW-v16.04.20")
    write_prw(root, TRAIN, TEST, QUERIES)
    return root


def test_train_records_exact(prw_root):
    recs = load_records("PRW", prw_root, "train", use_cache=False)
    assert [r["img_name"] for r in recs] == ["c1s1_000151.jpg", "c2s1_000002.jpg", "c3s2_000003.jpg"]
    assert [r["cam_id"] for r in recs] == [1, 2, 3]
    assert recs[0]["img_path"] == os.path.join(prw_root, "frames", "c1s1_000151.jpg")
    # x1y1x2y2; -3 clipped to 0 in (x, y, w, h) before conversion; -2, 483, 932 unlabeled
    np.testing.assert_array_equal(recs[0]["boxes"], [[10, 20, 40, 60], [0, 5, 20, 35], [1, 1, 11, 11]])
    np.testing.assert_array_equal(recs[0]["pids"], [5, U, U])
    # fractional boxes as the authors' loader makes them: clip (x, y, w, h) at 0,
    # add in floats, truncate to int32 (1.5 + 10.6 -> 12; -1.5 -> 0, 0 + 4.9 -> 4)
    np.testing.assert_array_equal(recs[1]["boxes"], [[0, 0, 5, 5], [1, 2, 12, 22], [0, 3, 4, 8]])
    np.testing.assert_array_equal(recs[1]["pids"], [U, 7, U])
    np.testing.assert_array_equal(recs[2]["boxes"], [[4, 0, 14, 12]])
    np.testing.assert_array_equal(recs[2]["pids"], [U])
    for r in recs:
        assert r["boxes"].dtype == np.float32 and r["pids"].dtype == np.int64
        assert r["boxes"].shape == (len(r["pids"]), 4)


def test_gallery_ids_483_932_are_unlabeled(prw_root):
    # the authors' loader maps -2, 483 and 932 to 5555 in every annotation file it reads
    recs = load_records("PRW", prw_root, "gallery", use_cache=False)
    assert [r["img_name"] for r in recs] == ["c4s1_000004.jpg", "c6s3_000005.jpg"]
    np.testing.assert_array_equal(recs[0]["pids"], [U, 600, U])
    np.testing.assert_array_equal(recs[1]["pids"], [U])
    np.testing.assert_array_equal(recs[0]["boxes"], [[10, 10, 30, 40], [2, 2, 10, 10], [30, 1, 35, 7]])
    assert [r["cam_id"] for r in recs] == [4, 6]


def test_queries_crlf_and_clipping(prw_root):
    recs = load_records("PRW", prw_root, "query", use_cache=False)
    assert [r["img_name"] for r in recs] == ["c4s1_000004.jpg", "c4s1_000004.jpg", "c6s3_000005.jpg", "c4s1_000004.jpg"]
    np.testing.assert_array_equal(recs[0]["boxes"], [[2, 2, 10, 10]])
    # a query box is clipped after conversion: x1 = -1 -> 0, x2 = -1 + 20
    np.testing.assert_array_equal(recs[1]["boxes"], [[0, 10, 19, 40]])
    # fractional: added in floats, truncated toward zero, then clipped (1.7 + 10.6 -> 12, -1.5 + 3.2 -> 1)
    np.testing.assert_array_equal(recs[3]["boxes"], [[1, 0, 12, 1]])
    # query pids are kept as written (the release does not relabel query_info.txt)
    assert [int(r["pids"][0]) for r in recs] == [600, 483, 932, 600]
    assert all(r["boxes"].shape == (1, 4) and r["pids"].shape == (1,) for r in recs)
    assert recs[2]["cam_id"] == 6


def test_box_new_wins_over_other_names(tmp_path):
    root = str(tmp_path / "p")
    write_prw(
        root,
        {"c1s1_000001": ("box_new", [[1, 0, 0, 4, 4]])},
        {"c2s1_000002": ("box_new", [[2, 0, 0, 4, 4]])},
        "2 0 0 4 4 c2s1_000002\n",
    )
    scipy.io.savemat(
        os.path.join(root, "annotations", "c1s1_000001.jpg.mat"),
        {
            "anno_previous": np.array([[9.0, 1, 1, 1, 1]]),
            "box_new": np.array([[3.0, 5, 5, 5, 5]]),
            "anno_file": np.array([[8.0, 1, 1, 1, 1]]),
        },
    )
    rec = load_records("PRW", root, "train", use_cache=False)[0]
    np.testing.assert_array_equal(rec["pids"], [3])
    np.testing.assert_array_equal(rec["boxes"], [[5, 5, 10, 10]])
    # and "\n" line ends work as well as "\r\n"
    assert load_records("PRW", root, "query", use_cache=False)[0]["img_name"] == "c2s1_000002.jpg"


def test_num_train_ids(prw_root):
    assert num_train_ids("PRW", prw_root) == 7


def test_missing_variable_names_file(prw_root):
    scipy.io.savemat(os.path.join(prw_root, "annotations", "c1s1_000151.jpg.mat"), {"boxes": np.zeros((1, 5))})
    with pytest.raises(
        DatasetError,
        match=r"annotations/c1s1_000151\.jpg\.mat: none of box_new, anno_file, "
        r"anno_previous found",
    ):
        load_records("PRW", prw_root, "train", use_cache=False)


def test_missing_annotation_file(prw_root):
    os.remove(os.path.join(prw_root, "annotations", "c2s1_000002.jpg.mat"))
    with pytest.raises(DatasetError, match=r"annotations/c2s1_000002\.jpg\.mat: file not found"):
        load_records("PRW", prw_root, "train", use_cache=False)


def test_wrong_columns_named(prw_root):
    scipy.io.savemat(os.path.join(prw_root, "annotations", "c3s2_000003.jpg.mat"), {"anno_file": np.zeros((2, 4))})
    with pytest.raises(DatasetError, match=r"c3s2_000003\.jpg\.mat: anno_file should be an n x 5"):
        load_records("PRW", prw_root, "train", use_cache=False)


def test_bad_query_line_named(prw_root):
    with open(os.path.join(prw_root, "query_info.txt"), "wb") as f:
        f.write(b"600 2 2 8 8 c4s1_000004\r\n601 2 2 8 c4s1_000004\r\n")
    with pytest.raises(DatasetError, match=r"query_info\.txt:2: expected 6 fields"):
        load_records("PRW", prw_root, "query", use_cache=False)


def test_missing_split_file_and_root(prw_root, tmp_path):
    os.remove(os.path.join(prw_root, "frame_test.mat"))
    with pytest.raises(DatasetError, match=r"frame_test\.mat: file not found"):
        load_records("PRW", prw_root, "gallery", use_cache=False)
    with pytest.raises(DatasetError, match="not found"):
        load_records("PRW", str(tmp_path / "nowhere"), "train")
    with pytest.raises(ValueError, match="split"):
        load_records("PRW", prw_root, "test")
