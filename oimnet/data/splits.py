"""An identity-disjoint validation split carved from the training split.

Tuning on the test split makes the reported numbers the ones that chose the
settings. This module holds out a seeded random subset of the *training*
identities as a validation set with a query/gallery protocol shaped like the
dataset's test protocol, and relabels the rest for training:

* **Held-out identities** (``val_ids``): ``max(min_ids, round(fraction * L))``
  of the L labelled training identities, drawn with ``numpy.random
  .default_rng(seed)`` among those seen in at least two images (a query
  needs a positive elsewhere).
* **Images**: every training image that shows a held-out identity moves to
  validation, so no pixel of a validation person is trained on (not even as
  an unlabeled box). Training keeps the other images.
* **Relabelling**: the identities still labelled in the remaining training
  images are renumbered 1..L' in increasing order of their original pid
  (``train_ids[k]`` becomes k + 1), so the OIM lookup table needs L' rows;
  an identity seen only in moved images drops out of training.
* **Gallery**: the moved images; boxes of held-out identities keep their
  original pid, every other box becomes unlabeled (5555).
* **Queries** (like the test split): PRW and the synthetic world: one query
  per held-out identity per camera it appears in (PRW's test set has 2,057
  queries for 450 identities this way); every gallery frame but the query's
  is a candidate. CUHK-SYSU (no cameras): one query per identity, and a
  per-query gallery list like TestG{N}: the other images of the person
  first, then images without the person drawn at random, ``gallery_size``
  entries in all (fewer when the validation images run out).

The split is a plain JSON document (:meth:`ValSplit.save`), written beside a
run and read back on resume; loading it never executes anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from oimnet.constants import UNLABELED_PID

from .records import DatasetError, make_record

SPLIT_FILE = "val_split.json"
FORMAT_VERSION = 1


@dataclass
class ValSplit:
    """What was held out, enough to rebuild the split from the training records.

    Image names refer to the dataset's training records; boxes are x1, y1,
    x2, y2 in original pixels.
    """

    dataset: str
    seed: int
    fraction: float
    val_ids: list[int]  # original training pids held out, sorted
    train_ids: list[int]  # original pids still trained; new pid = index + 1
    val_images: list[str]  # training images moved to validation, in record order
    queries: list[dict]  # {"img_name", "pid" (original), "box": [4 floats], "cam_id"}
    protocol: list[list[dict]] | None = None  # CUHK-SYSU: per query [{"img_name", "box": [4] or None}]
    gallery_size: int | None = None  # CUHK-SYSU: entries per query list asked for
    dropped_ids: list[int] = field(default_factory=list)  # train ids seen only in moved images
    version: int = FORMAT_VERSION

    @property
    def lut_size(self) -> int:
        """Rows the OIM lookup table needs for the remaining training identities."""
        return len(self.train_ids)

    def summary(self) -> dict:
        """Flat numbers worth logging with a run."""
        return {
            "val_seed": self.seed,
            "val_fraction": self.fraction,
            "val_ids": len(self.val_ids),
            "val_images": len(self.val_images),
            "val_queries": len(self.queries),
            "train_ids": len(self.train_ids),
            "dropped_train_ids": len(self.dropped_ids),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ValSplit:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: cannot read the validation split ({e})") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{path}: not a version-{FORMAT_VERSION} validation split file")
        try:
            return cls(**data)
        except TypeError as e:
            raise DatasetError(f"{path}: unexpected validation split fields ({e})") from None


def _labelled(pids: np.ndarray) -> np.ndarray:
    pids = np.asarray(pids).reshape(-1)
    return pids[(pids > 0) & (pids != UNLABELED_PID)]


def carve(
    train: list[dict], dataset: str, *, fraction: float = 0.1, seed: int = 0, gallery_size: int = 100, min_ids: int = 2
) -> ValSplit:
    """Choose the held-out identities and build their protocol (deterministic for a seed).

    Args:
        train: the dataset's training records (``load_records(dataset, root, "train")``).
        dataset: "PRW", "CUHK-SYSU" or "synthetic" (CUHK-SYSU gets per-query gallery lists).
        fraction: share of the labelled training identities to hold out, in (0, 1).
        seed: seeds the identity draw, the query choice and the CUHK-SYSU distractors.
        gallery_size: CUHK-SYSU entries per query list (the test protocol's default is 100).
        min_ids: at least this many identities are held out.
    Raises:
        ValueError when the fraction is out of range or the training split has
        too few identities seen twice to hold out and still train.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation fraction {fraction}: expected a number between 0 and 1 (exclusive)")
    images_of: dict[int, list[int]] = {}
    for i, rec in enumerate(train):
        for pid in sorted(set(_labelled(rec["pids"]).tolist())):
            images_of.setdefault(int(pid), []).append(i)
    all_ids = sorted(images_of)
    eligible = [p for p in all_ids if len(images_of[p]) >= 2]
    n_val = max(int(min_ids), int(round(float(fraction) * len(all_ids))))
    if n_val > len(eligible) or n_val >= len(all_ids):
        raise ValueError(
            f"{dataset}: cannot hold out {n_val} of {len(all_ids)} training identities for validation "
            f"({len(eligible)} are seen in two or more images, and at least one must stay for training); "
            "lower the fraction or use a larger training split"
        )
    rng = np.random.default_rng(int(seed))
    val_ids = sorted(int(p) for p in rng.choice(eligible, size=n_val, replace=False))
    val_set = set(val_ids)
    val_idx = sorted({i for p in val_ids for i in images_of[p]})
    moved = set(val_idx)
    kept_ids = sorted({int(p) for i, rec in enumerate(train) if i not in moved for p in _labelled(rec["pids"])})
    dropped = sorted(set(all_ids) - val_set - set(kept_ids))

    # Queries: per held-out identity, one occurrence per camera (CUHK-SYSU: cam -1, so one).
    queries = []
    for pid in val_ids:
        by_cam: dict[int, list[int]] = {}
        for i in images_of[pid]:
            by_cam.setdefault(int(train[i]["cam_id"]), []).append(i)
        for cam in sorted(by_cam):
            i = int(rng.choice(by_cam[cam]))
            rec = train[i]
            box = np.asarray(rec["boxes"])[np.asarray(rec["pids"]) == pid][0]
            queries.append({"img_name": rec["img_name"], "pid": pid, "box": [float(v) for v in box], "cam_id": cam})

    protocol = None
    if dataset == "CUHK-SYSU":
        protocol = []
        name_of = {i: train[i]["img_name"] for i in val_idx}
        for q in queries:
            pid = q["pid"]
            pos = [i for i in images_of[pid] if name_of[i] != q["img_name"]]
            entries = []
            for i in pos:
                rec = train[i]
                box = np.asarray(rec["boxes"])[np.asarray(rec["pids"]) == pid][0]
                entries.append({"img_name": name_of[i], "box": [float(v) for v in box]})
            others = [i for i in val_idx if i not in set(images_of[pid])]
            n_neg = max(0, min(int(gallery_size) - len(entries), len(others)))
            for i in sorted(int(j) for j in rng.choice(others, size=n_neg, replace=False)):
                entries.append({"img_name": name_of[i], "box": None})
            protocol.append(entries)

    return ValSplit(
        dataset=dataset,
        seed=int(seed),
        fraction=float(fraction),
        val_ids=val_ids,
        train_ids=kept_ids,
        val_images=[train[i]["img_name"] for i in val_idx],
        queries=queries,
        protocol=protocol,
        gallery_size=int(gallery_size) if dataset == "CUHK-SYSU" else None,
        dropped_ids=dropped,
    )


@dataclass
class SplitRecords:
    """Records of one run under a validation split (record dicts as in records.py)."""

    train: list[dict]  # remaining training images, pids renumbered 1..L' (5555 kept)
    gallery: list[dict]  # the moved images: held-out pids kept, others 5555
    query: list[dict]  # one box each, pid = the held-out identity
    protocol: list[list[dict]] | None  # CUHK-SYSU lists as load_cuhk_protocol returns them


def apply(split: ValSplit, train: list[dict]) -> SplitRecords:
    """The records of ``split`` built from the dataset's training records.

    Raises DatasetError when the records do not match the split (a changed
    dataset under a saved split file).
    """
    by_name = {rec["img_name"]: rec for rec in train}
    missing = [n for n in split.val_images if n not in by_name]
    if missing:
        raise DatasetError(
            f"validation split: image {missing[0]!r} is not in the training records "
            f"({len(missing)} missing); the dataset changed since the split was carved"
        )
    new_pid = {p: k + 1 for k, p in enumerate(split.train_ids)}
    val_set = set(split.val_ids)
    moved = set(split.val_images)
    out_train, gallery = [], []
    for rec in train:
        pids = np.asarray(rec["pids"]).reshape(-1)
        if rec["img_name"] in moved:
            kept = np.where(np.isin(pids, list(val_set)), pids, UNLABELED_PID)
            gallery.append(make_record(rec["img_name"], rec["img_path"], rec["boxes"], kept, rec["cam_id"]))
            continue
        if np.isin(pids, list(val_set)).any():
            raise DatasetError(
                f"validation split: training image {rec['img_name']!r} shows a held-out identity "
                "but is not among the split's validation images; the dataset changed"
            )
        relabelled = np.array([new_pid.get(int(p), UNLABELED_PID) for p in pids], dtype=np.int64)
        out_train.append(make_record(rec["img_name"], rec["img_path"], rec["boxes"], relabelled, rec["cam_id"]))
    order = {n: i for i, n in enumerate(split.val_images)}
    gallery.sort(key=lambda r: order[r["img_name"]])
    query = [
        make_record(q["img_name"], by_name[q["img_name"]]["img_path"], [q["box"]], [q["pid"]], q["cam_id"])
        for q in split.queries
    ]
    protocol = None
    if split.protocol is not None:
        protocol = [
            [
                {"img_name": e["img_name"], "box": None if e["box"] is None else np.asarray(e["box"], np.float64)}
                for e in entries
            ]
            for entries in split.protocol
        ]
    return SplitRecords(out_train, gallery, query, protocol)
