"""Query embeddings for retrieval from the experience buffer (`online.embedder`): unit-length float32 vectors.

- `PolicyEmbedder`: the policy's last hidden states over the rendered question + image, mean-pooled — what the
  model itself makes of the query, so neighbours are queries the policy sees as alike.
- `PixelEmbedder`: model-free, a 8x8 colour thumbnail of the first image plus the question's words hashed into
  64 buckets; cheap, stable across weight versions (the policy's embedding drifts as it learns).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

import numpy as np
import torch

from pixelis.core.trajectory import Trajectory, to_messages
from pixelis.model.chat import build_generation_batch

_WORD = re.compile(r"[a-z0-9]+")


class Embedder(Protocol):
    dim: int

    def embed(self, query: Trajectory) -> np.ndarray: ...


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = vector.astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class PolicyEmbedder:
    """Mean-pooled last hidden states of the policy over the query's user turn."""

    def __init__(self, model: Any, processor: Any):
        self.model, self.processor = model, processor
        self.dim = int(model.config.get_text_config().hidden_size)

    @torch.no_grad()
    def embed(self, query: Trajectory) -> np.ndarray:
        messages, images = to_messages(query, include_answer=False)
        inputs = build_generation_batch(self.processor, [(messages, images, None)])
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1][0].float()
        mask = inputs["attention_mask"][0].bool()
        return _unit(hidden[mask].mean(0).cpu().numpy())


class PixelEmbedder:
    """A colour thumbnail of the first image and hashed question words (no model)."""

    dim = 8 * 8 * 3 + 64

    def embed(self, query: Trajectory) -> np.ndarray:
        pixels = np.zeros(8 * 8 * 3, dtype=np.float32)
        if query.images:
            thumb = np.asarray(query.images[0].convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
            pixels = thumb.reshape(-1) - thumb.mean()
        words = np.zeros(64, dtype=np.float32)
        for word in _WORD.findall(query.question.lower()):
            words[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        return _unit(np.concatenate([pixels, _unit(words) if words.any() else words]))


def build_embedder(kind: str, model: Any, processor: Any) -> Embedder:
    """The embedder `online.embedder` names."""
    return PolicyEmbedder(model, processor) if kind == "policy" else PixelEmbedder()
