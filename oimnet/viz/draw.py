"""Drawing of search results: one horizontal strip of tiles, saved as PNG.

Shared by ``python -m oimnet.demo`` and ``python -m oimnet.visualize``.
A strip is the query crop followed by ranked gallery views; each tile is a
fixed ``tile_w`` x ``tile_h`` pixel window of one image (the box enlarged by
``zoom`` around its centre, or the whole frame), the box drawn in its
colour, and caption lines below. All sizes are output pixels, so a strip's
size depends only on the number of tiles (see :func:`strip_size`).

Boxes are (x1, y1, x2, y2) in pixels of the image they belong to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "GREEN",
    "RED",
    "BLUE",
    "YELLOW",
    "Tile",
    "Layout",
    "load_rgb",
    "view_window",
    "render_tile",
    "render_strip",
    "strip_size",
    "save_png",
]

GREEN = (30, 170, 60)  # correct match
RED = (225, 35, 35)  # wrong match
BLUE = (30, 110, 235)  # match of unknown correctness (demo)
YELLOW = (250, 195, 0)  # the query
BACKGROUND = (255, 255, 255)
LETTERBOX = (40, 40, 40)
TEXT = (20, 20, 20)


@dataclass
class Tile:
    """One panel: ``image`` (RGB PIL image), ``box`` (4,) in its pixels or
    None, caption ``lines`` and the ``color`` of box and frame. ``badge``
    (e.g. "1") is written on the box's top-left corner."""

    image: Image.Image
    box: np.ndarray | None
    lines: list[str] = field(default_factory=list)
    color: tuple[int, int, int] = BLUE
    badge: str | None = None


@dataclass(frozen=True)
class Layout:
    """Pixel sizes of a strip. ``zoom`` > 0: each tile shows a window
    ``zoom`` times the box height (tile aspect ratio), centred on the box;
    ``zoom`` <= 0 or no box: the whole image, letterboxed."""

    tile_w: int = 150
    tile_h: int = 200
    margin: int = 8  # around the strip
    gap: int = 6  # between tiles
    query_gap: int = 18  # after the first tile (the query)
    caption_lines: int = 2
    font_size: int = 13
    title_h: int = 24  # only when the strip has a title
    border: int = 3  # frame around each tile, in the tile's colour
    box_width: int = 3
    zoom: float = 2.2

    @property
    def line_h(self) -> int:
        return self.font_size + 3


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Read an image file as RGB; OSError/ValueError become a ValueError naming the file."""
    try:
        with Image.open(path) as f:
            return f.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def view_window(box, img_w: int, img_h: int, aspect: float, zoom: float) -> tuple[float, float, float, float]:
    """Crop rectangle (x1, y1, x2, y2) of aspect ``aspect`` = w / h whose
    height is ``zoom`` x the box height (at least as wide as ``zoom`` x the
    box width), centred on the box and shifted to lie inside the image where
    it fits. A window larger than the image extends past it (letterbox)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    h = max(zoom * bh, zoom * bw / aspect)
    w = h * aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2

    def place(c, size, limit):
        lo = c - size / 2
        if size <= limit:
            lo = min(max(lo, 0.0), limit - size)
        else:
            lo = (limit - size) / 2
        return lo, lo + size

    wx1, wx2 = place(cx, w, img_w)
    wy1, wy2 = place(cy, h, img_h)
    return wx1, wy1, wx2, wy2


def render_tile(tile: Tile, layout: Layout) -> Image.Image:
    """The tile's ``tile_w`` x ``tile_h`` picture: window, box, badge, frame."""
    W, H = layout.tile_w, layout.tile_h
    img = tile.image
    if tile.box is not None and layout.zoom > 0:
        win = view_window(tile.box, img.width, img.height, W / H, layout.zoom)
    else:
        win = (0.0, 0.0, float(img.width), float(img.height))
    ww, wh = win[2] - win[0], win[3] - win[1]
    scale = min(W / ww, H / wh)
    # window pixels -> tile pixels: centred when the window's aspect differs
    ox = (W - ww * scale) / 2 - win[0] * scale
    oy = (H - wh * scale) / 2 - win[1] * scale
    out = img.transform(
        (W, H),
        Image.AFFINE,
        (1 / scale, 0, -ox / scale, 0, 1 / scale, -oy / scale),
        resample=Image.BILINEAR,
        fillcolor=LETTERBOX,
    )
    draw = ImageDraw.Draw(out)
    if tile.box is not None:
        bx = [tile.box[0] * scale + ox, tile.box[1] * scale + oy, tile.box[2] * scale + ox, tile.box[3] * scale + oy]
        draw.rectangle(bx, outline=tile.color, width=layout.box_width)
        if tile.badge:
            font = _font(layout.font_size)
            l, t, r, b = draw.textbbox((0, 0), tile.badge, font=font)
            bx0 = min(max(bx[0], 0), W - (r - l) - 6)
            by0 = min(max(bx[1] - (b - t) - 6, 0), H - (b - t) - 6)
            draw.rectangle([bx0, by0, bx0 + (r - l) + 6, by0 + (b - t) + 6], fill=tile.color)
            draw.text((bx0 + 3 - l, by0 + 3 - t), tile.badge, fill=(255, 255, 255), font=font)
    for k in range(layout.border):
        draw.rectangle([k, k, W - 1 - k, H - 1 - k], outline=tile.color)
    return out


def strip_size(n_tiles: int, layout: Layout = Layout(), title: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of :func:`render_strip` for n_tiles tiles."""
    if n_tiles < 1:
        raise ValueError(f"n_tiles {n_tiles}: a strip needs at least one tile")
    width = 2 * layout.margin + n_tiles * layout.tile_w + max(n_tiles - 2, 0) * layout.gap
    width += layout.query_gap if n_tiles > 1 else 0
    height = 2 * layout.margin + layout.tile_h + layout.caption_lines * layout.line_h + 2
    height += layout.title_h if title else 0
    return width, height


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_strip(tiles: list[Tile], layout: Layout = Layout(), title: str | None = None) -> Image.Image:
    """Tiles left to right (the first one set apart as the query), captions
    below, an optional title line on top. Size: :func:`strip_size`."""
    W, H = strip_size(len(tiles), layout, title is not None)
    canvas = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.font_size)
    top = layout.margin
    if title is not None:
        draw.text((layout.margin, top), _fit_text(draw, title, font, W - 2 * layout.margin), fill=TEXT, font=font)
        top += layout.title_h
    x = layout.margin
    for i, tile in enumerate(tiles):
        canvas.paste(render_tile(tile, layout), (x, top))
        for j, line in enumerate(tile.lines[: layout.caption_lines]):
            y = top + layout.tile_h + 2 + j * layout.line_h
            draw.text((x, y), _fit_text(draw, line, font, layout.tile_w), fill=TEXT if j else tile.color, font=font)
        x += layout.tile_w + (layout.query_gap if i == 0 else layout.gap)
    return canvas


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``img`` as PNG, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path
