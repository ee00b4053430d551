"""Rollouts as training input, token-in / token-out.

Every generated turn of a rollout (`Trajectory.turns`, recorded by the agent loop) is trained on as the exact
prompt ids the policy conditioned on, then the exact ids it sampled. Nothing is re-rendered from parsed calls, so
the loss is computed on the tokens that were sampled, with the log-probs recorded when they were. A turn whose
recorded prompt continues the previous turn's prompt and sampled ids token for token (and sees the same images
first) shares that turn's input row, so a rollout is usually one row and its context is run through the model
once. A row's prompt is re-encoded only to get its pixel values, and its ids must equal the recorded ones
(`TokenMismatchError`). Per-turn values are then laid out per rollout: row b of `(B, T)` holds rollout b's sampled
tokens, turn after turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from pixelis.agent.policies import vision_token_ids
from pixelis.agent.loop import SampledTurn
from pixelis.core.errors import TrainingError
from pixelis.core.trajectory import Trajectory
from pixelis.model.chat import build_generation_batch, model_inputs


class TokenMismatchError(TrainingError):
    """Re-encoding a recorded prompt gave different token ids than the policy saw when sampling."""


@dataclass
class TurnSpan:
    """Where one generated turn's sampled tokens sit: in an input row, and in its rollout's `(B, T)` layout."""

    row: int  # the input row holding the turn
    start: int  # position of the turn's first sampled token in that row (the length of the turn's prompt)
    ids: list[int]  # the sampled ids
    rollout: int
    offset: int  # position of the turn's first token in the rollout's row of `(B, T)`


@dataclass
class TurnBatch:
    """The generated turns of a batch of rollouts as right-padded model inputs, and where each turn's tokens go."""

    inputs: dict[str, torch.Tensor]  # model inputs: a row holds one or more consecutive turns of one rollout
    spans: list[TurnSpan]  # per generated turn, in rollout and turn order
    completion_mask: torch.Tensor  # (B, T): 1 on every sampled token of rollout b
    sampled_logprobs: torch.Tensor  # (B, T): log-probs recorded at sampling time
    turns_per_rollout: list[int]
    suppressed: list[int]  # token ids the policy never samples (renormalised away here too)


def _continues(previous: SampledTurn, turn: SampledTurn) -> bool:
    """Whether `turn`'s prompt starts with `previous`'s prompt and sampled ids, and its images with `previous`'s,
    so that one encoding of `turn`'s prompt serves both."""
    row = previous.generation.prompt_ids + previous.generation.token_ids
    earlier, later = previous.request.images, turn.request.images
    return (turn.generation.prompt_ids[:len(row)] == row and len(earlier) <= len(later)
            and all(a is b for a, b in zip(earlier, later)))


def turn_batch(processor: Any, trajectories: Sequence[Trajectory]) -> TurnBatch:
    """Build the `TurnBatch` of `trajectories` from their recorded turns (turns without sampled ids are an error)."""
    row_ends: list[tuple[Trajectory, int]] = []  # per row: its rollout and its last turn
    spans: list[TurnSpan] = []
    counts, lengths = [], []
    for b, traj in enumerate(trajectories):
        offset = 0
        for t, turn in enumerate(traj.turns):
            gen = turn.generation
            if not gen.token_ids:
                raise TrainingError(f"rollout {traj.id} turn {t}: no sampled token ids (a replay policy cannot be "
                                    "trained on; use a model policy)")
            if t > 0 and _continues(traj.turns[t - 1], turn):
                row_ends[-1] = (traj, t)  # the row grows by this turn
            else:
                row_ends.append((traj, t))
            spans.append(TurnSpan(len(row_ends) - 1, len(gen.prompt_ids), list(gen.token_ids), b, offset))
            offset += len(gen.token_ids)
        counts.append(len(traj.turns))
        lengths.append(offset)
    width = max(lengths, default=0) or 1
    mask = torch.zeros(len(trajectories), width)
    sampled = torch.zeros(len(trajectories), width)
    for b, traj in enumerate(trajectories):
        flat = [lp for turn in traj.turns for lp in turn.generation.logprobs]
        mask[b, :lengths[b]] = 1.0
        sampled[b, :len(flat)] = torch.tensor(flat, dtype=torch.float32)
    rows = [_encode_row(processor, traj, t) for traj, t in row_ends]
    return TurnBatch(_collate_turns(rows, processor.tokenizer.pad_token_id), spans, mask, sampled, counts,
                     vision_token_ids(processor.tokenizer))


def _encode_row(processor: Any, traj: Trajectory, t: int) -> dict[str, Any]:
    """Model inputs of the row ending with turn `t` of `traj`: its re-encoded prompt (checked against the recorded
    ids), then its sampled ids."""
    gen, req = traj.turns[t].generation, traj.turns[t].request
    enc = build_generation_batch(processor, [(req.messages, req.images, req.tools)])
    ids = enc["input_ids"][0]
    if ids.tolist() != gen.prompt_ids:
        raise TokenMismatchError(f"rollout {traj.id} turn {t}: re-encoding the prompt gives {len(ids)} ids "
                                 f"that differ from the {len(gen.prompt_ids)} the policy saw")
    return {**enc, "completion": torch.tensor(gen.token_ids, dtype=torch.long)}


def _collate_turns(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded inputs of prompt + completion rows; pixel values concatenated in row order."""
    if not rows:
        return {}
    seqs = [torch.cat([r["input_ids"][0], r["completion"]]) for r in rows]
    mm = [torch.cat([r["mm_token_type_ids"][0], torch.zeros_like(r["completion"])]) for r in rows]
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    mm_types = torch.zeros((len(rows), length), dtype=mm[0].dtype)
    for i, (seq, types) in enumerate(zip(seqs, mm)):
        input_ids[i, :len(seq)], attention[i, :len(seq)], mm_types[i, :len(seq)] = seq, 1, types
    out = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types}
    with_images = [r for r in rows if r.get("pixel_values") is not None]
    if with_images:
        out["pixel_values"] = torch.cat([r["pixel_values"] for r in with_images])
        out["image_grid_thw"] = torch.cat([r["image_grid_thw"] for r in with_images])
    return out


@dataclass
class PolicyPass:
    """Per-token log-probs of the sampled tokens laid out per rollout, and step embeddings per rollout."""

    logprobs: torch.Tensor  # (B, T), differentiable when computed with grad
    states: list[torch.Tensor]  # per rollout (turns + 1, d): context before each turn; last: after the last token
    actions: list[torch.Tensor]  # per rollout (turns, d): mean hidden state over each turn's sampled tokens
    entropy: float = 0.0  # mean entropy of the policy's next-token distribution over the sampled tokens


def policy_pass(model: nn.Module, batch: TurnBatch, temperature: float, device: torch.device,
                embeddings: bool = False) -> PolicyPass:
    """Forward every input row and gather log softmax(logits / temperature) at the sampled tokens.

    With `embeddings`, the (detached) last hidden state at each turn's last prompt token is its state, the mean
    over its sampled tokens its action; a rollout's last state is the hidden state at its last sampled token.
    """
    rollouts, width = batch.completion_mask.shape
    logprobs = torch.zeros(rollouts, width, device=device)
    states: list[list[torch.Tensor]] = [[] for _ in range(rollouts)]
    actions: list[list[torch.Tensor]] = [[] for _ in range(rollouts)]
    if not batch.spans:
        return PolicyPass(logprobs, [torch.zeros(1, 0)] * rollouts, [torch.zeros(0, 0)] * rollouts)
    inputs = model_inputs(batch.inputs, device)
    first = min(span.start for span in batch.spans) - 1  # the first position that predicts a sampled token
    keep = inputs["input_ids"].shape[1] - first  # no vocab-wide logits for the prompt positions before it
    out = model(**inputs, output_hidden_states=embeddings, logits_to_keep=keep)
    logits = out.logits.float()
    if batch.suppressed:  # the distribution the policy sampled from (see `RowSeededSampler`)
        logits = logits.index_fill(2, torch.tensor(batch.suppressed, device=logits.device), float("-inf"))
    logits = logits / temperature
    hidden = out.hidden_states[-1].detach().float() if embeddings else None
    scatter_rows, scatter_cols, values, entropies = [], [], [], []
    for span in batch.spans:
        b, n = span.rollout, len(span.ids)
        predicting = slice(span.start - 1 - first, span.start - 1 - first + n)  # position p predicts token p + 1
        target = torch.tensor(span.ids, device=device)
        logp = logits[span.row, predicting].log_softmax(dim=-1)
        values.append(logp.gather(1, target[:, None])[:, 0])
        entropies.append(-(logp.exp() * logp.clamp_min(-1e30)).sum(dim=-1).detach())  # 0 * -inf would be nan
        scatter_rows += [b] * n
        scatter_cols += range(span.offset, span.offset + n)
        if hidden is not None:
            states[b].append(hidden[span.row, span.start - 1])
            actions[b].append(hidden[span.row, span.start:span.start + n].mean(dim=0))
            if len(states[b]) == batch.turns_per_rollout[b]:
                states[b].append(hidden[span.row, span.start + n - 1])
    where = (torch.tensor(scatter_rows, device=device), torch.tensor(scatter_cols, device=device))
    logprobs = logprobs.index_put(where, torch.cat(values))
    dim = hidden.shape[-1] if hidden is not None else 0
    return PolicyPass(logprobs,
                      [torch.stack(s) if s else torch.zeros(1, dim) for s in states],
                      [torch.stack(a) if a else torch.zeros(0, dim) for a in actions],
                      float(torch.cat(entropies).mean()))
