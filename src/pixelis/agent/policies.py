"""Policies the agent loop can run: a replay of stored trajectories (the oracle) and the real model."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from pixelis.agent.loop import Generation, GenerationRequest
from pixelis.core.trajectory import Trajectory, render_final_text, render_step_text
from pixelis.model.chat import build_generation_prompt


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

    def generate(self, request: GenerationRequest) -> Generation:
        turns = self._turns.get(request.sample.id)
        if turns is None:
            raise KeyError(f"no stored trajectory for sample {request.sample.id!r}")
        if request.turn >= len(turns):
            return Generation(text="", truncated=False)
        return Generation(text=turns[request.turn])


class ModelPolicy:
    """A local VLM (any Qwen3-VL / Qwen2.5-VL checkpoint) writing the next turn through its chat template.

    Sampling is seeded per request inside a forked RNG, so rollouts are reproducible and do not disturb the
    training RNG stream.
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
    def generate(self, request: GenerationRequest) -> Generation:
        inputs = build_generation_prompt(self.processor, request.messages, request.images, request.tools)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        sampling = request.sampling
        kwargs: dict[str, Any] = {"max_new_tokens": request.max_new_tokens, "do_sample": sampling.do_sample,
                                  "eos_token_id": self.end_ids, "pad_token_id": self.pad_id}
        if sampling.do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(request.seed)
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[0, inputs["input_ids"].shape[1]:].tolist()
        ended = next((i for i, t in enumerate(new_tokens) if t in self.end_ids), None)
        kept = new_tokens if ended is None else new_tokens[:ended]
        text = self.processor.tokenizer.decode(kept, skip_special_tokens=False)
        return Generation(text=text.strip(), num_tokens=len(new_tokens),
                          truncated=ended is None and len(new_tokens) >= request.max_new_tokens)
