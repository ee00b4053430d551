"""`small_text`: read a short code printed small on a label inside a large cluttered image.

Golden: zoom_in(label) -> read_text(crop) -> answer. At medium/hard the text is so small that read_text on the
full image does not return the code (checked for every sample), while it does on the zoomed crop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import ImageDraw

from pixelis.core.trajectory import Observation, ToolCall
from pixelis.data import render
from pixelis.data.synth.base import Episode, Rejected, Scene, TaskFamily, require

# Uppercase letters and digits without the look-alikes O/0/Q, I/1/L, S/5, Z/2, B/8, G/6, A/4.
CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY3679"
LABELLED_KINDS = ("circle", "square", "rectangle", "triangle")


def normalize_code(text: str) -> str:
    """OCR text as a code: uppercase, no whitespace."""
    return "".join(text.split()).upper()


def lines_contain(obs: Observation, code: str) -> bool:
    """Whether one OCR line of a read_text observation is exactly `code` (ignoring case and spaces)."""
    return any(normalize_code(str(line.get("text", ""))) == code for line in obs.data.get("lines", []))


def text_mentions(obs: Observation, code: str) -> bool:
    """Whether `code` occurs anywhere in the OCR lines (also inside a longer line)."""
    return any(code in normalize_code(str(line.get("text", ""))) for line in obs.data.get("lines", []))


class SmallText(TaskFamily):
    name = "small_text"
    tiers: dict[str, dict[str, Any]] = {
        # canvas px; cap height px of the code; ink grey level of the code (its contrast on the light plaque);
        # bold type; labelled shapes (target + distractors); clutter; zoom context around the label.
        # Measured with read_text (RapidOCR at native resolution), 20 draws per tier: on the full image the code
        # is read in 3/20 (medium) and 3/20 (hard) draws, after the golden zoom in 19/20 and 20/20. Draws read on
        # the full image are rejected, so every medium/hard sample needs the zoom (see the OCR-needs-zoom test).
        "simple": {"canvas": [512, 384], "text_px": [11.0, 13.0], "ink": 20, "bold": True, "labels": 2,
                   "words": 4, "lines": 10, "context": 1.0},
        "medium": {"canvas": [896, 672], "text_px": [4.9, 5.2], "ink": 168, "bold": True, "labels": 3,
                   "words": 10, "lines": 24, "context": 0.8},
        "hard": {"canvas": [1024, 768], "text_px": [4.8, 5.1], "ink": 165, "bold": True, "labels": 5,
                 "words": 16, "lines": 36, "context": 0.6},
    }

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        tier = self.tiers[difficulty]
        canvas = tuple(tier["canvas"])
        text_px = float(rng.uniform(*tier["text_px"]))
        fnt = render.font_for_cap_height(text_px, bold=tier["bold"])
        ink = int(tier["ink"])
        img = render.background(rng, canvas)
        draw = ImageDraw.Draw(img)
        pairs = render.distinct_pairs(rng, tier["labels"], kinds=LABELLED_KINDS)
        codes: list[str] = []
        while len(codes) < len(pairs):
            code = "".join(rng.choice(list(CODE_ALPHABET), size=int(rng.integers(4, 6))))
            if code not in codes:
                codes.append(code)
        taken: list[render.Box] = []
        objects = []
        for (color, kind), code in zip(pairs, codes):
            lw, lh = render.label_dims(code, fnt)
            size = int(max(lw * (2.0 if kind == "triangle" else 1.45), lh * 3.2) + rng.integers(0, 12))
            try:
                box = render.place_box(rng, canvas, render.shape_dims(kind, size, rng), taken, gap=14)
            except render.PlacementError as exc:
                raise Rejected("no_room", str(exc)) from None
            taken.append(box)
            shape = render.Shape(kind, color, box)
            render.draw_shape(draw, shape)
            cx, cy = shape.center
            if kind == "triangle":
                cy = box[1] + 0.68 * (box[3] - box[1])
            label = render.draw_label(draw, (cx, cy), code, fnt, fill=(ink, ink, ink))
            objects.append({"shape": shape, "code": code, "label": label})
        render.add_clutter(draw, rng, canvas, tier["lines"], tier["words"], taken,
                           word_px=(max(4.0, text_px * 0.9), max(6.0, text_px * 1.6)))
        target = objects[0]
        knobs = {"canvas": list(canvas), "text_px": round(text_px, 2), "font_px": fnt.size, "ink": ink,
                 "labels": tier["labels"], "distractor_words": tier["words"], "clutter_lines": tier["lines"],
                 "object_fraction": round((target["shape"].box[2] - target["shape"].box[0]) / canvas[0], 3),
                 "steps": 2}
        return Scene(
            images=[img], question=f"What does the label on the {target['shape'].name} say?",
            answer=target["code"], target={"type": "text", "value": target["code"]}, knobs=knobs,
            info={"objects": objects, "target": target, "canvas": canvas, "difficulty": difficulty,
                  "context": tier["context"]},
        )

    def _zoom_box(self, scene: Scene, obj: dict[str, Any]) -> list[int]:
        canvas = scene.info["canvas"]
        box = render.expand_box(obj["label"], canvas, fraction=scene.info["context"], min_side=40)
        return render.to_grid_box(box, canvas)

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        shape = scene.info["target"]["shape"]
        size = "tiny" if scene.info["difficulty"] != "simple" else "small"
        thought = f"The label on the {shape.name} is {size}; zoom in on it before reading."
        return thought, ToolCall("zoom_in", {"image": 0, "bbox": self._zoom_box(scene, scene.info["target"])})

    def _check_full_image_unreadable(self, ep: Episode, scene: Scene) -> Observation:
        """At medium/hard the code must not be readable without zooming; the full-image read is cached."""
        if "full_read" not in scene.info:
            scene.info["full_read"] = ep.execute("read_text", {"image": 0})
        obs = scene.info["full_read"]
        require(obs.error is None, "ocr_error", obs.render_text())
        require(not text_mentions(obs, scene.answer), "full_image_readable", scene.answer)
        return obs

    def solve(self, ep: Episode, scene: Scene) -> str:
        target = scene.info["target"]
        if scene.info["difficulty"] != "simple":
            self._check_full_image_unreadable(ep, scene)
        thought, call = self.first_call(scene)
        crop = ep.call(thought, call.name, call.arguments)
        require(crop.error is None and len(crop.images) == 1, "zoom_failed", crop.render_text())
        crop_index = ep.num_images - 1
        read = ep.call("Read the text in the zoomed crop.", "read_text", {"image": crop_index})
        require(read.error is None, "ocr_error", read.render_text())
        require(lines_contain(read, scene.answer), "ocr_misread",
                f"{scene.answer} vs {[line.get('text') for line in read.data.get('lines', [])]}")
        return f"The crop of the label on the {target['shape'].name} reads {scene.answer}."

    def semantic_trap(self, ep: Episode, scene: Scene, rng: np.random.Generator) -> bool:
        target = scene.info["target"]
        if scene.info["difficulty"] != "simple" and rng.random() < 0.5:
            # Reading the whole image first: the code is too small to come out.
            obs = self._check_full_image_unreadable(ep, scene)
            ep.record("Read all text in the image and look for the label.", ToolCall("read_text", {"image": 0}),
                      obs, kind="trap")
            ep.expect_correction(f"The code on the {target['shape'].name} is not among the text read from the "
                                 "full image; it is too small.")
            return True
        others = [o for o in scene.info["objects"] if o is not target]
        if not others:
            return False
        wrong = others[int(rng.integers(len(others)))]
        thought, _ = self.first_call(scene)
        crop = ep.call(thought, "zoom_in", {"image": 0, "bbox": self._zoom_box(scene, wrong)}, kind="trap")
        require(crop.error is None and len(crop.images) == 1, "zoom_failed", crop.render_text())
        read = ep.call("Read the text in the zoomed crop.", "read_text", {"image": ep.num_images - 1}, kind="trap")
        require(read.error is None and not text_mentions(read, scene.answer), "trap_reads_answer")
        ep.expect_correction(f"This crop shows the label on the {wrong['shape'].name}, not the "
                             f"{target['shape'].name}; zoom on the {target['shape'].name} instead.")
        return True
