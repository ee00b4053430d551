"""W3C Trace Context Level 2 conformance of inject / extract / attach_context (traceparent and tracestate).

Cases follow the spec's grammar and the W3C test harness (w3c/trace-context test/test.py); where the spec lets
a parser choose, these pin Pixelis' choice: one invalid or duplicated tracestate member is dropped on its own
(the first occurrence of a key stays) and over 32 members the excess is dropped, long members first.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagators import textmap
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pixelis.core.tracing import (
    TracedOperation,
    W3CTraceContextPropagator,
    attach_context,
    configure_tracing,
    extract,
    inject,
    reset_logging,
    shutdown_tracing,
)

TRACE_ID = "12345678901234567890123456789012"
SPAN_ID = "1234567890123456"
TP = f"00-{TRACE_ID}-{SPAN_ID}-01"
KEYCHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUECHARS = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))


@pytest.fixture(autouse=True)
def _reset():
    reset_logging()
    yield
    reset_logging()
    shutdown_tracing()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exp)])
    return exp


def remote(carrier) -> trace.SpanContext:
    return trace.get_current_span(extract(carrier)).get_span_context()


def members(carrier) -> list[tuple[str, str]]:
    ctx = remote(carrier)
    assert ctx.is_valid, "the traceparent of a tracestate case must be valid"
    return list(ctx.trace_state.items())


def numbered(n: int, start: int = 1) -> list[tuple[str, str]]:
    return [(f"k{i:02d}", f"v{i}") for i in range(start, start + n)]


def header(pairs) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs)


# ---------------------------------------------------------------- traceparent

VALID_TRACEPARENTS = [
    pytest.param(TP, 0x01, id="v00-sampled"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-00", 0x00, id="v00-not-sampled"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-02", 0x02, id="v00-random-flag"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-09", 0x09, id="v00-unknown-flag-bits-still-valid"),
    pytest.param(f" {TP}", 0x01, id="leading-space"),
    pytest.param(f"\t{TP}", 0x01, id="leading-tab"),
    pytest.param(f"{TP} ", 0x01, id="trailing-space"),
    pytest.param(f"{TP}\t", 0x01, id="trailing-tab"),
    pytest.param(f"\t {TP} \t", 0x01, id="ows-both-sides"),
    pytest.param([TP], 0x01, id="one-value-list"),
    pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-01", 0x01, id="future-version-exact"),
    pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like", 0x01, id="future-version-extra-fields"),
    pytest.param(f"01-{TRACE_ID}-{SPAN_ID}-00-", 0x00, id="future-version-empty-extra-field"),
    pytest.param(f"fe-{TRACE_ID}-{SPAN_ID}-ff-x", 0x03, id="future-version-only-known-flags"),
]

INVALID_TRACEPARENTS = [
    pytest.param(f"ff-{TRACE_ID}-{SPAN_ID}-01", id="version-ff"),
    pytest.param(f"ff-{TRACE_ID}-{SPAN_ID}-01-extra", id="version-ff-extra-fields"),
    pytest.param(f".0-{TRACE_ID}-{SPAN_ID}-01", id="version-illegal-char-1"),
    pytest.param(f"0.-{TRACE_ID}-{SPAN_ID}-01", id="version-illegal-char-2"),
    pytest.param(f"CC-{TRACE_ID}-{SPAN_ID}-01", id="version-uppercase"),
    pytest.param(f"000-{TRACE_ID}-{SPAN_ID}-01", id="version-too-long-3"),
    pytest.param(f"0000-{TRACE_ID}-{SPAN_ID}-01", id="version-too-long-4"),
    pytest.param(f"0-{TRACE_ID}-{SPAN_ID}-01", id="version-too-short"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-01.", id="v00-trailing-char"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like", id="v00-extra-fields"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-01-", id="v00-trailing-dash"),
    pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-01.what-the-future-will-be-like", id="future-version-bad-separator"),
    pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-1", id="future-version-too-short"),
    pytest.param(f"cc-{'0' * 32}-{SPAN_ID}-01-x", id="future-version-zero-trace-id"),
    pytest.param(f"00-{'0' * 32}-{SPAN_ID}-01", id="trace-id-all-zero"),
    pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="parent-id-all-zero"),
    pytest.param(f"00-{TRACE_ID.upper().replace('1', 'A')}-{SPAN_ID}-01", id="trace-id-uppercase"),
    pytest.param(f"00-{TRACE_ID}-ABCDEF7890123456-01", id="parent-id-uppercase"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-0A", id="flags-uppercase"),
    pytest.param(f"00-.{TRACE_ID[1:]}-{SPAN_ID}-01", id="trace-id-illegal-char"),
    pytest.param(f"00-{TRACE_ID}3-{SPAN_ID}-01", id="trace-id-too-long"),
    pytest.param(f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01", id="trace-id-too-short"),
    pytest.param(f"00-{TRACE_ID}-.{SPAN_ID[1:]}-01", id="parent-id-illegal-char"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}7-01", id="parent-id-too-long"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01", id="parent-id-too-short"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-.0", id="flags-illegal-char"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-001", id="flags-too-long"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-1", id="flags-too-short"),
    pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-0g", id="flags-not-hex"),
    pytest.param(f"00 -{TRACE_ID}-{SPAN_ID}-01", id="inner-whitespace"),
    pytest.param(f"00_{TRACE_ID}_{SPAN_ID}_01", id="wrong-delimiter"),
    pytest.param("", id="empty"),
    pytest.param(" \t", id="whitespace-only"),
    pytest.param([], id="empty-list"),
    pytest.param([TP, f"00-{'a' * 32}-{SPAN_ID}-01"], id="repeated-header-list"),
    pytest.param([TP, TP], id="repeated-identical-header-list"),
    pytest.param(f"{TP},00-{'a' * 32}-{SPAN_ID}-01", id="repeated-header-comma-joined"),
]


@pytest.mark.parametrize(("traceparent", "flags"), VALID_TRACEPARENTS)
def test_valid_traceparent_gives_the_remote_parent(traceparent, flags):
    ctx = remote({"traceparent": traceparent, "tracestate": "foo=1"})
    assert ctx.is_valid and ctx.is_remote
    assert (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert ctx.trace_flags == flags
    assert dict(ctx.trace_state) == {"foo": "1"}


@pytest.mark.parametrize("traceparent", INVALID_TRACEPARENTS)
def test_invalid_traceparent_gives_no_parent_and_ignores_tracestate(traceparent):
    ctx = extract({"traceparent": traceparent, "tracestate": "foo=1,bar=2"})
    assert trace.get_current_span(ctx) is trace.INVALID_SPAN
    assert not trace.get_current_span(ctx).get_span_context().trace_state
    with attach_context({"traceparent": traceparent, "tracestate": "foo=1"}):
        assert inject() == {}


@pytest.mark.parametrize("name", ["trace-parent", "trace.parent", "trace_parent", "parent"])
def test_misnamed_traceparent_is_not_read(name):
    assert not remote({name: TP}).is_valid


# ---------------------------------------------------------------- tracestate

TRACESTATES = [
    # plain lists, order kept
    pytest.param("foo=1", [("foo", "1")], id="one-member"),
    pytest.param("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")],
                 id="two-members-in-order"),
    pytest.param(f"{KEYCHARS}={VALUECHARS}", [(KEYCHARS, VALUECHARS)], id="all-allowed-chars"),
    pytest.param(f"{KEYCHARS}@a-z0-9_-*/={VALUECHARS}", [(f"{KEYCHARS}@a-z0-9_-*/", VALUECHARS)],
                 id="all-allowed-chars-multi-tenant"),
    pytest.param("foo=a b", [("foo", "a b")], id="value-inner-space"),
    pytest.param("foo= 1", [("foo", " 1")], id="value-leading-space-kept"),
    pytest.param("foo=!~", [("foo", "!~")], id="value-punctuation"),
    # OWS and empty members
    pytest.param("foo=1 \t , \t bar=2, \t baz=3", [("foo", "1"), ("bar", "2"), ("baz", "3")], id="ows-around-commas"),
    pytest.param("foo=1\t \t,\t \tbar=2,\t \tbaz=3", [("foo", "1"), ("bar", "2"), ("baz", "3")], id="ows-tabs"),
    pytest.param(" foo=1", [("foo", "1")], id="leading-space"),
    pytest.param("\tfoo=1", [("foo", "1")], id="leading-tab"),
    pytest.param("foo=1 ", [("foo", "1")], id="trailing-space-not-in-value"),
    pytest.param("foo=1\t", [("foo", "1")], id="trailing-tab"),
    pytest.param("\t foo=1 \t", [("foo", "1")], id="ows-both-sides"),
    pytest.param(",foo=1,,bar=2,", [("foo", "1"), ("bar", "2")], id="empty-members"),
    pytest.param("foo=1, ,\t,bar=2", [("foo", "1"), ("bar", "2")], id="whitespace-only-members"),
    pytest.param("", [], id="empty-header"),
    pytest.param(" , ,", [], id="only-empty-members"),
    # one invalid member among valid ones: only it goes
    pytest.param("foo=1,BAR=2,baz=3", [("foo", "1"), ("baz", "3")], id="uppercase-key-dropped"),
    pytest.param("foo =1,bar=2", [("bar", "2")], id="space-before-equals-dropped"),
    pytest.param("foo= ,bar=2", [("bar", "2")], id="blank-value-dropped"),
    pytest.param("foo.bar=1,bar=2", [("bar", "2")], id="dot-in-key-dropped"),
    pytest.param("1foo=1,bar=2", [("bar", "2")], id="simple-key-starting-with-digit-dropped"),
    pytest.param("_foo=1,bar=2", [("bar", "2")], id="key-starting-with-underscore-dropped"),
    pytest.param("foo@=1,bar=2", [("bar", "2")], id="empty-system-id-dropped"),
    pytest.param("@foo=1,bar=2", [("bar", "2")], id="empty-tenant-id-dropped"),
    pytest.param("foo@@bar=1,bar=2", [("bar", "2")], id="double-at-dropped"),
    pytest.param("foo@bar@baz=1,bar=2", [("bar", "2")], id="two-ats-dropped"),
    pytest.param("foo@1bar=1,bar=2", [("bar", "2")], id="system-id-starting-with-digit-dropped"),
    pytest.param("foo,bar=2", [("bar", "2")], id="no-equals-dropped"),
    pytest.param("=1,bar=2", [("bar", "2")], id="empty-key-dropped"),
    pytest.param("foo=,bar=2", [("bar", "2")], id="empty-value-dropped"),
    pytest.param("foo=a=b,bar=2", [("bar", "2")], id="equals-in-value-dropped"),
    pytest.param("foo=a\tb,bar=2", [("bar", "2")], id="tab-in-value-dropped"),
    pytest.param("foo=\u00e9,bar=2", [("bar", "2")], id="non-ascii-value-dropped"),
    pytest.param("foo=a\x7fb,bar=2", [("bar", "2")], id="del-in-value-dropped"),
    pytest.param("foo=1,bar=\n,baz=3", [("foo", "1"), ("baz", "3")], id="newline-value-dropped"),
    # key and value lengths
    pytest.param(f"{'a' * 256}=1", [("a" * 256, "1")], id="simple-key-256"),
    pytest.param(f"{'a' * 257}=1,bar=2", [("bar", "2")], id="simple-key-257-dropped"),
    pytest.param(f"{'t' * 241}@{'s' * 14}=1", [(f"{'t' * 241}@{'s' * 14}", "1")], id="multi-tenant-max-lengths"),
    pytest.param(f"{'t' * 242}@s=1,bar=2", [("bar", "2")], id="tenant-id-242-dropped"),
    pytest.param(f"t@{'s' * 15}=1,bar=2", [("bar", "2")], id="system-id-15-dropped"),
    pytest.param("0tenant@vendor=1,1@a=2", [("0tenant@vendor", "1"), ("1@a", "2")], id="multi-tenant-digit-tenant"),
    pytest.param(f"foo={'v' * 256}", [("foo", "v" * 256)], id="value-256"),
    pytest.param(f"foo={'v' * 257},bar=2", [("bar", "2")], id="value-257-dropped"),
    pytest.param(f"foo={'v' * 255} ,bar=2", [("foo", "v" * 255), ("bar", "2")], id="value-255-plus-ows"),
    # duplicated keys: the first stays
    pytest.param("foo=1,foo=2", [("foo", "1")], id="duplicate-keeps-first"),
    pytest.param("foo=1,foo=1", [("foo", "1")], id="identical-duplicate"),
    pytest.param("foo=1,bar=2,foo=3,baz=4", [("foo", "1"), ("bar", "2"), ("baz", "4")], id="duplicate-later-dropped"),
    pytest.param("foo=a\tb,foo=2", [("foo", "2")], id="invalid-then-valid-same-key"),
    pytest.param("a@x=1,a@y=2,a@x=3", [("a@x", "1"), ("a@y", "2")], id="multi-tenant-duplicate"),
    # repeated headers, as a list, combined in order
    pytest.param(["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
                 [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"), ("baz", "3")], id="repeated-headers"),
    pytest.param(["foo=1", ""], [("foo", "1")], id="repeated-with-empty-last"),
    pytest.param(["", "foo=1"], [("foo", "1")], id="repeated-with-empty-first"),
    pytest.param(["foo=1", "foo=2"], [("foo", "1")], id="repeated-duplicate-keeps-first"),
    pytest.param(["foo=1,BAD=2", "bar=3"], [("foo", "1"), ("bar", "3")], id="repeated-with-invalid-member"),
    pytest.param(("foo=1", "bar=2"), [("foo", "1"), ("bar", "2")], id="repeated-as-tuple"),
    # member limit
    pytest.param(header(numbered(32)), numbered(32), id="32-members-kept"),
    pytest.param(header(numbered(33)), numbered(32), id="33-members-drop-last"),
    pytest.param(header(numbered(40)), numbered(32), id="40-members-drop-from-end"),
    pytest.param([header(numbered(20)), header(numbered(20, 21))], numbered(32), id="40-members-over-two-headers"),
    pytest.param(header([*numbered(32), ("bad", "x\ty")]), numbered(32), id="invalid-33rd-does-not-count"),
    pytest.param(header([*numbered(32), ("k01", "dup")]), numbered(32), id="duplicate-33rd-does-not-count"),
]


@pytest.mark.parametrize(("tracestate", "expected"), TRACESTATES)
def test_tracestate_members(tracestate, expected):
    assert members({"traceparent": TP, "tracestate": tracestate}) == expected


def test_over_32_members_drops_long_members_first():
    long_value = "x" * 130  # a member over 128 characters
    pairs = [*numbered(10), ("long1", long_value), *numbered(21, 11), ("long2", long_value), ("k99", "v99")]
    assert len(pairs) == 34
    # two over the limit: both long members go, wherever they are, and the short tail stays
    assert members({"traceparent": TP, "tracestate": header(pairs)}) == [*numbered(31), ("k99", "v99")]
    # one over: only the last long member goes
    pairs = [*numbered(10), ("long1", long_value), *numbered(20, 11), ("long2", long_value), ("k99", "v99")]
    assert len(pairs) == 33
    expected = [*numbered(10), ("long1", long_value), *numbered(20, 11), ("k99", "v99")]
    assert members({"traceparent": TP, "tracestate": header(pairs)}) == expected
    # not enough long members: they go, then the rest from the end
    pairs = [("long1", long_value), *numbered(33)]
    assert members({"traceparent": TP, "tracestate": header(pairs)}) == numbered(32)


def test_long_members_are_kept_when_under_the_limit():
    pairs = [(f"k{i}", "x" * 256) for i in range(32)]  # 32 members of 259 characters, 8 KiB in all
    assert members({"traceparent": TP, "tracestate": header(pairs)}) == pairs


def test_missing_tracestate_gives_an_empty_one():
    ctx = remote({"traceparent": TP})
    assert ctx.is_valid and not ctx.trace_state


# ---------------------------------------------------------------- header names and carrier values


@pytest.mark.parametrize(
    "carrier",
    [
        pytest.param({"TraceParent": TP, "TraceState": "foo=1"}, id="title-case"),
        pytest.param({"TrAcEpArEnT": TP, "TrAcEsTaTe": "foo=1"}, id="mixed-case"),
        pytest.param({"TRACEPARENT": TP, "TRACESTATE": "foo=1"}, id="upper-case-env"),
        pytest.param({"traceparent": [TP], "TRACESTATE": ["foo=1"]}, id="lists"),
        pytest.param({"Content-Type": "text/plain", "traceparent": TP, "tracestate": "foo=1"}, id="other-headers"),
    ],
)
def test_header_names_match_in_any_case(carrier):
    ctx = remote(carrier)
    assert f"{ctx.trace_id:032x}" == TRACE_ID and list(ctx.trace_state.items()) == [("foo", "1")]


def test_same_header_under_several_casings_combines_in_order():
    carrier = {"traceparent": TP, "tracestate": "a=1,b=2", "TraceState": ["c=3", "a=9"], "TRACESTATE": "d=4"}
    assert members(carrier) == [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
    # traceparent under two names is a repeated header: invalid
    assert not remote({"traceparent": TP, "TraceParent": f"00-{'a' * 32}-{SPAN_ID}-01"}).is_valid


@pytest.mark.parametrize("name", ["trace-state", "trace.state", "trace_state", "state"])
def test_misnamed_tracestate_is_not_read(name):
    assert members({"traceparent": TP, name: "foo=1"}) == []


# ---------------------------------------------------------------- inject and round trips


@pytest.mark.parametrize(
    "tracestate",
    [
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        "z=1,a=2,m=3",  # not sorted: order is kept
        "tenant@vendor=x,0t@v=y,simple=z",
        header(numbered(32)),
        f"{KEYCHARS}={VALUECHARS},{'t' * 241}@{'s' * 14}={'v' * 256}",
    ],
)
def test_round_trip_preserves_tracestate_order(tracestate):
    with attach_context({"traceparent": TP, "tracestate": tracestate}):
        out = inject()
    assert out == {"traceparent": TP, "tracestate": tracestate}
    assert header(members(out)) == tracestate


def test_inject_normalises_what_extract_accepted():
    # OWS, empty members, invalid and duplicated members are gone; the first of a duplicated key stays.
    carrier = {"TraceParent": [f" {TP}\t"], "tracestate": [" foo=1 , ,BAD=x", "bar= 2 ,foo=3"]}
    with attach_context(carrier):
        assert inject() == {"traceparent": TP, "tracestate": "foo=1,bar= 2"}


@pytest.mark.parametrize(
    ("traceparent", "sent"),
    [
        pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-09", f"00-{TRACE_ID}-{SPAN_ID}-01", id="v00-reserved-flags-zeroed"),
        pytest.param(f"00-{TRACE_ID}-{SPAN_ID}-03", f"00-{TRACE_ID}-{SPAN_ID}-03", id="v00-random-flag-kept"),
        pytest.param(f"cc-{TRACE_ID}-{SPAN_ID}-ff-future", f"00-{TRACE_ID}-{SPAN_ID}-03", id="future-downgraded"),
    ],
)
def test_inject_writes_version_00_with_known_flags(traceparent, sent):
    with attach_context({"traceparent": traceparent}):
        assert inject() == {"traceparent": sent}


def test_inject_adds_to_an_existing_carrier_and_skips_empty_tracestate(exporter):
    with TracedOperation("client", "http") as op:
        headers = inject({"Content-Type": "application/json"})
    assert headers == {"Content-Type": "application/json", "traceparent": f"00-{op.trace_id}-{op.span_id}-01"}
    assert inject() == {}


def test_propagator_is_a_small_subclass_usable_with_otel_getters():
    prop = W3CTraceContextPropagator()
    assert isinstance(prop, TraceContextTextMapPropagator)
    assert prop.fields == {"traceparent", "tracestate"}
    # OTel's own (case-sensitive) getter still works, with the Level 2 tracestate rules
    ctx = prop.extract({"traceparent": TP, "tracestate": "foo=1,foo=2,BAD=3,bar=4"}, getter=textmap.default_getter)
    assert list(trace.get_current_span(ctx).get_span_context().trace_state.items()) == [("foo", "1"), ("bar", "4")]
    out: dict[str, str] = {}
    prop.inject(out, context=ctx)
    assert out == {"traceparent": TP, "tracestate": "foo=1,bar=4"}


# ---------------------------------------------------------------- end to end with real spans


def test_span_under_attach_context_is_a_child_of_the_remote_parent_and_carries_tracestate(exporter):
    carrier = {"TraceParent": TP, "TraceState": ["rojo=00f067aa0ba902b7, FOO=bad", "congo=t61rcWkgMzE,rojo=dup"]}
    with attach_context(carrier) as ctx:
        assert trace.get_current_span(ctx).get_span_context().is_remote
        with TracedOperation("server", "http") as server:
            downstream = inject()
    (span,) = exporter.get_finished_spans()
    assert span.name == "server"
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == SPAN_ID
    assert f"{span.context.trace_id:032x}" == TRACE_ID == server.trace_id
    assert server.span_id != SPAN_ID
    assert list(span.context.trace_state.items()) == [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
    # the next hop: same trace, this span as parent, tracestate unchanged and in order
    assert downstream == {
        "traceparent": f"00-{TRACE_ID}-{server.span_id}-01",
        "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    }


def test_unsampled_remote_parent_is_respected_and_still_propagated(exporter):
    with attach_context({"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00", "tracestate": "foo=1"}):
        with TracedOperation("server", "http") as server:
            downstream = inject()
    assert exporter.get_finished_spans() == ()  # parent-based sampling: not recorded
    assert downstream == {"traceparent": f"00-{TRACE_ID}-{server.span_id}-00", "tracestate": "foo=1"}


def test_span_under_an_invalid_traceparent_starts_a_new_trace_without_tracestate(exporter):
    with attach_context({"traceparent": f"ff-{TRACE_ID}-{SPAN_ID}-01", "tracestate": "foo=1"}):
        with TracedOperation("server", "http") as server:
            downstream = inject()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and not span.context.trace_state
    assert server.trace_id != TRACE_ID
    assert downstream == {"traceparent": f"00-{server.trace_id}-{server.span_id}-01"}
