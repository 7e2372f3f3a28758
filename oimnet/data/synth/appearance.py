"""Identity appearance of synthetic people: what makes a person recognisable.

An appearance is a small dict of discrete attributes (colours as RGB
tuples, a shirt pattern, accessories, body proportions). It is fixed per
identity and independent of camera, so re-identification is learnable;
lighting, scale and pose vary per sighting (see render.py).
"""

from __future__ import annotations

import numpy as np

SHIRT_COLOURS = [
    (200, 30, 35),
    (235, 120, 20),
    (235, 205, 40),
    (130, 200, 40),
    (30, 140, 60),
    (20, 150, 150),
    (60, 190, 230),
    (30, 70, 200),
    (25, 30, 90),
    (120, 50, 170),
    (210, 50, 160),
    (245, 160, 190),
    (235, 235, 235),
    (130, 130, 135),
    (30, 30, 30),
    (120, 75, 40),
]
TROUSER_COLOURS = [
    (25, 25, 30),
    (30, 40, 85),
    (70, 100, 160),
    (110, 110, 115),
    (190, 170, 120),
    (100, 65, 35),
    (225, 225, 220),
    (85, 95, 45),
]
ACCESSORY_COLOURS = [(200, 30, 35), (235, 205, 40), (30, 70, 200), (30, 140, 60), (250, 250, 250), (20, 20, 20)]
SKIN_TONES = [(250, 215, 185), (225, 180, 140), (190, 140, 100), (140, 95, 60), (95, 65, 45)]
HAIR_COLOURS = [(20, 15, 10), (90, 60, 30), (190, 150, 80), (140, 140, 140)]
PATTERNS = ("solid", "hstripes", "vstripes", "split", "logo")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def sample_appearance(rng: np.random.Generator) -> dict:
    """One random appearance (identities and unlabeled passers-by alike)."""
    shirt = _pick(rng, SHIRT_COLOURS)
    pattern = _pick(rng, PATTERNS)
    second = shirt
    while second == shirt:
        second = _pick(rng, SHIRT_COLOURS)
    return {
        "shirt": shirt,
        "pattern": pattern,
        "pattern_colour": second,
        "short_sleeves": bool(rng.random() < 0.4),
        "trousers": _pick(rng, TROUSER_COLOURS),
        "shorts": bool(rng.random() < 0.2),
        "skin": _pick(rng, SKIN_TONES),
        "hair": _pick(rng, HAIR_COLOURS),
        "hat": _pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.3 else None,
        "bag": _pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.35 else None,
        "bag_side": int(rng.choice([-1, 1])),
        "height": float(rng.choice([0.88, 0.94, 1.0, 1.06, 1.12])),
        "build": float(rng.choice([0.85, 1.0, 1.15])),
    }


def signature(app: dict) -> tuple:
    """The attributes that must differ between two identities."""
    return (
        app["shirt"],
        app["pattern"],
        app["pattern_colour"] if app["pattern"] != "solid" else None,
        app["trousers"],
        app["hat"],
        app["bag"],
    )


def sample_identities(n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` appearances with pairwise different signatures."""
    out, seen = [], set()
    while len(out) < n:
        app = sample_appearance(rng)
        if signature(app) not in seen:
            seen.add(signature(app))
            out.append(app)
    return out
