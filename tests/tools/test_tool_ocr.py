import importlib.util
import os
import shutil

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pixelis.tools.base import ToolLimits
from pixelis.tools.geometry import box_iou, to_grid_box

FONT = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")


def normalise(text: str) -> str:
    return "".join(text.split()).upper()


def render(size: tuple[int, int], texts: list[tuple[tuple[int, int], str, int]]):
    """White image with black text; returns it and each text's pixel box."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for xy, text, px in texts:
        font = ImageFont.truetype(FONT, px)
        draw.text(xy, text, fill="black", font=font)
        boxes.append(draw.textbbox(xy, text, font=font))
    return image, boxes


def test_readable_text_is_read_exactly(run):
    image, (box,) = render((448, 448), [((60, 200), "PIXELIS 2024", 32)])
    obs = run("read_text", {}, images=[image])
    assert obs.ok, obs.render_text()
    (line,) = obs.data["lines"]
    assert normalise(line["text"]) == "PIXELIS2024"
    assert normalise(obs.text) == "PIXELIS2024"
    assert line["confidence"] > 0.8
    assert box_iou(line["bbox"], to_grid_box(box, 448, 448)) > 0.5


def test_tiny_text_in_a_large_image_is_not_read(run):
    image, _ = render((1000, 1000), [((600, 700), "CODE 7391", 5)])
    obs = run("read_text", {}, images=[image])
    assert obs.ok
    assert all("CODE7391" not in normalise(line["text"]) for line in obs.data["lines"])


def test_bbox_restricts_the_region(run):
    image, (left, right) = render((640, 320), [((40, 140), "ALPHA", 30), ((400, 140), "OMEGA", 30)])
    both = run("read_text", {}, images=[image])
    assert sorted(normalise(line["text"]) for line in both.data["lines"]) == ["ALPHA", "OMEGA"]
    obs = run("read_text", {"bbox": [500, 0, 1000, 1000]}, images=[image])
    assert [normalise(line["text"]) for line in obs.data["lines"]] == ["OMEGA"]
    # boxes are reported in the whole image's grid, not the region's
    assert box_iou(obs.data["lines"][0]["bbox"], to_grid_box(right, 640, 320)) > 0.5


def test_no_text(run):
    blank = Image.fromarray(np.full((200, 300, 3), 200, np.uint8))
    obs = run("read_text", {}, images=[blank])
    assert obs.ok and obs.text == "No text found." and obs.data["lines"] == []


def test_region_over_the_pixel_budget_is_refused(run):
    image, _ = render((448, 448), [((60, 200), "PIXELIS", 32)])
    obs = run("read_text", {}, images=[image], limits=ToolLimits(max_ocr_pixels=100_000))
    assert obs.error.kind == "limit_exceeded" and "100000" in obs.error.message
    assert run("read_text", {"bbox": [0, 0, 500, 500]}, images=[image],
               limits=ToolLimits(max_ocr_pixels=100_000)).ok
    assert run("read_text", {"bbox": [0, 0, 0, 500]}, images=[image]).error.kind == "invalid_box"


@pytest.mark.skipif(importlib.util.find_spec("pytesseract") is not None and shutil.which("tesseract") is not None,
                    reason="tesseract is installed here")
def test_tesseract_backend_without_tesseract_says_so(run):
    image, _ = render((448, 448), [((60, 200), "PIXELIS", 32)])
    obs = run("read_text", {}, images=[image], limits=ToolLimits(ocr_backend="tesseract"))
    assert obs.error.kind == "execution_error" and "tesseract" in obs.error.message
