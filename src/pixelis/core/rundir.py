"""Output directories are records: a command never silently overwrites or mixes an existing run.

``prepare_out_dir(out)`` is called by every command that writes a directory (``train``, ``eval``, ``demo``,
``data synth``, ``model tiny``, ``model pretrain``) before it writes anything.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from pixelis.core.errors import RunDirError

__all__ = ["fresh_run_dir", "prepare_out_dir"]


def prepare_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False,
                    resumable: bool = False) -> Path:
    """Create ``out`` (or accept it) for a new run; returns it.

    A non-empty directory is refused unless ``overwrite`` (its contents are removed first) or ``resume`` (the
    run in it continues) is given; ``resumable`` commands mention ``--resume`` in the refusal. ``out`` that is
    a file or cannot be written is refused too.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not overwrite:
            held = sorted(p.name for p in out.iterdir())
            shown = ", ".join(held[:5]) + (f", ... ({len(held)} entries)" if len(held) > 5 else "")
            resume_hint = ", --resume RUN/checkpoint-K to continue it" if resumable else ""
            raise RunDirError(f"--out {out} is not empty ({shown}); pass --overwrite to clear it first"
                              f"{resume_hint}, or choose another --out")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out}: the directory is not writable")
    return out


def fresh_run_dir(command: str, root: str | Path = "runs") -> Path:
    """A new directory name for a run whose ``--out`` was not given: ``runs/<command>-<YYYYmmdd-HHMMSS>[-N]``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
