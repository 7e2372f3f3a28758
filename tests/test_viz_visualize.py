"""python -m oimnet.visualize on a results JSON of the evaluation package and real JPEGs."""

import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from oimnet import visualize
from oimnet.eval import evaluate_cache, write_results_json
from oimnet.viz import draw

W, H = 320, 240


def _jpeg(path, seed):
    rng = np.random.default_rng(seed)
    arr = np.full((H, W, 3), 90, np.uint8) + rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def _record(root, name, boxes, pids, cam=1):
    return {
        "img_name": name,
        "img_path": str(root / "frames" / name),
        "boxes": np.asarray(boxes, np.float32),
        "pids": np.asarray(pids, np.int64),
        "cam_id": cam,
    }


def make_evaluated(tmp_path):
    """A PRW-layout root with 6 gallery frames and 2 queries; query 0's top-1
    is right, query 1's (a person seen nowhere else but a look-alike) wrong."""
    root = tmp_path / "data"
    a, b = [20, 40, 70, 200], [200, 30, 250, 190]
    gallery = [
        _record(root, f"c2s1_{i:06d}.jpg", [a, b], pids, cam=2)
        for i, pids in enumerate([[1, 5555], [1, 2], [5555, 2], [5555, 5555], [5555, 5555], [5555, 5555]])
    ]
    query = [_record(root, "c1s1_000100.jpg", [a], [1]), _record(root, "c1s1_000200.jpg", [b], [2])]
    for i, rec in enumerate(gallery + query):
        _jpeg(root / "frames" / rec["img_name"], i)
    e = np.eye(4, dtype=np.float32)
    person = {1: e[0], 2: e[1], 5555: e[2]}
    feats = [np.stack([person[int(p)] for p in rec["pids"]]) for rec in gallery]
    feats[3][0] = e[3]  # the look-alike of person 2
    cache = {
        "gallery_dets": [np.c_[rec["boxes"], np.ones(2, np.float32)] for rec in gallery],
        "gallery_feats": feats,
        "query_box_feats": [e[0], 0.8 * e[3] + 0.6 * e[1]],
    }
    cfg = OmegaConf.create({"INPUT": {"DATASET": "PRW"}, "EVAL_USE_CBGM": False, "EVAL_USE_GT": True})
    results = evaluate_cache(cfg, cache, gallery, query)
    path = tmp_path / "results.json"
    write_results_json(path, results)
    return root, path


@pytest.fixture
def evaluated(tmp_path):
    return make_evaluated(tmp_path)


def test_results_json_loads_with_expected_rankings(evaluated):
    _, path = evaluated
    rows = visualize.load_results(path)
    assert [r["img_name"] for r in rows] == ["c1s1_000100.jpg", "c1s1_000200.jpg"]
    assert [visualize.is_failure(r) for r in rows] == [False, True]
    assert len(rows[0]["top10"]) == 10  # 6 frames x 2 detections, cut at 10
    assert visualize.select_queries(rows, failures=True) == [1]
    assert visualize.select_queries(rows, n=1) == [0]


def test_cli_draws_one_png_per_query_of_expected_size(evaluated, tmp_path, capsys):
    root, path = evaluated
    out = tmp_path / "vis"
    assert visualize.main(["--results", str(path), "--root", str(root), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["q00000_c1s1_000100.png", "q00001_c1s1_000200.png"]
    expected = draw.strip_size(11, title=True)
    lay = draw.Layout()
    rows = visualize.load_results(path)
    for i, name in enumerate(files):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size == expected
            px = np.asarray(im.convert("RGB"))
        top = lay.margin + lay.title_h
        assert tuple(px[top + 1, lay.margin + 1]) == draw.YELLOW  # the query tile's frame
        for rank, hit in enumerate(rows[i]["top10"]):
            x = lay.margin + lay.tile_w + lay.query_gap + rank * (lay.tile_w + lay.gap)
            assert tuple(px[top + 1, x + 1]) == (draw.GREEN if hit["correct"] else draw.RED), (name, rank)
    assert "2 of 2 queries drawn" in capsys.readouterr().out


def test_cli_failures_and_n(evaluated, tmp_path):
    root, path = evaluated
    out = tmp_path / "fail"
    assert visualize.main(["--results", str(path), "--root", str(root), "--failures", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["q00001_c1s1_000200.png"]
    out2 = tmp_path / "first"
    assert visualize.main(["--results", str(path), "--root", str(root), "--n", "1", "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["q00000_c1s1_000100.png"]


def test_cuhk_layout_is_found(tmp_path):
    _jpeg(tmp_path / "Image" / "SSM" / "s1.jpg", 0)
    assert visualize.find_image(tmp_path, "s1.jpg") == tmp_path / "Image" / "SSM" / "s1.jpg"
    with pytest.raises(FileNotFoundError, match="s2.jpg"):
        visualize.find_image(tmp_path, "s2.jpg")


def test_bad_results_json_is_a_clear_usage_error(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"mAP": 0.5}))
    with pytest.raises(SystemExit) as exc:
        visualize.main(["--results", str(path), "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "per_query" in capsys.readouterr().err
    path.write_text(json.dumps({"per_query": [{"img_name": "a.jpg", "box": [1, 2, 3], "top10": []}]}))
    with pytest.raises(ValueError, match=r"per_query\[0\]\.box"):
        visualize.load_results(path)


def test_missing_image_names_it(evaluated, tmp_path, capsys):
    root, path = evaluated
    (root / "frames" / "c2s1_000001.jpg").unlink()
    rc = visualize.main(["--results", str(path), "--root", str(root), "--out", str(tmp_path / "o")])
    assert rc == 1 and "c2s1_000001.jpg" in capsys.readouterr().err
