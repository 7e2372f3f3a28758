"""Results JSON and the human-readable metrics table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_results_json", "format_table", "scalar_items"]

_ORDER = (
    "det_ap",
    "det_recall",
    "det_ap_labeled",
    "det_recall_labeled",
    "mAP",
    "top1",
    "top5",
    "top10",
    "mAP_multiview",
    "top1_multiview",
    "top5_multiview",
    "top10_multiview",
)


def _plain(x):
    """NumPy scalars/arrays -> JSON-ready Python values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_results_json(path, metrics: dict) -> None:
    """Write the metrics dict as JSON, atomically: one key per line, and
    each element of a list value (per_query) on a line of its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _plain(metrics)
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            inner = ",\n  ".join(json.dumps(v) for v in value)
            lines.append(f"{json.dumps(key)}: [\n  {inner}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("{\n " + ",\n ".join(lines) + "\n}\n")
    os.replace(tmp, path)


def scalar_items(metrics: dict) -> dict:
    """Every scalar (non-list) entry of metrics, JSON-ready."""
    return {k: _plain(v) for k, v in metrics.items() if not isinstance(v, (list, tuple, dict))}


def format_table(metrics: dict) -> str:
    """A small aligned text table of the metrics (percentages) and settings."""
    head = [
        f"dataset {metrics.get('dataset')}  queries {metrics.get('n_queries')}  gallery images "
        f"{metrics.get('n_gallery')}  CBGM {'on' if metrics.get('use_cbgm') else 'off'}"
    ]
    if "gallery_size" in metrics:
        head.append(
            f"gallery size {metrics['gallery_size']} ({'full set' if metrics['gallery_size'] == -1 else 'TestG'})"
        )
    if "multi_view" in metrics:
        head.append(f"main metrics: {'multi-view (other cameras)' if metrics['multi_view'] else 'all cameras'}")
    rows = [f"  {k:<20s} {100.0 * metrics[k]:7.2f}%" for k in _ORDER if metrics.get(k) is not None]
    return "\n".join(head + rows)
