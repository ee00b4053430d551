"""The errors an ordinary mistake raises, and the one place that turns library exceptions into them.

Every class here is a :class:`PixelisError`: its message is one line naming what was wrong and where (file,
config key, record line). The ``pixelis`` CLI prints that line and exits with code 2; anything else that
escapes a command is a bug and keeps its traceback.

``reading(path, CheckpointError)`` wraps the code that reads one file: whatever the library raises for a
truncated, empty or foreign file (safetensors, torch.load, Pillow, JSON) becomes that error, naming the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CheckpointError", "DataError", "PixelisError", "RunDirError", "TrainingError", "reading"]


class PixelisError(Exception):
    """An ordinary mistake in the input (config, data, checkpoint, run directory); the message says what and where."""


class DataError(PixelisError, ValueError):
    """A data set, record or image that is missing or unusable."""


class CheckpointError(PixelisError, ValueError):
    """A model or training checkpoint that is missing, corrupt, tampered with, or does not fit the model."""


class RunDirError(PixelisError):
    """An output directory that cannot be used: it holds another run, is a file, or is not writable."""


class TrainingError(PixelisError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step and the last good checkpoint."""


def _library_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image
    from safetensors import SafetensorError

    return (OSError, EOFError, ValueError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError,
            zipfile.BadZipFile, json.JSONDecodeError, SafetensorError, Image.DecompressionBombError)


def describe(exc: BaseException) -> str:
    """A library exception as a short phrase: its first line, or its type when it has no message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def reading(path: str | Path, error: type[PixelisError], what: str = "file") -> Iterator[None]:
    """Turn what a library raises while reading ``path`` into ``error("<path>: cannot read <what> (...)")``.

    Errors that are already a :class:`PixelisError` pass through unchanged.
    """
    try:
        yield
    except PixelisError:
        raise
    except _library_errors() as exc:
        size = Path(path).stat().st_size if Path(path).is_file() else None
        empty = " (the file is empty)" if size == 0 else ""
        raise error(f"{path}: cannot read {what}{empty}: {describe(exc)}") from None
