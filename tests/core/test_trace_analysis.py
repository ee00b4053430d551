"""`pixelis trace summarize` and the 'where the time went' sections: hand-written span files with known timings,
bad files, and real traces exported by a real evaluation and a real SFT run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixelis.cli import app
from pixelis.core.config import load_config
from pixelis.core.trace_analysis import SpanForest, critical_path, load_spans, summarize, time_section
from pixelis.core.tracing import configure_tracing, shutdown_tracing

BIN = Path(sys.executable).parent
MS = 1_000_000
T1, T2 = "1" * 32, "2" * 32


def _record(name, trace_id, span_id, parent, start_ms, end_ms):
    """A span line in the exact shape `JsonlSpanExporter` writes."""
    return {"name": name, "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "kind": "INTERNAL",
            "start_ns": start_ms * MS, "end_ns": end_ms * MS, "duration_ms": float(end_ms - start_ms),
            "attributes": {"pixelis.component": name.split(".")[0], "duration_ms": float(end_ms - start_ms)},
            "events": [], "status": {"code": "UNSET", "description": None},
            "resource": {"service.name": "pixelis", "process.pid": 1}}


# Trace 1 (the slowest root): eval.run 0-100 with two overlapping rollouts, 10-60 and 40-90, each with a tool call;
# trace 2: eval.run 200-240 with one rollout 205-230 that has a gap-free pair of turns.
RECORDS = [
    _record("tool.zoom_in", T1, "a000000000000004", "a000000000000002", 20, 30),
    _record("agent.run", T1, "a000000000000002", "a000000000000001", 10, 60),
    _record("tool.read_text", T1, "a000000000000005", "a000000000000003", 50, 95),  # runs past its parent's end
    _record("agent.run", T1, "a000000000000003", "a000000000000001", 40, 90),
    _record("eval.run", T1, "a000000000000001", None, 0, 100),
    _record("agent.turn", T2, "b000000000000003", "b000000000000002", 205, 215),
    _record("agent.turn", T2, "b000000000000004", "b000000000000002", 215, 230),
    _record("agent.run", T2, "b000000000000002", "b000000000000001", 205, 230),
    _record("eval.run", T2, "b000000000000001", None, 200, 240),
]


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def traces(tmp_path) -> Path:
    return _write(tmp_path / "traces.jsonl", RECORDS)


def _by_name(summary):
    return {r["name"]: r for r in summary["by_name"]}


def test_self_times_counts_and_percentiles(traces):
    summary = summarize(SpanForest(load_spans(traces)))
    rows = _by_name(summary)
    assert summary["spans"] == 9 and summary["traces"] == 2 and summary["roots"] == 2
    # eval.run #1: the rollouts cover 10-90 once (overlap counted once) -> self 20; #2: 200-240 minus 205-230 -> 15
    assert rows["eval.run"] == {"name": "eval.run", "count": 2, "total_ms": 140.0, "self_ms": 35.0,
                                "p50_ms": 70.0, "p95_ms": 97.0, "max_ms": 100.0}
    # rollouts: 50-10, 50-40 (the tool is clipped to 50-90), and 25-25 (its two turns leave no gap)
    assert rows["agent.run"]["count"] == 3 and rows["agent.run"]["self_ms"] == 40 + 10 + 0
    assert rows["agent.run"]["total_ms"] == 125.0 and rows["agent.run"]["p50_ms"] == 50.0
    assert rows["agent.turn"]["self_ms"] == 25.0 and rows["agent.turn"]["p95_ms"] == pytest.approx(14.75)
    assert rows["tool.read_text"]["self_ms"] == rows["tool.read_text"]["total_ms"] == 45.0
    assert [r["name"] for r in summary["by_name"]][:2] == ["agent.run", "tool.read_text"]  # sorted by self time


def test_critical_path_follows_the_child_that_ends_last(traces):
    forest = SpanForest(load_spans(traces))
    root = forest.slowest_root()
    assert root.span_id == "a000000000000001"
    assert [s.span_id for s in critical_path(forest, root)] == ["a000000000000001", "a000000000000003",
                                                                "a000000000000005"]
    # within trace 2 the later of two turns is the one the rollout was waiting on
    chosen = summarize(forest, T2)["trace"]
    assert chosen["trace_id"] == T2 and chosen["duration_ms"] == 40.0
    assert [(s["name"], s["start_ms"], s["self_ms"]) for s in chosen["critical_path"]] == [
        ("eval.run", 0.0, 15.0), ("agent.run", 5.0, 0.0), ("agent.turn", 15.0, 15.0)]


def _summarize(*args):
    return CliRunner().invoke(app, ["trace", "summarize", *map(str, args)])


def _is_png(path: Path) -> bool:
    with Image.open(path) as img:
        return img.format == "PNG" and img.width > 300 and img.height > 100


def test_cli_json_summary_and_charts(traces, tmp_path):
    result = _summarize(traces, "--json", "--out", tmp_path / "charts")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["file"] == str(traces) and _by_name(summary)["eval.run"]["self_ms"] == 35.0
    assert summary["trace"]["trace_id"] == T1 and summary["trace"]["root"] == "eval.run"
    assert [s["name"] for s in summary["trace"]["critical_path"]] == ["eval.run", "agent.run", "tool.read_text"]
    charts = {k: Path(v) for k, v in summary["charts"].items()}
    assert charts == {"waterfall": tmp_path / "charts" / "trace-waterfall.png",
                      "flame": tmp_path / "charts" / "trace-flame.png"}
    assert all(_is_png(p) for p in charts.values())


def test_cli_table_and_a_chosen_trace_by_prefix(traces):
    result = _summarize(traces, "--trace", "2222")
    assert result.exit_code == 0, result.output
    assert "9 spans in 2 traces" in result.output and "tool.read_text" in result.output
    assert f"critical path of eval.run (40.0 ms) in trace {T2}" in result.output
    assert (traces.parent / "trace-waterfall.png").is_file() and (traces.parent / "trace-flame.png").is_file()


def _fails_with(result, message):
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [
    ("", "traces.jsonl: no spans (the file is empty)"),
    ("\n  \n", "traces.jsonl: no spans"),
    (json.dumps(RECORDS[0]) + "\n{not json\n", "traces.jsonl:2: not JSON"),
    ("[1, 2]\n", "traces.jsonl:1: not a span record (a JSON object expected, got list)"),
    (json.dumps({k: v for k, v in RECORDS[0].items() if k not in ("span_id", "end_ns")}) + "\n",
     "traces.jsonl:1: not a span record: it lacks 'span_id', 'end_ns'"),
    ("\n" + json.dumps({**RECORDS[0], "start_ns": "soon"}) + "\n",
     "traces.jsonl:2: span field 'start_ns' must be an integer (nanoseconds), got 'soon'"),
    (json.dumps({**RECORDS[0], "end_ns": 0}) + "\n", "traces.jsonl:1: span 'tool.zoom_in' ends before it starts"),
    (json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[0]) + "\n", "traces.jsonl:2: span id a000000000000004 "
                                                                     "appears twice (first on line 1)"),
])
def test_bad_files_fail_with_one_line_naming_file_and_line(tmp_path, content, message):
    (tmp_path / "traces.jsonl").write_text(content)
    _fails_with(_summarize(tmp_path / "traces.jsonl"), message)


def test_missing_file_unknown_trace_and_bad_out(traces, tmp_path):
    _fails_with(_summarize(tmp_path / "nowhere.jsonl"), "nowhere.jsonl: no such trace file")
    _fails_with(_summarize(traces, "--trace", "ffff"), f"--trace ffff: matches no trace (the file holds 2, "
                                                       f"the slowest root's is {T1})")
    (tmp_path / "file").write_text("x")
    _fails_with(_summarize(traces, "--out", tmp_path / "file"), "is a file, not a directory")


def test_installed_command_reports_bad_input_without_traceback(tmp_path):
    bad = tmp_path / "traces.jsonl"
    bad.write_text("oops\n")
    proc = subprocess.run([BIN / "pixelis", "trace", "summarize", bad], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:1: not JSON (Expecting value at column 1)"]


def test_time_section_is_a_short_table_of_one_trace(traces, tmp_path):
    lines = time_section(traces, T2, top=2)
    text = "\n".join(lines)
    assert lines[0] == "## Where the time went" and f"trace `{T2}`" in text
    assert "| `agent.turn` | 2 | 0.03 | 0.03 | 62% | 14.8 |" in text and "| `eval.run` | 1 |" in text
    assert "tool.zoom_in" not in text and sum(line.startswith("| `") for line in lines) == 2
    assert "Critical path of `eval.run`: `eval.run` → `agent.run` → `agent.turn`" in text
    assert time_section(tmp_path / "absent.jsonl") == [] and time_section(traces, "9" * 32) == []
    assert "9 spans of 2 traces" in time_section(traces)[2]  # without a trace id: the whole file


# ---------------------------------------------------------------- real exported traces


@pytest.fixture(scope="module")
def golden_eval_run(tmp_path_factory):
    """`pixelis eval --policy golden` on a tiny OCR-free suite with spans exported to RUN/traces.jsonl."""
    from pixelis.data.synth.suite import generate_suite

    suite = tmp_path_factory.mktemp("trace_suite")
    generate_suite(suite, n=3, seed=11, families=["attribute"], val_fraction=0.0, test_fraction=0.0,
                   progress=False)
    out = tmp_path_factory.mktemp("traced_eval") / "run"
    result = CliRunner().invoke(app, ["eval", "--no-progress", "--policy", "golden", "--data", str(suite),
                                      "--split", "train", "--out", str(out), "--set", "tracing.exporter=jsonl"])
    shutdown_tracing()
    assert result.exit_code == 0, result.output[-2000:]
    return out


def test_summarizer_reads_real_exporter_output(golden_eval_run, tmp_path):
    result = _summarize(golden_eval_run / "traces.jsonl", "--json", "--out", tmp_path)
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.output)
    rows = _by_name(summary)
    assert rows["eval.run"]["count"] == 1 and rows["agent.run"]["count"] == 3
    assert rows["tool.get_properties"]["count"] >= 3 and rows["agent.turn"]["count"] >= 6
    assert summary["trace"]["root"] == "eval.run" and summary["traces"] == summary["roots"] == 1
    path = [s["name"] for s in summary["trace"]["critical_path"]]
    assert path[:3] == ["eval.run", "agent.run", "agent.turn"]
    assert all(0 <= r["self_ms"] <= r["total_ms"] for r in summary["by_name"])
    assert _is_png(tmp_path / "trace-waterfall.png") and _is_png(tmp_path / "trace-flame.png")


def test_eval_report_says_where_the_time_went_when_tracing_is_on(golden_eval_run):
    report = (golden_eval_run / "report.md").read_text()
    section = report[report.index("## Where the time went"):]
    assert "| `eval.run` | 1 |" in section and "| `agent.run` | 3 |" in section
    assert "Critical path of `eval.run`: `eval.run` → `agent.run`" in section


def test_sft_writes_time_md_from_its_own_trace(tmp_path, train_suite_dir, tiny_model_dir):
    from pixelis.train.sft import train_sft

    overrides = {"data.path": train_suite_dir, "model.path": tiny_model_dir, "model.device": "cpu",
                 "sft.max_steps": 2, "sft.batch_size": 2, "sft.save_interval": 2, "sft.eval_rollouts": 1,
                 "sft.eval_loss_samples": 1, "sft.report_to": "[]", "agent.max_new_tokens": 8, "agent.max_turns": 1,
                 "agent.tool_prompt": "compact", "curriculum.evaluation_interval": 2}
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    run = tmp_path / "run"
    configure_tracing(exporter="jsonl", run_dir=run)
    try:
        train_sft(cfg, run, show_progress=False)
    finally:
        shutdown_tracing()
    text = (run / "time.md").read_text()
    assert text.startswith("# SFT: where the time went") and "| `sft.run` | 1 |" in text
    assert "| `sft.evaluate` | 1 |" in text and "Critical path of `sft.run`: `sft.run` → `sft.evaluate`" in text
