"""oimnet.viz.draw: tile windows, strip sizes, box and frame colours."""

import numpy as np
import pytest
from PIL import Image

from oimnet.viz import draw


def _grey(w=320, h=240):
    return Image.new("RGB", (w, h), (128, 128, 128))


@pytest.mark.parametrize("box", [(100, 50, 140, 150), (0, 0, 30, 80), (290, 160, 320, 240)])
def test_view_window_has_tile_aspect_zoomed_height_and_stays_inside(box):
    x1, y1, x2, y2 = draw.view_window(box, 320, 240, aspect=0.75, zoom=2.0)
    assert (x2 - x1) / (y2 - y1) == pytest.approx(0.75)
    assert y2 - y1 == pytest.approx(2.0 * (box[3] - box[1]))
    assert 0 <= x1 and x2 <= 320 and 0 <= y1 and y2 <= 240
    assert x1 <= box[0] and box[2] <= x2 and y1 <= box[1] and box[3] <= y2


def test_view_window_larger_than_image_is_centred():
    x1, y1, x2, y2 = draw.view_window((10, 10, 60, 230), 100, 240, aspect=0.75, zoom=2.0)
    assert (x1 + x2) / 2 == pytest.approx(50) and (y1 + y2) / 2 == pytest.approx(120)


def test_render_tile_draws_box_where_it_is_and_frame_in_its_colour():
    layout = draw.Layout(tile_w=160, tile_h=120, zoom=0)  # whole 320x240 frame, scale 0.5
    tile = draw.Tile(_grey(), np.array([100, 40, 200, 200], np.float32), [], draw.RED)
    out = np.asarray(draw.render_tile(tile, layout))
    assert out.shape == (120, 160, 3)
    assert tuple(out[60, 50]) == draw.RED  # left edge of the box, x = 100 * 0.5
    assert tuple(out[60, 75]) == (128, 128, 128)  # inside the box: the image
    assert tuple(out[0, 80]) == draw.RED and tuple(out[119, 80]) == draw.RED  # frame


def test_render_tile_letterboxes_small_images():
    tile = draw.Tile(_grey(40, 30), np.array([10, 5, 20, 25], np.float32), [], draw.GREEN)
    out = np.asarray(draw.render_tile(tile, draw.Layout(tile_w=150, tile_h=200, zoom=2.2)))
    assert out.shape == (200, 150, 3)
    assert tuple(out[10, 75]) == draw.LETTERBOX  # above the 30-pixel-high image


@pytest.mark.parametrize("n,title", [(1, False), (2, True), (11, True)])
def test_render_strip_size_matches_strip_size(n, title):
    tiles = [
        draw.Tile(
            _grey(),
            np.array([100, 50, 140, 150], np.float32),
            ["#1 sim 0.5", "a very long image name.jpg"],
            draw.BLUE,
            "1",
        )
        for _ in range(n)
    ]
    img = draw.render_strip(tiles, title="t" if title else None)
    assert img.size == draw.strip_size(n, title=title)


def test_strip_size_formula():
    lay = draw.Layout()
    w, h = draw.strip_size(11, lay, title=True)
    assert w == 2 * lay.margin + 11 * lay.tile_w + lay.query_gap + 9 * lay.gap
    assert h == 2 * lay.margin + lay.title_h + lay.tile_h + lay.caption_lines * lay.line_h + 2
    with pytest.raises(ValueError, match="at least one tile"):
        draw.strip_size(0)


def test_load_rgb_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        draw.load_rgb(bad)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        draw.load_rgb(tmp_path / "missing.jpg")


def test_save_png_writes_a_png(tmp_path):
    path = draw.save_png(_grey(), tmp_path / "sub" / "x.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (320, 240)
