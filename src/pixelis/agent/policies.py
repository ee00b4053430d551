"""Policies the agent loop can run: a replay of stored trajectories (the oracle) and the real model."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from pixelis.agent.loop import Generation, GenerationRequest
from pixelis.core.trajectory import Trajectory, render_final_text, render_step_text
from pixelis.model.chat import build_generation_batch


def assistant_turns(traj: Trajectory) -> list[str]:
    """The assistant texts of a stored trajectory, in order, ending with the answer turn."""
    turns = [render_step_text(step) for step in traj.steps]
    if traj.answer is not None:
        turns.append(render_final_text(traj.final_thought, traj.answer))
    return turns


class ReplayPolicy:
    """Replays the assistant text of stored (e.g. golden) trajectories, matched by sample id.

    The tools are executed for real by the agent loop, so replaying a golden trajectory checks that tools, data
    and scoring agree (the oracle policy of `pixelis eval --policy golden`).
    """

    def __init__(self, trajectories: Iterable[Trajectory]):
        self._turns = {t.id: assistant_turns(t) for t in trajectories}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [self._replay(request) for request in requests]

    def _replay(self, request: GenerationRequest) -> Generation:
        turns = self._turns.get(request.sample.id)
        if turns is None:
            raise KeyError(f"no stored trajectory for sample {request.sample.id!r}")
        if request.turn >= len(turns):
            return Generation(text="", truncated=False)
        return Generation(text=turns[request.turn])


class RowSeededSampler(LogitsProcessor):
    """Samples each batch row from its own seeded generator and forces that token (generation runs greedy).

    transformers' `generate` draws every row from one global RNG, so a row's tokens would depend on the rest of
    the batch; one `torch.Generator` per row keeps a trajectory identical whatever it is batched with.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                           + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = self.warpers(input_ids, scores.float()).softmax(dim=-1)
        chosen = torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, self.generators)])
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, chosen[:, None], 0.0)


class ModelPolicy:
    """A local VLM (any Qwen3-VL / Qwen2.5-VL checkpoint) writing the next turn through its chat template.

    Requests are generated as one left-padded batch. Sampling draws each row from a generator seeded by its
    request, so rollouts are reproducible, independent of batching, and leave the global RNG untouched.
    """

    END_TOKENS = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, model: Any, processor: Any):
        self.model = model
        self.processor = processor
        tokenizer = processor.tokenizer
        self.end_ids = [i for i in (tokenizer.convert_tokens_to_ids(t) for t in self.END_TOKENS)
                        if i is not None and i != tokenizer.unk_token_id]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        if len({(r.max_new_tokens, r.sampling) for r in requests}) > 1:
            raise ValueError("requests batched together must share max_new_tokens and sampling parameters")
        inputs = build_generation_batch(self.processor, [(r.messages, r.images, r.tools) for r in requests])
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        max_new_tokens, sampling = requests[0].max_new_tokens, requests[0].sampling
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False,
                                  "eos_token_id": self.end_ids, "pad_token_id": self.pad_id}
        if sampling.do_sample:
            kwargs["logits_processor"] = LogitsProcessorList(
                [RowSeededSampler([r.seed for r in requests], sampling.temperature, sampling.top_p, device)])
        output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        return [self._decode(row, max_new_tokens) for row in new_tokens]

    def _decode(self, tokens: list[int], max_new_tokens: int) -> Generation:
        ended = next((i for i, t in enumerate(tokens) if t in self.end_ids), None)
        kept = tokens if ended is None else tokens[:ended]
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=False)
        return Generation(text=text.strip(), num_tokens=len(kept) + (ended is not None),
                          truncated=ended is None and len(tokens) >= max_new_tokens)
