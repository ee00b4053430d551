"""Reproducibility: seeds, deterministic mode, RNG state, bitwise comparison, system info, run manifests.

A run is reproducible when the same seed, config, code and thread count give bitwise-identical artifacts.
``write_run_manifest`` records all of these in ``<out>/run.json``; ``record_artifact`` adds artifact hashes
that ``pixelis repro verify`` compares across repeated runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pixelis
from pixelis.core.config import PixelisConfig, config_hash

__all__ = [
    "DeterminismReport",
    "RunManifest",
    "capture_rng_state",
    "derive_seed",
    "enable_deterministic_mode",
    "file_sha256",
    "get_determinism_settings",
    "get_reproducible_dataloader_kwargs",
    "get_system_info",
    "hash_tensors",
    "record_artifact",
    "restore_rng_state",
    "seed_worker",
    "set_global_seed",
    "verify_determinism",
    "write_run_manifest",
]

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
MANIFEST_NAME = "run.json"

# Packages whose versions change numerics or behaviour; name in the report -> candidate distributions.
_KEY_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "trl": ("trl",),
    "peft": ("peft",),
    "accelerate": ("accelerate",),
    "datasets": ("datasets",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "rapidocr": ("rapidocr-onnxruntime", "rapidocr"),
    "opentelemetry-sdk": ("opentelemetry-sdk",),
    "pydantic": ("pydantic",),
}

_pinned_threads: int | None = None


# ---------------------------------------------------------------------------------------------- seeds


def set_global_seed(seed: int) -> int:
    """Seed python, numpy and torch (CPU and all CUDA devices); set PYTHONHASHSEED for child processes."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def derive_seed(base_seed: int, *keys: int | str) -> int:
    """A stable seed in [0, 2**31) for (base_seed, *keys), e.g. ``derive_seed(42, "rank", 3)``.

    Uses sha256, so the result is the same in every process and Python version (unlike ``hash()``).
    """
    for key in (base_seed, *keys):
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"derive_seed keys must be int or str, got {key!r} ({type(key).__name__})")
    text = "\x1f".join(f"{type(k).__name__}:{k}" for k in (base_seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") & 0x7FFFFFFF


def enable_deterministic_mode(strict: bool = True, num_threads: int | None = None) -> dict[str, Any]:
    """Make torch deterministic and pin its thread count (results depend on it); return the settings.

    ``strict=False`` only warns on ops without a deterministic implementation. ``num_threads=None`` pins
    the current count. Set this before CUDA is first used: cuBLAS reads CUBLAS_WORKSPACE_CONFIG at init.
    """
    global _pinned_threads
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    threads = num_threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    _pinned_threads = threads
    return get_determinism_settings()


def get_determinism_settings() -> dict[str, Any]:
    """The live determinism-relevant settings of this process (as recorded in run manifests)."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_threads": torch.get_num_threads(),
        "threads_pinned": _pinned_threads is not None and _pinned_threads == torch.get_num_threads(),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def get_reproducible_dataloader_kwargs(seed: int, num_workers: int = 0) -> dict[str, Any]:
    """Keyword arguments for ``torch.utils.data.DataLoader`` giving the same order and worker RNG per seed."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return {
        "generator": generator,
        "worker_init_fn": seed_worker,
        "num_workers": num_workers,
        "persistent_workers": False,
    }


# ---------------------------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA (all devices) RNG states.

    Only plain types and tensors, so ``torch.load(..., weights_only=True)`` reads a saved state back.
    """
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a state from :func:`capture_rng_state`; subsequent draws repeat those after the capture."""
    missing = [k for k in ("python", "numpy", "torch", "cuda") if k not in state]
    if missing:
        raise ValueError(f"RNG state is missing {missing}; expected the dict from capture_rng_state()")
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np.asarray(np_state["key"], dtype=np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = list(state["cuda"])
    if cuda_states:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < len(cuda_states):
            raise ValueError(
                f"RNG state holds {len(cuda_states)} CUDA device state(s) but {available} device(s) are available"
            )
        torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------- comparison


@dataclasses.dataclass
class DeterminismReport:
    """Outcome of :func:`verify_determinism`: ``first_mismatch`` is the key path of the first difference."""

    ok: bool
    first_mismatch: str | None
    runs: int
    detail: str | None = None


def verify_determinism(
    fn: Callable[..., Any], *args: Any, runs: int = 2, seed: int = 0, **kwargs: Any
) -> DeterminismReport:
    """Call ``fn(*args, **kwargs)`` ``runs`` times, re-seeding with ``seed`` first, and compare results bitwise.

    Results may nest dicts, lists/tuples, tensors, numpy arrays, modules (their state_dict), dataclasses
    and scalars. The first difference is reported by key path, e.g. ``layer.weight`` or ``a.b[2]``.
    """
    if runs < 2:
        raise ValueError(f"runs must be >= 2 to compare anything, got {runs}")
    set_global_seed(seed)
    reference = fn(*args, **kwargs)
    for run in range(1, runs):
        set_global_seed(seed)
        result = fn(*args, **kwargs)
        diff = _first_difference(reference, result, "")
        if diff is not None:
            path, why = diff
            path = path or "<result>"
            return DeterminismReport(False, path, runs, f"run {run} differs from run 0 at {path}: {why}")
    return DeterminismReport(True, None, runs)


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, str] | None:
    if isinstance(a, torch.nn.Module):
        a = a.state_dict()
    if isinstance(b, torch.nn.Module):
        b = b.state_dict()
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        a = {f.name: getattr(a, f.name) for f in dataclasses.fields(a)}
    if dataclasses.is_dataclass(b) and not isinstance(b, type):
        b = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    if type(a) is not type(b) and not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return path, f"type {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return path, f"tensor {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if not torch.equal(_tensor_bytes(a), _tensor_bytes(b)):
            return path, "tensor values differ"
        return None
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return path, f"array {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype == object:
            return _first_difference(a.tolist(), b.tolist(), path)
        return None if a.tobytes() == b.tobytes() else (path, "array values differ")
    if isinstance(a, Mapping):
        if set(a) != set(b):
            key = sorted(map(str, set(a) ^ set(b)))[0]
            return _join(path, key), "key present in only one run"
        for key in a:
            diff = _first_difference(a[key], b[key], _join(path, key))
            if diff is not None:
                return diff
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return path, f"length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _first_difference(x, y, f"{path}[{i}]")
            if diff is not None:
                return diff
        return None
    if isinstance(a, float):  # bitwise: distinguishes -0.0 from 0.0, equal NaNs compare equal
        return None if struct.pack("<d", a) == struct.pack("<d", b) else (path, f"{a!r} vs {b!r}")
    if isinstance(a, (int, str, bytes, bool, type(None))):
        return None if a == b else (path, f"{a!r} vs {b!r}")
    raise TypeError(f"verify_determinism cannot compare {type(a).__name__} at {path or '<result>'}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _tensor_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def hash_tensors(mapping: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """sha256 over sorted names, dtypes, shapes and raw bytes, e.g. of a ``state_dict()``."""
    digest = hashlib.sha256()
    for name in sorted(mapping):
        value = mapping[name]
        if isinstance(value, torch.Tensor):
            raw = _tensor_bytes(value).numpy().tobytes()
            dtype, shape = str(value.dtype), tuple(value.shape)
        elif isinstance(value, np.ndarray):
            raw = np.ascontiguousarray(value).tobytes()
            dtype, shape = str(value.dtype), value.shape
        else:
            raise TypeError(f"hash_tensors: {name!r} is a {type(value).__name__}, expected a tensor or array")
        digest.update(f"{name}\x00{dtype}\x00{shape}\x00".encode())
        digest.update(raw)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- system info


def get_system_info() -> dict[str, Any]:
    """Python, OS, CPU, torch/CUDA/cuDNN, GPUs, key package versions, git state, threads, determinism."""
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "os": platform.system(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "packages": {name: _dist_version(dists) for name, dists in _KEY_PACKAGES.items()},
        "pixelis": pixelis.__version__,
        "git": _git_state(Path.cwd()),
        "torch_threads": torch.get_num_threads(),
        "determinism": get_determinism_settings(),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _dist_version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git_state(cwd: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repo containing ``cwd``; None when not in a repo or git is missing."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0:
            return None
        head = git("rev-parse", "HEAD")  # fails in a repo without commits
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {
        "root": top.stdout.strip(),
        "commit": head.stdout.strip() if head.returncode == 0 else None,
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
    }


# ---------------------------------------------------------------------------------------------- manifest


@dataclasses.dataclass
class RunManifest:
    """Contents of ``<out>/run.json``: what ran, with which seed/config/code, and the artifact hashes."""

    command: list[str]
    command_line: str
    started_at: str
    seed: int
    deterministic: bool
    config_hash: str
    pixelis_version: str
    system_info: dict[str, Any]
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def write_run_manifest(
    out_dir: str | Path,
    seed: int,
    deterministic: bool,
    config: PixelisConfig,
    argv: list[str],
    extra: dict[str, Any] | None = None,
    resumed_from: str | Path | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/run.json`` (``write=False``: only build it, as non-main ranks do) and return its contents.

    A new run gets a fresh manifest. With ``resumed_from`` (the checkpoint a run continues from) an existing
    manifest keeps its history: the original start, command and artifacts stay, and an entry is appended to
    ``resumes`` (when, from where, the command, config hash and system info, and the artifact hashes so far).
    """
    path = Path(out_dir) / MANIFEST_NAME
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if write and resumed_from is not None and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("resumes", []).append({
            "started_at": now, "checkpoint": str(resumed_from), "command_line": shlex.join(argv),
            "config_hash": config_hash(config), "system_info": get_system_info(),
            "artifacts_before": dict(data.get("artifacts", {})),
        })
        _write_json(path, data)
        return data
    manifest = RunManifest(
        command=list(argv),
        command_line=shlex.join(argv),
        started_at=now,
        seed=seed,
        deterministic=deterministic,
        config_hash=config_hash(config),
        pixelis_version=pixelis.__version__,
        system_info=get_system_info(),
        extra={**(extra or {}), **({"resumed_from": str(resumed_from)} if resumed_from is not None else {})},
    )
    data = dataclasses.asdict(manifest)
    if write:
        _write_json(path, data)
    return data


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_artifact(out_dir: str | Path, name: str, sha256: str) -> None:
    """Add or update the hash of artifact ``name`` in ``out_dir/run.json``."""
    path = Path(out_dir) / MANIFEST_NAME
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"artifact {name!r}: expected a sha256 hex digest (64 lowercase hex chars), got {sha256!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: write_run_manifest() must run before record_artifact()") from None
    data.setdefault("artifacts", {})[name] = sha256
    _write_json(path, data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temporary name per process: every rank of a distributed launch writes the manifest at start-up
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written manifest
