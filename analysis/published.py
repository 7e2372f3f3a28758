"""Published numbers to stand beside ours (``analysis/published_results.csv``).

The CSV is a copy of the project's spec file. Every value in it comes from
secondary sources (later papers' comparison tables); its ``verified`` column
says so and is carried into the tables' footnote.

Only rows of *this* paper are mapped: the CSV's "OIM" is Xiao et al.'s
original OIM (CVPR 2017), not the OIMNet baseline of Lee et al., so a row
labelled "OIMNet" gets no published value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

CSV_PATH = Path(__file__).resolve().parent / "published_results.csv"

# paper_label of a grid row -> method name in the CSV.
METHOD_FOR_LABEL = {"OIMNet++": "OIMNet++", "OIMNet+++": "OIMNet+++"}

# --dataset name -> CSV column prefix.
DATASET_PREFIX = {"prw": "prw", "cuhk": "cuhk"}
# our metric key -> CSV column suffix.
METRIC_SUFFIX = {"mAP": "map", "top1": "top1"}


@dataclass(frozen=True)
class Published:
    method: str
    values: dict[tuple[str, str], float]  # (dataset, metric) -> percent
    source: str
    verified: str


def load_published(path: str | Path = CSV_PATH) -> dict[str, Published]:
    """method -> Published; a clear error when the file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: published results file not found")
    out: dict[str, Published] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"method", "source", "verified"} | {
            f"{d}_{m}" for d in DATASET_PREFIX.values() for m in METRIC_SUFFIX.values()
        }
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, rec in enumerate(reader, start=2):
            values = {}
            for ds, prefix in DATASET_PREFIX.items():
                for metric, suffix in METRIC_SUFFIX.items():
                    text = (rec[f"{prefix}_{suffix}"] or "").strip()
                    if text:
                        try:
                            values[(ds, metric)] = float(text)
                        except ValueError:
                            raise ValueError(f"{path}:{line}: {prefix}_{suffix}: {text!r} is not a number") from None
            out[rec["method"]] = Published(rec["method"], values, rec["source"], rec["verified"])
    return out


def published_for(label: str, table: dict[str, Published]) -> Published | None:
    method = METHOD_FOR_LABEL.get(label or "")
    return table.get(method) if method else None
