"""Broken and oversized image files in every loader: one located `DataError` naming the image, never a traceback."""

import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from pixelis.core.errors import DataError
from pixelis.core.trajectory import Trajectory, TrajectoryFileError, load_image, read_jsonl, write_jsonl
from pixelis.data.benchmarks import DataFormatError, load_eval_data


def _noise_png() -> bytes:
    """A real PNG of noise: it hardly compresses, so cutting it in half cuts into the pixel data."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


REAL_PNG = _noise_png()
BROKEN = {
    "empty": (b"", r"cannot read image \(the file is empty\)"),
    "noise": (np.random.default_rng(1).bytes(300), "cannot read image: UnidentifiedImageError"),
    "truncated": (REAL_PNG[:len(REAL_PNG) // 2], "cannot read image: OSError: image file is truncated"),
}
HUGE = r"image of 9000x9000 = 81,000,000 pixels is larger than data.max_image_pixels = 50,000,000"


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """A real 9000 x 9000 1-bit PNG: 81 M pixels, about 10 KB on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (9000, 9000)).save(path)
    return path


def _suite_with_image(tmp_path, content: bytes):
    """A trajectory JSONL of one small_text record whose image file then holds `content`; returns (jsonl, image)."""
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [Trajectory(id="a", question="What does it say?", images=[Image.new("RGB", (8, 8))],
                                  answer="x", metadata={"family": "small_text"})])
    image = tmp_path / json.loads(path.read_text())["images"][0]
    image.write_bytes(content)
    return path, image


@pytest.mark.parametrize("kind", BROKEN)
def test_trajectory_media_names_jsonl_line_and_image(tmp_path, kind):
    content, problem = BROKEN[kind]
    path, image = _suite_with_image(tmp_path, content)
    with pytest.raises(TrajectoryFileError, match=rf"train.jsonl:1: .*{re.escape(str(image))}: {problem}"):
        read_jsonl(path)


@pytest.mark.parametrize("kind", BROKEN)
def test_vqa_rows_name_file_line_and_image(tmp_path, kind):
    content, problem = BROKEN[kind]
    (tmp_path / "bad.png").write_bytes(content)
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "bad.png", "question": "q", "answer": "a"}) + "\n")
    (tmp_path / "q.tsv").write_text("image\tquestion\tanswer\nbad.png\tq\ta\n")
    image = re.escape(str(tmp_path / "bad.png"))
    with pytest.raises(DataFormatError, match=rf"q.jsonl:1: {image}: {problem}"):
        load_eval_data(tmp_path / "q.jsonl")
    with pytest.raises(DataFormatError, match=rf"q.tsv:2: {image}: {problem}"):
        load_eval_data(tmp_path / "q.tsv")


@pytest.mark.parametrize("kind", BROKEN)
def test_vstar_items_name_json_and_image(tmp_path, kind):
    content, problem = BROKEN[kind]
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "item.png").write_bytes(content)
    (tmp_path / "cat" / "item.json").write_text(json.dumps({"question": "Colour?", "options": ["red", "blue"]}))
    item, image = (re.escape(str(tmp_path / "cat" / name)) for name in ("item.json", "item.png"))
    with pytest.raises(DataError, match=rf"{item}: {image}: {problem}"):
        load_eval_data(tmp_path)


def test_oversized_image_is_refused_from_its_header(tmp_path, huge_png):
    # The same header with no pixel data after it: decoding would fail, so the size refusal came first.
    data = huge_png.read_bytes()
    header_only = tmp_path / "header_only.png"
    header_only.write_bytes(data[:33] + data[-12:])  # signature + IHDR, then IEND
    with pytest.raises(DataError, match=rf"{re.escape(str(header_only))}: {HUGE}"):
        load_image(header_only)
    with pytest.raises(DataError, match="cannot read image"):
        load_image(header_only, max_pixels=9000 * 9000)
    assert load_image(huge_png, max_pixels=9000 * 9000).size == (9000, 9000)


def test_oversized_image_is_refused_by_every_loader(tmp_path, huge_png):
    path, image = _suite_with_image(tmp_path, huge_png.read_bytes())
    with pytest.raises(TrajectoryFileError, match=rf"train.jsonl:1: .*{re.escape(str(image))}: {HUGE}"):
        read_jsonl(path)
    assert read_jsonl(path, max_pixels=9000 * 9000)[0].images[0].size == (9000, 9000)
    shutil.copy(huge_png, tmp_path / "huge.png")
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "huge.png", "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataFormatError, match=rf"q.jsonl:1: .*huge.png: {HUGE}"):
        load_eval_data(tmp_path / "q.jsonl")
    with pytest.raises(DataFormatError, match=r"max_image_pixels = 1,000"):
        load_eval_data(tmp_path / "q.jsonl", max_pixels=1000)
    (tmp_path / "vstar").mkdir()
    shutil.copy(huge_png, tmp_path / "vstar" / "item.png")
    (tmp_path / "vstar" / "item.json").write_text(json.dumps({"question": "Colour?", "options": ["red", "blue"]}))
    with pytest.raises(DataFormatError, match=rf"item.json: .*item.png: {HUGE}"):
        load_eval_data(tmp_path / "vstar")
