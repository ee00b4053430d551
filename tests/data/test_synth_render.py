"""Shared drawing helpers: grid conversion, placement, areas, storyboards."""

import numpy as np
import pytest
from PIL import Image

from pixelis.data import render


def test_grid_box_is_rounded_outward_and_clipped():
    assert render.to_grid_box((10, 20, 30, 40), (100, 200)) == [100, 100, 300, 200]
    assert render.to_grid_box((1, 1, 2, 2), (3, 3)) == [333, 333, 667, 667]
    assert render.to_grid_box((0, 0, 100, 100), (100, 100)) == [0, 0, 1000, 1000]
    assert render.to_grid_point((50, 25), (100, 100)) == [500, 250]


def test_place_box_keeps_the_gap_or_fails_clearly():
    rng = np.random.default_rng(0)
    taken = []
    for _ in range(20):
        taken.append(render.place_box(rng, (200, 200), (20, 20), taken, gap=5))
    for i, a in enumerate(taken):
        assert all(not render.boxes_overlap(a, b, 5) for b in taken[i + 1:])
    with pytest.raises(render.PlacementError, match="does not fit"):
        render.place_box(rng, (50, 50), (60, 10), [])


def test_shape_areas_follow_geometry():
    box = (0, 0, 40, 40)
    areas = {k: render.shape_area(render.Shape(k, "red", box)) for k in ("square", "circle", "triangle", "star")}
    assert areas["square"] == 1600
    assert 0.7 < areas["circle"] / 1600 < 0.82
    assert 0.4 < areas["triangle"] / 1600 < 0.6
    assert areas["star"] < areas["triangle"]


def test_storyboard_tiles_frames_where_storyboard_tile_says():
    frames = [Image.new("RGB", (64, 48), (i * 20, 100, 200)) for i in range(5)]
    board = render.storyboard(frames)
    assert board.size == (3 * 64 + 4 * 4, 2 * 48 + 3 * 4)
    for i in range(5):
        x1, y1, x2, y2 = render.storyboard_tile(i, 5, (64, 48))
        assert board.getpixel((x2 - 2, y2 - 2)) == (i * 20, 100, 200)  # away from the frame-number tag
    thumb = render.storyboard(frames, thumb=32)
    x1, y1, x2, y2 = render.storyboard_tile(4, 5, (64, 48), thumb=32)
    assert (x2 - x1, y2 - y1) == (32, 24) and thumb.getpixel((x2 - 2, y2 - 2)) == (80, 100, 200)


def test_mover_paths_stay_inside_and_apart():
    rng = np.random.default_rng(3)
    a = render.plan_mover(rng, (200, 200), "circle", "red", 30, (12.0, -6.0), 10)
    b = render.plan_mover(rng, (200, 200), "square", "blue", 30, (-8.0, 0.0), 10, [a], gap=6)
    for f in range(10):
        for m in (a, b):
            x1, y1, x2, y2 = m.at(f).box
            assert 0 <= x1 and 0 <= y1 and x2 <= 200 and y2 <= 200
        assert not render.boxes_overlap(a.at(f).box, b.at(f).box, 6)
    with pytest.raises(render.PlacementError):
        render.plan_mover(rng, (100, 100), "circle", "red", 40, (20.0, 0.0), 10)


def test_label_text_is_drawn_at_the_requested_cap_height():
    img = Image.new("RGB", (200, 60), (255, 255, 255))
    from PIL import ImageDraw
    box = render.draw_label(ImageDraw.Draw(img), (100, 30), "HEH", render.font_for_cap_height(10))
    dark = np.argwhere(np.asarray(img.crop(box).convert("L"))[1:-1, 1:-1] < 100)
    height = dark[:, 0].max() - dark[:, 0].min() + 1
    assert 9 <= height <= 11


def test_expand_box_by_fraction_pixels_and_minimum_side():
    assert render.expand_box((40, 40, 60, 50), (100, 100), fraction=0.5) == (30, 35, 70, 55)
    assert render.expand_box((40, 40, 60, 50), (100, 100), pixels=3) == (37, 37, 63, 53)
    assert render.expand_box((40, 40, 60, 50), (100, 100), min_side=30) == (35, 30, 65, 60)
    assert render.expand_box((0, 90, 20, 100), (100, 100), pixels=5) == (0, 85, 25, 100)
