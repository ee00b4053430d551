"""The OpenAI chat-completions wire format: request parsing into a `ChatRequest`, errors, responses, chunks.

A request is checked completely before it reaches the batcher: the JSON shape (pydantic), the roles, the images
(data URIs only: the server never fetches the network; decodable; at most `serve.max_images`, each at most
`serve.max_image_pixels`), `n` and the sampling values. Every problem is one `ApiError` carrying the OpenAI
error JSON (`{"error": {"message", "type", "param", "code"}}`) and its HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pixelis.agent import SamplingParams
from pixelis.core.config import ServeConfig
from pixelis.core.trajectory import Trajectory, trajectory_to_dict


class ApiError(Exception):
    """One request problem, as OpenAI reports it: HTTP `status`, message, type, the offending `param`, a code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class _Part(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: _ImageUrl | None = None


class _Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None


class _Extension(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool_images: bool = Field(False, description="Return the tools' output images as data URIs.")


class _Body(BaseModel):
    """The fields of an OpenAI chat-completions request the server reads (others are ignored, as OpenAI's are)."""

    model: str
    messages: list[_Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    pixelis: _Extension = Field(default_factory=_Extension)


@dataclass
class ChatRequest:
    """A checked request: the question and images the agent gets, and how to sample its `n` rollouts.

    `sampling` None means the server's default (`agent.do_sample`, `agent.temperature`, `agent.top_p`);
    temperature 0 means greedy. `max_tokens` bounds every assistant turn (`agent.max_new_tokens` is the ceiling).
    """

    model: str
    question: str
    images: list[Image.Image]
    n: int = 1
    sampling: SamplingParams | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stream: bool = False
    tool_images: bool = False
    size_bytes: int = field(default=0, repr=False)


def _param(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the request field OpenAI names: messages[0].content[1].image_url."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "list[_Part]", "_Part"):  # union branch names are not fields
            out += f".{part}" if out else str(part)
    return out


def decode_image(url: str, index: int, limits: ServeConfig) -> Image.Image:
    """The RGB image of a `data:image/...;base64,` URI; remote URLs, bad base64, undecodable or oversize: ApiError."""
    param = f"image {index}"
    if not url.startswith("data:"):
        raise ApiError(400, f"{param}: only data URIs (data:image/png;base64,...) are accepted; the server does not "
                            "fetch remote URLs", "image_url.url", "remote_image_refused")
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ApiError(400, f"{param}: expected data:image/<format>;base64,<data>, got {header[:40]!r}",
                       "image_url.url", "invalid_image")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param}: the data URI is not valid base64", "image_url.url", "invalid_image") from None
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
    except Exception:  # Pillow raises many types for foreign bytes
        raise ApiError(400, f"{param}: the bytes are not an image Pillow can decode", "image_url.url",
                       "invalid_image") from None
    if width * height > limits.max_image_pixels:
        raise ApiError(400, f"{param} is {width}x{height} = {width * height:,} pixels, over serve.max_image_pixels "
                            f"= {limits.max_image_pixels:,}", "image_url.url", "image_too_large")
    try:
        return image.convert("RGB")
    except Exception:
        raise ApiError(400, f"{param}: the image data is truncated or corrupt", "image_url.url",
                       "invalid_image") from None


def parse_request(body: Any, limits: ServeConfig, model_name: str, agent_max_tokens: int, online: bool
                  ) -> ChatRequest:
    """Check a decoded JSON body against the API and the server's limits; one `ApiError` names the first problem."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        req = _Body.model_validate(body)
    except ValidationError as exc:
        first = max(exc.errors(), key=lambda e: len(e["loc"]))  # in a union, the branch that got furthest
        param = _param(first["loc"])
        raise ApiError(400, f"{param or 'body'}: {first['msg']}", param or None) from None
    if req.model != model_name:
        raise ApiError(404, f"the model {req.model!r} does not exist; this server serves {model_name!r}", "model",
                       "model_not_found")
    if req.n > limits.max_n:
        raise ApiError(400, f"n = {req.n} is over serve.max_n = {limits.max_n}", "n")
    if online and req.n > 1:
        raise ApiError(400, "n > 1 is not available with --online: the engine votes over online.n_samples "
                            "rollouts and returns one answer", "n")
    texts, urls = [], []
    for i, message in enumerate(req.messages):
        if message.role in ("assistant", "tool"):
            raise ApiError(400, f"messages[{i}]: role {message.role!r} is not accepted: the agent answers one "
                                "question (send the user message(s) only)", f"messages[{i}].role")
        if message.role != "user":
            continue  # system/developer text: the agent's own system prompt carries the tools
        parts = [_Part(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        for j, part in enumerate(parts or []):
            if part.type == "text" and part.text:
                texts.append(part.text)
            elif part.type == "image_url":
                if part.image_url is None:
                    raise ApiError(400, f"messages[{i}].content[{j}]: an image_url part needs image_url.url",
                                   f"messages[{i}].content[{j}].image_url")
                urls.append(part.image_url.url)
    question = "\n".join(texts).strip()
    if not question:
        raise ApiError(400, "the user message has no text: ask a question about the image", "messages")
    if not urls:
        raise ApiError(400, "the request has no image: add an image_url part with a data URI", "messages",
                       "no_image")
    if len(urls) > limits.max_images:
        raise ApiError(400, f"{len(urls)} images, over serve.max_images = {limits.max_images}", "messages",
                       "too_many_images")
    images = [decode_image(url, i, limits) for i, url in enumerate(urls)]
    sampling = None
    if req.temperature is not None or req.top_p is not None:
        temperature = 1.0 if req.temperature is None else req.temperature
        sampling = (SamplingParams(do_sample=False) if temperature == 0.0 else
                    SamplingParams(do_sample=True, temperature=temperature, top_p=req.top_p or 1.0))
    max_tokens = req.max_completion_tokens or req.max_tokens
    return ChatRequest(model=req.model, question=question, images=images, n=req.n, sampling=sampling,
                       max_tokens=None if max_tokens is None else min(max_tokens, agent_max_tokens), seed=req.seed,
                       stream=req.stream, tool_images=req.pixelis.tool_images)


def image_data_uri(image: Image.Image) -> str:
    """A PNG data URI of `image` (what a client sends and what tool images come back as)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def trajectory_view(traj: Trajectory, tool_images: bool) -> dict[str, Any]:
    """The trajectory as the `pixelis` field shows it: steps with calls, observation text and data, and tool
    images as data URIs (with `tool_images`) or as their size; the request's own images are left out."""
    omit = lambda im: f"omitted {im.width}x{im.height} image (request pixelis.tool_images for the data)"  # noqa: E731
    view = trajectory_to_dict(traj, save_image=image_data_uri if tool_images else omit)
    for key in ("images", "video", "target"):
        view.pop(key)
    view["tool_calls"] = sum(step.call is not None for step in traj.steps)
    return view


def finish_reason(traj: Trajectory) -> str:
    """`stop` when the agent answered, else `length` (a turn, call, token, image or time limit ended it)."""
    return "stop" if traj.metadata.get("termination") == "answer" else "length"


def usage(trajectories: list[Trajectory]) -> dict[str, int]:
    """Tokens the model read (every turn's prompt) and wrote (every turn's sampled tokens), over all rollouts."""
    prompt = sum(len(turn.generation.prompt_ids) for t in trajectories for turn in t.turns)
    completion = sum(turn.generation.num_tokens for t in trajectories for turn in t.turns)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def step_view(traj: Trajectory, index: int, tool_images: bool) -> dict[str, Any]:
    """One step of a trajectory in flight, as a streamed chunk's `pixelis.step` shows it."""
    return trajectory_view(Trajectory(id=traj.id, question=traj.question, steps=[traj.steps[index]]),
                           tool_images)["steps"][0]
