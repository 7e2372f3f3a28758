"""python -m oimnet.demo end to end: a smoke-trained checkpoint on the generated dataset.

The checkpoint comes from the ``smoke_run`` fixture (tests/conftest.py): it trains
``experiments/synthetic.yaml`` on CPU into a temporary folder (several
minutes on 2 busy cores). Set OIMNET_SMOKE_OUTPUT to the OUTPUT_DIR of a
finished smoke run (it holds config.yaml and epoch_XXX.pth) to reuse it.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import binom

from oimnet import demo
from oimnet.eval.boxes import paired_iou
from oimnet.viz import draw

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "experiments" / "synthetic.yaml"

# Rank-1 over the 40 held-out queries (20 test identities never seen in
# training) of the default synthetic world: "the rank-1 frame holds the person
# and the matched box is on them (IoU >= 0.5)". The smoke model is weak and its
# quality swings with the seed and with float-level changes anywhere in
# training. Final top-1 (= this rate) of experiments/synthetic.yaml, seeds
# 1/2/3: 0.35/0.50/0.425 with the current 10 epochs; with 6 epochs it was
# 0.35/0.075/0.275 before and 0.15/0.35/0.175 after a ProtoNorm/memory-update
# rewrite equal to the oracles to 1e-7 (chaos, not a regression). So the
# floor is statistical, not a tuned number: the rate
# must beat picking a random person box of the gallery at the 0.5 % level
# (chance is 3.6 % here, the floor 6 of 40; a random *frame* holds the person
# 15 % of the time). The agreement test below checks the demo's own
# correctness.
CHANCE_P_VALUE = 0.005


@pytest.fixture(scope="module")
def searched(smoke_run, tmp_path_factory):
    """The predictor, the gallery features of the whole test split, and its records."""
    from oimnet.data import load_records

    torch.manual_seed(0)
    cfg, ckpt = smoke_run
    root = cfg.INPUT.DATA_ROOT
    gallery = load_records("synthetic", root, "gallery")
    queries = load_records("synthetic", root, "query")
    predictor = demo.load_predictor(cfg, str(ckpt), torch.device("cpu"))
    feats, cached = demo.embed_gallery(
        predictor,
        cfg,
        [r["img_path"] for r in gallery],
        ckpt=str(ckpt),
        cache_dir=tmp_path_factory.mktemp("demo_cache"),
        progress=False,
    )
    assert not cached
    return predictor, cfg, ckpt, feats, gallery, queries


@pytest.mark.slow
@pytest.mark.timeout(3600)  # includes the smoke training of the session fixture
def test_demo_finds_held_out_people_at_rank_1(searched):
    predictor, cfg, _, feats, gallery, queries = searched
    by_path = {r["img_path"]: r for r in gallery}
    hits_ok = []
    for q in queries:
        qfeat = demo.embed_query(predictor, q["img_path"], q["boxes"][0])
        hits = demo.rank_frames(qfeat, feats, top=5, exclude={q["img_path"]})
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert len({h.path for h in hits}) == 5 and q["img_path"] not in {h.path for h in hits}
        assert all(a.similarity >= b.similarity for a, b in zip(hits, hits[1:]))
        rec = by_path[hits[0].path]
        gt = rec["boxes"][rec["pids"] == q["pids"][0]]
        # the rank-1 frame holds the person and the matched box is on them
        hits_ok.append(len(gt) > 0 and bool((paired_iou(np.repeat(hits[0].box[None], len(gt), 0), gt) >= 0.5).any()))
    rate = float(np.mean(hits_ok))
    # Chance: a random person box of the gallery (query frame excluded) is the query person.
    others = [[r for r in gallery if r["img_path"] != q["img_path"]] for q in queries]
    chance = float(
        np.mean(
            [
                sum(int((r["pids"] == q["pids"][0]).sum()) for r in rs) / sum(len(r["pids"]) for r in rs)
                for q, rs in zip(queries, others)
            ]
        )
    )
    floor = int(binom.isf(CHANCE_P_VALUE, len(queries), chance)) + 1  # P(hits >= floor | chance) < p
    print(
        f"rank-1 over {len(queries)} held-out queries: {sum(hits_ok)} ({rate:.3f}); chance {chance:.3f}, floor {floor}"
    )
    assert 0 < chance < 0.1, f"chance rate {chance:.3f}: the synthetic world changed, revisit this test"
    assert sum(hits_ok) >= floor, (
        f"rank-1 hits {sum(hits_ok)}/{len(queries)} not above chance {chance:.3f} (need {floor})"
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_demo_ranking_agrees_with_the_evaluation(searched):
    """The demo's rank-1 match of each query is the evaluation's top-1 (the
    trainer's final results.json for the same checkpoint): same resizing,
    box scaling, embeddings and cosine ranking, independent of model quality."""
    predictor, cfg, ckpt, feats, _, queries = searched
    results = Path(ckpt).parent / "results.json"
    if not results.is_file():
        pytest.skip(f"{results}: no results.json beside the checkpoint")
    rows = json.loads(results.read_text())["per_query"]
    assert [r["img_name"] for r in rows] == [q["img_name"] for q in queries]
    compared = agree = 0
    for q, row in zip(queries, rows):
        qfeat = demo.embed_query(predictor, q["img_path"], q["boxes"][0])
        hits = demo.rank_frames(qfeat, feats, top=1, exclude={q["img_path"]})
        if not row["top10"] or not hits:
            assert not row["top10"] and not hits
            continue
        compared += 1
        top = row["top10"][0]
        agree += (
            os.path.basename(hits[0].path) == top["img_name"]
            and np.allclose(hits[0].box, top["box"], atol=0.05)
            and abs(hits[0].similarity - top["score"]) < 1e-3
        )
    print(f"demo rank-1 == evaluation top-1 for {agree}/{compared} queries")
    assert compared >= len(queries) // 2 and agree >= 0.95 * compared


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cli_figure_and_feature_cache(searched, tmp_path, capsys):
    _, cfg, ckpt, _, gallery, queries = searched
    cfg_file = tmp_path / "cfg.yaml"
    from oimnet.config import to_yaml

    cfg_file.write_text(to_yaml(cfg))
    listing = tmp_path / "gallery.txt"  # a list file with relative paths, 24 frames
    listing.write_text(
        "# demo gallery\n" + "\n".join(os.path.relpath(r["img_path"], tmp_path) for r in gallery[:24]) + "\n"
    )
    q = queries[0]
    box = ",".join(f"{v:.1f}" for v in q["boxes"][0])
    args = [
        "--ckpt",
        str(ckpt),
        "--cfg",
        str(cfg_file),
        "--query",
        q["img_path"],
        "--box",
        box,
        "--gallery",
        str(listing),
        "--top",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    times, outs = [], []
    for k in range(2):
        out = tmp_path / f"search{k}.png"
        t0 = time.perf_counter()
        assert demo.main(args + ["--out", str(out)]) == 0
        times.append(time.perf_counter() - t0)
        outs.append(capsys.readouterr().out)
        with Image.open(out) as im:
            assert im.format == "PNG" and im.size == draw.strip_size(4, title=True)
    assert "from cache" not in outs[0] and "(features from cache)" in outs[1]
    # same ranking both times (the lines after the gallery summary)
    assert outs[0].splitlines()[1:4] == outs[1].splitlines()[1:4]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    print(f"demo CLI, 24-frame gallery: first query {times[0]:.1f} s, second (cached) {times[1]:.1f} s")
    assert times[1] < times[0]


def test_parse_box_and_gallery_errors(tmp_path):
    np.testing.assert_array_equal(demo.parse_box("1,2,30.5,40"), np.array([1, 2, 30.5, 40], np.float32))
    for bad in ("1,2,3", "a,b,c,d", "10,10,5,20"):
        with pytest.raises(ValueError, match="--box"):
            demo.parse_box(bad)
    with pytest.raises(ValueError, match="no image"):
        demo.list_gallery(tmp_path)
    lst = tmp_path / "list.txt"
    lst.write_text("missing.jpg\n")
    with pytest.raises(ValueError, match="missing.jpg"):
        demo.list_gallery(lst)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert [Path(p).name for p in demo.list_gallery(tmp_path)] == ["a.png", "b.jpg"]


def test_rank_frames_keeps_the_best_detection_per_frame():
    e = np.eye(3, dtype=np.float32)
    g = demo.GalleryFeatures(
        paths=["/g/a.jpg", "/g/b.jpg", "/g/c.jpg"],
        boxes=np.arange(20, dtype=np.float32).reshape(5, 4),
        scores=np.ones(5, np.float32),
        feats=np.stack([e[1], 0.9 * e[0] + 0.1 * e[1], e[0], e[2], 0.5 * e[0] + 0.5 * e[2]]),
        image_index=np.array([0, 0, 1, 1, 2]),
    )
    hits = demo.rank_frames(e[0], g, top=5)
    assert [(h.path, h.rank) for h in hits] == [("/g/b.jpg", 1), ("/g/a.jpg", 2), ("/g/c.jpg", 3)]
    np.testing.assert_array_equal(hits[0].box, g.boxes[2])
    np.testing.assert_array_equal(hits[1].box, g.boxes[1])
    assert hits[0].similarity == pytest.approx(1.0)
    hits = demo.rank_frames(e[0], g, top=1, exclude={"/g/b.jpg"})
    assert [h.path for h in hits] == ["/g/a.jpg"]
