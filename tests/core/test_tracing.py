"""Tracing and logging: real spans in an in-memory exporter, real files, threads, subprocesses and fork."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pixelis.core.tracing import (
    TraceContext,
    TracedOperation,
    attach_context,
    configure_tracing,
    extract,
    get_tracer,
    inject,
    reset_logging,
    setup_logging,
    shutdown_tracing,
    submit_with_context,
)

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "tracing_child.py"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(autouse=True)
def _reset():
    reset_logging()  # an in-process CLI test may have left its logging set up
    yield
    reset_logging()
    shutdown_tracing()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exp)])
    return exp


def by_name(exp: InMemorySpanExporter) -> dict:
    return {s.name: s for s in exp.get_finished_spans()}


def hex_span(span) -> str:
    return f"{span.context.span_id:016x}"


def hex_trace(span) -> str:
    return f"{span.context.trace_id:032x}"


# ---------------------------------------------------------------- spans


def test_nested_operations_link_parents_and_set_attributes(exporter):
    with TracedOperation("request", "server", {"request_id": "r1"}) as outer:
        with TracedOperation("tool", "tools", {"tool": "zoom_in", "box": [1, 2, 3, 4]}) as inner:
            inner.set_attribute("ok", True)
            inner.add_event("cropped", {"size": [32, 32]})
    spans = by_name(exporter)
    req, tool = spans["request"], spans["tool"]
    assert req.parent is None
    assert tool.parent.span_id == req.context.span_id
    assert tool.context.trace_id == req.context.trace_id
    assert outer.trace_id == inner.trace_id == hex_trace(req)
    assert inner.span_id == hex_span(tool)
    assert tool.attributes["pixelis.component"] == "tools"
    assert req.attributes["request_id"] == "r1"
    assert tool.attributes["tool"] == "zoom_in"
    assert tuple(tool.attributes["box"]) == (1, 2, 3, 4)
    assert tool.attributes["ok"] is True
    assert tool.attributes["duration_ms"] >= 0.0
    assert req.attributes["duration_ms"] >= tool.attributes["duration_ms"]
    assert [e.name for e in tool.events] == ["cropped"]
    assert tuple(tool.events[0].attributes["size"]) == (32, 32)
    assert req.status.status_code == StatusCode.UNSET


def test_exception_is_recorded_with_error_status_and_reraised(exporter):
    with pytest.raises(ValueError, match="bad box"):
        with TracedOperation("outer", "agent"):
            with TracedOperation("tool", "tools"):
                raise ValueError("bad box")
    spans = by_name(exporter)
    for name in ("outer", "tool"):
        assert spans[name].status.status_code == StatusCode.ERROR
        assert "bad box" in spans[name].status.description
    events = spans["tool"].events
    assert events[0].name == "exception"
    assert events[0].attributes["exception.type"] == "ValueError"
    assert trace.get_current_span() is trace.INVALID_SPAN  # context restored after the exception


def test_metadata_values_become_otel_compatible(exporter):
    meta = {
        "nested": {"a": 1, "b": {"c": "x"}},
        "floats": (0.5, 1.5),
        "mixed": [1, "a"],
        "obj": object(),
        "long": ["x" * 600, "y" * 600, 3],
        "none": None,
    }
    with TracedOperation("op", "c", meta):
        pass
    attrs = exporter.get_finished_spans()[0].attributes
    assert attrs["nested.a"] == 1 and attrs["nested.b.c"] == "x"
    assert tuple(attrs["floats"]) == (0.5, 1.5)
    assert json.loads(attrs["mixed"]) == [1, "a"]
    assert attrs["obj"].startswith('"<object object')
    assert len(attrs["long"]) == 1000
    assert "none" not in attrs


def test_decorator_on_sync_and_async_functions(exporter):
    @TracedOperation("double", "math", {"kind": "sync"})
    def double(x):
        return 2 * x

    @TracedOperation("triple", "math")
    async def triple(x):
        await asyncio.sleep(0)
        return 3 * x

    @TracedOperation("fail", "math")
    def fail():
        raise KeyError("k")

    with TracedOperation("outer", "test"):
        assert double(2) == 4
        assert double(3) == 6
        assert asyncio.run(triple(2)) == 6
    with pytest.raises(KeyError):
        fail()
    spans = exporter.get_finished_spans()
    outer = next(s for s in spans if s.name == "outer")
    doubles = [s for s in spans if s.name == "double"]
    assert len(doubles) == 2 and doubles[0].context.span_id != doubles[1].context.span_id
    assert all(s.parent.span_id == outer.context.span_id for s in doubles)
    assert doubles[0].attributes["kind"] == "sync"
    (tri,) = [s for s in spans if s.name == "triple"]
    assert tri.parent.span_id == outer.context.span_id
    assert double.__name__ == "double"
    (failed,) = [s for s in spans if s.name == "fail"]
    assert failed.status.status_code == StatusCode.ERROR


# ---------------------------------------------------------------- logging


def test_log_lines_carry_the_trace_id_inside_spans_and_dash_outside(exporter, tmp_path):
    log_file = tmp_path / "run.log"
    log = setup_logging(level="DEBUG", log_file=log_file)
    log.info("before")
    with TracedOperation("step", "agent") as op:
        logging.getLogger("pixelis.agent").debug("inside")
    log.info("after")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("- INFO - [-|-] - before")
    assert f"- pixelis.agent - DEBUG - [{op.trace_id}|agent] - inside" in lines[1]
    assert lines[2].endswith("[-|-] - after")


def test_json_log_lines_parse_and_carry_trace_fields(exporter, tmp_path):
    log_file = tmp_path / "run.jsonl"
    log = setup_logging(log_file=log_file, fmt="json")
    with TracedOperation("step", "rollout") as op:
        log.info("hello %s", "world", extra={"step": 3, "bad": object()})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.warning("outside")
    first, second, third = (json.loads(line) for line in log_file.read_text().splitlines())
    assert first["message"] == "hello world" and first["level"] == "INFO" and first["logger"] == "pixelis"
    assert first["trace_id"] == op.trace_id and HEX32.match(first["trace_id"])
    assert first["span_id"] == op.span_id and HEX16.match(first["span_id"])
    assert first["component"] == "rollout"
    assert first["step"] == 3 and "bad" not in first
    assert "RuntimeError: boom" in second["exc_info"]
    assert third["trace_id"] is None and third["component"] is None


def test_recalling_setup_logging_switches_format_without_duplicating_handlers(tmp_path):
    log_file = tmp_path / "run.log"
    root = logging.getLogger()
    foreign = len(root.handlers)  # pytest's own capture handlers
    log = setup_logging(log_file=log_file, fmt="text")
    log.info("as text")
    setup_logging(log_file=log_file, fmt="json")
    setup_logging(log_file=log_file, fmt="json")
    log.info("as json")
    setup_logging(log_file=log_file, fmt="text", level="WARNING")
    log.info("dropped by level")
    log.warning("text again")
    assert len(root.handlers) == foreign + 2  # console + file, never more
    lines = log_file.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("- INFO - [-|-] - as text")
    assert json.loads(lines[1])["message"] == "as json"
    assert lines[2].endswith("- WARNING - [-|-] - text again")
    reset_logging()
    assert len(root.handlers) == foreign


def test_application_loggers_print_once_in_the_trace_format(exporter, capsys):
    root = logging.getLogger()
    level = root.level
    setup_logging(level="DEBUG")
    setup_logging(level="DEBUG")
    with TracedOperation("my_operation", "MyComponent") as op:
        logging.getLogger("myapp").debug("mine")
        logging.getLogger("pixelis.agent").info("ours")
    logging.getLogger("myapp").warning("outside")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" - ", 1)[1] for line in lines] == [
        f"myapp - DEBUG - [{op.trace_id}|MyComponent] - mine",
        f"pixelis.agent - INFO - [{op.trace_id}|MyComponent] - ours",
        "myapp - WARNING - [-|-] - outside",
    ]
    assert root.level == logging.DEBUG
    reset_logging()
    assert root.level == level


def test_pixelis_scope_leaves_the_root_logger_untouched(capsys):
    root, log = logging.getLogger(), logging.getLogger("pixelis")
    handlers, level, log_level = list(root.handlers), root.level, log.level
    assert setup_logging(level="DEBUG", scope="pixelis") is log
    assert root.handlers == handlers and root.level == level
    assert not log.propagate and len(log.handlers) == 1 and log.level == logging.DEBUG
    logging.getLogger("myapp").warning("mine")
    logging.getLogger("pixelis.agent").debug("ours")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("- pixelis.agent - DEBUG - [-|-] - ours")
    reset_logging()
    assert log.propagate and log.handlers == [] and log.level == log_level


def test_start_run_prints_each_line_once_for_application_and_pixelis_loggers(tmp_path):
    script = (
        "import logging, sys\n"
        "from pathlib import Path\n"
        "from pixelis.cli.common import start_run\n"
        "run = start_run('demo', Path(sys.argv[1]), None, [], None, None, None, None)\n"
        "logging.getLogger('myapp').info('app line')\n"
        "run.logger.info('pixelis line')\n"
    )
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120, check=True
    )
    for text in (result.stderr, (out / "pixelis.log").read_text()):
        lines = text.splitlines()
        assert sum(" - myapp - INFO - " in line and line.endswith("app line") for line in lines) == 1
        assert sum(" - pixelis.demo - INFO - " in line and line.endswith("pixelis line") for line in lines) == 1
        assert sum(" - INFO - [-|-] - run demo: " in line for line in lines) == 1


def test_colors_go_to_the_console_only(exporter, tmp_path, capsys):
    log_file = tmp_path / "run.log"
    log = setup_logging(log_file=log_file, use_colors=True)
    with TracedOperation("step", "agent") as op:
        log.error("red")
    err = capsys.readouterr().err
    assert "\033[31mERROR\033[0m" in err and f"[{op.trace_id}|agent]" in err
    text = log_file.read_text()
    assert "\033" not in text and "- ERROR - " in text
    setup_logging(use_tracing=False)
    log.warning("plain")
    assert capsys.readouterr().err.rstrip().endswith("- pixelis - WARNING - plain")


def test_rejects_unknown_formats_and_settings(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        setup_logging(fmt="xml")
    with pytest.raises(ValueError, match="scope"):
        setup_logging(scope="everything")
    with pytest.raises(ValueError, match="exporter"):
        configure_tracing(exporter="zipkin")
    with pytest.raises(ValueError, match="run_dir"):
        configure_tracing(exporter="jsonl")
    with pytest.raises(ValueError, match="sample_ratio"):
        configure_tracing(sample_ratio=1.5)


# ---------------------------------------------------------------- sampling, exporters


def test_unsampled_spans_export_nothing_but_logs_keep_trace_ids(tmp_path):
    exp = InMemorySpanExporter()
    configure_tracing(sample_ratio=0.0, extra_processors=[SimpleSpanProcessor(exp)])
    log_file = tmp_path / "run.log"
    log = setup_logging(log_file=log_file, fmt="json")
    with TracedOperation("root", "agent") as root:
        with TracedOperation("child", "tools") as child:
            log.info("inside")
    assert exp.get_finished_spans() == ()
    assert not root.span.is_recording()
    assert HEX32.match(root.trace_id) and child.trace_id == root.trace_id
    assert child.span_id != root.span_id
    line = json.loads(log_file.read_text())
    assert line["trace_id"] == root.trace_id and line["span_id"] == child.span_id


def test_jsonl_exporter_writes_one_parsable_line_per_span(tmp_path):
    configure_tracing(exporter="jsonl", run_dir=tmp_path / "run")
    with TracedOperation("outer", "agent", {"q": "how many?"}):
        with pytest.raises(ZeroDivisionError):
            with TracedOperation("inner", "tools") as inner:
                inner.add_event("start", {"n": 1})
                1 / 0  # noqa: B018
    shutdown_tracing()
    rows = [json.loads(line) for line in (tmp_path / "run" / "traces.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["inner", "outer"]
    inner_row, outer_row = rows
    assert inner_row["parent_span_id"] == outer_row["span_id"] and outer_row["parent_span_id"] is None
    assert inner_row["trace_id"] == outer_row["trace_id"] and HEX32.match(inner_row["trace_id"])
    assert outer_row["attributes"]["q"] == "how many?"
    assert outer_row["attributes"]["pixelis.component"] == "agent"
    assert outer_row["end_ns"] > outer_row["start_ns"] and outer_row["duration_ms"] > 0
    assert [e["name"] for e in inner_row["events"]] == ["start", "exception"]
    assert inner_row["status"]["code"] == "ERROR"
    assert outer_row["resource"]["service.name"] == "pixelis"


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_exporter_posts_protobuf_to_the_collector():
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        configure_tracing(exporter="otlp", endpoint=f"http://127.0.0.1:{server.server_port}", service_name="svc")
        with TracedOperation("remote", "server", {"k": 7}):
            pass
        shutdown_tracing()  # flushes the BatchSpanProcessor
    finally:
        server.shutdown()
        server.server_close()
    (path, content_type, body), *_ = _Collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    resource_spans = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    span = resource_spans.scope_spans[0].spans[0]
    assert service == "svc" and span.name == "remote"


def test_reconfiguring_replaces_the_provider_for_pixelis_and_global_tracers():
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(first)])
    third_party = trace.get_tracer("some.instrumentation")
    with TracedOperation("one", "c"):
        pass
    configure_tracing(extra_processors=[SimpleSpanProcessor(second)])
    with TracedOperation("two", "c"):
        with third_party.start_as_current_span("library-span"):
            pass
    assert [s.name for s in first.get_finished_spans()] == ["one"]
    assert [s.name for s in second.get_finished_spans()] == ["library-span", "two"]
    library, two = second.get_finished_spans()
    assert library.parent.span_id == two.context.span_id


def test_spans_get_ids_without_configure_tracing():
    shutdown_tracing()
    with TracedOperation("op", "c") as op:
        assert HEX32.match(op.trace_id)
    assert get_tracer() is get_tracer()


# ---------------------------------------------------------------- propagation


def test_thread_pool_needs_submit_with_context(exporter):
    def work():
        with TracedOperation("work", "worker") as op:
            return TraceContext.current().component, op.trace_id

    with ThreadPoolExecutor(max_workers=1) as pool:
        with TracedOperation("outer", "engine") as outer:
            component, trace_id = submit_with_context(pool, work).result()
            plain_trace_id = pool.submit(work).result()[1]
    assert component == "worker" and trace_id == outer.trace_id
    assert plain_trace_id != outer.trace_id  # a plain submit loses the context
    outer_span = by_name(exporter)["outer"]
    works = [s for s in exporter.get_finished_spans() if s.name == "work"]
    linked = [s for s in works if s.parent is not None and s.parent.span_id == outer_span.context.span_id]
    assert len(works) == 2 and len(linked) == 1


def test_trace_context_child_is_handed_to_another_thread(exporter, tmp_path):
    log_file = tmp_path / "run.log"
    log = setup_logging(log_file=log_file)
    with TracedOperation("request", "server", {"request_id": "r9"}) as req:
        ctx = TraceContext.current()
        child = ctx.create_child_context("voting", round=2)
    assert (ctx.trace_id, ctx.span_id, ctx.component) == (req.trace_id, req.span_id, "server")
    assert ctx.metadata == {"request_id": "r9"}
    assert child.trace_id == ctx.trace_id and child.component == "voting"
    assert child.metadata == {"request_id": "r9", "round": 2}
    assert TraceContext.current().trace_id is None

    def sub_component():
        with child.activate():
            log.info("voting")
            with TracedOperation("vote", "voting"):
                pass

    t = threading.Thread(target=sub_component)
    t.start()
    t.join()
    vote = by_name(exporter)["vote"]
    assert vote.parent.span_id == int(req.span_id, 16)
    assert f"[{req.trace_id}|voting] - voting" in log_file.read_text()


def test_inject_extract_and_attach_context(exporter):
    with TracedOperation("client", "http") as client:
        headers = inject({"Content-Type": "application/json"})
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", client.trace_id, client.span_id)
    assert int(flags, 16) & 1  # sampled
    assert headers["Content-Type"] == "application/json"
    remote = trace.get_current_span(extract({"Traceparent": headers["traceparent"]})).get_span_context()
    assert remote.is_remote and f"{remote.trace_id:032x}" == client.trace_id
    with attach_context(headers):
        with TracedOperation("server", "http") as server:
            pass
    assert server.trace_id == client.trace_id
    assert by_name(exporter)["server"].parent.span_id == int(client.span_id, 16)
    assert inject() == {}  # outside any span there is nothing to propagate


def test_context_crosses_a_subprocess_through_the_environment(exporter):
    with TracedOperation("parent", "cli") as parent:
        env = {**os.environ, **{k.upper(): v for k, v in inject().items()}}
    out = subprocess.run(
        [sys.executable, str(HELPER)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["seen_trace_id"] == parent.trace_id
    assert seen["trace_id"] == parent.trace_id
    assert seen["parent_span_id"] == parent.span_id


def test_forked_child_rebuilds_the_provider_and_exports(tmp_path):
    run_dir = tmp_path / "run"
    configure_tracing(exporter="jsonl", run_dir=run_dir)
    with TracedOperation("before-fork", "parent") as outer:
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                with TracedOperation("in-child", "worker"):
                    pass
                shutdown_tracing()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    shutdown_tracing()
    rows = {r["name"]: r for r in map(json.loads, (run_dir / "traces.jsonl").read_text().splitlines())}
    assert set(rows) == {"in-child", "before-fork"}
    child = rows["in-child"]
    assert child["resource"]["process.pid"] == pid
    assert rows["before-fork"]["resource"]["process.pid"] == os.getpid()
    assert child["trace_id"] == outer.trace_id and child["parent_span_id"] == outer.span_id


def test_trace_ids_do_not_depend_on_or_consume_the_seeded_rng():
    """Seeded runs must get fresh trace ids, and opening spans must not shift the global random stream."""
    import random

    from pixelis.core.tracing import TracedOperation, configure_tracing

    configure_tracing()
    ids = []
    for _ in range(2):
        random.seed(0)
        with TracedOperation("op", "test") as op:
            ids.append(op.trace_id)
        after_span = random.random()
        random.seed(0)
        assert random.random() == after_span
    assert ids[0] != ids[1]
