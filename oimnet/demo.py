"""Search a person in a folder of images with a trained checkpoint.

Example:
  python -m oimnet.demo --ckpt output/synthetic/epoch_010.pth \\
      --cfg experiments/synthetic.yaml --query data/synthetic-prw/frames/c1s1_000003.jpg \\
      --box 120,40,160,140 --gallery data/synthetic-prw/frames --top 5 --out search.png

Every gallery image is detected and embedded (progress bar); all detections
are ranked by cosine similarity to the embedding of the query box, and the
best detection of each frame is kept, so the figure shows the top-K frames:
the query crop, then each frame around its matched box with rank and
similarity. The query image itself is left out of the gallery. Gallery
features are cached on disk (key: checkpoint path + mtime, merged config,
image paths + mtimes), so further queries against the same gallery only
embed the query box.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oimnet.cli import add_config_args, config_from_args, parse_args, usage_error
from oimnet.data.transforms import to_tensor
from oimnet.models.predictor import Predictor
from oimnet.viz import draw

__all__ = [
    "IMAGE_EXTENSIONS",
    "GalleryFeatures",
    "Hit",
    "parse_box",
    "list_gallery",
    "load_predictor",
    "prepare_image",
    "embed_gallery",
    "embed_query",
    "rank_frames",
    "draw_search",
    "default_cache_dir",
    "main",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CACHE_VERSION = 2  # 2: images resized inside the model (features differ from version 1)


@dataclass
class GalleryFeatures:
    """Detections of a gallery, concatenated over images.

    paths: image files (absolute); boxes float32 (D, 4) x1y1x2y2 in original
    pixels; scores (D,) detection scores; feats float32 (D, F) embeddings;
    image_index int64 (D,) position of each detection's image in ``paths``.
    """

    paths: list[str]
    boxes: np.ndarray
    scores: np.ndarray
    feats: np.ndarray
    image_index: np.ndarray


@dataclass
class Hit:
    """One ranked gallery frame: its best-matching detection."""

    rank: int  # 1-based
    path: str
    box: np.ndarray  # (4,) original pixels
    similarity: float  # cosine similarity to the query box, in [-1, 1]
    det_score: float


# ------------------------------------------------------------------ inputs
def parse_box(text: str) -> np.ndarray:
    """ "x1,y1,x2,y2" (pixels of the original image) -> float32 (4,); x2 > x1, y2 > y1."""
    try:
        box = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"--box {text!r}: expected four numbers x1,y1,x2,y2")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"--box {text!r}: expected x2 > x1 and y2 > y1")
    return box


def list_gallery(spec: str | os.PathLike) -> list[str]:
    """Gallery image paths (absolute) from a folder (its image files, sorted
    by name, not recursive) or a text file (one path per line, relative
    paths from the list's folder; blank lines and ``#`` comments skipped)."""
    spec = Path(spec)
    if spec.is_dir():
        paths = sorted(p for p in spec.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not paths:
            raise ValueError(f"--gallery {spec}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    elif spec.is_file():
        lines = [ln.strip() for ln in spec.read_text(encoding="utf-8").splitlines()]
        paths = [(spec.parent / ln) for ln in lines if ln and not ln.startswith("#")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"--gallery {spec}: {len(missing)} listed image(s) not found, e.g. {missing[0]}")
        if not paths:
            raise ValueError(f"--gallery {spec}: the list names no image")
    else:
        raise ValueError(f"--gallery {spec}: no such folder or list file")
    return [str(p.resolve()) for p in paths]


def prepare_image(path: str, boxes=None) -> tuple[torch.Tensor, np.ndarray]:
    """Image file -> (float tensor 3xHxW in [0, 1] at original size, as the
    test loader gives it, boxes float32 (n, 4)); the model resizes both."""
    img = draw.load_rgb(path)
    boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
    return to_tensor(img), boxes


def load_predictor(cfg, ckpt: str, device: torch.device) -> Predictor:
    """The predictor of build_model(cfg) with the checkpoint's weights (strict) on device."""
    return Predictor.from_checkpoint(cfg, ckpt, device)


# ------------------------------------------------------------------ gallery
def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oimnet" / "demo"


def _stat(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_mtime_ns, st.st_size]


def cache_key(ckpt: str, cfg, paths: list[str]) -> str:
    """sha256 over the checkpoint (path, mtime, size), the merged config and
    every gallery image (path, mtime, size)."""
    from omegaconf import OmegaConf

    payload = {
        "v": CACHE_VERSION,
        "ckpt": _stat(ckpt),
        "cfg": OmegaConf.to_yaml(cfg),
        "images": [_stat(p) for p in paths],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save_features(path: Path, g: GalleryFeatures, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(
        {
            "key": key,
            "paths": list(g.paths),
            "boxes": torch.from_numpy(g.boxes),
            "scores": torch.from_numpy(g.scores),
            "feats": torch.from_numpy(g.feats),
            "image_index": torch.from_numpy(g.image_index),
        },
        tmp,
    )
    os.replace(tmp, path)


def _load_features(path: Path, key: str) -> GalleryFeatures | None:
    """The cached features, or None when the file is absent, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("key") != key:
            return None
        return GalleryFeatures(
            list(obj["paths"]),
            obj["boxes"].numpy(),
            obj["scores"].numpy(),
            obj["feats"].numpy(),
            obj["image_index"].numpy(),
        )
    except Exception:  # noqa: BLE001 - a broken cache file is recomputed, never fatal
        return None


def gallery_records(paths: list[str]) -> list[dict]:
    """Records (oimnet.data.records) of unannotated images, for the test loader."""
    return [
        {
            "img_path": p,
            "img_name": os.path.basename(p),
            "boxes": np.zeros((0, 4), np.float32),
            "pids": np.zeros(0, np.int64),
        }
        for p in paths
    ]


def _detect_all(predictor: Predictor, cfg, paths: list[str], progress: bool) -> GalleryFeatures:
    """Every image through the test loader and the predictor, as the evaluation's gallery pass."""
    from oimnet.data import build_test_loader

    loader = build_test_loader(cfg, "gallery", gallery_records(paths))
    results = predictor.predict_loader(loader, "gallery", progress=progress)
    per_image = [results[i] for i in range(len(paths))]  # list_gallery gives at least one image
    return GalleryFeatures(
        list(paths),
        np.concatenate([r.boxes for r in per_image]),
        np.concatenate([r.scores for r in per_image]),
        np.concatenate([r.embeddings for r in per_image]),
        np.concatenate([np.full(len(r.boxes), i, dtype=np.int64) for i, r in enumerate(per_image)]),
    )


def embed_gallery(
    predictor: Predictor,
    cfg,
    paths: list[str],
    *,
    ckpt: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[GalleryFeatures, bool]:
    """Detections and embeddings of every gallery image.

    With ``cache_dir`` and ``ckpt`` the result is read from / written to
    ``cache_dir/<key>.pt`` (see :func:`cache_key`). Returns (features,
    True when they came from the cache).
    """
    cache_file = key = None
    if cache_dir is not None and ckpt is not None:
        key = cache_key(ckpt, cfg, paths)
        cache_file = Path(cache_dir) / f"{key[:32]}.pt"
        cached = _load_features(cache_file, key)
        if cached is not None:
            return cached, True
    g = _detect_all(predictor, cfg, paths, progress)
    if cache_file is not None:
        _save_features(cache_file, g, key)
    return g, False


def embed_query(predictor: Predictor, path: str, box) -> np.ndarray:
    """Embedding float32 (F,) of ``box`` (original pixels) in image ``path``."""
    img, boxes = prepare_image(path, box)
    return predictor.embed([img], [boxes])[0].reshape(-1)


# ------------------------------------------------------------------ ranking
def rank_frames(
    query_feat: np.ndarray, gallery: GalleryFeatures, top: int, exclude: set[str] | frozenset = frozenset()
) -> list[Hit]:
    """The ``top`` frames whose best detection is most similar (cosine) to the
    query, best first; frames in ``exclude`` (absolute paths) are skipped.
    Ties keep detection order."""
    q = np.asarray(query_feat, np.float64).reshape(-1)
    q = q / max(np.linalg.norm(q), 1e-12)
    f = gallery.feats.astype(np.float64)
    sims = (f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)) @ q
    if exclude:
        skip = np.array([p in exclude for p in gallery.paths], dtype=bool)
        keep = ~skip[gallery.image_index] if len(gallery.image_index) else np.zeros(0, bool)
    else:
        keep = np.ones(len(sims), bool)
    det = np.nonzero(keep)[0]
    order = det[np.argsort(-sims[det], kind="stable")]
    # first (= best) detection of each frame along the ranking
    _, first = np.unique(gallery.image_index[order], return_index=True)
    best = order[np.sort(first)][:top]
    return [
        Hit(
            rank=i + 1,
            path=gallery.paths[gallery.image_index[d]],
            box=gallery.boxes[d].copy(),
            similarity=float(sims[d]),
            det_score=float(gallery.scores[d]),
        )
        for i, d in enumerate(best)
    ]


def draw_search(query_path: str, query_box, hits: list[Hit], layout: draw.Layout = draw.Layout()) -> Image.Image:
    """The figure: query crop, then each hit's frame around its box with rank and similarity."""
    tiles = [
        draw.Tile(
            draw.load_rgb(query_path),
            np.asarray(query_box, np.float32),
            ["query", os.path.basename(query_path)],
            draw.YELLOW,
        )
    ]
    for h in hits:
        tiles.append(
            draw.Tile(
                draw.load_rgb(h.path),
                h.box,
                [f"#{h.rank}  sim {h.similarity:.3f}", os.path.basename(h.path)],
                draw.BLUE,
                str(h.rank),
            )
        )
    title = f"query {os.path.basename(query_path)}: top {len(hits)} frames by cosine similarity"
    return draw.render_strip(tiles, layout, title=title)


# ------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m oimnet.demo",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ckpt", required=True, metavar="PATH", help="checkpoint ({'model': state_dict} or a bare state dict)"
    )
    p.add_argument("--query", required=True, metavar="IMAGE", help="image holding the query person")
    p.add_argument("--box", required=True, metavar="x1,y1,x2,y2", help="query box in the image's pixels")
    p.add_argument("--gallery", required=True, metavar="DIR_OR_LIST", help="folder of images or text file listing them")
    p.add_argument("--top", type=int, default=5, metavar="K", help="frames to show (default 5)")
    p.add_argument("--out", default="search.png", metavar="FILE.png", help="figure path (default search.png)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the config's DEVICE)")
    p.add_argument(
        "--cache-dir", default=None, metavar="DIR", help=f"gallery feature cache (default {default_cache_dir()})"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    add_config_args(p, cfg_required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = config_from_args(args.cfg, args.opts or [])
    if args.top < 1:
        usage_error(f"--top {args.top}: expected a positive number")
    try:
        box = parse_box(args.box)
        paths = list_gallery(args.gallery)
    except ValueError as exc:
        usage_error(str(exc))
    for flag, path in (("--ckpt", args.ckpt), ("--query", args.query)):
        if not os.path.isfile(path):
            usage_error(f"{flag} {path}: no such file")
    from oimnet.engine.device import select_device

    if args.device:
        cfg.DEVICE = args.device
    try:
        device = select_device(cfg)
        predictor = load_predictor(cfg, args.ckpt, device)
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        gallery, cached = embed_gallery(predictor, cfg, paths, ckpt=args.ckpt, cache_dir=cache_dir)
        query_feat = embed_query(predictor, args.query, box)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    hits = rank_frames(query_feat, gallery, args.top, exclude={str(Path(args.query).resolve())})
    out = draw.save_png(draw_search(args.query, box, hits), args.out)
    print(f"gallery: {len(paths)} images, {len(gallery.boxes)} detections{' (features from cache)' if cached else ''}")
    for h in hits:
        print(
            f"  #{h.rank}  sim {h.similarity:.3f}  {os.path.basename(h.path)}  "
            f"box {', '.join(f'{v:.0f}' for v in h.box)}"
        )
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
