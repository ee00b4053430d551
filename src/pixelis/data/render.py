"""Shared drawing for the synthetic task families: colours, shapes, fonts, labels, clutter, storyboards.

Every generator draws through these helpers so that scenes, labels and videos look alike across families.
Coordinates here are pixels; `to_grid_box` / `to_grid_point` convert to the 0–1000 grid the tools take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelis.tools.properties import COLOR_PALETTE

Box = tuple[int, int, int, int]  # pixel x1, y1, x2, y2 (x2/y2 exclusive)

# One prototype RGB per colour name, owned by get_properties so that drawn colours and named colours agree.
COLORS: dict[str, tuple[int, int, int]] = dict(COLOR_PALETTE)
OBJECT_COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES = ("circle", "triangle", "square", "rectangle", "star")
# Colours a careless look may confuse (used for look-alike distractors).
NEIGHBOR_COLORS = {
    "red": ("orange", "pink"), "orange": ("red", "yellow"), "yellow": ("orange", "green"),
    "green": ("yellow", "cyan"), "cyan": ("green", "blue"), "blue": ("cyan", "purple"),
    "purple": ("blue", "pink"), "pink": ("purple", "red"),
}
NEIGHBOR_SHAPES = {
    "circle": ("square", "star"), "triangle": ("star", "square"), "square": ("rectangle", "circle"),
    "rectangle": ("square", "triangle"), "star": ("triangle", "circle"),
}

# Distractor vocabulary: lowercase words, so they never look like the uppercase codes asked about.
DISTRACTOR_WORDS = (
    "north", "gate", "exit", "level", "store", "open", "daily", "route", "park", "cafe", "sale", "push",
    "pull", "notice", "zone", "lane", "hall", "desk", "office", "garden", "river", "plaza", "depot", "yard",
)


@dataclass(frozen=True)
class Shape:
    """A drawn object: its kind, colour name and pixel box."""

    kind: str
    color: str
    box: Box

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2, (y1 + y2) / 2)

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"

    @property
    def interior_point(self) -> tuple[float, float]:
        """A point well inside the drawn shape (a triangle's centre of mass, otherwise the box centre)."""
        cx, cy = self.center
        if self.kind == "triangle":
            cy = self.box[1] + 0.62 * (self.box[3] - self.box[1])
        return (cx, cy)

    def moved(self, dx: float, dy: float) -> "Shape":
        """The same shape shifted by (dx, dy) pixels (rounded)."""
        x1, y1, x2, y2 = self.box
        dx, dy = int(round(dx)), int(round(dy))
        return Shape(self.kind, self.color, (x1 + dx, y1 + dy, x2 + dx, y2 + dy))


def plural(kind: str) -> str:
    """English plural of a shape kind."""
    return kind + "s"


# ------------------------------------------------------------------------------------------- geometry

def shape_dims(kind: str, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Width and height (px) of a shape of nominal `size`; rectangles are clearly wider than tall."""
    if kind == "rectangle":
        return int(round(size * rng.uniform(1.7, 2.1))), int(round(size * rng.uniform(0.75, 0.9)))
    return size, size


def shape_polygon(kind: str, box: Box) -> list[tuple[float, float]]:
    """Polygon vertices of a non-circle shape filling `box`."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1 - 1, y2 - y1 - 1
    if kind in ("square", "rectangle"):
        return [(x1, y1), (x1 + w, y1), (x1 + w, y1 + h), (x1, y1 + h)]
    if kind == "triangle":
        return [(x1 + w / 2, y1), (x1 + w, y1 + h), (x1, y1 + h)]
    if kind == "star":
        cx, cy, r_out = x1 + w / 2, y1 + h / 2, min(w, h) / 2
        pts = []
        for i in range(10):
            r = r_out if i % 2 == 0 else r_out * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPES}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, outline: tuple[int, int, int] | None = None) -> None:
    """Fill `shape` on `draw` with its colour."""
    fill = COLORS[shape.color]
    x1, y1, x2, y2 = shape.box
    if shape.kind == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill, outline=outline)
    else:
        draw.polygon(shape_polygon(shape.kind, shape.box), fill=fill, outline=outline)


def boxes_overlap(a: Box, b: Box, gap: int = 0) -> bool:
    """Whether two pixel boxes overlap once each is grown by `gap`."""
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


class PlacementError(RuntimeError):
    """No free spot was found for an object; the caller redraws the scene."""


def place_box(
    rng: np.random.Generator, canvas: tuple[int, int], dims: tuple[int, int], taken: Sequence[Box],
    gap: int = 6, margin: int = 4, tries: int = 300, region: Box | None = None,
) -> Box:
    """A random box of size `dims` inside `canvas` (or `region`) that keeps `gap` px from every taken box."""
    w, h = dims
    rx1, ry1, rx2, ry2 = region if region is not None else (0, 0, canvas[0], canvas[1])
    lo_x, hi_x = max(rx1, margin), min(rx2, canvas[0] - margin) - w
    lo_y, hi_y = max(ry1, margin), min(ry2, canvas[1] - margin) - h
    if hi_x < lo_x or hi_y < lo_y:
        raise PlacementError(f"a {w}x{h} box does not fit in region {(rx1, ry1, rx2, ry2)}")
    for _ in range(tries):
        x, y = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
        box = (x, y, x + w, y + h)
        if not any(boxes_overlap(box, t, gap) for t in taken):
            return box
    raise PlacementError(f"no free spot for a {w}x{h} box after {tries} tries")


def expand_box(
    box: Box, canvas: tuple[int, int], fraction: float = 0.0, pixels: float = 0.0, min_side: int = 0
) -> Box:
    """`box` grown on every side by `fraction` of its width/height plus `pixels`, to at least `min_side`,
    clipped to the canvas."""
    x1, y1, x2, y2 = box
    px, py = fraction * (x2 - x1) + pixels, fraction * (y2 - y1) + pixels
    sides = []
    for lo, hi, limit in ((x1 - px, x2 + px, canvas[0]), (y1 - py, y2 + py, canvas[1])):
        grow = max(0.0, min_side - (hi - lo)) / 2
        sides.append((max(0.0, lo - grow), min(float(limit), hi + grow)))
    (x1, x2), (y1, y2) = sides
    return (int(math.floor(x1)), int(math.floor(y1)), int(math.ceil(x2)), int(math.ceil(y2)))


def to_grid_box(box: Box, canvas: tuple[int, int]) -> list[int]:
    """Pixel box -> [x1, y1, x2, y2] on the 0–1000 grid (rounded outward so the box is kept whole)."""
    w, h = canvas
    return [
        max(0, int(math.floor(box[0] * 1000 / w))), max(0, int(math.floor(box[1] * 1000 / h))),
        min(1000, int(math.ceil(box[2] * 1000 / w))), min(1000, int(math.ceil(box[3] * 1000 / h))),
    ]


def to_grid_point(point: tuple[float, float], canvas: tuple[int, int]) -> list[int]:
    """Pixel point -> [x, y] on the 0–1000 grid."""
    return [int(round(point[0] * 1000 / canvas[0])), int(round(point[1] * 1000 / canvas[1]))]


def region_name(point: tuple[float, float], canvas: tuple[int, int]) -> str:
    """Quadrant of a pixel point: top-left, top-right, bottom-left or bottom-right."""
    vertical = "top" if point[1] < canvas[1] / 2 else "bottom"
    horizontal = "left" if point[0] < canvas[0] / 2 else "right"
    return f"{vertical}-{horizontal}"


# ----------------------------------------------------------------------------------------------- text

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
CAP_HEIGHT = 0.73  # DejaVu Sans cap height as a fraction of the font size


def font(size_px: float, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    """A DejaVu TrueType font (bundled with matplotlib, so always available offline); size in 0.1 px steps."""
    return _font(max(1.0, round(float(size_px), 1)), bold, mono)


@lru_cache(maxsize=128)
def _font(size_px: float, bold: bool, mono: bool) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans" + ("Mono" if mono else "") + ("-Bold" if bold else "") + ".ttf"
    path = FONT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"font {path} not found; matplotlib's bundled DejaVu fonts are required")
    return ImageFont.truetype(str(path), size=size_px)


def font_for_cap_height(cap_px: float, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    """The font whose capital letters are about `cap_px` pixels tall."""
    return font(max(4.0, cap_px / CAP_HEIGHT), bold=bold, mono=mono)


def text_extent(text: str, fnt: ImageFont.FreeTypeFont) -> tuple[int, int, int, int]:
    """Ink bounding box (x1, y1, x2, y2) of `text` drawn at the origin."""
    return tuple(int(v) for v in fnt.getbbox(text))  # type: ignore[return-value]


def draw_label(
    draw: ImageDraw.ImageDraw, center: tuple[float, float], text: str, fnt: ImageFont.FreeTypeFont,
    fill: tuple[int, int, int] = (20, 20, 20), plaque: tuple[int, int, int] = (250, 248, 240), pad: int = 3,
) -> Box:
    """Draw `text` on a light plaque centred at `center`; returns the plaque box."""
    x1, y1, x2, y2 = text_extent(text, fnt)
    tw, th = x2 - x1, y2 - y1
    px1 = int(round(center[0] - tw / 2 - pad))
    py1 = int(round(center[1] - th / 2 - pad))
    box = (px1, py1, px1 + tw + 2 * pad + 1, py1 + th + 2 * pad + 1)
    draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=plaque, outline=(90, 90, 90))
    draw.text((px1 + pad - x1, py1 + pad - y1), text, font=fnt, fill=fill)
    return box


def label_dims(text: str, fnt: ImageFont.FreeTypeFont, pad: int = 3) -> tuple[int, int]:
    """Size of the plaque `draw_label` would draw."""
    x1, y1, x2, y2 = text_extent(text, fnt)
    return (x2 - x1 + 2 * pad + 1, y2 - y1 + 2 * pad + 1)


# -------------------------------------------------------------------------------------- backgrounds

def background(
    rng: np.random.Generator, size: tuple[int, int], grain: float = 0.01, grain_sigma: float = 8.0
) -> Image.Image:
    """A light, low-saturation background: a smooth tint plus grey grain (std `grain_sigma`) on a `grain` share
    of the pixels.

    Sparse grain rather than dense pixel noise: dense noise does not compress (a 1024x768 PNG grows from
    ~0.1 to ~1.5 MB), and heavier grain measurably disturbs the segmentation of small shapes.
    """
    w, h = size
    base = rng.uniform(200, 235, size=3)
    tint = rng.uniform(-10, 10, size=3)
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    vert = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = base[None, None, :] + tint[None, None, :] * (ramp + vert) / 2
    speckle = rng.random((h, w)) < grain
    img[speckle] += rng.normal(0.0, grain_sigma, size=(int(speckle.sum()), 1))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def add_clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int], n_lines: int,
    n_words: int, taken: list[Box], word_px: tuple[float, float] = (8, 14),
) -> list[Box]:
    """Grey lines across free areas and lowercase distractor words; returns the boxes of the words."""
    w, h = size
    for _ in range(n_lines):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang, length = rng.uniform(0, math.pi), rng.uniform(0.05, 0.2) * min(w, h)
        end = (x + length * math.cos(ang), y + length * math.sin(ang))
        seg_box = (int(min(x, end[0])), int(min(y, end[1])), int(max(x, end[0])) + 1, int(max(y, end[1])) + 1)
        if any(boxes_overlap(seg_box, t, 3) for t in taken):
            continue
        g = int(rng.integers(120, 180))
        draw.line([(x, y), end], fill=(g, g, g), width=1)
    words = []
    for _ in range(n_words):
        word = str(rng.choice(DISTRACTOR_WORDS))
        fnt = font_for_cap_height(rng.uniform(*word_px))
        x1, y1, x2, y2 = text_extent(word, fnt)
        try:
            box = place_box(rng, size, (x2 - x1, y2 - y1), taken + words, gap=5, tries=60)
        except PlacementError:
            continue
        g = int(rng.integers(60, 110))
        draw.text((box[0] - x1, box[1] - y1), word, font=fnt, fill=(g, g, g))
        words.append(box)
    return words


# ----------------------------------------------------------------------------------------- videos

def storyboard(
    frames: Sequence[Image.Image], cols: int | None = None, gap: int = 4, thumb: int | None = None
) -> Image.Image:
    """Tile video frames into one image, each with its frame index (from 0) in the top-left corner.

    `thumb` shrinks each frame so its longest side is at most that many pixels.
    """
    if not frames:
        raise ValueError("storyboard needs at least one frame")
    fw, fh = frames[0].size
    if thumb is not None and max(fw, fh) > thumb:
        fw, fh = max(1, round(fw * thumb / max(fw, fh))), max(1, round(fh * thumb / max(fw, fh)))
        frames = [f.resize((fw, fh), Image.Resampling.LANCZOS) for f in frames]
    cols = cols or int(math.ceil(math.sqrt(len(frames))))
    rows = int(math.ceil(len(frames) / cols))
    sheet = Image.new("RGB", (cols * fw + (cols + 1) * gap, rows * fh + (rows + 1) * gap), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    fnt = font(max(10, fh // 14), bold=True)
    for i, frame in enumerate(frames):
        x = gap + (i % cols) * (fw + gap)
        y = gap + (i // cols) * (fh + gap)
        sheet.paste(frame.convert("RGB"), (x, y))
        tag = str(i)
        tx1, ty1, tx2, ty2 = text_extent(tag, fnt)
        draw.rectangle([x, y, x + tx2 - tx1 + 6, y + ty2 - ty1 + 6], fill=(0, 0, 0))
        draw.text((x + 3 - tx1, y + 3 - ty1), tag, font=fnt, fill=(255, 255, 255))
    return sheet


def render_frame(size: tuple[int, int], bg: Image.Image, shapes: Sequence[Shape]) -> Image.Image:
    """One video frame: the shapes drawn over a copy of the static background."""
    frame = bg.copy() if bg.size == size else bg.resize(size)
    draw = ImageDraw.Draw(frame)
    for s in shapes:
        draw_shape(draw, s)
    return frame


def scatter_shapes(
    rng: np.random.Generator, canvas: tuple[int, int], specs: Sequence[tuple[str, str, int]],
    taken: Sequence[Box] = (), gap: int = 8,
) -> list[Shape]:
    """Place shapes given as (kind, colour, nominal size) at random, non-overlapping spots."""
    occupied = list(taken)
    shapes = []
    for kind, color, size in specs:
        box = place_box(rng, canvas, shape_dims(kind, size, rng), occupied, gap=gap)
        occupied.append(box)
        shapes.append(Shape(kind, color, box))
    return shapes


def distinct_pairs(rng: np.random.Generator, n: int, colors: Sequence[str] = OBJECT_COLORS,
                   kinds: Sequence[str] = SHAPES) -> list[tuple[str, str]]:
    """`n` different (colour, kind) pairs, so each object can be named uniquely by colour and shape."""
    pairs = [(c, k) for c in colors for k in kinds]
    if n > len(pairs):
        raise ValueError(f"asked for {n} distinct colour/shape pairs, only {len(pairs)} exist")
    return [pairs[int(i)] for i in rng.choice(len(pairs), size=n, replace=False)]


def shape_area(shape: Shape) -> int:
    """Number of pixels `draw_shape` fills for `shape`."""
    x1, y1, x2, y2 = shape.box
    mask = Image.new("RGB", (x2 - x1, y2 - y1), (0, 0, 0))
    draw_shape(ImageDraw.Draw(mask), Shape(shape.kind, "white", (0, 0, x2 - x1, y2 - y1)))
    return int(np.count_nonzero(np.asarray(mask)[..., 0]))


# Compass directions in image coordinates (y grows downwards), named as track_object reports them.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}


@dataclass(frozen=True)
class Mover:
    """A shape in a video: its frame-0 placement, per-frame velocity (px) and the frames it is visible in."""

    shape: Shape
    velocity: tuple[float, float] = (0.0, 0.0)
    visible: tuple[int, int] = (0, 10**9)  # first visible frame, first frame no longer visible

    def at(self, frame: int) -> Shape:
        """The shape as drawn in `frame`."""
        return self.shape.moved(self.velocity[0] * frame, self.velocity[1] * frame)

    def shown(self, frame: int) -> bool:
        return self.visible[0] <= frame < self.visible[1]


def plan_mover(
    rng: np.random.Generator, canvas: tuple[int, int], kind: str, color: str, size: int,
    velocity: tuple[float, float], n_frames: int, others: Sequence[Mover] = (), gap: int = 6,
    visible: tuple[int, int] = (0, 10**9), tries: int = 200,
) -> Mover:
    """A mover whose whole path stays inside the canvas and never touches the other movers' paths."""
    w, h = shape_dims(kind, size, rng)
    span_x, span_y = velocity[0] * (n_frames - 1), velocity[1] * (n_frames - 1)
    lo_x, hi_x = 4 - min(0.0, span_x), canvas[0] - 4 - w - max(0.0, span_x)
    lo_y, hi_y = 4 - min(0.0, span_y), canvas[1] - 4 - h - max(0.0, span_y)
    if hi_x < lo_x or hi_y < lo_y:
        raise PlacementError(f"a {w}x{h} {kind} moving {velocity} px/frame does not fit in {canvas}")
    for _ in range(tries):
        x, y = int(rng.integers(int(math.ceil(lo_x)), int(hi_x) + 1)), int(rng.integers(int(math.ceil(lo_y)), int(hi_y) + 1))
        mover = Mover(Shape(kind, color, (x, y, x + w, y + h)), velocity, visible)
        if not any(boxes_overlap(mover.at(f).box, o.at(f).box, gap) for o in others for f in range(n_frames)):
            return mover
    raise PlacementError(f"no collision-free path for a {w}x{h} {kind} after {tries} tries")


def render_video(bg: Image.Image, movers: Sequence[Mover], n_frames: int) -> list[Image.Image]:
    """Frames of `movers` over a static background."""
    return [render_frame(bg.size, bg, [m.at(f) for m in movers if m.shown(f)]) for f in range(n_frames)]


# ---------------------------------------------------------------------------------- documentation cards

STEP_COLORS = ((230, 40, 40), (30, 110, 230), (20, 160, 70), (200, 120, 0), (150, 50, 200), (0, 150, 160))


def storyboard_tile(index: int, n_frames: int, frame_size: tuple[int, int], cols: int | None = None,
                    gap: int = 4, thumb: int | None = None) -> Box:
    """Where `storyboard` puts frame `index` (pixel box in the storyboard)."""
    fw, fh = frame_size
    if thumb is not None and max(fw, fh) > thumb:
        fw, fh = max(1, round(fw * thumb / max(fw, fh))), max(1, round(fh * thumb / max(fw, fh)))
    cols = cols or int(math.ceil(math.sqrt(n_frames)))
    x, y = gap + (index % cols) * (fw + gap), gap + (index // cols) * (fh + gap)
    return (x, y, x + fw, y + fh)


def _wrap(text: str, fnt: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))]
        line = indent
        for word in paragraph.split():
            trial = f"{line} {word}" if line.strip() else f"{line}{word}"
            if line.strip() and fnt.getlength(trial) > width:
                lines.append(line)
                line = indent + word
            else:
                line = trial
        lines.append(line)
    return lines


def trajectory_card(
    image: Image.Image, marks: Sequence[tuple[int, str, Sequence[float], Box | None]], text_blocks:
    Sequence[tuple[str, tuple[int, int, int]]], tool_images: Sequence[Image.Image] = (), width: int = 880,
) -> Image.Image:
    """An example card: the input image with each step's box/point drawn (numbered), tool images, and text.

    `marks` are (step number, "bbox"|"point", grid coordinates, region of the image they refer to or None
    for the whole image); `text_blocks` are (text, colour) paragraphs printed below.
    """
    pane = width // 2 + 60
    scale = min(pane / image.width, 420 / image.height)
    shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                        Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(shown)
    label_font = font(13, bold=True)
    for number, kind, coords, region in marks:
        rx1, ry1, rx2, ry2 = region if region is not None else (0, 0, image.width, image.height)
        to_px = lambda gx, gy: ((rx1 + gx / 1000 * (rx2 - rx1)) * scale,  # noqa: E731
                                (ry1 + gy / 1000 * (ry2 - ry1)) * scale)
        color = STEP_COLORS[(number - 1) % len(STEP_COLORS)]
        if kind == "bbox":
            (x1, y1), (x2, y2) = to_px(coords[0], coords[1]), to_px(coords[2], coords[3])
            draw.rectangle([x1 - 2, y1 - 2, x2 + 2, y2 + 2], outline=color, width=2)
            anchor = (x1, max(0.0, y1 - 16))
        else:
            x, y = to_px(coords[0], coords[1])
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=color, width=3)
            anchor = (x + 6, y - 16)
        draw.rectangle([anchor[0], anchor[1], anchor[0] + 13, anchor[1] + 15], fill=color)
        draw.text((anchor[0] + 3, anchor[1]), str(number), font=label_font, fill=(255, 255, 255))
    body_font = font(13)
    text_lines: list[tuple[str, tuple[int, int, int]]] = []
    for text, color in text_blocks:
        text_lines.extend((line, color) for line in _wrap(text, body_font, width - 24))
    thumbs = [im.convert("RGB") for im in tool_images][:3]
    side_w = width - shown.width - 24
    thumb_imgs = []
    for im in thumbs:
        s = min(side_w / im.width, (shown.height - 8 * len(thumbs)) / max(1, len(thumbs)) / im.height, 1.5)
        thumb_imgs.append(im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                                    Image.Resampling.LANCZOS))
    height = max(shown.height, sum(t.height + 8 for t in thumb_imgs)) + 24 + 17 * len(text_lines) + 12
    card = Image.new("RGB", (width, height), (255, 255, 255))
    card.paste(shown, (8, 8))
    y = 8
    for t in thumb_imgs:
        card.paste(t, (shown.width + 16, y))
        y += t.height + 8
    draw = ImageDraw.Draw(card)
    y = max(shown.height, y) + 20
    for line, color in text_lines:
        draw.text((12, y), line, font=body_font, fill=color)
        y += 17
    return card
