"""Run configuration: one pydantic model per section, YAML files, dotted overrides, clear errors.

A config file is a YAML mapping of sections (``sft:``, ``model:`` ...); any key left out keeps its default.
``load_config(path, overrides)`` applies ``dotted.key=value`` overrides on top of the file, validates, and
raises one :class:`ConfigError` naming the file, YAML line, dotted key and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pixelis.core.curriculum import CurriculumConfig
from pixelis.core.errors import PixelisError

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "OnlineConfig",
    "PixelisConfig",
    "ReproducibilityConfig",
    "SftConfig",
    "ToolsConfig",
    "TracingConfig",
    "VoteConfig",
    "config_hash",
    "dump_config",
    "load_config",
]


class ConfigError(PixelisError):
    """A bad config file or override; the message says what is wrong and where.

    ``file``, ``line`` (1-based), ``key`` (dotted path) and ``problem`` (what was wrong, without the
    location) are set when known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        problem: str | None = None,
    ):
        super().__init__(message)
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ReproducibilityConfig(_Section):
    seed: int = Field(42, ge=0, lt=2**32, description="Global seed for python, numpy and torch.")
    deterministic: bool = Field(False, description="Use deterministic torch algorithms and pin the thread count.")
    strict: bool = Field(
        True, description="In deterministic mode, raise on non-deterministic ops (False: only warn)."
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads; pinned and recorded in deterministic mode. None keeps the current count.",
    )


class LoggingConfig(_Section):
    level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    format: Literal["text", "color", "json"] = Field("text", description="Console log format.")
    file: str = Field("pixelis.log", description="Log file name, written inside the run's --out directory.")

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper


class TracingConfig(_Section):
    exporter: Literal["none", "console", "jsonl", "otlp"] = Field(
        "none", description="Span exporter: none, console, jsonl (traces.jsonl in the run dir) or otlp (HTTP)."
    )
    otlp_endpoint: str = Field("http://localhost:4318/v1/traces", description="OTLP/HTTP traces endpoint.")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of traces sampled (parent-based).")
    service_name: str = Field("pixelis", description="OpenTelemetry service.name resource attribute.")


class LoraConfig(_Section):
    enabled: bool = Field(False, description="Train LoRA adapters instead of (or next to) full weights.")
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling alpha.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names (suffixes) that get adapters.",
    )
    rank_pattern: dict[str, int] = Field(
        default_factory=dict, description="Per-module rank overrides, module-name pattern -> rank."
    )


class ModelConfig(_Section):
    path: str | None = Field(None, description="Local HF checkpoint directory; None builds the tiny offline model.")
    size: Literal["xs", "s", "m"] = Field("s", description="Tiny offline model size when path is None.")
    max_pixels: int = Field(256 * 256, ge=64 * 64, description="Largest image area (px) the processor of the tiny "
                            "model built when path is None resizes to: 256x256 gives 64 visual tokens (16 px "
                            "patches merged 2x2).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weight dtype.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device; auto picks cuda when available.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")


class DataConfig(_Section):
    path: str | None = Field(None, description="Dataset directory; None generates the synthetic suite.")
    n: int = Field(60, ge=1, description="Number of synthetic tasks to generate.")
    families: list[str] = Field(
        default_factory=lambda: ["small_text", "count", "attribute", "track", "temporal"],
        description="Synthetic task families to include.",
    )
    difficulties: list[str] = Field(
        default_factory=lambda: ["simple", "medium", "hard"], description="Difficulty levels to include."
    )
    trap_rate: float = Field(0.1, ge=0.0, le=1.0, description="Fraction of trajectories with a recovered mistake.")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction held out for validation.")
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction held out for test.")
    workers: int = Field(0, ge=0, description="Processes generating the synthetic suite; 0 = one per CPU core. "
                         "The files are the same for any count.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Largest image (width x height) a data set may hold; "
                                  "checked from the file header before decoding.")


class ToolsConfig(_Section):
    max_output_side: int = Field(1024, ge=1, description="Longest side (px) of an image a tool returns.")
    max_frames_per_call: int = Field(16, ge=1, description="Most video frames one tool call may read.")
    max_ocr_pixels: int = Field(4_000_000, ge=1, description="Largest region (px) OCR runs on.")
    max_zoom: float = Field(16.0, ge=1.0, description="Largest zoom factor.")
    ocr_backend: Literal["rapidocr", "tesseract"] = Field("rapidocr", description="OCR engine.")
    segment_backend: Literal["classical", "sam"] = Field(
        "classical", description="Segmentation: classical (OpenCV) or sam (needs sam_checkpoint)."
    )
    sam_checkpoint: str | None = Field(None, description="Local SAM checkpoint path for segment_backend=sam.")


class AgentConfig(_Section):
    max_tool_calls: int = Field(6, ge=0, description="Most tool calls per trajectory.")
    max_turns: int = Field(8, ge=1, description="Most assistant turns per trajectory.")
    max_new_tokens: int = Field(128, ge=1, description="Tokens generated per turn.")
    max_images: int = Field(8, ge=1, description="Most images kept in the context.")
    max_context_pixels: int = Field(4_000_000, ge=1, description="Pixel budget over all images in the context.")
    wall_time_s: float = Field(120.0, gt=0.0, description="Wall-clock budget per trajectory (seconds).")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    n_samples: int = Field(1, ge=1, description="Trajectories sampled per query (each is scored on its own).")
    batch_size: int = Field(8, ge=1, description="Trajectories rolled out together: one batched generation per turn.")
    tool_workers: int | None = Field(
        None, ge=1, description="Threads running one turn's tool calls side by side; null: one per CPU core, 1: one "
        "call at a time. Trajectories do not depend on it.")
    tool_prompt: Literal["full", "compact"] = Field(
        "compact", description="Tools shown as a compact list (~100 tokens; the default, for the tiny CPU model "
        "that model.path: null builds) or as full JSON schemas (~2,000 tokens; as Qwen3-VL was trained: use it "
        "with a real Qwen3-VL). Training and evaluation must agree.")


class SftConfig(_Section):
    learning_rate: float = Field(5e-4, gt=0.0, description="Peak learning rate.")
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Per-device micro-batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    action_token_weight: float = Field(2.0, ge=0.0, description="Loss weight on tool-call name/argument tokens.")
    aux_head: bool = Field(False, description="Train the auxiliary head regressing pixel arguments.")
    aux_weight: float = Field(0.1, ge=0.0, description="Weight of the auxiliary regression loss.")
    eval_rollouts: int = Field(8, ge=1, description="Validation samples rolled out by the agent at each evaluation.")
    eval_loss_samples: int = Field(16, ge=1, description="Validation samples whose loss is measured at each evaluation.")
    max_length: int | None = Field(None, ge=64, description="Truncate rendered training samples to this many tokens.")
    save_interval: int = Field(50, ge=1, description="Steps between checkpoints (evaluations follow curriculum.evaluation_interval).")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"], description="Metric sinks (e.g. tensorboard); [] for none."
    )


GroundingTask = Literal["box", "point", "color", "shape", "label"]
"""The grounding pre-training tasks (see `pixelis.data.grounding`)."""


class PretrainConfig(_Section):
    max_steps: int = Field(3000, ge=1, description="Optimizer steps of grounding pre-training.")
    batch_size: int = Field(16, ge=1, description="Generated samples per step (per process).")
    learning_rate: float = Field(1e-3, gt=0.0, description="Peak learning rate (all weights are trained).")
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    task_weights: dict[GroundingTask, float] = Field(
        default_factory=lambda: {"box": 1.0, "point": 1.0, "color": 0.5, "shape": 0.5, "label": 0.25},
        description="Sampling weights of the grounding tasks (box, point, color, shape, label).")
    aux_weight: float = Field(1.0, ge=0.0, description="Weight of the aux box head's loss on the calls (0: no head).")
    region_weight: float = Field(1.0, ge=0.0, description="Weight of the region loss: each visual token predicts "
                                 "the share of it the scene's objects cover (0: off).")
    pointer_weight: float = Field(1.0, ge=0.0, description="Weight of the pointer loss: a query from the token "
                                  "before the response picks the asked-about object's visual tokens (0: off).")
    single_object_steps: int = Field(0, ge=0, description="First steps whose scenes hold one object: localising "
                                     "before searching (held-out scenes always hold 1-6).")
    render_workers: int = Field(0, ge=0, description="Processes rendering the next steps' samples while the current "
                             "step trains (0: render in the training process; the weights are the same either way).")
    heldout_samples: int = Field(400, ge=1, description="Held-out samples (unseen images) scored at each evaluation.")
    eval_interval: int = Field(1000, ge=1, description="Steps between held-out evaluations (and the last step).")
    save_interval: int = Field(1000, ge=1, description="Steps between checkpoints (and the last step).")

    @field_validator("task_weights")
    @classmethod
    def _usable_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"task weights must be >= 0 and not all zero, got {weights}")
        return weights


RewardName = Literal["task", "format", "curiosity", "coherence", "efficiency", "rapr_bonus"]
"""The reward terms of RFT (see `pixelis.train.rewards`)."""


class CollapseConfig(_Section):
    rapr_floor: float = Field(0.05, ge=0.0, le=1.0, description="Alert when smoothed RaPR falls below this.")
    max_drop: float = Field(0.5, gt=0.0, le=1.0, description="Alert when smoothed RaPR falls by more than this "
                            "fraction of its first smoothed value.")
    window: int = Field(3, ge=1, description="Steps averaged for smoothed RaPR.")
    patience: int = Field(3, ge=1, description="Consecutive low steps before the alert.")
    response: Literal["warn", "boost_curiosity", "stop"] = Field(
        "warn", description="What an alert does: log it, multiply the curiosity weight, or checkpoint and stop.")
    boost_factor: float = Field(2.0, gt=1.0, description="boost_curiosity: factor on the curiosity weight.")


class RftConfig(_Section):
    learning_rate: float = Field(1e-5, gt=0.0, description="Peak learning rate.")
    max_steps: int = Field(50, ge=1, description="RL steps (rollouts, then num_iterations updates).")
    prompts_per_step: int = Field(4, ge=1, description="Training prompts rolled out per step (per process).")
    num_generations: int = Field(4, ge=2, description="Rollouts per prompt (the GRPO group).")
    num_iterations: int = Field(1, ge=1, description="Optimizer updates per batch of rollouts.")
    temperature: float = Field(1.0, gt=0.0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Rollout nucleus sampling threshold.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Advantage scaling (TRL's).")
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = Field("dapo", description="Token aggregation of the loss.")
    epsilon: float = Field(0.2, gt=0.0, description="Lower clip range of the importance ratio.")
    epsilon_high: float | None = Field(None, gt=0.0, description="Upper clip range (null: epsilon).")
    beta: float = Field(0.04, ge=0.0, description="Weight of the k3 KL to the frozen reference (the start policy).")
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient-norm clipping.")
    rewards: dict[RewardName, float] = Field(
        default_factory=lambda: {"task": 1.0, "format": 0.2},
        description="Weight of each reward term (task, format, curiosity, coherence, efficiency, rapr_bonus).")
    reward_params: dict[RewardName, dict[str, float]] = Field(
        default_factory=dict, description="Constructor arguments per reward term, e.g. {efficiency: {lam: 0.1}}.")
    curriculum: bool = Field(False, description="Let the curriculum section drive RFT: each stage's mixture picks "
                             "the prompts' difficulty and its `rewards` the reward weights, fed with the rollouts' "
                             "accuracy, RaPR and call validity every curriculum.evaluation_interval steps.")
    no_tool_warning_after: int = Field(32, ge=1, description="Warn when this many first rollouts made no tool call.")
    save_interval: int = Field(10, ge=1, description="Steps between checkpoints (and the last step).")
    collapse: CollapseConfig = Field(default_factory=CollapseConfig, description="Tool-use collapse monitor.")


class VoteConfig(_Section):
    """How trajectories are weighted when the online engine votes (see `pixelis.online.voting`)."""

    validity: float = Field(1.0, ge=0.0, description="Weight lost by a trajectory with an invalid call: its weight "
                            "is multiplied by (1 - validity) when any call failed (0: validity ignored).")
    brevity: float = Field(0.25, ge=0.0, description="Each tool call beyond the first divides the weight by "
                           "(1 + brevity) (0: length ignored).")
    fidelity: float = Field(1.0, ge=0.0, description="Bonus factor (1 + fidelity) for an answer supported by what "
                            "the tools returned (0: ignored).")
    neighbours: float = Field(0.5, ge=0.0, description="Weight of retrieved neighbours' stored answers, each "
                              "counted with its similarity (0: neighbours ignored).")
    learn_from: Literal["trajectory", "majority"] = Field(
        "trajectory", description="Which vote decides what the policy learns: the weighted trajectory vote or "
        "plain answer majority (TTRL). Both are computed and logged on every query.")


class OnlineConfig(_Section):
    """Online test-time learning: the engine, the experience buffer and the update worker."""

    n_samples: int = Field(4, ge=1, description="Trajectories sampled per query, then voted over.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the online rollouts.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold of the online rollouts.")
    embedder: Literal["policy", "pixels"] = Field(
        "policy", description="Query embeddings: the policy's pooled hidden states of question + image, or a "
        "model-free embedding of downsampled pixels and hashed question words.")
    index: Literal["flat", "hnsw"] = Field("flat", description="faiss index over the buffer's embeddings "
                                           "(exact inner product, or HNSW for large buffers).")
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree (index: hnsw).")
    k: int = Field(4, ge=1, description="Neighbours retrieved per query.")
    min_similarity: float = Field(0.5, ge=-1.0, le=1.0, description="Neighbours below this cosine similarity "
                                  "are ignored.")
    min_buffer: int = Field(8, ge=0, description="Below this many stored experiences retrieval is skipped "
                            "(cold start).")
    max_buffer: int = Field(10_000, ge=1, description="Most experiences kept; the oldest (or least used) go first.")
    eviction: Literal["age", "use"] = Field("age", description="Which experiences retention removes first.")
    confidence_gate: float = Field(0.6, ge=0.0, le=1.0, description="Least vote confidence that stores the winner "
                                   "and enqueues an update.")
    max_winner_calls: int = Field(4, ge=0, description="Longest winning trajectory (tool calls) learned from.")
    learning_rate: float = Field(1e-2, gt=0.0, description="Plain-SGD learning rate of an update, scaled by the "
                                 "vote confidence.")
    update_steps: int = Field(1, ge=1, description="Optimizer steps per update task.")
    kl_weight: float = Field(0.1, ge=0.0, description="Weight of the token KL to the EMA policy in the update loss.")
    ema_decay: float = Field(0.95, ge=0.0, lt=1.0, description="EMA of the policy: ema = decay*ema + "
                             "(1-decay)*policy after each accepted update.")
    kl_max: float = Field(0.1, gt=0.0, description="Corridor: an update whose probe-set token KL to the EMA "
                          "exceeds this is rejected and the weights restored.")
    probe_size: int = Field(4, ge=0, description="Recent experiences added to the update's exemplar to form the "
                            "corridor's probe set.")
    report_window: int = Field(8, ge=1, description="Queries per window in the replay report's accuracy curve.")
    replay_limit: int | None = Field(None, ge=1, description="Queries a replay takes from its stream (None: "
                                     "all); `pixelis online replay --limit` sets it, the demo's replay reads it.")
    vote: VoteConfig = Field(default_factory=VoteConfig, description="Trajectory voting weights.")


class ServeConfig(_Section):
    """`pixelis serve`: the OpenAI-compatible agent server, its batching and its request limits."""

    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback needs an API key.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port, printed at start-up).")
    model_name: str | None = Field(None, description="Model id in /v1/models and responses (None: "
                                   "pixelis-<model directory name>).")
    max_wait_ms: float = Field(10.0, ge=0.0, description="How long an idle batcher waits for more requests before "
                               "it starts a batch (up to agent.batch_size rollouts in flight).")
    max_queue: int = Field(64, ge=1, description="Requests accepted and not yet answered; beyond it: 429.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with a 429.")
    request_timeout_s: float = Field(300.0, gt=0.0, description="A request not answered within this gets 504 "
                                     "(its rollouts are cancelled).")
    max_body_bytes: int = Field(20_000_000, ge=1, description="Largest request body; beyond it: 413.")
    max_images: int = Field(4, ge=1, description="Most images in one request.")
    max_image_pixels: int = Field(4_000_000, ge=1, description="Largest image (width x height) in a request.")
    max_n: int = Field(8, ge=1, description="Largest `n` (choices) of a request.")
    drain_timeout_s: float = Field(120.0, ge=0.0, description="On SIGTERM with --online: how long to wait for the "
                                   "update worker to finish the queued updates before stopping it.")


class EvalConfig(_Section):
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N items; None for all.")
    iou_threshold: float = Field(0.5, ge=0.0, le=1.0, description="IoU counted as a correct box.")
    numeric_tolerance: float = Field(0.0, ge=0.0, description="Absolute tolerance for numeric answers.")


class PixelisConfig(_Section):
    """The whole run configuration; every section and field has a default."""

    reproducibility: ReproducibilityConfig = Field(
        default_factory=ReproducibilityConfig, description="Seeds and determinism."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log level, format and file.")
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="OpenTelemetry export.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Which model and how to load it.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset or synthetic suite.")
    tools: ToolsConfig = Field(default_factory=ToolsConfig, description="Limits and backends of the pixel tools.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Multi-turn agent loop limits.")
    pretrain: PretrainConfig = Field(
        default_factory=PretrainConfig, description="Grounding pre-training (`pixelis model pretrain`)."
    )
    sft: SftConfig = Field(default_factory=SftConfig, description="Supervised fine-tuning.")
    rft: RftConfig = Field(default_factory=RftConfig, description="Reinforcement fine-tuning (GRPO over rollouts).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    online: OnlineConfig = Field(default_factory=OnlineConfig, description="Online test-time learning.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The OpenAI-compatible agent server.")
    curriculum: CurriculumConfig = Field(
        default_factory=CurriculumConfig, description="Curriculum manager (simple -> medium -> hard)."
    )


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PixelisConfig:
    """Load ``path`` (None: all defaults), apply ``dotted.key=value`` overrides, validate.

    Override values are parsed as YAML scalars or flow lists (``sft.learning_rate=1e-5``,
    ``data.families=[count,track]``). Raises :class:`ConfigError` on any problem.
    """
    file = str(path) if path is not None else None
    raw: dict[str, Any] = {}
    root: yaml.Node | None = None
    if path is not None:
        raw, root = _read_yaml(Path(path))
        _null_sections_to_empty(raw, PixelisConfig)

    origins: list[tuple[tuple[str, ...], str]] = []  # (key path, override text), in order applied
    for text in overrides or []:
        keys, value = _parse_override(text)
        _apply_override(raw, keys, value, text)
        origins.append((keys, text))

    try:
        return PixelisConfig.model_validate(raw)
    except ValidationError as exc:
        raise _to_config_error(exc, raw, root, file, origins) from None


def config_hash(cfg: PixelisConfig) -> str:
    """sha256 (hex) of the config as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dump_config(cfg: PixelisConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML that ``load_config`` reads back to an equal config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Resolved Pixelis config (config_hash {config_hash(cfg)}).\n"
        f"# Re-run with: --config {path.name}\n"
    )
    body = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
    path.write_text(header + body, encoding="utf-8")


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise ConfigError(f"config file {path}: {what}", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError(f"config file {path}: {problem}", file=str(path)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: malformed YAML: {problem}", file=str(path), line=mark.line + 1 if mark else None
        ) from None
    if data is None:  # empty file or only comments: all defaults
        return {}, None
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError(
            f"{path}:{line}: top level must be a mapping of sections (e.g. 'sft:'), got {_kind(data)}",
            file=str(path),
            line=line,
        )
    _reject_duplicate_keys(root, path)
    return data, root


def _null_sections_to_empty(raw: dict[str, Any], model: type[BaseModel]) -> None:
    # A section whose keys are all commented out (``sft:`` alone) reads as null; it means "all defaults".
    for name, value in raw.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        if value is None:
            raw[name] = {}
        elif isinstance(value, dict):
            _null_sections_to_empty(value, section)


def _reject_duplicate_keys(node: yaml.Node | None, path: Path, prefix: str = "") -> None:
    # PyYAML silently keeps the last of two equal keys; a config would then lose a setting without a word.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: {dotted}: duplicate key", file=str(path), line=line, key=dotted)
            seen.add(key)
            _reject_duplicate_keys(value_node, path, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, path, f"{prefix}[{i}]")


def _parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. sft.learning_rate=1e-5")
    keys = tuple(key.split("."))
    if any(not part for part in keys):
        raise ConfigError(f"override {text!r}: empty part in key {key!r}", key=key)
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"override {text!r}: value is not valid YAML: {problem}", key=key) from None
    return keys, value


def _apply_override(raw: dict[str, Any], keys: tuple[str, ...], value: Any, text: str) -> None:
    node = raw
    for depth, part in enumerate(keys[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(keys[: depth + 1])
            raise ConfigError(
                f"override {text!r}: {section!r} is a value ({child!r}), not a section", key=".".join(keys)
            )
        node = child
    node[keys[-1]] = value


# ---------------------------------------------------------------------------------------------- errors

_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "a boolean (true/false)",
    "bool_type": "a boolean (true/false)",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
}


def _to_config_error(
    exc: ValidationError,
    raw: dict[str, Any],
    root: yaml.Node | None,
    file: str | None,
    origins: list[tuple[tuple[str, ...], str]],
) -> ConfigError:
    # Report the problem that comes first in the file (pydantic orders errors by schema field).
    found = []
    for err in exc.errors(include_url=False):
        keys = _data_path(raw, tuple(err["loc"]))
        line = _line_of(root, keys, key_itself=err["type"] == "extra_forbidden")
        found.append((line, keys, err))
    line, keys, err = min(found, key=lambda item: (item[0] is None, item[0] or 0))
    dotted = _dotted(keys)
    problem = _describe(err, tuple(err["loc"]))
    more = f" (and {len(found) - 1} more problem{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""

    override = next(
        (text for k, text in reversed(origins) if keys[: len(k)] == k or k[: len(keys)] == keys), None
    )
    if override is not None:
        return ConfigError(
            f"override {override!r}: {dotted}: {problem}{more}", file=file, key=dotted, problem=problem
        )
    where = file or "<defaults>"
    if line is not None:
        where = f"{where}:{line}"
    return ConfigError(
        f"{where}: {dotted or '<top level>'}: {problem}{more}", file=file, line=line, key=dotted, problem=problem
    )


def _describe(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        parent = _model_at(loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key {name!r}{hint}"
    if kind == "literal_error":
        return f"expected one of {err['ctx']['expected']}, got {got!r}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(got)}"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{msg[:1].lower()}{msg[1:]}, got {_show(got)}"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _kind(value)
    return repr(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class reached by following field names ``loc`` from PixelisConfig."""
    model: type[BaseModel] = PixelisConfig
    for part in loc:
        if isinstance(part, int):  # list index: stay on the element model
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _data_path(raw: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Longest prefix of a pydantic error location that exists in the raw data (drops union tags)."""
    node = raw
    keys: list[Any] = []
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        keys.append(part)
    return tuple(keys) if keys else loc


def _dotted(keys: tuple[Any, ...]) -> str:
    out = ""
    for part in keys:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: yaml.Node | None, keys: tuple[Any, ...], key_itself: bool) -> int | None:
    """1-based YAML line of the value at ``keys`` (or of the key itself), deepest node found."""
    node = root
    line = None
    for depth, part in enumerate(keys):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            last = depth == len(keys) - 1
            chosen = match[0] if (last and key_itself) or isinstance(match[1], yaml.MappingNode) else match[1]
            line = chosen.start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line

