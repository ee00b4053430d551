"""read_text: OCR of an image or a region of it (RapidOCR by default, Tesseract when installed).

OCR runs at the image's own resolution: the detector never upscales, so text too small to read in the pixels
given stays unread and the policy has to zoom_in first (the same contract as its own eyes).
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import threading
from typing import Any

import numpy as np
from PIL import Image

from pixelis.core.trajectory import Observation
from pixelis.tools.base import BBox, ImageIndex, Tool, ToolArgs, ToolArgumentError, ToolContext, to_array
from pixelis.tools.geometry import check_grid_box, to_grid_box, to_pixels_box

OCR_MAX_SIDE = 4096  # largest side the detector sees; the pixel budget (max_ocr_pixels) is checked first

Line = tuple[str, tuple[int, int, int, int], float]  # text, pixel box in the region, confidence
_ENGINE_LOCK = threading.Lock()  # RapidOCR keeps per-call state on the engine: one call at a time


@functools.lru_cache(maxsize=1)
def rapidocr_engine() -> Any:
    """The process-wide RapidOCR engine (ONNX models ship in the wheel; loaded once)."""
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(det_limit_type="max", det_limit_side_len=OCR_MAX_SIDE, max_side_len=OCR_MAX_SIDE)


def read_lines(rgb: np.ndarray, backend: str = "rapidocr") -> list[Line]:
    """Text lines of an RGB array, top to bottom."""
    if backend == "tesseract":
        return _tesseract_lines(rgb)
    with _ENGINE_LOCK:
        result, _ = rapidocr_engine()(Image.fromarray(rgb))
    lines = []
    for points, text, score in result or []:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (int(min(xs)), int(min(ys)), int(np.ceil(max(xs))), int(np.ceil(max(ys))))
        lines.append((text.strip(), box, float(score)))
    return [line for line in lines if line[0]]


def _tesseract_lines(rgb: np.ndarray) -> list[Line]:
    if importlib.util.find_spec("pytesseract") is None or shutil.which("tesseract") is None:
        raise RuntimeError(
            "ocr_backend 'tesseract' needs the pytesseract package and the tesseract binary on PATH; "
            "install both or use ocr_backend 'rapidocr'"
        )
    import pytesseract

    d = pytesseract.image_to_data(Image.fromarray(rgb), output_type=pytesseract.Output.DICT)
    words: dict[tuple[int, int, int], list[int]] = {}
    for i, word in enumerate(d["text"]):
        if word.strip() and float(d["conf"][i]) >= 0:
            words.setdefault((d["block_num"][i], d["par_num"][i], d["line_num"][i]), []).append(i)
    lines = []
    for idx in words.values():
        x1, y1 = min(d["left"][i] for i in idx), min(d["top"][i] for i in idx)
        x2 = max(d["left"][i] + d["width"][i] for i in idx)
        y2 = max(d["top"][i] + d["height"][i] for i in idx)
        text = " ".join(d["text"][i].strip() for i in idx)
        lines.append((text, (x1, y1, x2, y2), float(np.mean([float(d["conf"][i]) for i in idx])) / 100))
    return sorted(lines, key=lambda line: (line[1][1], line[1][0]))


class ReadTextArgs(ToolArgs):
    image: ImageIndex = 0
    bbox: BBox | None = None


class ReadText(Tool):
    name = "read_text"
    description = "Read the text in an image, or in the region bbox of it. Small text may need zoom_in first."
    Args = ReadTextArgs

    def run(self, ctx: ToolContext, args: ReadTextArgs) -> Observation:
        image = ctx.image(args.image)
        w, h = image.size
        if args.bbox is None:
            x1, y1, x2, y2 = 0, 0, w, h
        else:
            check_grid_box(args.bbox)
            x1, y1, x2, y2 = to_pixels_box(args.bbox, w, h)
        area = (x2 - x1) * (y2 - y1)
        if area > ctx.limits.max_ocr_pixels:
            raise ToolArgumentError(
                "limit_exceeded",
                f"the region is {x2 - x1}x{y2 - y1} = {area} px; OCR reads at most {ctx.limits.max_ocr_pixels} px, "
                "pass a smaller bbox",
            )
        region = np.ascontiguousarray(to_array(image)[y1:y2, x1:x2])
        lines = [
            {
                "text": text,
                "bbox": to_grid_box((x1 + bx1, y1 + by1, x1 + bx2, y1 + by2), w, h),
                "confidence": round(conf, 3),
            }
            for text, (bx1, by1, bx2, by2), conf in read_lines(region, ctx.limits.ocr_backend)
        ]
        text = "\n".join(line["text"] for line in lines) if lines else "No text found."
        return Observation(text=text, data={"lines": lines})
