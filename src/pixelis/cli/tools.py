"""``pixelis tools``: list the pixel tools and run one on an image or a video."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pixelis.cli.common import command_group, fail
from pixelis.core.trajectory import ToolCall
from pixelis.tools.registry import ToolRegistry

app = command_group("List the pixel tools and run one on an image or a video.")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@app.command("list")
def list_tools(
    as_json: Annotated[bool, typer.Option("--json", help="Print the function-calling schemas as JSON.")] = False,
) -> None:
    """Show every tool with its description and arguments."""
    registry = ToolRegistry.default()
    if as_json:
        typer.echo(json.dumps(registry.schemas(), indent=2))
        return
    table = Table("tool", "description", "arguments", show_lines=True)
    for schema in registry.schemas():
        fn = schema["function"]
        params = fn["parameters"]
        lines = []
        for name, prop in params["properties"].items():
            if name in params.get("required", []):
                flag = "required"
            else:
                flag = "optional" if prop.get("default") is None else f"default {json.dumps(prop['default'])}"
            lines.append(f"{name} ({prop.get('type', 'any')}, {flag}): {prop.get('description', '')}")
        table.add_row(fn["name"], escape(fn["description"]), escape("\n".join(lines)))
    Console().print(table)


@app.command("run")
def run_tool(
    name: Annotated[str, typer.Argument(help="Tool name (see `pixelis tools list`).")],
    image: Annotated[list[Path] | None, typer.Option("--image", help="Input image; repeat for several.")] = None,
    video: Annotated[str | None, typer.Option("--video", help="Directory of frames, or a glob of frame files.")] = None,
    args: Annotated[str, typer.Option("--args", help="Tool arguments as a JSON object.")] = "{}",
    out: Annotated[Path, typer.Option("--out", help="Directory for the images the tool returns.")] = Path("tool_out"),
) -> None:
    """Run one tool through the registry; print its text and data and save its images as PNG."""
    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        raise fail(f"--args is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise fail("--args must be a JSON object, e.g. '{\"bbox\": [0, 0, 500, 500]}'")
    images = [_load(path) for path in image or []]
    frames = [_load(path) for path in _frame_paths(video)] if video else None
    registry = ToolRegistry.default()
    observation = registry.execute(ToolCall(name, arguments), registry.context(images, frames))
    if observation.error is not None:
        raise fail(observation.render_text(), code=1)
    typer.echo(observation.text)
    typer.echo(json.dumps(observation.data, indent=2))
    if observation.images:
        out.mkdir(parents=True, exist_ok=True)
    for i, result in enumerate(observation.images):
        path = out / f"{name}_{i}.png"
        result.save(path)
        typer.echo(f"saved {path}")


def _frame_paths(video: str) -> list[Path]:
    root = Path(video)
    if root.is_dir():
        paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        paths = sorted(Path(p) for p in glob.glob(video))
    if not paths:
        raise fail(f"--video {video}: no frame images found")
    return paths


def _load(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:
        raise fail(f"cannot read image {path}: {exc}") from None
