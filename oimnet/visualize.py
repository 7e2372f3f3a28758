"""Draw the queries of an evaluation's results JSON and their top-10 matches.

Example:
  python -m oimnet.visualize --results output/synthetic/results.json \\
      --root data/synthetic-prw --failures --n 20 --out vis/

One PNG per query (``q<index>_<image stem>.png``, index = position in the
results' ``per_query`` list): the query crop, then each of its top-10
gallery detections in its frame, with rank and similarity, green when it is
a correct match and red when not. ``--failures`` keeps only the queries
whose top-1 is wrong (or that have no match at all). Images are looked up
under ``--root`` as ``frames/<img_name>`` (PRW, synthetic),
``Image/SSM/<img_name>`` (CUHK-SYSU) or ``<img_name>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from oimnet.cli import usage_error
from oimnet.viz import draw

__all__ = ["IMAGE_SUBDIRS", "load_results", "find_image", "is_failure", "select_queries", "draw_query", "main"]

IMAGE_SUBDIRS = ("frames", os.path.join("Image", "SSM"), "")


def load_results(path: str | os.PathLike) -> list[dict]:
    """The ``per_query`` list of a results JSON (``oimnet.eval.write_results_json``).

    Each row needs ``img_name``, ``box`` [x1, y1, x2, y2] and ``top10`` =
    [{img_name, box, score, correct}]; raises ValueError naming the file and
    the first offending row/key.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--results {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"--results {path}: not a JSON file ({exc})") from exc
    rows = data.get("per_query") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"--results {path}: no 'per_query' list (evaluate with per-query results kept)")
    for i, row in enumerate(rows):
        where = f"--results {path}: per_query[{i}]"
        for key in ("img_name", "box", "top10"):
            if key not in row:
                raise ValueError(f"{where}: missing key {key!r}")
        _check_box(row["box"], f"{where}.box")
        for j, hit in enumerate(row["top10"]):
            for key in ("img_name", "box", "score", "correct"):
                if key not in hit:
                    raise ValueError(f"{where}.top10[{j}]: missing key {key!r}")
            _check_box(hit["box"], f"{where}.top10[{j}].box")
    return rows


def _check_box(box, where: str) -> None:
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        raise ValueError(f"{where}: expected [x1, y1, x2, y2], got {box!r}")


def find_image(root: str | os.PathLike, img_name: str) -> Path:
    """``root/frames/<name>``, ``root/Image/SSM/<name>`` or ``root/<name>``, the first that exists."""
    tried = [Path(root) / sub / img_name for sub in IMAGE_SUBDIRS]
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(f"image {img_name!r} not found under --root {root} (tried {', '.join(map(str, tried))})")


def is_failure(row: dict) -> bool:
    """True when the query has no ranked match or its top-1 is wrong."""
    return not row["top10"] or not bool(row["top10"][0]["correct"])


def select_queries(rows: list[dict], failures: bool = False, n: int | None = None) -> list[int]:
    """Indices of the rows to draw: all (or only failures), at most n, in order."""
    idx = [i for i, r in enumerate(rows) if not failures or is_failure(r)]
    return idx if n is None else idx[:n]


@lru_cache(maxsize=32)
def _image(path: str) -> Image.Image:
    return draw.load_rgb(path)


def draw_query(
    row: dict, root: str | os.PathLike, index: int | None = None, layout: draw.Layout = draw.Layout()
) -> Image.Image:
    """One query's strip: query crop + its top-10, green correct / red wrong."""
    tiles = [
        draw.Tile(
            _image(str(find_image(root, row["img_name"]))),
            np.asarray(row["box"], np.float32),
            ["query" + (f" pid {row['pid']}" if "pid" in row else ""), row["img_name"]],
            draw.YELLOW,
        )
    ]
    for rank, hit in enumerate(row["top10"], 1):
        color = draw.GREEN if hit["correct"] else draw.RED
        tiles.append(
            draw.Tile(
                _image(str(find_image(root, hit["img_name"]))),
                np.asarray(hit["box"], np.float32),
                [f"#{rank}  sim {float(hit['score']):.3f}", hit["img_name"]],
                color,
                str(rank),
            )
        )
    n_ok = sum(bool(h["correct"]) for h in row["top10"])
    title = f"query {'' if index is None else f'{index} '}{row['img_name']}: {n_ok}/{len(row['top10'])} correct in the top {len(row['top10'])}"
    if "ap" in row:
        title += f", AP {100 * float(row['ap']):.1f}%"
    if "count_gt" in row:
        title += f", {row['count_gt']} gallery frame(s) hold the person"
    return draw.render_strip(tiles, layout, title=title)


def output_name(index: int, row: dict) -> str:
    return f"q{index:05d}_{Path(row['img_name']).stem}.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m oimnet.visualize",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--results", required=True, metavar="RESULTS.json", help="results JSON of an evaluation")
    p.add_argument("--root", required=True, metavar="DATA_ROOT", help="dataset root holding the images")
    p.add_argument("--failures", action="store_true", help="only queries whose top-1 match is wrong")
    p.add_argument("--n", type=int, default=None, metavar="N", help="draw at most N queries (default all)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNGs")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 0:
        usage_error(f"--n {args.n}: expected a number >= 0")
    if not os.path.isdir(args.root):
        usage_error(f"--root {args.root}: no such folder")
    try:
        rows = load_results(args.results)
    except (FileNotFoundError, ValueError) as exc:
        usage_error(str(exc))
    chosen = select_queries(rows, args.failures, args.n)
    try:
        for i in chosen:
            draw.save_png(draw_query(rows[i], args.root, i), Path(args.out) / output_name(i, rows[i]))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    kind = "failed queries" if args.failures else "queries"
    print(f"{len(chosen)} of {len(rows)} queries drawn ({kind}) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
