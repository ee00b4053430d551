"""`pixelis bench micro` / `bench compare`: the results schema, real work per item, --only, --compare, bad files.

Timing values are never asserted (timing belongs in benchmarks): only structure and what each item computed.
"""

import copy
import json
import re

import pytest
from typer.testing import CliRunner

from pixelis.bench.micro import ITEMS, Inputs, select
from pixelis.bench.timing import SCHEMA
from pixelis.cli import app
from pixelis.core.errors import DataError

QUICK = ["tool.zoom_in", "trace.span_log", "agent.turn_overhead"]
STATS = {"median_s", "p95_s", "min_s", "max_s", "spread", "repeats"}


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A quick subset (2 repeats after 1 warm-up) through the CLI: (stdout document, run directory)."""
    out = tmp_path_factory.mktemp("micro") / "run"
    result = _invoke("bench", "micro", *[a for name in QUICK for a in ("--only", name)], "--repeats", 2,
                     "--warmup", 1, "--json", "--out", out, "--seed", 3, "--deterministic")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_results_schema_and_real_work(quick_run):
    doc, out = quick_run
    assert doc["schema"] == SCHEMA and doc["seed"] == 3 and doc["deterministic"] is True
    assert (doc["repeats"], doc["warmup"]) == (2, 1) and doc["system"]["torch"]
    assert [item["name"] for item in doc["items"]] == QUICK
    for item in doc["items"]:
        assert STATS <= set(item) and item["repeats"] == 2 and item["min_s"] <= item["median_s"] <= item["max_s"]
        assert {"group", "description", "unit", "baseline", "ratio", "goal", "goal_met", "work"} <= set(item)
    zoom, trace, agent = doc["items"]
    assert zoom["baseline"]["name"] == "cv2.resize of the crop" and STATS <= set(zoom["baseline"])
    assert zoom["ratio"] == pytest.approx(zoom["median_s"] / zoom["baseline"]["median_s"])
    assert zoom["goal"] == {"ratio_max": 1.05} and zoom["goal_met"] == (zoom["ratio"] <= 1.05)
    assert zoom["work"]["observation"].startswith("Zoomed into") and zoom["work"]["library_calls"] == 1
    assert re.search(r"\[[0-9a-f]{32}\|bench\] - micro benchmark step 3$", trace["work"]["log_line"])
    assert trace["ratio"] is None and trace["goal"] == {"median_max_s": 20e-6}
    assert agent["unit"] == "s/turn" and agent["work"]["turns"] == 5 and agent["work"]["termination"] == "answer"
    assert agent["work"]["observations"] == [f"turn {i}" for i in range(4)]
    assert json.loads((out / "micro_benchmark.json").read_text()) == doc
    assert "micro_benchmark.json" in json.loads((out / "run.json").read_text())["artifacts"]


def test_same_seed_gives_the_same_inputs(tmp_path):
    first, again, other = Inputs(5, str(tmp_path)), Inputs(5, str(tmp_path)), Inputs(6, str(tmp_path))
    assert first.sha256() == again.sha256() != other.sha256()
    assert first.tool_calls == again.tool_calls and first.scene.label == again.scene.label


def _doctored(doc):
    """`doc` as an older run might have left it: every median twice as long, one item missing, one extra."""
    old = copy.deepcopy(doc)
    for item in old["items"]:
        item["median_s"] *= 2
    old["items"] = [i for i in old["items"] if i["name"] != "agent.turn_overhead"]
    old["items"].append({**old["items"][0], "name": "tool.retired"})
    return old


def test_compare_gives_ratios_per_item(quick_run, tmp_path):
    new, out = quick_run
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps(_doctored(new)))
    result = _invoke("bench", "compare", old_file, out / "micro_benchmark.json", "--json")
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    rows = {row["name"]: row for row in comparison["items"]}
    assert set(rows) == {"tool.zoom_in", "trace.span_log"} and comparison["same_inputs"] is True
    assert all(row["new_over_old"] == pytest.approx(0.5) for row in rows.values())
    assert rows["tool.zoom_in"]["new_ratio"] == new["items"][0]["ratio"]
    assert comparison["only_old"] == ["tool.retired"] and comparison["only_new"] == ["agent.turn_overhead"]

    result = _invoke("bench", "micro", "--only", "tool.zoom_in", "--repeats", 1, "--warmup", 0, "--compare", old_file,
                     "--out", tmp_path / "again", "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "against" in result.stdout and "tool.zoom_in" in result.stdout
    again = json.loads((tmp_path / "again" / "micro_benchmark.json").read_text())["comparison"]
    assert [row["name"] for row in again["items"]] == ["tool.zoom_in"] and again["old"] == str(old_file)
    assert again["only_new"] == [] and "trace.span_log" in again["only_old"]


def test_only_selects_names_groups_and_globs():
    assert [i.name for i in select(["tool.zoom_in"])] == ["tool.zoom_in"]
    assert {i.name for i in select(["tools"])} == {n for n in ITEMS if n.startswith("tool.")} and len(
        select(["tools"])) == 7
    assert [i.name for i in select(["model.generate_*"])] == ["model.generate_b1", "model.generate_b8"]
    assert len(select([])) == len(ITEMS)
    with pytest.raises(DataError, match="--only nope: no such item"):
        select(["tool.zoom_in", "nope"])


def _fails_with(args, message):
    result = _invoke("bench", *args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert f"error: {message}" in result.output and "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1


def test_bad_inputs_fail_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default runs/<command>-<time> would appear
    not_json, foreign, no_items = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    not_json.write_text("{not json")
    foreign.write_text(json.dumps({"schema": "something/else", "items": []}))
    no_items.write_text(json.dumps({"schema": SCHEMA, "items": [{"name": "x"}]}))
    missing = tmp_path / "missing.json"
    _fails_with(["micro", "--compare", missing], f"--compare {missing}: no such file")
    _fails_with(["micro", "--compare", not_json], f"{not_json}: cannot read micro-benchmark results")
    _fails_with(["micro", "--compare", foreign], f"{foreign}: not micro-benchmark results (schema 'something/else'")
    _fails_with(["compare", no_items, no_items], f"{no_items}: 'items' must be a list of results")
    _fails_with(["micro", "--only", "nope"], "--only nope: no such item")
    _fails_with(["micro", "--repeats", 0], "--repeats 0 --warmup 3: need at least one repeat")
    assert not (tmp_path / "runs").exists(), "a refused command leaves no run directory"
