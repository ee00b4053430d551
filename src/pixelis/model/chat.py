"""Render trajectories and conversations into model inputs with exact loss masks.

The conversation is rendered with the processor's own chat template, then tokenized by the processor (which
expands every ``<|image_pad|>`` into the image's visual tokens). Assistant spans are located by rendering
prefixes of the conversation: the text after ``render(messages[:i], add_generation_prompt=True)`` up to and
including the ``<|im_end|>`` that closes message ``i`` is exactly what the model must generate at that turn.
Character spans are mapped to tokens with the tokenizer's offset mapping, shifted past the expanded image
placeholders (``return_text_replacement_offsets``). A template that rewrites earlier turns (e.g. strips
``<think>`` from history) breaks the prefix property and is rejected with `ChatTemplateError`, because training
on it would not match what the model generates.

Templates that ignore ``tools`` (Qwen2.5-VL's) get the tool schemas as a system message and ``tool`` messages as
``user`` turns wrapped in ``<tool_response>`` tags, the same text Qwen3-VL's template produces.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import torch
from PIL import Image
from transformers.processing_utils import ProcessorMixin

from pixelis.core.trajectory import Trajectory, to_messages

END_OF_TURN = "<|im_end|>"
# Keys of a collated batch that the model's forward() accepts; the others are for the loss.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw", "labels")

# Qwen3-VL's tool preamble, written out for templates that ignore `tools` (transformers has no generic renderer).
_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)


def tools_system_text(tools: list[dict]) -> str:
    """The system-prompt text Qwen3-VL's template writes for `tools` (JSON schemas)."""
    return _TOOLS_PREAMBLE + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools) + _TOOLS_POSTAMBLE


class ChatTemplateError(ValueError):
    """The chat template renders a conversation in a way the masks cannot be derived from."""


@dataclass
class TokenLocator:
    """Maps character positions of the rendered template text to token positions.

    `offsets` (L, 2) are the tokens' character ranges in the image-expanded text the processor tokenized;
    `replacement_ends` / `gained` record where each image placeholder ended and how many characters the
    expansions before it added, so a rendered-text position can be shifted into the expanded text.
    """

    offsets: torch.Tensor
    replacement_ends: list[int]
    gained: list[int]

    def _shift(self, char: int) -> int:
        return char + self.gained[bisect.bisect_right(self.replacement_ends, char)]

    def mask(self, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
        """1 on every token overlapping one of the character `spans` of the rendered text."""
        return _token_mask(self.offsets, [(self._shift(a), self._shift(b)) for a, b in spans])

    def position(self, char: int) -> int | None:
        """The token holding character `char` of the rendered text (None when it was truncated away)."""
        after = (self.offsets[:, 1] > self._shift(char)).nonzero()
        return int(after[0]) if after.numel() else None

    def cut(self, length: int) -> TokenLocator:
        """The locator of the first `length` tokens."""
        return TokenLocator(self.offsets[:length], self.replacement_ends, self.gained)


@dataclass
class RenderedSample:
    """One rendered conversation. Per-token tensors are 1-D (no batch dimension), length L.

    `pixel_values` is Qwen's flat patch tensor (num_patches, patch_dim) and `image_grid_thw` is (num_images, 3),
    both None without images.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    assistant_mask: torch.Tensor  # 1 on tokens of trained assistant turns, through their <|im_end|>
    locator: TokenLocator
    assistant_turns: list[tuple[int, int]] = field(default_factory=list)  # [start, end) tokens of each turn
    turn_char_spans: list[tuple[int, int]] = field(default_factory=list)  # the same turns as spans of `text`
    untrained_turns: frozenset[int] = frozenset()  # assistant turns kept as context only
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    text: str = ""  # the rendered template text (before image expansion)
    truncated: bool = False

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type", "text") == "text")


def template_supports_tools(processor: ProcessorMixin) -> bool:
    """Whether the processor's chat template renders `tools` (Qwen3-VL's does, Qwen2.5-VL's ignores them)."""
    probe = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    tool = {"type": "function", "function": {"name": "probe_tool", "parameters": {"type": "object"}}}
    with_tools = processor.apply_chat_template(probe, tools=[tool], tokenize=False)
    return with_tools != processor.apply_chat_template(probe, tokenize=False)


def _inline_tools(messages: list[dict[str, Any]], tools: list[dict] | None) -> list[dict[str, Any]]:
    """Rewrite a conversation for a template without tool support (see module docstring)."""
    out: list[dict[str, Any]] = []
    if tools:
        system = tools_system_text(tools)
        if messages and messages[0]["role"] == "system":
            system = _text_of(messages[0]["content"]) + "\n\n" + system
            messages = messages[1:]
        out.append({"role": "system", "content": [{"type": "text", "text": system}]})
    for msg in messages:
        if msg["role"] != "tool":
            out.append(msg)
            continue
        parts = msg["content"] if isinstance(msg["content"], list) else [{"type": "text", "text": msg["content"]}]
        merge = bool(out) and out[-1].get("_tool_turn", False)
        wrapped = [{"type": "text", "text": ("\n" if merge else "") + "<tool_response>\n"}, *parts,
                   {"type": "text", "text": "\n</tool_response>"}]
        if merge:  # consecutive tool messages share one user turn, as in Qwen3-VL's template
            out[-1]["content"].extend(wrapped)
        else:
            out.append({"role": "user", "content": wrapped, "_tool_turn": True})
    return [{k: v for k, v in m.items() if k != "_tool_turn"} for m in out]


def prepare_messages(
    processor: ProcessorMixin, messages: list[dict[str, Any]], tools: list[dict] | None
) -> tuple[list[dict[str, Any]], list[dict] | None]:
    """Messages and tools as the processor's template should receive them (tools inlined when unsupported)."""
    if template_supports_tools(processor):
        return messages, tools
    return _inline_tools(messages, tools), None


def _render(processor: ProcessorMixin, messages, tools, add_generation_prompt: bool) -> str:
    return processor.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _assistant_char_spans(processor, messages, tools, text: str) -> list[tuple[int, int]]:
    """Character spans of `text` that each assistant message produced (content through <|im_end|>)."""
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = _render(processor, messages[:i], tools, add_generation_prompt=True)
        upto = _render(processor, messages[: i + 1], tools, add_generation_prompt=False)
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise ChatTemplateError(
                f"the chat template is not prefix-preserving at assistant message {i}: rendering the conversation "
                "changes how earlier turns look (e.g. reasoning stripped from history), so what would be trained "
                "on differs from what the model generates; use a template that renders history verbatim"
            )
        end = upto.rfind(END_OF_TURN, len(prompt))
        if end < 0:
            raise ChatTemplateError(f"assistant message {i} is not closed by {END_OF_TURN} in the chat template")
        spans.append((len(prompt), end + len(END_OF_TURN)))
    return spans


def _token_mask(offsets: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """1 on every token whose character range overlaps one of `spans` (zero-width tokens never do)."""
    mask = torch.zeros(offsets.shape[0], dtype=torch.long)
    starts, ends = offsets[:, 0], offsets[:, 1]
    for a, b in spans:
        mask |= ((starts < b) & (ends > a)).long()
    return mask


def render_conversation(
    processor: ProcessorMixin,
    messages: list[dict[str, Any]],
    images: Sequence[Image.Image],
    tools: list[dict] | None = None,
    max_length: int | None = None,
    untrained_turns: Collection[int] = (),
) -> RenderedSample:
    """Render HF chat `messages` (images given in order as ``{"type": "image"}`` parts) into a `RenderedSample`.

    With `max_length`, the tokens are truncated from the right; an image block (``<|vision_start|>``, its
    placeholders, ``<|vision_end|>``) that does not fit whole is dropped, so pixel values match the kept tokens.
    Assistant turns whose index (counting assistant messages from 0) is in `untrained_turns` stay in the context
    but out of `assistant_mask`: the model reads them and never learns to write them.
    """
    messages, tools = prepare_messages(processor, messages, tools)
    text = _render(processor, messages, tools, add_generation_prompt=False)
    spans = _assistant_char_spans(processor, messages, tools, text)
    enc = processor(
        text=[text],
        images=list(images) or None,
        return_tensors="pt",
        return_offsets_mapping=True,
        return_text_replacement_offsets=True,
    )
    replacements = enc["text_replacement_offsets"][0]
    locator = TokenLocator(enc["offset_mapping"][0], [r["span"][1] for r in replacements],
                           [0] + [r["new_span"][1] - r["span"][1] for r in replacements])
    input_ids = enc["input_ids"][0]
    mm_types = enc["mm_token_type_ids"][0]
    turn_masks = [locator.mask([span]) * (mm_types == 0).long() for span in spans]
    trained_masks = [m for i, m in enumerate(turn_masks) if i not in untrained_turns]
    assistant_mask = torch.stack(trained_masks).amax(dim=0) if trained_masks else torch.zeros_like(input_ids)
    sample = RenderedSample(
        input_ids=input_ids,
        attention_mask=enc["attention_mask"][0],
        mm_token_type_ids=mm_types,
        assistant_mask=assistant_mask,
        locator=locator,
        assistant_turns=[(int(m.nonzero()[0]), int(m.nonzero()[-1]) + 1) for m in turn_masks],
        turn_char_spans=spans,
        untrained_turns=frozenset(untrained_turns),
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        text=text,
    )
    if max_length is not None and len(sample) > max_length:
        sample = _truncate(processor, sample, max_length)
    return sample


def _truncate(processor: ProcessorMixin, sample: RenderedSample, max_length: int) -> RenderedSample:
    """Cut `sample` to at most `max_length` tokens; an image block (vision_start, pads, vision_end) that does
    not fit whole is dropped whole."""
    cut = max_length
    kept_images = 0
    if sample.image_grid_thw is not None:
        tok = processor.tokenizer
        vision_start = tok.convert_tokens_to_ids("<|vision_start|>")
        vision_end = tok.convert_tokens_to_ids("<|vision_end|>")
        is_visual = torch.cat([torch.zeros(1, dtype=torch.long), (sample.mm_token_type_ids != 0).long(),
                               torch.zeros(1, dtype=torch.long)])
        edges = is_visual[1:] - is_visual[:-1]
        ids = sample.input_ids.tolist()
        for start, end in zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()):
            block_start = start - 1 if start > 0 and ids[start - 1] == vision_start else start
            block_end = end + 1 if end < len(ids) and ids[end] == vision_end else end
            if block_end > cut:
                cut = min(cut, block_start)
                break
            kept_images += 1
    patches = int(sample.image_grid_thw[:kept_images].prod(dim=1).sum()) if kept_images else 0
    return RenderedSample(
        input_ids=sample.input_ids[:cut],
        attention_mask=sample.attention_mask[:cut],
        mm_token_type_ids=sample.mm_token_type_ids[:cut],
        assistant_mask=sample.assistant_mask[:cut],
        locator=sample.locator.cut(cut),
        assistant_turns=[(a, min(b, cut)) for a, b in sample.assistant_turns if a < cut],
        turn_char_spans=sample.turn_char_spans[:sum(1 for a, _ in sample.assistant_turns if a < cut)],
        untrained_turns=sample.untrained_turns,
        pixel_values=sample.pixel_values[:patches] if kept_images else None,
        image_grid_thw=sample.image_grid_thw[:kept_images] if kept_images else None,
        text=sample.text,
        truncated=True,
    )


def render_trajectory(
    processor: ProcessorMixin,
    traj: Trajectory,
    tools: list[dict] | None = None,
    max_length: int | None = None,
    system: str | None = None,
    untrained_turns: Collection[int] = (),
) -> RenderedSample:
    """Render a `Trajectory` (question, tool steps with observations, final answer) with `render_conversation`.

    `system` is an optional system prompt (e.g. the compact tool list of `pixelis.agent.prompt`); assistant turn
    ``i`` is step ``i`` of the trajectory, so `untrained_turns` takes step indices.
    """
    messages, images = to_messages(traj, system=system)
    return render_conversation(processor, messages, images, tools=tools, max_length=max_length,
                               untrained_turns=untrained_turns)


def build_generation_prompt(
    processor: ProcessorMixin,
    messages: list[dict[str, Any]],
    images: Sequence[Image.Image],
    tools: list[dict] | None = None,
) -> dict[str, torch.Tensor]:
    """Model inputs (batch of 1) for generating the next assistant turn of `messages`."""
    return build_generation_batch(processor, [(messages, images, tools)])


def build_generation_batch(
    processor: ProcessorMixin,
    prompts: Sequence[tuple[list[dict[str, Any]], Sequence[Image.Image], list[dict] | None]],
) -> dict[str, torch.Tensor]:
    """Left-padded model inputs for generating the next turn of several conversations at once.

    `prompts` holds (messages, images, tools) per conversation; images are passed in conversation order, which is
    how the processor matches them to the ``<|image_pad|>`` runs of the texts.
    """
    texts, all_images = [], []
    for messages, images, tools in prompts:
        messages, tools = prepare_messages(processor, messages, tools)
        texts.append(_render(processor, messages, tools, add_generation_prompt=True))
        all_images.extend(images)
    return dict(processor(text=texts, images=all_images or None, return_tensors="pt", padding=True,
                          padding_side="left"))


def pad_right(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    """Stack 1-D tensors into a (len(rows), longest) tensor, right-padded with `value`."""
    out = torch.full((len(rows), max(r.shape[0] for r in rows)), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


def model_inputs(batch: dict[str, Any], device: torch.device | str) -> dict[str, torch.Tensor]:
    """The forward() inputs of a collated batch (`MODEL_INPUT_KEYS` but `labels`) on `device`.

    A right-padding attention mask is dropped: under causal attention no real token attends to a later pad, so
    the outputs at real tokens are unchanged, and without a mask SDPA runs its fused causal kernel instead of
    materialising a (rows, heads, L, L) mask (3x faster forward at L = 2,500 on CPU, measured). Left padding
    (generation) keeps its mask.
    """
    inputs = {k: batch[k].to(device) for k in MODEL_INPUT_KEYS if k != "labels" and batch.get(k) is not None}
    mask = inputs.get("attention_mask")
    if mask is not None and bool((mask.cummin(dim=1).values == mask).all()):
        del inputs["attention_mask"]
    return inputs


def collate(samples: Sequence[RenderedSample], pad_token_id: int) -> dict[str, Any]:
    """Right-pad samples into a batch: model inputs (`MODEL_INPUT_KEYS`; `labels` are `input_ids` on assistant
    tokens, -100 elsewhere; `pixel_values` / `image_grid_thw` concatenated along dim 0 in sample order) plus
    `assistant_mask`."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    input_ids = pad_right([s.input_ids for s in samples], pad_token_id)
    assistant_mask = pad_right([s.assistant_mask for s in samples], 0)
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": pad_right([s.attention_mask for s in samples], 0),
        "mm_token_type_ids": pad_right([s.mm_token_type_ids for s in samples], 0),
        "labels": input_ids.masked_fill(assistant_mask == 0, -100),
        "assistant_mask": assistant_mask,
    }
    with_images = [s for s in samples if s.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images], dim=0)
        batch["image_grid_thw"] = torch.cat([s.image_grid_thw for s in with_images], dim=0)
    return batch
