import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pixelis.cli.tools import app

runner = CliRunner()


def test_list_json_is_the_registry_schemas(registry):
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == registry.schemas()


def test_list_table_names_every_tool(registry):
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in registry.names():
        assert name in result.stdout
    assert "[x1, y1, x2, y2]" in result.stdout and "optional" in result.stdout


def test_run_zoom_writes_a_png(tmp_path):
    array = np.zeros((200, 300, 3), np.uint8)
    array[:100, :150] = (0, 0, 255)
    Image.fromarray(array).save(tmp_path / "in.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "zoom_in", "--image", str(tmp_path / "in.png"),
                                 "--args", '{"bbox": [0, 0, 500, 500]}', "--out", str(out)])
    assert result.exit_code == 0, result.output
    (png,) = out.glob("*.png")
    assert str(png) in result.stdout and "Zoomed into" in result.stdout
    saved = np.asarray(Image.open(png))
    assert saved.shape == (448, 672, 3) and (saved[..., 2] > 250).all()


def test_run_on_a_video_directory(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(6):
        array = np.full((120, 160, 3), 128, np.uint8)
        if t >= 4:
            array[40:80, 60:100] = (255, 255, 0)
        Image.fromarray(array).save(frames / f"{t:03d}.png")
    result = runner.invoke(app, ["run", "localize_event", "--video", str(frames), "--args", "{}",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert '"start_frame": 4' in result.stdout
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


def test_run_errors_exit_nonzero_with_a_message(tmp_path):
    Image.new("RGB", (50, 50)).save(tmp_path / "in.png")
    result = runner.invoke(app, ["run", "zoom_in", "--image", str(tmp_path / "in.png"),
                                 "--args", '{"bbox": [0, 0, 2000, 500]}', "--out", str(tmp_path)])
    assert result.exit_code == 1 and "out_of_bounds" in result.output
    result = runner.invoke(app, ["run", "zoom_in", "--image", str(tmp_path / "in.png"), "--args", "{bbox"])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = runner.invoke(app, ["run", "zoom_in", "--image", str(tmp_path / "missing.png"), "--args", "{}"])
    assert result.exit_code == 2 and "missing.png" in result.output
