"""CUHK-SYSU loader and protocol on hand-made .mat fixtures (struct arrays
shaped as scipy.io.loadmat returns the real files, see data-formats.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from oimnet.data import DatasetError, load_cuhk_protocol, load_records, num_train_ids, parse_stats

U = 5555
PROTO = "annotation/test/train_test"


def struct(rows, fields, shape=None):
    """MATLAB struct array (1 x n unless ``shape``) from dicts."""
    arr = np.empty(shape or (1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr.reshape(-1)[f][i] = row[f]
    return arr


def cells(values):
    arr = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        arr[i, 0] = v
    return arr


def box(*v):
    return np.array([v], dtype=np.float64)


EMPTY = np.zeros((1, 0))

IMAGES = {  # name -> boxes (x, y, w, h), zero-size ones included
    "s1.jpg": [(10, 10, 20, 40), (50, 10, 0, 40), (30, 5, 15, 30)],
    "s2.jpg": [(0, 0, 10, 20), (5, 5, 10, -1), (40, 40, 10, 20)],
    "s3.jpg": [(1, 1, 10, 10), (20, 20, 10, 10), (40, 40, 5, 5)],
    "s4.jpg": [(2, 2, 8, 8), (20, 20, 10, 10)],
    "s5.jpg": [(3, 3, 9, 9)],
}
POOL = ["s5.jpg", "s3.jpg", "s4.jpg"]


def write_images(root, images):
    rows = [
        {
            "imname": n,
            "nAppear": np.array([[len(b)]], float),
            "idlocate": struct([{"idlocate": box(*x)} for x in b], ["idlocate"]),
        }
        for n, b in images.items()
    ]
    scipy.io.savemat(
        os.path.join(root, "annotation", "Images.mat"), {"Img": struct(rows, ["imname", "nAppear", "idlocate"])}
    )


def write_testg(root, size, items):
    """items: [(query name, query box, [(gallery name, box or EMPTY)])]."""
    rows = []
    for qname, qbox, gallery in items:
        q = struct(
            [{"imname": qname, "idlocate": qbox, "ishard": np.array([[0.0]]), "idname": "p1"}],
            ["imname", "idlocate", "ishard", "idname"],
        )
        g = struct(
            [{"imname": n, "idlocate": b, "ishard": np.array([[0.0]])} for n, b in gallery],
            ["imname", "idlocate", "ishard"],
        )
        rows.append({"Query": q, "Gallery": g})
    scipy.io.savemat(
        os.path.join(root, PROTO, f"TestG{size}.mat"), {f"TestG{size}": struct(rows, ["Query", "Gallery"])}
    )


@pytest.fixture
def cuhk_root(tmp_path):
    root = str(tmp_path / "CUHK-SYSU")
    os.makedirs(os.path.join(root, PROTO))
    os.makedirs(os.path.join(root, "Image", "SSM"))
    for n in IMAGES:
        Image.new("RGB", (60, 60)).save(os.path.join(root, "Image", "SSM", n))
    write_images(root, IMAGES)
    scipy.io.savemat(os.path.join(root, "annotation", "pool.mat"), {"pool": cells(POOL)})
    identities = [
        [("s2.jpg", box(40, 40, 10, 20)), ("s1.jpg", box(10, 10, 20, 40))],
        [("s1.jpg", box(30, 5, 15, 31)), ("s2.jpg", box(0, 0, 10, 20))],  # first box off by one pixel
    ]
    train = cells(
        [
            struct(
                [
                    {
                        "idname": f"p{k}",
                        "nAppear": np.array([[len(sc)]], float),
                        "scene": struct(
                            [{"imname": n, "idlocate": b, "ishard": np.array([[0.0]])} for n, b in sc],
                            ["imname", "idlocate", "ishard"],
                        ),
                    }
                ],
                ["idname", "nAppear", "scene"],
            )
            for k, sc in enumerate(identities, 1)
        ]
    )
    scipy.io.savemat(os.path.join(root, PROTO, "Train.mat"), {"Train": train})
    write_testg(
        root,
        50,
        [
            ("s3.jpg", box(20, 20, 10, 10), [("s4.jpg", box(20, 20, 10, 10)), ("s5.jpg", EMPTY)]),
            # labelling stops at the first empty entry: s4's (2, 2, 8, 8) stays unlabeled
            ("s5.jpg", box(3, 3, 9, 9), [("s3.jpg", EMPTY), ("s4.jpg", box(2, 2, 8, 8))]),
        ],
    )
    write_testg(
        root,
        100,
        [
            ("s3.jpg", box(20, 20, 10, 10), [("s5.jpg", EMPTY), ("s4.jpg", EMPTY)]),
            ("s5.jpg", box(3, 3, 9, 9), [("s4.jpg", box(2, 2, 8, 8)), ("s3.jpg", EMPTY)]),
        ],
    )
    return root


def test_fixture_shapes_match_spec(cuhk_root):
    img = scipy.io.loadmat(os.path.join(cuhk_root, "annotation", "Images.mat"))["Img"]
    assert img.shape == (1, 5) and img.dtype.names == ("imname", "nAppear", "idlocate")
    assert img[0, 0]["idlocate"].shape == (1, 3)
    g = scipy.io.loadmat(os.path.join(cuhk_root, PROTO, "TestG50.mat"))["TestG50"]
    assert g[0, 1]["Gallery"][0, 0]["idlocate"].shape == (1, 0)
    assert scipy.io.loadmat(os.path.join(cuhk_root, "annotation", "pool.mat"))["pool"].shape == (3, 1)


def test_train_records(cuhk_root):
    recs = load_records("CUHK-SYSU", cuhk_root, "train", use_cache=False)
    assert [r["img_name"] for r in recs] == ["s1.jpg", "s2.jpg"]  # all minus pool, sorted
    assert recs[0]["img_path"] == os.path.join(cuhk_root, "Image", "SSM", "s1.jpg")
    assert all(r["cam_id"] == -1 for r in recs)
    np.testing.assert_array_equal(recs[0]["boxes"], [[10, 10, 30, 50], [30, 5, 45, 35]])  # zero-size dropped
    np.testing.assert_array_equal(recs[0]["pids"], [1, U])  # (30,5,15,31) matches nothing exactly
    np.testing.assert_array_equal(recs[1]["boxes"], [[0, 0, 10, 20], [40, 40, 50, 60]])
    np.testing.assert_array_equal(recs[1]["pids"], [2, 1])
    assert recs[0]["boxes"].dtype == np.float32 and recs[0]["pids"].dtype == np.int64
    assert num_train_ids("CUHK-SYSU", cuhk_root) == 2
    assert parse_stats("CUHK-SYSU", cuhk_root, use_cache=False) == {
        "dropped_boxes": 2,
        "unmatched_train": 1,
        "unmatched_test": 0,
    }


def test_gallery_and_query_records(cuhk_root):
    gal = load_records("CUHK-SYSU", cuhk_root, "gallery", use_cache=False)
    assert [r["img_name"] for r in gal] == POOL
    np.testing.assert_array_equal(gal[0]["pids"], [2])
    np.testing.assert_array_equal(gal[1]["boxes"], [[1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 45, 45]])
    np.testing.assert_array_equal(gal[1]["pids"], [U, 1, U])
    np.testing.assert_array_equal(gal[2]["pids"], [U, 1])
    q = load_records("CUHK-SYSU", cuhk_root, "query", use_cache=False)
    assert [r["img_name"] for r in q] == ["s3.jpg", "s5.jpg"]
    np.testing.assert_array_equal(q[0]["boxes"], [[20, 20, 30, 30]])
    np.testing.assert_array_equal(q[1]["boxes"], [[3, 3, 12, 12]])
    assert [int(r["pids"][0]) for r in q] == [1, 2]


def test_protocol_from_file(cuhk_root):
    p50 = load_cuhk_protocol(cuhk_root, 50, use_cache=False)
    assert [[e["img_name"] for e in entries] for entries in p50] == [["s4.jpg", "s5.jpg"], ["s3.jpg", "s4.jpg"]]
    np.testing.assert_array_equal(p50[0][0]["box"], [20, 20, 30, 30])
    assert p50[0][1]["box"] is None and p50[1][0]["box"] is None
    np.testing.assert_array_equal(p50[1][1]["box"], [2, 2, 10, 10])
    p100 = load_cuhk_protocol(cuhk_root, 100)
    assert [e["box"] is None for e in p100[0]] == [True, True]
    np.testing.assert_array_equal(p100[1][0]["box"], [2, 2, 10, 10])


def test_protocol_full_set(cuhk_root):
    full = load_cuhk_protocol(cuhk_root, -1, use_cache=False)
    assert [[e["img_name"] for e in entries] for entries in full] == [["s5.jpg", "s4.jpg"], ["s3.jpg", "s4.jpg"]]
    assert full[0][0]["box"] is None
    np.testing.assert_array_equal(full[0][1]["box"], [20, 20, 30, 30])
    assert full[1][0]["box"] is None and full[1][1]["box"] is None  # s4's box was never labelled
    with pytest.raises(ValueError, match="gallery_size 70"):
        load_cuhk_protocol(cuhk_root, 70)


def test_protocol_query_order_checked(cuhk_root):
    write_testg(cuhk_root, 500, [("s5.jpg", box(3, 3, 9, 9), []), ("s3.jpg", box(20, 20, 10, 10), [])])
    with pytest.raises(DatasetError, match=r"TestG500\.mat: query 1 is s5\.jpg"):
        load_cuhk_protocol(cuhk_root, 500)


def test_image_without_valid_box_is_an_error(cuhk_root):
    write_images(cuhk_root, {**IMAGES, "s6.jpg": [(1, 1, 0, 5)]})
    with pytest.raises(DatasetError, match=r"Images\.mat: s6\.jpg has no box with positive width and height"):
        load_records("CUHK-SYSU", cuhk_root, "train", use_cache=False)


def test_missing_variable_and_file_named(cuhk_root):
    scipy.io.savemat(os.path.join(cuhk_root, "annotation", "pool.mat"), {"gallery": cells(POOL)})
    with pytest.raises(DatasetError, match=r"annotation/pool\.mat: variable 'pool' not found"):
        load_records("CUHK-SYSU", cuhk_root, "gallery", use_cache=False)
    scipy.io.savemat(os.path.join(cuhk_root, "annotation", "pool.mat"), {"pool": cells(POOL)})
    os.remove(os.path.join(cuhk_root, PROTO, "Train.mat"))
    with pytest.raises(DatasetError, match=r"Train\.mat: file not found"):
        load_records("CUHK-SYSU", cuhk_root, "train", use_cache=False)


def test_malformed_box_named(cuhk_root):
    write_testg(cuhk_root, 50, [("s3.jpg", np.array([[20.0, 20, 10]]), [])])
    with pytest.raises(DatasetError, match=r"TestG50\.mat: TestG50\(1\)\.Query\.idlocate: expected a 1x4 box"):
        load_records("CUHK-SYSU", cuhk_root, "query", use_cache=False)


def test_fractional_boxes_truncated_as_the_release(cuhk_root):
    # The authors' loader truncates every (x, y, w, h) to int32 first, adds in
    # integers, and matches identity / protocol boxes after the same truncation.
    # A 0.5-wide box passes the w > 0 filter (taken on the file's values) and
    # becomes zero-wide.
    write_images(
        cuhk_root,
        {
            "s1.jpg": [(10.7, 10.2, 20.6, 40.5), (50, 10, 0.5, 40)],
            "s2.jpg": [(0.9, 0.4, 10.8, 20.3)],
            "s3.jpg": [(1.5, 1.5, 10.5, 10.5), (20.2, 20.9, 10.9, 10.1)],
            "s4.jpg": [(2.6, 2.6, 8.6, 8.6)],
            "s5.jpg": [(3.3, 3.3, 9.9, 9.9)],
        },
    )
    train = cells(
        [
            struct(
                [
                    {
                        "idname": f"p{k}",
                        "nAppear": np.array([[1.0]]),
                        "scene": struct(
                            [{"imname": n, "idlocate": b, "ishard": np.array([[0.0]])}],
                            ["imname", "idlocate", "ishard"],
                        ),
                    }
                ],
                ["idname", "nAppear", "scene"],
            )
            for k, (n, b) in enumerate([("s1.jpg", box(10.1, 10.9, 20.2, 40.0)), ("s2.jpg", box(0, 0, 10, 20))], 1)
        ]
    )
    scipy.io.savemat(os.path.join(cuhk_root, PROTO, "Train.mat"), {"Train": train})
    write_testg(
        cuhk_root,
        50,
        [
            ("s3.jpg", box(20.7, 20.1, 10.2, 10.8), [("s4.jpg", box(2.1, 2.9, 8.0, 8.3)), ("s5.jpg", EMPTY)]),
            ("s5.jpg", box(3.9, 3.1, 9.5, 9.0), [("s3.jpg", EMPTY)]),
        ],
    )
    tr = load_records("CUHK-SYSU", cuhk_root, "train", use_cache=False)
    np.testing.assert_array_equal(tr[0]["boxes"], [[10, 10, 30, 50], [50, 10, 50, 50]])
    np.testing.assert_array_equal(tr[0]["pids"], [1, U])
    np.testing.assert_array_equal(tr[1]["boxes"], [[0, 0, 10, 20]])
    np.testing.assert_array_equal(tr[1]["pids"], [2])
    gal = load_records("CUHK-SYSU", cuhk_root, "gallery", use_cache=False)
    np.testing.assert_array_equal(gal[1]["boxes"], [[1, 1, 11, 11], [20, 20, 30, 30]])
    np.testing.assert_array_equal(gal[1]["pids"], [U, 1])
    np.testing.assert_array_equal(gal[2]["boxes"], [[2, 2, 10, 10]])
    np.testing.assert_array_equal(gal[2]["pids"], [1])
    np.testing.assert_array_equal(gal[0]["pids"], [2])
    q = load_records("CUHK-SYSU", cuhk_root, "query", use_cache=False)
    np.testing.assert_array_equal(q[0]["boxes"], [[20, 20, 30, 30]])
    np.testing.assert_array_equal(q[1]["boxes"], [[3, 3, 12, 12]])
    np.testing.assert_array_equal(load_cuhk_protocol(cuhk_root, 50, use_cache=False)[0][0]["box"], [2, 2, 10, 10])
    assert parse_stats("CUHK-SYSU", cuhk_root, use_cache=False) == {
        "dropped_boxes": 0,
        "unmatched_train": 0,
        "unmatched_test": 0,
    }
