import numpy as np
import pytest
from PIL import Image

from pixelis.tools.base import ToolLimits
from pixelis.tools.geometry import box_iou, to_grid_box
from pixelis.tools.track import motion_direction
from tool_scenes import add_noise

SIZE = 448


def moving_square(steps, start=(60, 200), side=40, n=8, vanish_from=None):
    """Frames of a red square on a textured background moving by `steps` px per frame; its pixel boxes."""
    rng = np.random.default_rng(0)
    background = np.kron(rng.integers(90, 170, (SIZE // 16, SIZE // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)
    frames, boxes = [], []
    for t in range(n):
        img = background.copy()
        x, y = start[0] + steps[0] * t, start[1] + steps[1] * t
        if vanish_from is None or t < vanish_from:
            img[y:y + side, x:x + side] = (220, 30, 30)
            img[y + 10:y + 20, x + 10:x + 30] = (250, 250, 250)
        frames.append(Image.fromarray(add_noise(img, 5, t)))
        boxes.append((x, y, x + side, y + side))
    return frames, boxes


def test_square_moving_right_is_tracked(run):
    frames, boxes = moving_square((40, 0))
    obs = run("track_object", {"bbox": to_grid_box(boxes[0], SIZE, SIZE)}, video=frames)
    assert obs.ok, obs.render_text()
    assert obs.data["frames"] == list(range(8))
    assert obs.data["status"] == ["ok"] * 8
    assert box_iou(obs.data["boxes"][-1], to_grid_box(boxes[-1], SIZE, SIZE)) >= 0.6
    assert min(box_iou(b, to_grid_box(g, SIZE, SIZE)) for b, g in zip(obs.data["boxes"], boxes)) >= 0.6
    assert obs.data["direction"] == "right"
    assert obs.data["displacement"][0] == pytest.approx(280 / SIZE * 1000, abs=10)
    (strip,) = obs.images
    assert max(strip.size) <= 1024


def test_diagonal_motion_and_sub_range(run):
    frames, boxes = moving_square((-20, -15), start=(300, 300))
    obs = run("track_object", {"bbox": to_grid_box(boxes[2], SIZE, SIZE), "start_frame": 2, "end_frame": 6},
              video=frames)
    assert obs.ok and obs.data["frames"] == [2, 3, 4, 5, 6]
    assert obs.data["direction"] == "up-left"
    assert box_iou(obs.data["boxes"][-1], to_grid_box(boxes[6], SIZE, SIZE)) >= 0.6


def test_vanished_object_is_lost(run):
    frames, boxes = moving_square((10, 0), vanish_from=5)
    obs = run("track_object", {"bbox": to_grid_box(boxes[0], SIZE, SIZE)}, video=frames)
    assert obs.data["status"] == ["ok"] * 5 + ["lost"] * 3
    assert obs.data["boxes"][5:] == [None] * 3
    assert "Lost in frames [5, 6, 7]" in obs.text


def test_directions():
    assert motion_direction(0, 0) == "stationary"
    assert motion_direction(5, -3) == "stationary"
    assert motion_direction(100, 10) == "right"
    assert motion_direction(-100, 10) == "left"
    assert motion_direction(10, -100) == "up"
    assert motion_direction(10, 100) == "down"
    assert motion_direction(80, 90) == "down-right"
    assert motion_direction(-80, -90) == "up-left"


def test_frame_errors(run):
    frames, boxes = moving_square((10, 0))
    bbox = to_grid_box(boxes[0], SIZE, SIZE)
    assert run("track_object", {"bbox": bbox, "start_frame": 8}, video=frames).error.kind == "frame_out_of_range"
    assert run("track_object", {"bbox": bbox, "start_frame": -1}, video=frames).error.kind == "frame_out_of_range"
    assert run("track_object", {"bbox": bbox, "end_frame": 20}, video=frames).error.kind == "frame_out_of_range"
    assert run("track_object", {"bbox": bbox, "start_frame": 5, "end_frame": 2},
               video=frames).error.kind == "frame_out_of_range"
    obs = run("track_object", {"bbox": bbox}, video=frames, limits=ToolLimits(max_frames_per_call=4))
    assert obs.error.kind == "limit_exceeded" and "end_frame <= 3" in obs.error.message
    obs = run("track_object", {"bbox": bbox}, images=[frames[0]])
    assert obs.error.kind == "bad_image" and "no video" in obs.error.message
