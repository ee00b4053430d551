"""Generated images with known ground truth for the tool tests (imported by the test modules)."""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("circle", "square", "rectangle", "triangle", "star")


def star_points(cx: int, cy: int, r: int, n: int = 5) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, r, 0.45 * r)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).round().astype(np.int32)


def shape_mask(kind: str, center: tuple[int, int], r: int, size: tuple[int, int]) -> np.ndarray:
    """Boolean mask (h, w) of a filled shape whose half-width is r."""
    w, h = size
    cx, cy = center
    m = np.zeros((h, w), np.uint8)
    if kind == "circle":
        cv2.circle(m, (cx, cy), r, 1, -1)
    elif kind == "square":
        cv2.rectangle(m, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
    elif kind == "rectangle":
        cv2.rectangle(m, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 1, -1)
    elif kind == "triangle":
        cv2.fillPoly(m, [np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)], 1)
    elif kind == "star":
        cv2.fillPoly(m, [star_points(cx, cy, r)], 1)
    else:
        raise ValueError(kind)
    return m > 0


def canvas(size: tuple[int, int], color=(235, 235, 235)) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), color, np.uint8)


def add_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image.astype(np.float32) + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def cluttered_scene(kind: str, seed: int, size=(448, 448)) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A random-colour shape over a gradient background with two distractors and noise: (rgb, gt mask, centre)."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = rng.integers(40, 220, 3)
    image = np.clip(np.zeros((h, w, 3)) + bg + np.linspace(-25, 25, w)[None, :, None], 0, 255).astype(np.uint8)
    for _ in range(2):
        kind_d = str(rng.choice(["circle", "square"]))
        center_d = (int(rng.integers(40, w - 40)), int(rng.integers(40, h - 40)))
        d = shape_mask(kind_d, center_d, int(rng.integers(10, 30)), size)
        image[d] = rng.integers(0, 255, 3)
    r = int(rng.integers(25, 70))
    center = (int(rng.integers(r + 5, w - r - 5)), int(rng.integers(r + 5, h - r - 5)))
    color = rng.integers(0, 255, 3)
    while np.abs(color - bg).sum() < 120:
        color = rng.integers(0, 255, 3)
    gt = shape_mask(kind, center, r, size)
    image[gt] = color
    return add_noise(image, 6, seed), gt, center
