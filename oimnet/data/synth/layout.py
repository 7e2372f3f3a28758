"""Planning the synthetic world: identities, cameras, frames, who stands
where, and the queries. Pure numbers (no pixels), deterministic for a seed.

A plan is a dict::

    {"width", "height", "cameras": [style...], "identities": {pid: appearance},
     "train_ids": [...], "test_ids": [...],
     "frames": [{"index", "cam", "split", "prw_name", "cuhk_name",
                 "people": [{"pid" (-2 = unlabeled), "app", "cx", "foot", "h",
                             "facing", "stride", "box" (x1, y1, x2, y2), "cover"}]}],
     "queries": [(frame index, person index)]}

People are drawn far-to-near (by ``foot``); ``cover`` is the fraction of a
person's box overlapped by nearer people (kept <= MAX_COVER).
"""

from __future__ import annotations

import numpy as np

from .appearance import sample_appearance, sample_identities
from .render import camera_style, person_box

SKIPPED_IDS = (483, 932)  # PRW treats these as unlabeled in training
UNLABELED = -2
MAX_COVER = 0.5
MIN_APPEARANCES = 3
NUM_CAMERAS = 6


def _number_ids(n: int, start: int = 1) -> list[int]:
    out, pid = [], start
    while len(out) < n:
        if pid not in SKIPPED_IDS:
            out.append(pid)
        pid += 1
    return out


def _cover(boxes: np.ndarray, feet: np.ndarray) -> np.ndarray:
    """Per box, summed intersection with nearer boxes (larger foot y) / own area."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    nearer = feet[None, :] > feet[:, None]
    area = np.maximum((x2 - x1) * (y2 - y1), 1e-6)
    return (iw * ih * nearer).sum(axis=1) / area


def _place(
    people: list[dict],
    pid: int,
    app: dict,
    style: dict,
    width: int,
    height: int,
    rng: np.random.Generator,
    tries: int = 25,
) -> bool:
    """Add a person at a random spot where nobody ends up more than
    MAX_COVER covered; False when no spot is found."""
    hz = style["horizon"]
    foot_min = hz + 0.3 * (height - hz)
    for _ in range(tries):
        foot = rng.uniform(foot_min, height - 1)
        t = (foot - foot_min) / max(height - 1 - foot_min, 1e-6)
        h = (style["h_far"] + t * (style["h_near"] - style["h_far"])) * app["height"]
        facing = int(rng.choice([-1, 1]))
        x1, _, x2, _ = person_box(0.0, foot, h, app, facing)
        if rng.random() < 0.04:  # partly outside the left border (negative x, a PRW quirk)
            cx = rng.uniform(-0.4 * x1, -x1)  # box left edge in [0.6 * x1, 0)
        else:
            cx = rng.uniform(-x1, max(-x1, width - x2))
        box = person_box(cx, foot, h, app, facing)
        cand = people + [{"box": box, "foot": foot}]
        cover = _cover(np.array([p["box"] for p in cand]), np.array([p["foot"] for p in cand]))
        if (cover <= MAX_COVER).all():
            people.append(
                {
                    "pid": pid,
                    "app": app,
                    "cx": cx,
                    "foot": foot,
                    "h": h,
                    "facing": facing,
                    "stride": float(rng.uniform(-1, 1)),
                    "box": box,
                }
            )
            for p, c in zip(people, cover):
                p["cover"] = float(c)
            return True
    return False


def _frame_names(cams: np.ndarray) -> tuple[list[str], list[str]]:
    """PRW-style ``c{cam}s{seq}_{num:06d}.jpg`` and CUHK-style ``s{k}.jpg`` names."""
    counters: dict[int, int] = {}
    prw = []
    for cam in cams.tolist():
        k = counters.get(cam, 0)
        counters[cam] = k + 1
        prw.append(f"c{cam}s{1 + k // 200}_{25 * (k % 200 + 1) + cam:06d}.jpg")
    cuhk = [f"s{k}.jpg" for k in range(1, len(cams) + 1)]
    return prw, cuhk


def plan_world(seed: int, identities: int, frames: int, width: int, height: int, train_frac: float = 0.6) -> dict:
    """Plan a world of ``identities`` people (60 % train, 40 % test, disjoint)
    over ``frames`` frames from 6 cameras (``train_frac`` of them training)."""
    if identities < 2:
        raise ValueError(f"identities={identities}: need at least 2 (train and test)")
    if frames < 4:
        raise ValueError(f"frames={frames}: need at least 4")
    rng = np.random.default_rng([seed, 0])
    n_train = min(identities - 1, max(1, round(identities * 0.6)))
    train_ids = _number_ids(n_train)
    test_ids = _number_ids(identities - n_train, start=train_ids[-1] + 1)
    apps = dict(zip(train_ids + test_ids, sample_identities(identities, rng)))
    cameras = [camera_style(c, width, height, rng) for c in range(1, NUM_CAMERAS + 1)]
    cams = rng.permutation(np.arange(frames) % NUM_CAMERAS + 1)
    n_train_frames = min(frames - 2, max(2, round(frames * train_frac)))
    is_train = rng.permutation(frames) < n_train_frames
    prw_names, cuhk_names = _frame_names(cams)
    cuhk_names = [cuhk_names[i] for i in rng.permutation(frames)]
    plan_frames = [
        {
            "index": i,
            "cam": int(cams[i]),
            "split": "train" if is_train[i] else "test",
            "prw_name": prw_names[i],
            "cuhk_name": cuhk_names[i],
            "people": [],
        }
        for i in range(frames)
    ]

    for split, ids in (("train", train_ids), ("test", test_ids)):
        split_frames = [f for f in plan_frames if f["split"] == split]
        ranks = rng.permutation(len(ids)) + 1
        weights = ranks**-0.8  # long-tailed identity frequency
        weights /= weights.sum()
        for f in split_frames:
            frng = np.random.default_rng([seed, 1, f["index"]])
            style = cameras[f["cam"] - 1]
            k = int(frng.integers(2, 7))
            n_lab = min(len(ids), max(1, k - int(frng.binomial(k, 0.25))))
            chosen = frng.choice(ids, size=n_lab, replace=False, p=weights).tolist()
            for pid in chosen:
                _place(f["people"], int(pid), apps[int(pid)], style, width, height, frng)
            for _ in range(k - n_lab):
                _place(f["people"], UNLABELED, sample_appearance(frng), style, width, height, frng)
        _top_up(split_frames, ids, apps, cameras, width, height, rng)

    plan = {
        "width": width,
        "height": height,
        "seed": seed,
        "cameras": cameras,
        "identities": apps,
        "train_ids": train_ids,
        "test_ids": test_ids,
        "frames": plan_frames,
    }
    plan["queries"] = _choose_queries(plan, rng)
    return plan


def _top_up(split_frames, ids, apps, cameras, width, height, rng) -> None:
    """Give every identity at least MIN_APPEARANCES sightings (rare ids of the
    long tail), adding them to random frames of the split that lack them."""
    counts = {pid: 0 for pid in ids}
    for f in split_frames:
        for p in f["people"]:
            if p["pid"] in counts:
                counts[p["pid"]] += 1
    for pid in ids:
        need = MIN_APPEARANCES - counts[pid]
        for f_idx in rng.permutation(len(split_frames)).tolist():
            if need <= 0:
                break
            f = split_frames[f_idx]
            if len(f["people"]) >= 6 or any(p["pid"] == pid for p in f["people"]):
                continue
            if _place(f["people"], pid, apps[pid], cameras[f["cam"] - 1], width, height, rng):
                need -= 1


def _choose_queries(plan: dict, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Per test identity seen at least twice: one query in each of up to two
    of its cameras, the least covered sighting fully inside the frame."""
    sightings: dict[int, list[tuple[int, int]]] = {}
    for f in plan["frames"]:
        if f["split"] == "test":
            for j, p in enumerate(f["people"]):
                if p["pid"] != UNLABELED:
                    sightings.setdefault(p["pid"], []).append((f["index"], j))
    queries = []
    for pid in plan["test_ids"]:
        seen = sightings.get(pid, [])
        if len(seen) < 2:
            continue
        by_cam: dict[int, list[tuple[int, int]]] = {}
        for fi, j in seen:
            if plan["frames"][fi]["people"][j]["box"][0] >= 0:
                by_cam.setdefault(plan["frames"][fi]["cam"], []).append((fi, j))
        cams = sorted(by_cam)
        for cam in [cams[i] for i in rng.permutation(len(cams))[:2]]:
            queries.append(min(by_cam[cam], key=lambda fj: plan["frames"][fj[0]]["people"][fj[1]]["cover"]))
    return queries
