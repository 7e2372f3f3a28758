"""Writing a planned world to disk in the PRW or the CUHK-SYSU layout
(JPEG frames, MATLAB files via scipy.io.savemat, query files), and the
counts a loader should find there."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import scipy.io
from PIL import ImageDraw

from .layout import UNLABELED
from .render import apply_lighting, draw_clutter, draw_occluder, draw_person, render_background

JPEG_QUALITY = 90
CUHK_GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


# ------------------------------------------------------------- rendering
class FrameRenderer:
    """Renders planned frames; camera backgrounds are drawn once."""

    def __init__(self, plan: dict):
        self.plan = plan
        w, h = plan["width"], plan["height"]
        self.backgrounds = {s["cam"]: render_background(s, w, h) for s in plan["cameras"]}

    def render(self, frame: dict):
        plan = self.plan
        w, h = plan["width"], plan["height"]
        rng = np.random.default_rng([plan["seed"], 2, frame["index"]])
        style = plan["cameras"][frame["cam"] - 1]
        img = self.backgrounds[frame["cam"]].copy()
        d = ImageDraw.Draw(img)
        draw_clutter(d, style, w, h, rng, int(rng.integers(1, 5)))
        for p in sorted(frame["people"], key=lambda p: p["foot"]):
            draw_person(d, p["cx"], p["foot"], p["h"], p["app"], p["facing"], p["stride"], rng)
        if rng.random() < 0.25:
            draw_occluder(d, style, w, h, rng)
        gain = style["gain"] * rng.uniform(0.85, 1.15)
        return apply_lighting(img, gain, style["tint"], float(rng.uniform(-0.15, 0.15)), rng)


def _save_jpeg(img, path: str) -> None:
    img.save(path, quality=JPEG_QUALITY)


# ---------------------------------------------------------- MATLAB helpers
def _struct(rows: list[dict], fields: list[str], shape=None) -> np.ndarray:
    """A MATLAB struct array (1 x n by default) from dicts of field values."""
    arr = np.empty(shape or (1, len(rows)), dtype=[(f, object) for f in fields])
    flat = arr.reshape(-1)
    for i, row in enumerate(rows):
        for f in fields:
            flat[f][i] = row[f]
    return arr


def _cell_column(values: list) -> np.ndarray:
    arr = np.empty((len(values), 1), dtype=object)
    for i, v in enumerate(values):
        arr[i, 0] = v
    return arr


def _scalar(v) -> np.ndarray:
    return np.array([[float(v)]])


# ------------------------------------------------------------------ boxes
def prw_xywh(box) -> list[float]:
    x1, y1, x2, y2 = box
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def cuhk_xywh(box, width: int, height: int) -> list[int]:
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    return [x1, y1, x2 - x1, y2 - y1]


# -------------------------------------------------------------------- PRW
def write_prw(plan: dict, out: str, render: bool = True) -> None:
    """PRW layout: frames/, annotations/<name>.jpg.mat (box_new, sometimes
    anno_file / anno_previous), frame_{train,test}.mat, query_info.txt
    (\\r\\n line ends), ID_{train,test}.mat, query_box/ crops."""
    for sub in ("frames", "annotations", "query_box"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    renderer = FrameRenderer(plan) if render else None
    query_frames = {fi for fi, _ in plan["queries"]}
    crops = {}
    for f in plan["frames"]:
        rows = [[p["pid"]] + prw_xywh(p["box"]) for p in f["people"]]
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        key = ("box_new", "anno_file", "anno_previous")[f["index"] % 20 // 17 + (f["index"] % 20 == 19)]
        scipy.io.savemat(os.path.join(out, "annotations", f["prw_name"] + ".mat"), {key: rows})
        if renderer is not None:
            img = renderer.render(f)
            _save_jpeg(img, os.path.join(out, "frames", f["prw_name"]))
            if f["index"] in query_frames:
                crops[f["index"]] = img
    names = {s: [f["prw_name"][:-4] for f in plan["frames"] if f["split"] == s] for s in ("train", "test")}
    scipy.io.savemat(os.path.join(out, "frame_train.mat"), {"img_index_train": _cell_column(names["train"])})
    scipy.io.savemat(os.path.join(out, "frame_test.mat"), {"img_index_test": _cell_column(names["test"])})
    scipy.io.savemat(os.path.join(out, "ID_train.mat"), {"ID_train": np.asarray([plan["train_ids"]], float)})
    scipy.io.savemat(os.path.join(out, "ID_test.mat"), {"ID_test": np.asarray([plan["test_ids"]], float)})
    lines = []
    for fi, j in plan["queries"]:
        f = plan["frames"][fi]
        p = f["people"][j]
        x, y, w, h = prw_xywh(p["box"])
        lines.append(f"{p['pid']} {x:g} {y:g} {w:g} {h:g} {f['prw_name'][:-4]}\r\n")
        if fi in crops:
            x1, y1, x2, y2 = (int(round(v)) for v in p["box"])
            _save_jpeg(
                crops[fi].crop((max(0, x1), y1, x2, y2)), os.path.join(out, "query_box", f"{p['pid']}_{f['prw_name']}")
            )
    with open(os.path.join(out, "query_info.txt"), "wb") as fh:
        fh.write("".join(lines).encode("utf-8"))


# ------------------------------------------------------------------- CUHK
def cuhk_queries(plan: dict) -> list[tuple[int, int]]:
    """One query per test identity (its first planned query)."""
    seen, out = set(), []
    for fi, j in plan["queries"]:
        pid = plan["frames"][fi]["people"][j]["pid"]
        if pid not in seen:
            seen.add(pid)
            out.append((fi, j))
    return out


def write_cuhk(plan: dict, out: str, render: bool = True) -> None:
    """CUHK-SYSU layout: Image/SSM/, annotation/Images.mat (with a few
    zero-size boxes), pool.mat, test/train_test/Train.mat and TestG{N}.mat
    (N capped at the number of other gallery images)."""
    w, h = plan["width"], plan["height"]
    img_dir, ann_dir = os.path.join(out, "Image", "SSM"), os.path.join(out, "annotation")
    proto_dir = os.path.join(ann_dir, "test", "train_test")
    for d in (img_dir, proto_dir):
        os.makedirs(d, exist_ok=True)
    renderer = FrameRenderer(plan) if render else None
    frames = plan["frames"]
    boxes = {f["index"]: [cuhk_xywh(p["box"], w, h) for p in f["people"]] for f in frames}

    img_rows = []
    for f in sorted(frames, key=lambda f: int(f["cuhk_name"][1:-4])):
        rows = [{"idlocate": np.asarray([b], float)} for b in boxes[f["index"]]]
        if f["index"] % 29 == 0:  # a zero-size box, as some real images have
            rows.append({"idlocate": np.asarray([[5.0, 5.0, 0.0, 20.0]])})
        img_rows.append(
            {"imname": f["cuhk_name"], "nAppear": _scalar(len(rows)), "idlocate": _struct(rows, ["idlocate"])}
        )
        if renderer is not None:
            _save_jpeg(renderer.render(f), os.path.join(img_dir, f["cuhk_name"]))
    scipy.io.savemat(os.path.join(ann_dir, "Images.mat"), {"Img": _struct(img_rows, ["imname", "nAppear", "idlocate"])})
    gallery = [f for f in frames if f["split"] == "test"]
    scipy.io.savemat(os.path.join(ann_dir, "pool.mat"), {"pool": _cell_column([f["cuhk_name"] for f in gallery])})

    train_cells = []
    for pid in plan["train_ids"]:
        scenes = [
            {"imname": f["cuhk_name"], "idlocate": np.asarray([boxes[f["index"]][j]], float), "ishard": _scalar(0)}
            for f in frames
            if f["split"] == "train"
            for j, p in enumerate(f["people"])
            if p["pid"] == pid
        ]
        train_cells.append(
            _struct(
                [
                    {
                        "idname": f"p{pid:05d}",
                        "nAppear": _scalar(len(scenes)),
                        "scene": _struct(scenes, ["imname", "idlocate", "ishard"]),
                    }
                ],
                ["idname", "nAppear", "scene"],
            )
        )
    scipy.io.savemat(os.path.join(proto_dir, "Train.mat"), {"Train": _cell_column(train_cells)})

    rng = np.random.default_rng([plan["seed"], 3])
    queries = cuhk_queries(plan)
    negatives_order = [rng.permutation(len(gallery)) for _ in queries]
    for size in CUHK_GALLERY_SIZES:
        items = []
        for (fi, j), perm in zip(queries, negatives_order):
            qf, pid = frames[fi], frames[fi]["people"][j]["pid"]
            positives, negatives = [], []
            for gi in perm.tolist():
                g = gallery[gi]
                if g["index"] == fi:
                    continue
                hit = [k for k, p in enumerate(g["people"]) if p["pid"] == pid]
                if hit:
                    positives.append(
                        {
                            "imname": g["cuhk_name"],
                            "idlocate": np.asarray([boxes[g["index"]][hit[0]]], float),
                            "ishard": _scalar(0),
                        }
                    )
                else:
                    negatives.append({"imname": g["cuhk_name"], "idlocate": np.zeros((1, 0)), "ishard": _scalar(0)})
            entries = positives + negatives[: max(0, size - len(positives))]
            query = _struct(
                [
                    {
                        "imname": qf["cuhk_name"],
                        "idlocate": np.asarray([boxes[fi][j]], float),
                        "ishard": _scalar(0),
                        "idname": f"p{pid:05d}",
                    }
                ],
                ["imname", "idlocate", "ishard", "idname"],
            )
            items.append({"Query": query, "Gallery": _struct(entries, ["imname", "idlocate", "ishard"])})
        scipy.io.savemat(
            os.path.join(proto_dir, f"TestG{size}.mat"), {f"TestG{size}": _struct(items, ["Query", "Gallery"])}
        )


# ----------------------------------------------------------------- counts
def expected_counts(plan: dict, fmt: str) -> dict:
    """What a loader should report per split, computed from the plan:
    images, boxes, labeled/unlabeled boxes, identities; query images and
    identities; PRW frames per camera."""
    frames = plan["frames"]
    if fmt == "cuhk":
        queries = cuhk_queries(plan)
        test_labeled = {frames[fi]["people"][j]["pid"] for fi, j in queries}
    else:
        queries = plan["queries"]
        test_labeled = set(plan["test_ids"])
    labeled_ids = {"train": set(plan["train_ids"]), "test": test_labeled}
    out = {}
    for split, name in (("train", "train"), ("test", "gallery")):
        fs = [f for f in frames if f["split"] == split]
        pids = [p["pid"] for f in fs for p in f["people"]]
        labeled = [pid for pid in pids if pid in labeled_ids[split]]
        out[name] = {
            "images": len(fs),
            "boxes": len(pids),
            "labeled_boxes": len(labeled),
            "unlabeled_boxes": len(pids) - len(labeled),
            "identities": len(set(labeled)),
        }
        if fmt == "prw":
            cams = Counter(f["cam"] for f in fs)
            out[name]["frames_per_camera"] = {str(c): cams[c] for c in sorted(cams)}
    qpids = {frames[fi]["people"][j]["pid"] for fi, j in queries}
    out["query"] = {"images": len(queries), "identities": len(qpids)}
    assert UNLABELED not in qpids
    return out
