"""Logging and tracing on OpenTelemetry.

Every log line carries the current trace id, span id and Pixelis component; every request, rollout step
and tool call can open a span with :class:`TracedOperation`. Context crosses threads
(:func:`submit_with_context`), processes and HTTP (:func:`inject` / :func:`extract`, W3C ``traceparent``)
and ``fork`` (:func:`reinit_after_fork`).

Importing this module configures nothing: call :func:`setup_logging` and :func:`configure_tracing`
(without the latter, the first span builds a provider that exports nothing, so log lines still get ids).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import datetime
import functools
import inspect
import json
import logging
import numbers
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators import textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "ColoredTracingFormatter",
    "JsonFormatter",
    "JsonlSpanExporter",
    "TraceContext",
    "TraceContextFilter",
    "TracedOperation",
    "TracingFormatter",
    "W3CTraceContextPropagator",
    "attach_context",
    "configure_tracing",
    "extract",
    "get_tracer",
    "inject",
    "reinit_after_fork",
    "reset_logging",
    "setup_logging",
    "shutdown_tracing",
    "submit_with_context",
]

TRACER_NAME = "pixelis"
LOGGER_NAME = "pixelis"
EXPORTERS = ("none", "console", "jsonl", "otlp")
LOG_FORMATS = ("text", "color", "json")
LOG_SCOPES = ("root", "pixelis")
TRACE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - [%(trace_id)s|%(component)s] - %(message)s"
PLAIN_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
MAX_ATTRIBUTE_CHARS = 1000

_component: contextvars.ContextVar[str | None] = contextvars.ContextVar("pixelis_component", default=None)
_metadata: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("pixelis_metadata", default={})


# --------------------------------------------------------------------------------------------------
# Current context
# --------------------------------------------------------------------------------------------------


def _current_ids() -> tuple[str | None, str | None]:
    # is_valid, not is_recording: an unsampled span still has real ids worth printing.
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


@dataclasses.dataclass(frozen=True)
class TraceContext:
    """A view of the current trace: ids, Pixelis component and metadata of the enclosing operations."""

    trace_id: str | None = None
    span_id: str | None = None
    component: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    context: otel_context.Context | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def current(cls) -> TraceContext:
        trace_id, span_id = _current_ids()
        return cls(trace_id, span_id, _component.get(), dict(_metadata.get()), otel_context.get_current())

    def create_child_context(self, component: str | None = None, **metadata: Any) -> TraceContext:
        """Same trace (and parent span), another component and merged metadata: hand it to a sub-component."""
        return dataclasses.replace(
            self, component=component or self.component, metadata={**self.metadata, **metadata}
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[TraceContext]:
        """Make this context current for a block (e.g. in a thread that received it)."""
        token = otel_context.attach(self.context) if self.context is not None else None
        comp_token = _component.set(self.component)
        meta_token = _metadata.set(dict(self.metadata))
        try:
            yield self
        finally:
            _metadata.reset(meta_token)
            _component.reset(comp_token)
            if token is not None:
                otel_context.detach(token)


# --------------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------------


def _annotate(record: logging.LogRecord) -> None:
    """Set trace_id/span_id/component on a record unless already set (e.g. by a QueueHandler's filter)."""
    if not hasattr(record, "trace_id"):
        trace_id, span_id = _current_ids()
        record.trace_id = trace_id or "-"
        record.span_id = span_id or "-"
    if not hasattr(record, "component"):
        record.component = _component.get() or "-"


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` (hex) and ``component`` to each record; ``-`` outside a span."""

    def filter(self, record: logging.LogRecord) -> bool:
        _annotate(record)
        return True


class TracingFormatter(logging.Formatter):
    """Plain text with ``[trace_id|component]``."""

    def __init__(self, fmt: str = TRACE_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        _annotate(record)
        return super().format(record)


class ColoredTracingFormatter(TracingFormatter):
    """:class:`TracingFormatter` with ANSI colours on the level name (for terminals only)."""

    COLORS = {
        "DEBUG": "\033[36m",
        "INFO": "\033[32m",
        "WARNING": "\033[33m",
        "ERROR": "\033[31m",
        "CRITICAL": "\033[1;31m",
    }
    RESET = "\033[0m"

    def format(self, record: logging.LogRecord) -> str:
        color = self.COLORS.get(record.levelname)
        if color is None:
            return super().format(record)
        # A copy: the same record goes on to other handlers (a log file must never get ANSI codes).
        colored = logging.makeLogRecord(record.__dict__)
        colored.levelname = f"{color}{record.levelname}{self.RESET}"
        return super().format(colored)


_RECORD_FIELDS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_TRACE_FIELDS = {"trace_id", "span_id", "component"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace_id, span_id, component, extras."""

    def __init__(self, include_trace: bool = True) -> None:
        super().__init__()
        self.include_trace = include_trace

    def format(self, record: logging.LogRecord) -> str:
        _annotate(record)
        ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.include_trace:
            for key in ("trace_id", "span_id", "component"):
                value = getattr(record, key)
                out[key] = None if value == "-" else value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key in _TRACE_FIELDS or key in out:
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            out[key] = value
        return json.dumps(out, ensure_ascii=False)


@dataclasses.dataclass
class _Installed:
    """What :func:`setup_logging` changed: its handlers, and the logger's level and propagation before."""

    logger: logging.Logger
    level: int
    propagate: bool
    handlers: list[logging.Handler] = dataclasses.field(default_factory=list)


_installed: _Installed | None = None


def _formatter(fmt: str, use_tracing: bool) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(include_trace=use_tracing)
    cls = ColoredTracingFormatter if fmt == "color" else TracingFormatter
    return cls(TRACE_FORMAT if use_tracing else PLAIN_FORMAT)


def reset_logging() -> None:
    """Undo :func:`setup_logging`: remove its handlers, restore the level and propagation it changed."""
    global _installed
    if _installed is None:
        return
    logger = _installed.logger
    for handler in _installed.handlers:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(_installed.level)
    logger.propagate = _installed.propagate
    _installed = None


def setup_logging(
    level: str | int = "INFO",
    log_file: str | os.PathLike[str] | None = None,
    use_tracing: bool = True,
    use_colors: bool = False,
    fmt: str = "text",
    scope: str = "root",
) -> logging.Logger:
    """Configure logging: a console handler (stderr) and optionally a file handler; returns the ``pixelis`` logger.

    ``scope="root"`` (the default, for applications and the CLI) puts the handlers and ``level`` on the root
    logger, so the application's own loggers print in the same format as ``pixelis`` ones; handlers that others
    put on the root logger are left alone. ``scope="pixelis"`` (for libraries embedding Pixelis) configures only
    the ``pixelis`` logger and stops its records propagating, so the root logger is untouched and root handlers
    do not print them twice.

    Re-callable: each call first undoes the previous one (:func:`reset_logging`). ``fmt`` is text, color or
    json; ``use_colors`` turns text into color on the console. The file gets json when ``fmt == "json"``,
    plain text otherwise (never colours); it is appended to. ``use_tracing`` adds the trace part.
    """
    global _installed
    if fmt not in LOG_FORMATS:
        raise ValueError(f"setup_logging: fmt must be one of {LOG_FORMATS}, got {fmt!r}")
    if scope not in LOG_SCOPES:
        raise ValueError(f"setup_logging: scope must be one of {LOG_SCOPES}, got {scope!r}")
    reset_logging()
    target = logging.getLogger(LOGGER_NAME if scope == "pixelis" else None)
    _installed = _Installed(target, target.level, target.propagate)
    target.setLevel(level.upper() if isinstance(level, str) else level)
    if scope == "pixelis":
        target.propagate = False

    console_fmt = "color" if use_colors and fmt == "text" else fmt
    handlers: list[tuple[logging.Handler, str]] = [(logging.StreamHandler(), console_fmt)]
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append((logging.FileHandler(path, encoding="utf-8"), "json" if fmt == "json" else "text"))
    for handler, handler_fmt in handlers:
        handler.setFormatter(_formatter(handler_fmt, use_tracing))
        if use_tracing:
            handler.addFilter(TraceContextFilter())
        target.addHandler(handler)
        _installed.handlers.append(handler)
    return logging.getLogger(LOGGER_NAME)


# --------------------------------------------------------------------------------------------------
# Tracer provider
# --------------------------------------------------------------------------------------------------


def _span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "name": span.name,
        "trace_id": trace.format_trace_id(ctx.trace_id),
        "span_id": trace.format_span_id(ctx.span_id),
        "parent_span_id": trace.format_span_id(span.parent.span_id) if span.parent else None,
        "kind": span.kind.name,
        "start_ns": start,
        "end_ns": end,
        "duration_ms": (end - start) / 1e6,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "ts_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in span.events
        ],
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "resource": dict(span.resource.attributes),
    }


class JsonlSpanExporter(SpanExporter):
    """Appends one JSON line per finished span to a file.

    Hand-written because the OpenTelemetry SDK has no file exporter (only console, OTLP and in-memory).
    The file is opened with O_APPEND and each line is one ``write``: processes forked from one parent
    can share it without interleaving lines.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [(json.dumps(_span_to_dict(s), default=str) + "\n").encode() for s in spans]
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            for line in lines:
                os.write(self._fd, line)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclasses.dataclass
class _Settings:
    exporter: str
    endpoint: str | None
    sample_ratio: float
    run_dir: Path | None
    service_name: str
    extra_processors: tuple[SpanProcessor, ...]


_lock = threading.RLock()
_provider: TracerProvider | None = None
_settings: _Settings | None = None
_hooks_registered = False


def _otlp_processor(endpoint: str | None) -> SpanProcessor:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # A bare collector address ("http://host:4318") gets the standard OTLP/HTTP traces path.
    if endpoint is not None and urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))


class EntropyIdGenerator(IdGenerator):
    """Trace and span ids from the OS entropy pool.

    The SDK's default generator draws from the global `random` module, which `set_global_seed` seeds: every
    seeded run would then reuse the same trace ids, and tracing would consume the RNG stream training uses.
    """

    def generate_span_id(self) -> int:
        return secrets.randbits(64) or 1

    def generate_trace_id(self) -> int:
        return secrets.randbits(128) or 1


def _build_provider(s: _Settings) -> TracerProvider:
    resource = Resource.create({"service.name": s.service_name, "process.pid": os.getpid()})
    # shutdown_on_exit=False: our own atexit hook shuts down whichever provider is current, and a provider
    # dropped after fork must not flush the parent's spans again from the child.
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(s.sample_ratio)), resource=resource, shutdown_on_exit=False,
        id_generator=EntropyIdGenerator(),
    )
    # Console and jsonl export synchronously (cheap, nothing lost at os._exit); OTLP goes over the network.
    if s.exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif s.exporter == "jsonl":
        assert s.run_dir is not None
        provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(s.run_dir / "traces.jsonl")))
    elif s.exporter == "otlp":
        provider.add_span_processor(_otlp_processor(s.endpoint))
    for processor in s.extra_processors:
        provider.add_span_processor(processor)
    return provider


class _FollowingTracer(trace.Tracer):
    """Forwards to the tracer of the provider that is current when a span starts."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._args, self._kwargs = args, kwargs

    def _target(self) -> trace.Tracer:
        return _current_provider().get_tracer(*self._args, **self._kwargs)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._target().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().start_as_current_span(*args, **kwargs)


class _FollowingTracerProvider(trace.TracerProvider):
    """The global provider. OpenTelemetry lets the global be set only once, while configure_tracing can
    be called again; third-party instrumentation using ``trace.get_tracer`` follows the reconfiguration."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _FollowingTracer(args, kwargs)


def configure_tracing(
    exporter: str = "none",
    endpoint: str | None = None,
    sample_ratio: float = 1.0,
    run_dir: str | os.PathLike[str] | None = None,
    service_name: str = "pixelis",
    extra_processors: Sequence[SpanProcessor] = (),
) -> TracerProvider:
    """Build (or rebuild) the Pixelis tracer provider and return it.

    exporter: none | console | jsonl (``run_dir/traces.jsonl``) | otlp (OTLP http/protobuf to ``endpoint``,
    or the OTEL_EXPORTER_OTLP_* environment when None). Sampling is parent-based with ``sample_ratio`` for
    root spans. ``extra_processors`` are added too (tests attach an in-memory exporter this way).
    A previous provider is flushed and shut down.
    """
    global _provider, _settings, _hooks_registered
    if exporter not in EXPORTERS:
        raise ValueError(f"configure_tracing: exporter must be one of {EXPORTERS}, got {exporter!r}")
    if not 0.0 <= sample_ratio <= 1.0:
        raise ValueError(f"configure_tracing: sample_ratio must be in [0, 1], got {sample_ratio}")
    if exporter == "jsonl" and run_dir is None:
        raise ValueError("configure_tracing: exporter 'jsonl' needs run_dir (traces go to run_dir/traces.jsonl)")
    settings = _Settings(
        exporter, endpoint, float(sample_ratio), Path(run_dir) if run_dir is not None else None,
        service_name, tuple(extra_processors),
    )
    new = _build_provider(settings)
    with _lock:
        old, _provider, _settings = _provider, new, settings
        if not _hooks_registered:
            _hooks_registered = True
            atexit.register(shutdown_tracing)
            os.register_at_fork(after_in_child=reinit_after_fork)
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(_FollowingTracerProvider())
    if old is not None:
        old.shutdown()
    return new


def _current_provider() -> TracerProvider:
    """The current provider; a default one that exports nothing if none is configured yet."""
    provider = _provider
    if provider is not None:
        return provider
    with _lock:
        return _provider or configure_tracing()


def get_tracer() -> trace.Tracer:
    """The ``pixelis`` tracer of the current provider."""
    return _current_provider().get_tracer(TRACER_NAME)


def shutdown_tracing() -> None:
    """Flush and shut down the current provider; a later span starts a fresh default one."""
    global _provider, _settings
    with _lock:
        provider, _provider, _settings = _provider, None, None
    if provider is not None:
        provider.shutdown()


def reinit_after_fork() -> None:
    """In a forked child: rebuild the provider with the parent's settings.

    Registered with ``os.register_at_fork``. Exporter threads and network sessions (BatchSpanProcessor,
    OTLP's HTTP connection pool) must not be shared with the parent; the parent's provider is dropped
    without shutdown so the child never re-exports the parent's queued spans. A child that ends with
    ``os._exit`` (multiprocessing) should call :func:`shutdown_tracing` first to flush batched spans.
    """
    global _lock, _provider
    _lock = threading.RLock()  # may have been held by another parent thread at fork time
    if _settings is not None:
        _provider = _build_provider(_settings)


# --------------------------------------------------------------------------------------------------
# Spans
# --------------------------------------------------------------------------------------------------

_Attr = str | bool | int | float


def _attribute_value(value: Any) -> Any:
    """An OTel-compatible attribute value: a primitive, a homogeneous list of primitives, else JSON text."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)) and value:
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds.pop() in (str, bool, int, float):
            return list(value)
    return json.dumps(value, default=str)[:MAX_ATTRIBUTE_CHARS]


def _flatten(items: Mapping[str, Any], prefix: str = "") -> dict[str, _Attr | list[_Attr]]:
    """Nested mappings become dotted keys; None values are dropped (OTel rejects them)."""
    out: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif value is not None:
            out[name] = _attribute_value(value)
    return out


class TracedOperation:
    """A span around a block or a function, child of the current span.

    Sets ``pixelis.component`` and the metadata as attributes, ``duration_ms`` at exit; an exception is
    recorded (status ERROR) and re-raised. Log lines inside carry the span's trace id and the component.
    Also a decorator: ``@TracedOperation("name", "component")`` on sync or async functions.
    """

    def __init__(self, name: str, component: str, metadata: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.component = component
        self.metadata = dict(metadata or {})
        self.span: trace.Span = trace.INVALID_SPAN
        self._active: contextlib.AbstractContextManager[TracedOperation] = contextlib.nullcontext(self)
        self._start_ns = 0

    @property
    def trace_id(self) -> str | None:
        ctx = self.span.get_span_context()
        return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else None

    @property
    def span_id(self) -> str | None:
        ctx = self.span.get_span_context()
        return trace.format_span_id(ctx.span_id) if ctx.is_valid else None

    def set_attribute(self, key: str, value: Any) -> None:
        for k, v in _flatten({key: value}).items():
            self.span.set_attribute(k, v)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.span.add_event(name, _flatten(attributes or {}))

    def start(self) -> TracedOperation:
        """Open the span as a child of the current one without making it current.

        For operations that interleave (the agent's batched rollouts): `activate()` makes it current for a block,
        `end()` closes it. ``with op:`` does all three.
        """
        attributes = {"pixelis.component": self.component, **_flatten(self.metadata)}
        self.span = get_tracer().start_span(self.name, attributes=attributes)
        self._start_ns = time.perf_counter_ns()
        return self

    @contextlib.contextmanager
    def activate(self) -> Iterator[TracedOperation]:
        """Make this started span current for a block (children nest under it, log lines carry its ids)."""
        tokens = (
            otel_context.attach(trace.set_span_in_context(self.span)),
            _component.set(self.component),
            _metadata.set({**_metadata.get(), **self.metadata}),
        )
        try:
            yield self
        finally:
            ctx_token, comp_token, meta_token = tokens
            _metadata.reset(meta_token)
            _component.reset(comp_token)
            otel_context.detach(ctx_token)

    def end(self, exc: BaseException | None = None) -> None:
        """Close the span, recording `exc` (status ERROR) when given."""
        self.span.set_attribute("duration_ms", (time.perf_counter_ns() - self._start_ns) / 1e6)
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end()

    def __enter__(self) -> TracedOperation:
        self.start()
        self._active = self.activate()
        self._active.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._active.__exit__(None, None, None)
        self.end(exc)
        return False

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        # Each call opens its own span: a fresh TracedOperation per call keeps this one reusable.
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with TracedOperation(self.name, self.component, self.metadata):
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with TracedOperation(self.name, self.component, self.metadata):
                return fn(*args, **kwargs)

        return wrapper


# --------------------------------------------------------------------------------------------------
# Propagation
# --------------------------------------------------------------------------------------------------


# W3C Trace Context Level 2 (https://www.w3.org/TR/trace-context-2/), traceparent and tracestate grammar.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_CHARS = 55  # a version-00 header; later versions start with the same 55 characters
_KNOWN_FLAGS = 0x03  # sampled (0x01) and random (0x02); other bits are reserved and sent as zero
_TRACESTATE_KEY = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}"  # simple-key
    r"|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"  # multi-tenant-key: tenant-id@system-id
)
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TRACESTATE_MAX_MEMBERS = 32
_TRACESTATE_LONG_MEMBER = 128  # when over the member limit, members longer than this are dropped first
_OWS = " \t"

Carrier = Mapping[str, str | Sequence[str]]
_log = logging.getLogger(__name__)


class _HeaderGetter(textmap.Getter[Carrier]):
    """Header names in any case; a value is a string or the list of a repeated header's values, kept in order."""

    def get(self, carrier: Carrier, key: str) -> list[str] | None:
        key = key.lower()
        found: list[str] = []
        for name, value in carrier.items():
            if isinstance(name, str) and name.lower() == key:
                found.extend([value] if isinstance(value, str) else value)
        return found or None

    def keys(self, carrier: Carrier) -> list[str]:
        return list(carrier.keys())


_header_getter = _HeaderGetter()


def _parse_traceparent(values: Sequence[str] | None) -> trace.SpanContext | None:
    """The remote parent in ``traceparent``; None when absent or invalid (the trace restarts)."""
    if not values:
        return None
    # A repeated field combines with "," (RFC 9110 5.3), which no version allows: two traceparents are invalid.
    header = ",".join(values).strip(_OWS)
    if header[:2] == "00":
        match, flags_mask = _TRACEPARENT.fullmatch(header), 0xFF
    elif header[_TRACEPARENT_CHARS:_TRACEPARENT_CHARS + 1] in ("", "-"):
        # A later version: read the version-00 fields, then only "-" (unknown fields) or the end may follow.
        match, flags_mask = _TRACEPARENT.fullmatch(header[:_TRACEPARENT_CHARS]), _KNOWN_FLAGS
    else:
        return None
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(int(flags, 16) & flags_mask)
    )


def _limit_members(members: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """At most 32 members: over that, drop members longer than 128 characters (last first), then from the end."""
    excess = len(members) - _TRACESTATE_MAX_MEMBERS
    if excess <= 0:
        return members
    long_members = [i for i, (k, v) in enumerate(members) if len(k) + 1 + len(v) > _TRACESTATE_LONG_MEMBER]
    dropped = set(long_members[::-1][:excess])
    return [m for i, m in enumerate(members) if i not in dropped][:_TRACESTATE_MAX_MEMBERS]


def _parse_tracestate(values: Sequence[str] | None) -> trace.TraceState:
    """The valid ``tracestate`` members of all header values, in order; each invalid one is dropped on its own."""
    members: dict[str, str] = {}
    for header in values or ():
        for member in header.split(","):
            member = member.strip(_OWS)
            if not member:  # empty and whitespace-only members are allowed
                continue
            key, eq, value = member.partition("=")
            if not eq or _TRACESTATE_KEY.fullmatch(key) is None or _TRACESTATE_VALUE.fullmatch(value) is None:
                _log.debug("tracestate: dropped invalid member %r", member)
            elif key in members:
                _log.debug("tracestate: dropped duplicate key %r", key)  # the first one stays
            else:
                members[key] = value
    return trace.TraceState(_limit_members(list(members.items())))


class W3CTraceContextPropagator(TraceContextTextMapPropagator):
    """OpenTelemetry's W3C propagator, held to Trace Context Level 2.

    ``traceparent``: version 00 exactly (OWS around it allowed), later versions by their first 55 characters,
    ff, zero ids, uppercase and repeated headers invalid; invalid means no parent and no tracestate.
    ``tracestate``: repeated headers combine in order; invalid members and later duplicates of a key are
    dropped one by one; at most 32 members are kept. Header names match in any case by default.
    """

    # OTel-python drops the whole tracestate for one invalid or duplicated member or >32 members, and reads
    # only the first of repeated traceparents.

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: otel_context.Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = _header_getter,  # type: ignore[assignment]
    ) -> otel_context.Context:
        context = otel_context.Context() if context is None else context
        parent = _parse_traceparent(getter.get(carrier, self._TRACEPARENT_HEADER_NAME))
        if parent is None:
            return context
        state = _parse_tracestate(getter.get(carrier, self._TRACESTATE_HEADER_NAME))
        remote = trace.SpanContext(
            parent.trace_id, parent.span_id, is_remote=True, trace_flags=parent.trace_flags, trace_state=state
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(remote), context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: otel_context.Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        ctx = trace.get_current_span(context).get_span_context()
        if not ctx.is_valid:
            return
        flags = ctx.trace_flags & _KNOWN_FLAGS
        traceparent = f"00-{trace.format_trace_id(ctx.trace_id)}-{trace.format_span_id(ctx.span_id)}-{flags:02x}"
        setter.set(carrier, self._TRACEPARENT_HEADER_NAME, traceparent)
        if ctx.trace_state:
            setter.set(carrier, self._TRACESTATE_HEADER_NAME, ctx.trace_state.to_header())


_propagator = W3CTraceContextPropagator()


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """Write the current context (W3C ``traceparent`` and ``tracestate``) into ``carrier`` (HTTP headers, env, ...)."""
    carrier = {} if carrier is None else carrier
    _propagator.inject(carrier)
    return carrier


def extract(carrier: Carrier) -> otel_context.Context:
    """Read a W3C context from ``carrier``.

    Header names match in any case (a ``TRACEPARENT`` environment variable works); a value is a string or a list
    of the values of a repeated header. An invalid ``traceparent`` gives an empty context (a new trace).
    """
    return _propagator.extract(carrier)


@contextlib.contextmanager
def attach_context(carrier: Carrier) -> Iterator[otel_context.Context]:
    """Make the context extracted from ``carrier`` current for a block."""
    ctx = extract(carrier)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


def submit_with_context(executor: Executor, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """``executor.submit`` that runs ``fn`` in a copy of the caller's context (span, component)."""
    return executor.submit(contextvars.copy_context().run, fn, *args, **kwargs)
