"""Policies the agent loop can run: a replay of stored trajectories (the oracle) and the real model."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from pixelis.agent.loop import Generation, GenerationRequest, SamplingParams
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


# Tokens only the processor places (around and inside image/video blocks). A policy that sampled one would
# shift the image placement when its turn is fed back, so they are never sampled, and training renormalises the
# same way (`pixelis.train.rollouts`).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def token_ids_of(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """The ids of those of `tokens` the tokenizer has (unknown ones are left out)."""
    ids = (tokenizer.convert_tokens_to_ids(t) for t in tokens)
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def vision_token_ids(tokenizer: Any) -> list[int]:
    """The ids of `VISION_TOKENS` the tokenizer has."""
    return token_ids_of(tokenizer, VISION_TOKENS)


class RowSeededSampler(LogitsProcessor):
    """Picks each batch row's next token and records its log-probability (generation itself runs greedy).

    With sampling, each row draws from its own seeded generator: transformers' `generate` draws every row from
    one global RNG, so a row's tokens would depend on the rest of the batch. Without sampling the row's argmax is
    taken. Either way the chosen token is forced and `logprobs[row]` gets its log-probability under the
    temperature-scaled distribution (before top-p), the quantity an RL loss recomputes from the same logits.
    `suppressed` token ids are never chosen (their scores are -inf before anything else).
    """

    def __init__(self, seeds: Sequence[int], samplings: Sequence[SamplingParams], device: torch.device,
                 suppressed: Sequence[int] = ()):
        if len(samplings) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(samplings)} sampling parameters")
        self.samplings = list(samplings)
        self.suppressed = list(suppressed)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        temperatures = [s.temperature if s.do_sample else 1.0 for s in samplings]
        self.temperatures = torch.tensor(temperatures, device=device)[:, None]
        self.top_p = [TopPLogitsWarper(s.top_p) if s.do_sample and s.top_p < 1.0 else None for s in samplings]
        self.logprobs: list[list[float]] = [[] for _ in seeds]

    @classmethod
    def for_requests(cls, requests: Sequence[GenerationRequest], device: torch.device,
                     suppressed: Sequence[int] = ()) -> "RowSeededSampler":
        """The sampler of one batched generation: each row seeded and parameterised by its request."""
        return cls([r.seed for r in requests], [r.sampling for r in requests], device, suppressed)

    def choose(self, input_ids: torch.LongTensor, scaled: torch.Tensor) -> torch.Tensor:
        """The next token of every row, given the temperature-scaled scores: argmax for greedy rows, else a draw
        from the row's top-p distribution with the row's generator."""
        chosen = scaled.argmax(dim=-1)
        for row, (sampling, top_p, generator) in enumerate(zip(self.samplings, self.top_p, self.generators)):
            if sampling.do_sample:
                warped = scaled[row:row + 1] if top_p is None else top_p(input_ids[row:row + 1],
                                                                          scaled[row:row + 1].clone())
                chosen[row] = torch.multinomial(warped[0].softmax(dim=-1), 1, generator=generator)[0]
        return chosen

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        if self.suppressed:
            scores = scores.index_fill(1, torch.tensor(self.suppressed, device=scores.device), float("-inf"))
        scaled = scores / self.temperatures
        chosen = self.choose(input_ids, scaled)
        picked = scaled.log_softmax(dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
        for row, value in zip(self.logprobs, picked):
            row.append(value)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, chosen[:, None], 0.0)


class ModelPolicy:
    """A local VLM (any Qwen3-VL / Qwen2.5-VL checkpoint) writing the next turn through its chat template.

    Requests are generated as one left-padded batch. Each row samples with its own request's parameters (greedy
    or temperature/top-p) from a generator seeded by the request, and is cut at its own `max_new_tokens`, so
    rollouts are reproducible, independent of what they are batched with, and leave the global RNG untouched.
    """

    END_TOKENS = ("<|im_end|>", "<|endoftext|>")

    def __init__(self, model: Any, processor: Any, sampler: type[RowSeededSampler] = RowSeededSampler):
        self.model = model
        self.processor = processor
        self.sampler = sampler  # picks and records each token; a subclass can steer it (e.g. to force a text)
        tokenizer = processor.tokenizer
        self.end_ids = token_ids_of(tokenizer, self.END_TOKENS)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]
        self.suppressed = vision_token_ids(tokenizer)

    @torch.no_grad()
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        inputs = build_generation_batch(self.processor, [(r.messages, r.images, r.tools) for r in requests])
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        max_new_tokens = max(r.max_new_tokens for r in requests)  # each row is cut at its own limit below
        sampler = self.sampler.for_requests(requests, device, self.suppressed)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=self.end_ids, pad_token_id=self.pad_id,
                                     logits_processor=LogitsProcessorList([sampler]))
        prompt_length = inputs["input_ids"].shape[1]
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        return [self._decode(prompt, row[prompt_length:prompt_length + r.max_new_tokens].tolist(), logprobs,
                             r.max_new_tokens)
                for r, prompt, row, logprobs in zip(requests, prompts, output, sampler.logprobs)]

    def _decode(self, prompt_ids: list[int], tokens: list[int], logprobs: list[float],
                max_new_tokens: int) -> Generation:
        ended = next((i for i, t in enumerate(tokens) if t in self.end_ids), None)
        sampled = tokens if ended is None else tokens[:ended + 1]  # the end token was sampled too
        text = self.processor.tokenizer.decode(tokens if ended is None else tokens[:ended], skip_special_tokens=False)
        return Generation(text=text.strip(), num_tokens=len(sampled),
                          truncated=ended is None and len(tokens) >= max_new_tokens,
                          prompt_ids=prompt_ids, token_ids=sampled, logprobs=logprobs[:len(sampled)])
