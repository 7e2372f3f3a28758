"""Dataset doctor: ``python -m oimnet.data.check --dataset {CUHK-SYSU,PRW,synthetic}
--root DIR [--json]``.

Parses a dataset root without the cache, checks that every image exists
and decodes completely (truncated or corrupt JPEGs are listed; a tqdm
progress bar on stderr; ``--no-decode`` checks existence only), and prints per split: images, boxes, labeled / unlabeled boxes, identities
(PRW layouts also frames per camera) and the number of queries, beside the
published counts of the real sets or, for a generated set, the counts its
generator recorded in ``synth_meta.json``. Exit code 1 when files are
missing or unreadable (the first 20 are listed, with a count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from oimnet.constants import DATASETS, UNLABELED_PID

from . import cuhk, prw
from .records import DatasetError
from .synth import read_meta

PUBLISHED = {
    "CUHK-SYSU": {
        "train": {"images": 11206, "identities": 5532},
        "gallery": {"images": 6978},
        "query": {"images": 2900},
        "total_images": 18184,
    },
    "PRW": {
        "train": {"images": 5704, "identities": 482},
        "gallery": {"images": 6112, "identities": 450},
        "query": {"images": 2057},
        "total_images": 11816,
    },
}
MAX_LISTED = 20


def split_counts(records: list[dict], with_cameras: bool) -> dict:
    """images, boxes, labeled_boxes, unlabeled_boxes, identities of a split."""
    pids = np.concatenate([r["pids"] for r in records]) if records else np.zeros(0, np.int64)
    labeled = pids[pids != UNLABELED_PID]
    out = {
        "images": len(records),
        "boxes": int(pids.size),
        "labeled_boxes": int(labeled.size),
        "unlabeled_boxes": int(pids.size - labeled.size),
        "identities": int(np.unique(labeled).size),
    }
    if with_cameras:
        cams = Counter(r["cam_id"] for r in records)
        out["frames_per_camera"] = {str(c): cams[c] for c in sorted(cams)}
    return out


def image_problem(path: str) -> str | None:
    """Why the image at path cannot be used for training, or None: missing,
    or not decodable to the last pixel (PIL refuses truncated files)."""
    from PIL import Image

    if not os.path.isfile(path):
        return "image file missing"
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
        return f"unreadable image ({type(exc).__name__}: {exc})"
    return None


def check_images(paths: list[str], root: str, decode: bool = True, progress: bool = True) -> list[str]:
    """Problems of the images at paths (one line each, root-relative), in order.
    Decoding runs on a few threads (PIL releases the GIL while decoding)."""
    from tqdm import tqdm

    if not decode:
        return [f"{os.path.relpath(p, root)}: image file missing" for p in paths if not os.path.isfile(p)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(
            tqdm(
                pool.map(image_problem, paths),
                total=len(paths),
                desc="checking images",
                unit="img",
                disable=not progress or None,
                file=sys.stderr,
            )
        )
    return [f"{os.path.relpath(p, root)}: {why}" for p, why in zip(paths, found) if why]


def check(dataset: str, root: str, decode: bool = True, progress: bool = True) -> dict:
    """Validate a root; returns the report dict printed with --json.
    decode: open every image to its last pixel (else existence only)."""
    root = os.path.abspath(root)
    problems: list[str] = []
    report: dict = {"dataset": dataset, "root": root}
    fmt = "cuhk" if dataset == "CUHK-SYSU" else "prw"
    splits = None
    if not os.path.isdir(root):
        problems.append(f"{root}: dataset root not found")
    else:
        try:
            if fmt == "cuhk":
                splits, stats = cuhk.parse_cuhk(root, on_error=problems.append)
                report["parse_stats"] = stats
            else:
                splits = prw.parse_prw(root, on_error=problems.append)
        except DatasetError as exc:
            problems.append(str(exc))
    if splits is not None:
        paths = list(dict.fromkeys(r["img_path"] for split in ("train", "gallery", "query") for r in splits[split]))
        problems.extend(check_images(paths, root, decode=decode, progress=progress))
        for split in ("train", "gallery"):
            report[split] = split_counts(splits[split], with_cameras=fmt == "prw")
        q = splits["query"]
        report["query"] = {"images": len(q), "identities": len({int(r["pids"][0]) for r in q})}
    meta = read_meta(root) if os.path.isdir(root) else None
    if meta is not None:
        report["expected"], report["expected_source"] = meta["counts"], "synth_meta.json"
    elif dataset in PUBLISHED:
        report["expected"], report["expected_source"] = PUBLISHED[dataset], "published"
    report["problem_count"] = len(problems)
    report["problems"] = problems[:MAX_LISTED]
    return report


def format_report(report: dict) -> str:
    """Human-readable table: found (expected) per split and column."""
    exp = report.get("expected", {})
    cols = ("images", "boxes", "labeled_boxes", "unlabeled_boxes", "identities")
    lines = [
        f"{report['dataset']} at {report['root']}"
        + (f"  (expected: {report['expected_source']} counts in brackets)" if exp else "")
    ]
    lines.append(f"{'split':8s}" + "".join(f"{c:>22s}" for c in cols))
    for split in ("train", "gallery", "query"):
        if split not in report:
            continue
        row = f"{split:8s}"
        for c in cols:
            v = report[split].get(c)
            e = exp.get(split, {}).get(c)
            cell = "" if v is None else str(v) + ("" if e is None else f" ({e})")
            row += f"{cell:>22s}"
        lines.append(row)
        if "frames_per_camera" in report[split]:
            lines.append(
                f"{'':8s}frames per camera: "
                + ", ".join(f"c{c}={n}" for c, n in report[split]["frames_per_camera"].items())
            )
    for k, v in report.get("parse_stats", {}).items():
        lines.append(f"{k}: {v}")
    n = report["problem_count"]
    if n:
        lines.append(f"{n} problem(s); first {min(n, MAX_LISTED)}:")
        lines.extend(f"  {p}" for p in report["problems"])
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m oimnet.data.check", description=__doc__.split("\n\n")[1])
    ap.add_argument("--dataset", required=True, choices=DATASETS)
    ap.add_argument("--root", required=True)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-decode", action="store_true", help="only check that the images exist (faster)")
    args = ap.parse_args(argv)
    report = check(args.dataset, args.root, decode=not args.no_decode)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 1 if report["problem_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
