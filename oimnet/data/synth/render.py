"""Drawing the synthetic world: camera backgrounds, clutter, people, lighting.

Geometry (``person_box``) is a pure function shared by the layout (which
writes the annotations) and the renderer, so boxes are exactly the drawn
figures' extents. Sizes are in pixels of the output frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Person proportions, as fractions of the person's height h.
_HEAD_R = 0.085  # head half-height
_SHOULDER_W = 0.30  # torso width (times build)
_ARM_W = 0.14  # arm width, fraction of torso width
_BAG_W = 0.30  # bag width, fraction of torso width


def person_box(cx: float, foot: float, h: float, app: dict, facing: int) -> tuple[float, float, float, float]:
    """Tight (x1, y1, x2, y2) of a figure with feet centre (cx, foot) and height h."""
    w = _SHOULDER_W * h * app["build"]
    left = right = w / 2 + _ARM_W * w
    if app["bag"] is not None:
        if app["bag_side"] * facing < 0:
            left = max(left, w / 2 + (0.02 + _BAG_W) * w)
        else:
            right = max(right, w / 2 + (0.02 + _BAG_W) * w)
    return cx - left, foot - h, cx + right, foot


def _jit(colour, rng: np.random.Generator, amount: int = 12) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return tuple(int(v) for v in c)


def draw_person(
    draw: ImageDraw.ImageDraw,
    cx: float,
    foot: float,
    h: float,
    app: dict,
    facing: int,
    stride: float,
    rng: np.random.Generator,
) -> None:
    """Draw one figure: legs, shoes, torso with pattern, arms, head, hair/hat, bag.

    stride in [-1, 1] spreads the feet (walking pose); rng jitters colours a
    little per sighting.
    """
    top = foot - h
    w = _SHOULDER_W * h * app["build"]
    shirt, second = _jit(app["shirt"], rng), _jit(app["pattern_colour"], rng)
    trousers, skin = _jit(app["trousers"], rng), _jit(app["skin"], rng, 6)
    y_hip, y_knee, y_shoe = top + 0.52 * h, top + 0.72 * h, top + 0.95 * h
    leg_w, spread = 0.40 * w, 0.14 * w * stride
    # legs (polygons so the feet can spread), shorts show skin below the knee
    for side in (-1, 1):
        hip_x = cx + side * 0.21 * w
        foot_x = hip_x + side * spread
        leg = [
            (hip_x - leg_w / 2, y_hip),
            (hip_x + leg_w / 2, y_hip),
            (foot_x + leg_w / 2, y_shoe),
            (foot_x - leg_w / 2, y_shoe),
        ]
        draw.polygon(leg, fill=trousers)
        if app["shorts"]:
            k = (y_knee - y_hip) / (y_shoe - y_hip)
            knee_l = hip_x - leg_w / 2 + k * (foot_x - hip_x)
            draw.polygon(
                [
                    (knee_l, y_knee),
                    (knee_l + leg_w, y_knee),
                    (foot_x + leg_w / 2, y_shoe),
                    (foot_x - leg_w / 2, y_shoe),
                ],
                fill=skin,
            )
        draw.rectangle([foot_x - leg_w / 2 - 0.03 * w, y_shoe, foot_x + leg_w / 2 + 0.03 * w, foot], fill=(35, 30, 28))
    # torso with the identity's pattern
    y0, y1 = top + 0.17 * h, y_hip + 0.02 * h
    x0, x1 = cx - w / 2, cx + w / 2
    draw.rectangle([x0, y0, x1, y1], fill=shirt)
    pattern = app["pattern"]
    if pattern == "hstripes":
        band = (y1 - y0) / 6
        for i in (1, 3, 5):
            draw.rectangle([x0, y0 + i * band, x1, y0 + (i + 1) * band], fill=second)
    elif pattern == "vstripes":
        band = w / 5
        for i in (1, 3):
            draw.rectangle([x0 + i * band, y0, x0 + (i + 1) * band, y1], fill=second)
    elif pattern == "split":
        draw.rectangle([cx, y0, x1, y1], fill=second)
    elif pattern == "logo":
        s = 0.22 * w
        draw.rectangle([cx - s, y0 + 0.25 * (y1 - y0) - s, cx + s, y0 + 0.25 * (y1 - y0) + s], fill=second)
    # arms: sleeve colour then skin (hands / short sleeves)
    arm_w = _ARM_W * w
    for side in (-1, 1):
        ax0 = cx + side * (w / 2) if side > 0 else cx - w / 2 - arm_w
        sleeve_end = top + (0.30 if app["short_sleeves"] else 0.46) * h
        draw.rectangle([ax0, top + 0.18 * h, ax0 + arm_w, sleeve_end], fill=shirt)
        draw.rectangle([ax0, sleeve_end, ax0 + arm_w, top + 0.51 * h], fill=skin)
    # head, hair or hat
    rx, ry = 0.062 * h, _HEAD_R * h
    draw.ellipse([cx - rx, top, cx + rx, top + 2 * ry], fill=skin)
    if app["hat"] is not None:
        hat = _jit(app["hat"], rng)
        draw.rectangle([cx - rx * 0.95, top, cx + rx * 0.95, top + 0.6 * ry], fill=hat)
        draw.rectangle([cx - rx * 1.45, top + 0.5 * ry, cx + rx * 1.45, top + 0.75 * ry], fill=hat)
    else:
        draw.chord([cx - rx, top, cx + rx, top + 2 * ry], 180, 360, fill=_jit(app["hair"], rng, 6))
    # bag hanging at the hip, strap over the shoulder
    if app["bag"] is not None:
        side = app["bag_side"] * facing
        bag = _jit(app["bag"], rng)
        bx0 = cx + side * (w / 2 + 0.02 * w)
        bx1 = cx + side * (w / 2 + (0.02 + _BAG_W) * w)
        bx0, bx1 = min(bx0, bx1), max(bx0, bx1)
        draw.rectangle([bx0, top + 0.40 * h, bx1, top + 0.60 * h], fill=bag)
        draw.line([(cx - side * 0.3 * w, y0), ((bx0 + bx1) / 2, top + 0.40 * h)], fill=bag, width=max(1, int(0.05 * w)))


# ------------------------------------------------------------ backgrounds
def camera_style(cam: int, width: int, height: int, rng: np.random.Generator) -> dict:
    """Per-camera scene constants: horizon, person scale range, colours, light."""
    return {
        "cam": cam,
        "horizon": float(rng.uniform(0.28, 0.42) * height),
        "h_far": float(rng.uniform(0.16, 0.20) * height),
        "h_near": float(rng.uniform(0.40, 0.47) * height),
        "wall": tuple(int(v) for v in rng.integers(90, 200, 3)),
        "ground": tuple(int(v) for v in rng.integers(70, 170, 3)),
        "gain": float(rng.uniform(0.8, 1.15)),
        "tint": tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),
        "bg_seed": int(rng.integers(2**31)),
    }


def render_background(style: dict, width: int, height: int) -> Image.Image:
    """Static background of a camera: buildings with windows, paving, trees."""
    rng = np.random.default_rng(style["bg_seed"])
    img = Image.new("RGB", (width, height), style["wall"])
    d = ImageDraw.Draw(img)
    hz = style["horizon"]
    x = -rng.uniform(0, 30)
    while x < width:  # building facades along the horizon
        bw = rng.uniform(0.15, 0.35) * width
        top = rng.uniform(0, 0.5) * hz
        colour = tuple(int(v) for v in rng.integers(60, 210, 3))
        d.rectangle([x, top, x + bw, hz], fill=colour)
        win = tuple(int(v) for v in rng.integers(20, 255, 3))
        step = max(6.0, bw / 5)
        for wx in np.arange(x + step / 3, x + bw - step / 2, step):
            for wy in np.arange(top + step / 3, hz - step / 2, step):
                d.rectangle([wx, wy, wx + step / 2.5, wy + step / 2.5], fill=win)
        x += bw + rng.uniform(0, 15)
    d.rectangle([0, hz, width, height], fill=style["ground"])
    line = tuple(max(0, c - 25) for c in style["ground"])
    vx = rng.uniform(0.3, 0.7) * width
    for gx in np.linspace(-width, 2 * width, 14):  # paving lines towards a vanishing point
        d.line([(vx, hz), (gx, height)], fill=line, width=1)
    for t in np.linspace(0.1, 1.0, 6) ** 2:
        y = hz + t * (height - hz)
        d.line([(0, y), (width, y)], fill=line, width=1)
    for _ in range(int(rng.integers(0, 3))):  # trees
        tx, base = rng.uniform(0, width), hz + rng.uniform(0, 0.15) * (height - hz)
        th = rng.uniform(0.25, 0.45) * height
        d.rectangle([tx - 0.015 * th, base - th * 0.5, tx + 0.015 * th, base], fill=(90, 60, 35))
        d.ellipse(
            [tx - 0.22 * th, base - th, tx + 0.22 * th, base - th * 0.45],
            fill=(int(rng.integers(30, 90)), int(rng.integers(100, 160)), int(rng.integers(30, 80))),
        )
    return img


def draw_clutter(
    draw: ImageDraw.ImageDraw, style: dict, width: int, height: int, rng: np.random.Generator, n: int
) -> None:
    """Per-frame distractors on the ground: bins, signs with coloured panels,
    cars, posters in person colours."""
    hz = style["horizon"]
    for _ in range(n):
        kind = int(rng.integers(4))
        foot = rng.uniform(hz + 0.1 * (height - hz), height)
        t = (foot - hz) / (height - hz)
        s = style["h_far"] + t * (style["h_near"] - style["h_far"])  # person height here
        x = rng.uniform(0, width)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if kind == 0:  # bin
            draw.rectangle([x, foot - 0.35 * s, x + 0.22 * s, foot], fill=colour)
            draw.rectangle([x - 0.02 * s, foot - 0.38 * s, x + 0.24 * s, foot - 0.33 * s], fill=(40, 40, 40))
        elif kind == 1:  # sign post: a person-tall pole with a coloured panel
            draw.rectangle([x, foot - 1.0 * s, x + 0.04 * s, foot], fill=(70, 70, 75))
            draw.rectangle([x - 0.12 * s, foot - 1.0 * s, x + 0.16 * s, foot - 0.65 * s], fill=colour)
        elif kind == 2:  # car
            draw.rectangle([x, foot - 0.45 * s, x + 1.3 * s, foot - 0.1 * s], fill=colour)
            draw.rectangle([x + 0.25 * s, foot - 0.7 * s, x + 1.0 * s, foot - 0.45 * s], fill=colour)
            draw.rectangle([x + 0.32 * s, foot - 0.65 * s, x + 0.93 * s, foot - 0.47 * s], fill=(150, 190, 210))
            for wx in (0.25, 1.05):
                draw.ellipse([x + (wx - 0.12) * s, foot - 0.22 * s, x + (wx + 0.12) * s, foot], fill=(20, 20, 20))
        else:  # poster on the wall with shirt-like colour blocks
            py = rng.uniform(0.2, 0.8) * hz
            ps = rng.uniform(0.15, 0.3) * height
            draw.rectangle([x, py, x + 0.6 * ps, py + ps], fill=colour)
            other = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.rectangle([x + 0.1 * ps, py + 0.3 * ps, x + 0.5 * ps, py + 0.6 * ps], fill=other)


def draw_occluder(draw: ImageDraw.ImageDraw, style: dict, width: int, height: int, rng: np.random.Generator) -> None:
    """A pole or railing in the foreground, drawn over people."""
    if rng.random() < 0.5:
        x = rng.uniform(0, width)
        pw = rng.uniform(0.012, 0.03) * width
        draw.rectangle([x, style["horizon"] * rng.uniform(0.3, 1.0), x + pw, height], fill=(60, 60, 65))
    else:
        y = rng.uniform(0.75, 0.92) * height
        x0 = rng.uniform(-0.2, 0.6) * width
        draw.rectangle([x0, y, x0 + rng.uniform(0.2, 0.4) * width, y + 0.025 * height], fill=(110, 80, 50))


def apply_lighting(
    img: Image.Image, gain: float, tint, gradient: float, rng: np.random.Generator, noise: float = 4.0
) -> Image.Image:
    """Global gain, colour tint, a left-right light gradient and sensor noise."""
    arr = np.asarray(img, dtype=np.float32)
    w = arr.shape[1]
    ramp = 1.0 + gradient * np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
    arr = arr * (gain * np.asarray(tint, np.float32))[None, None, :] * ramp
    arr += rng.normal(0, noise, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
