import numpy as np
import pytest
from PIL import Image

from pixelis.tools.base import ToolLimits
from tool_scenes import canvas


@pytest.fixture(scope="module")
def target():
    """600x400 grey image with a pure red rectangle at grid [250, 250, 500, 750] (150x200 px)."""
    img = canvas((600, 400), (128, 128, 128))
    img[100:300, 150:300] = (255, 0, 0)
    return Image.fromarray(img)


def test_zoom_crop_is_the_region_enlarged(run, target):
    obs = run("zoom_in", {"bbox": [250, 250, 500, 750]}, images=[target])
    assert obs.ok, obs.render_text()
    (crop,) = obs.images
    assert obs.data["crop_px"] == [150, 100, 300, 300]
    assert obs.data["bbox"] == [250, 250, 500, 750]
    assert max(crop.size) == 672 and crop.size == (504, 672)  # 150x200 enlarged x3.36, aspect kept
    arr = np.asarray(crop).astype(int)
    assert np.abs(arr - [255, 0, 0]).max(axis=2).mean() < 2  # the crop is the red rectangle and nothing else
    assert obs.data["scale"] == pytest.approx(3.36)
    assert "image 1" in obs.text


def test_zoom_of_a_large_region_is_bounded(run):
    big = Image.fromarray(canvas((3000, 1500)))
    obs = run("zoom_in", {"bbox": [0, 0, 1000, 1000]}, images=[big])
    assert obs.ok and obs.images[0].size == (1024, 512)
    small_limit = ToolLimits(max_output_side=300)
    obs = run("zoom_in", {"bbox": [0, 0, 100, 100]}, images=[big], limits=small_limit)
    assert obs.ok and max(obs.images[0].size) <= 300


def test_zoom_on_a_later_image(run, target):
    first = run("zoom_in", {"bbox": [0, 0, 500, 500]}, images=[target])
    obs = run("zoom_in", {"image": 1, "bbox": [500, 500, 1000, 1000]}, images=[target, first.images[0]])
    assert obs.ok
    # lower-right quarter of the upper-left quarter: red rectangle [150:300, 100:200) px of the original
    assert np.asarray(obs.images[0])[..., 0].mean() > 200


@pytest.mark.parametrize(
    "args, kind",
    [
        ({"bbox": [0, 0, 1200, 500]}, "out_of_bounds"),
        ({"bbox": [-5, 0, 500, 500]}, "out_of_bounds"),
        ({"bbox": [500, 500, 400, 600]}, "invalid_box"),
        ({"bbox": [500, 500, 500, 600]}, "invalid_box"),
        ({"bbox": [500, 500, 502, 502]}, "limit_exceeded"),
        ({"bbox": [0, 500, 1000, 503]}, "invalid_box"),  # a 600x1 px sliver: VLM processors refuse it
        ({"bbox": "0,0,10,10"}, "wrong_type"),
        ({"bbox": [0, 0, 10]}, "wrong_type"),
        ({"bbox": [0, 0, 10, "a"]}, "wrong_type"),
        ({"bbox": [0, 0, 500, 500], "image": 1.5}, "wrong_type"),
        ({}, "missing_argument"),
        ({"bbox": [0, 0, 500, 500], "zoom": 2}, "extra_argument"),
        ({"bbox": [0, 0, 500, 500], "image": 3}, "bad_image"),
        ({"bbox": [0, 0, 500, 500], "image": -1}, "bad_image"),
    ],
)
def test_zoom_errors(run, target, args, kind):
    obs = run("zoom_in", args, images=[target])
    assert obs.error is not None and obs.error.kind == kind, obs.render_text()
    assert not obs.images


def test_error_messages_name_the_argument(run, target):
    assert "'bbox'" in run("zoom_in", {}, images=[target]).error.message
    assert "'zoom'" in run("zoom_in", {"bbox": [0, 0, 9, 9], "zoom": 2}, images=[target]).error.message
    assert "absurd zoom" in run("zoom_in", {"bbox": [500, 500, 502, 502]}, images=[target]).error.message
    assert run("zoom_in", {"bbox": [0, 0, 500, 500]}).error.kind == "bad_image"  # a sample without images
    assert run("zoom", {"bbox": [0, 0, 500, 500]}, images=[target]).error.kind == "unknown_tool"
