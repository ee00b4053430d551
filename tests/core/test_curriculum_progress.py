"""The learning_progress curriculum on scripted per-pool metric sequences: weights, floor, patience, cooldown,
tolerance, persistence, records and config errors."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import asdict

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from pixelis.core.config import ConfigError, load_config
from pixelis.core.curriculum import CurriculumConfig, CurriculumManager, CurriculumStage

FLOOR = 0.1 / 3  # exploration / number of pools, with the default exploration 0.1


def lp(window: int = 1, patience: int = 1, cooldown: int = 0, **kw) -> CurriculumManager:
    return CurriculumManager(CurriculumConfig(strategy="learning_progress", smoothing_window_size=window,
                                              patience_cycles=patience, cooldown_cycles=cooldown, **kw))  # fmt: skip


def feed(manager: CurriculumManager, rows: list[dict[str, float]], steps: int = 25):
    """One evaluation per row of per-pool accuracies, `steps` training steps before each; the decisions."""
    out = []
    for row in rows:
        manager.on_train_step(steps)
        metrics = {f"accuracy/{pool}": value for pool, value in row.items()}
        out.append(manager.update({"accuracy": sum(row.values()) / len(row), **metrics}, step=manager.global_step))
    return out


def ramp(n: int, simple: float = 0.0, medium: float = 0.0, hard: float = 0.0, start: int = 0):
    """`n` rows where each pool's accuracy starts at 0.2 and rises by its slope per evaluation (0: flat)."""
    return [{"simple": 0.2 + simple * k, "medium": 0.2 + medium * k, "hard": 0.2 + hard * k}
            for k in range(start, start + n)]  # fmt: skip


def test_starts_from_the_first_stage_mixture_with_the_floor():
    m = lp()
    assert m.mixture == pytest.approx({"simple": 0.9 + FLOOR, "medium": FLOOR, "hard": FLOOR})
    m = lp(stages=[CurriculumStage(name="start", mixture={"simple": 1, "medium": 1})], exploration=0.3)
    assert m.mixture == pytest.approx({"simple": 0.35 + 0.1, "medium": 0.35 + 0.1, "hard": 0.1})


def test_weights_follow_the_fastest_rising_pool_and_a_flat_pool_gets_the_floor():
    m = lp()
    first, second = feed(m, ramp(2, medium=0.1, hard=0.02))
    assert first.action == "hold" and "LP simple=n/a (0/1)" in first.reason
    assert second.action == "reweight"
    # LP = (0, 0.1, 0.02): w = 0.9 * LP / 0.12 + 0.1 / 3
    expected = {"simple": FLOOR, "medium": 0.9 * 0.1 / 0.12 + FLOOR, "hard": 0.9 * 0.02 / 0.12 + FLOOR}
    assert m.mixture == pytest.approx(expected)
    assert second.mixture == m.mixture and sum(m.mixture.values()) == pytest.approx(1)
    assert "medium=0.1000 (1/1)" in second.reason and "simple=0.0000 (1/1)" in second.reason


def test_a_falling_pool_counts_by_its_absolute_slope():
    m = lp()
    feed(m, [{"simple": 0.8, "medium": 0.5, "hard": 0.5}, {"simple": 0.6, "medium": 0.5, "hard": 0.6}])
    assert m.mixture == pytest.approx({"simple": 0.6 + FLOOR, "medium": FLOOR, "hard": 0.3 + FLOOR})


@pytest.mark.parametrize("window,patience", [(1, 1), (3, 2), (2, 3)])
def test_first_reweight_needs_a_full_window_a_previous_value_and_patience(window, patience):
    m = lp(window=window, patience=patience)
    decisions = feed(m, ramp(8, medium=0.05))
    actions = [d.action for d in decisions]
    assert actions.index("reweight") == window + patience - 1
    assert set(actions[: window + patience - 1]) == {"hold"}
    assert [d.patience for d in decisions[: window + patience]] == [0] * window + list(range(1, patience + 1))
    # A linear rise keeps the same slope after smoothing: medium gets all but the floor of the other pools.
    assert m.mixture == pytest.approx({"simple": FLOOR, "medium": 0.9 + FLOOR, "hard": FLOOR})


def test_a_pool_never_fed_keeps_only_the_floor_and_missing_evaluations_are_spanned():
    m = lp()
    decisions = feed(m, [{"simple": 0.5, "medium": 0.2}, {"simple": 0.5, "medium": 0.4}])
    assert decisions[-1].action == "reweight" and "hard=n/a (0/1)" in decisions[-1].reason
    assert m.mixture == pytest.approx({"simple": FLOOR, "medium": 0.9 + FLOOR, "hard": FLOOR})
    # hard: 0.1, (missing, NaN), 0.7 -> one slope of 0.6 over the gap; medium flat -> hard takes over.
    m.update({"accuracy/hard": 0.1, "accuracy/medium": 0.4}, step=1)
    m.update({"accuracy/hard": float("nan"), "accuracy/medium": 0.4}, step=2)
    d = m.update({"accuracy/hard": 0.7, "accuracy/medium": 0.4}, step=3)
    assert d.action == "reweight" and "hard=0.6000 (1/1)" in d.reason
    assert m.mixture == pytest.approx({"simple": FLOOR, "medium": FLOOR, "hard": 0.9 + FLOOR})


def test_no_progress_anywhere_holds_the_current_weights():
    m = lp(window=2, patience=1)
    start = m.mixture
    decisions = feed(m, [{"simple": 0.4, "medium": 0.3, "hard": 0.1}] * 6)
    assert {d.action for d in decisions} == {"hold"}
    assert decisions[-1].reason.startswith("no learning progress to weight by (LP simple=0.0000 (1/1)")
    assert m.mixture == start


@pytest.mark.parametrize("cooldown", [1, 3])
def test_cooldown_holds_the_weights_but_keeps_measuring(cooldown):
    m = lp(cooldown=cooldown)
    assert feed(m, ramp(2, medium=0.1))[-1].action == "reweight"
    after = m.mixture
    # Now hard rises and medium is flat: nothing may change during cooldown ...
    rows = [{"simple": 0.2, "medium": 0.3, "hard": 0.2 + 0.1 * k} for k in range(1, cooldown + 2)]
    during = feed(m, rows[:cooldown])
    assert [d.reason for d in during] == [f"cooldown ({k} left)" for k in range(cooldown - 1, -1, -1)]
    assert all(d.mixture == after for d in during)
    # ... but the slopes are still measured, and the first evaluation after it acts on them.
    assert m.state_dict()["progress"]["progress"] == pytest.approx({"simple": 0, "medium": 0, "hard": 0.1})
    last = feed(m, rows[cooldown:])[0]
    assert last.action == "reweight" and last.cooldown_left == cooldown
    assert m.mixture == pytest.approx({"simple": FLOOR, "medium": FLOOR, "hard": 0.9 + FLOOR})


def test_changes_within_reweight_tolerance_are_holds_that_keep_the_weights():
    m = lp(reweight_tolerance=0.05)
    feed(m, ramp(2, medium=0.1, hard=0.02))
    weights = m.mixture
    same = feed(m, ramp(1, medium=0.1, hard=0.02, start=2))[0]
    assert same.action == "hold" and same.reason.startswith("change 0.0000 within reweight_tolerance 0.05")
    # hard's slope 0.02 -> 0.025: medium's target 0.75 -> 0.72 (+ floor), a change of 0.03 <= 0.05.
    small = m.update({"accuracy/simple": 0.2, "accuracy/medium": 0.5, "accuracy/hard": 0.265}, step=1)
    assert small.action == "hold" and "change 0.0300 within" in small.reason
    assert m.mixture == weights
    strict = lp(reweight_tolerance=0.01)
    feed(strict, ramp(2, medium=0.1, hard=0.02))
    strict.update({"accuracy/simple": 0.2, "accuracy/medium": 0.4, "accuracy/hard": 0.245}, step=1)
    assert strict.history[-1].action == "reweight"


def test_sample_difficulty_follows_the_weights():
    m = lp()
    feed(m, ramp(2, medium=0.1, hard=0.02))
    rng, n = random.Random(0), 30000
    counts = Counter(m.sample_difficulty(rng) for _ in range(n))
    for pool, weight in m.mixture.items():
        assert abs(counts[pool] / n - weight) < 0.015


def test_state_roundtrip_mid_cooldown_continues_identically():
    def make():
        return lp(window=2, patience=2, cooldown=2)

    original = make()
    decisions = feed(original, ramp(4, medium=0.1, hard=0.03))
    assert [d.action for d in decisions] == ["hold", "hold", "hold", "reweight"]
    feed(original, ramp(1, medium=0.1, hard=0.03, start=4))  # one cooldown evaluation used, one left
    state = json.loads(json.dumps(original.state_dict()))
    snapshot = json.dumps(state)
    assert state["strategy"] == "learning_progress" and state["progress"]["weights"] == original.mixture
    restored = make()
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict() and restored.mixture == original.mixture

    further = ([{"simple": 0.2, "medium": 0.7, "hard": 0.2 + 0.1 * k} for k in range(4)]
               + [{"simple": 0.2 + 0.05 * k, "medium": 0.7, "hard": 0.5} for k in range(5)])  # fmt: skip
    a = [asdict(d) for d in feed(original, further)]
    b = [asdict(d) for d in feed(restored, further)]
    assert a == b
    assert [d["action"] for d in a].count("reweight") >= 2
    assert restored.state_dict() == original.state_dict()
    assert json.dumps(state) == snapshot, "the restored manager must not share the loaded dict"


def test_load_state_dict_refuses_another_strategy_and_reads_old_staged_snapshots():
    staged, progress = CurriculumManager(CurriculumConfig()), lp()
    with pytest.raises(ValueError, match="resume with the same curriculum.strategy"):
        staged.load_state_dict(progress.state_dict())
    with pytest.raises(ValueError, match="'staged' but the config has 'learning_progress'"):
        progress.load_state_dict(staged.state_dict())
    old = staged.state_dict()
    del old["strategy"], old["progress"]
    CurriculumManager(CurriculumConfig()).load_state_dict(old)


def test_decisions_logged_to_jsonl_log_and_span(tmp_path, caplog):
    log_path = tmp_path / "run" / "curriculum.jsonl"
    m = CurriculumManager(CurriculumConfig(strategy="learning_progress", smoothing_window_size=1, patience_cycles=1,
                                           cooldown_cycles=1), log_path=log_path)  # fmt: skip
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.INFO, logger="pixelis.core.curriculum"):
        with provider.get_tracer("test").start_as_current_span("eval"):
            feed(m, ramp(3, hard=0.1))
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["action"] for r in rows] == ["hold", "reweight", "hold"]
    assert rows == [asdict(d) for d in m.history]
    assert rows[0]["mixture"]["simple"] == pytest.approx(0.9 + FLOOR)
    assert rows[1]["mixture"]["hard"] == pytest.approx(0.9 + FLOOR) and rows[1]["cooldown_left"] == 1
    assert rows[1]["smoothed"]["accuracy/hard"] == pytest.approx(0.3) and rows[1]["stage"] == "simple"
    assert sum("action=reweight stage=simple" in r.getMessage() for r in caplog.records) == 1
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "curriculum.decision"]
    assert [e.attributes["curriculum.action"] for e in events] == ["hold", "reweight", "hold"]
    assert events[1].attributes["curriculum.mixture.hard"] == pytest.approx(0.9 + FLOOR)
    assert events[1].attributes["curriculum.smoothed.accuracy/hard"] == pytest.approx(0.3)


def test_plot_writes_png(tmp_path):
    m = lp(cooldown=1)
    feed(m, ramp(4, medium=0.1) + ramp(4, hard=0.1))
    assert "reweight" in {d.action for d in m.history}
    data = m.plot(tmp_path / "curriculum.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_disabled_uses_the_final_stage_mixture():
    m = CurriculumManager(CurriculumConfig(strategy="learning_progress", enabled=False))
    assert m.mixture == {"simple": pytest.approx(0.1), "medium": pytest.approx(0.3), "hard": pytest.approx(0.6)}
    assert {d.reason for d in feed(m, ramp(4, medium=0.2))} == {"curriculum disabled"}


def test_other_primary_metric_is_read_per_pool():
    m = lp(primary_metric="rapr")
    m.update({"rapr/medium": 0.1, "accuracy/hard": 0.1}, step=1)
    d = m.update({"rapr/medium": 0.5, "accuracy/hard": 0.9}, step=2)
    assert d.action == "reweight" and m.mixture["medium"] == pytest.approx(0.9 + FLOOR)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"strategy": "bandit"}, "strategy"),
        ({"exploration": 0}, "exploration"),
        ({"exploration": 1.5}, "exploration"),
        ({"reweight_tolerance": -0.1}, "reweight_tolerance"),
        ({"reweight_tolerance": 1}, "reweight_tolerance"),
        ({"exploration": float("nan")}, "finite number"),
    ],
)
def test_config_validation_errors_are_clear(data, message):
    with pytest.raises(ValidationError) as err:
        CurriculumConfig.model_validate({"strategy": "learning_progress", **data})
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override,key,problem",
    [
        ("curriculum.strategy=bandit", "curriculum.strategy",
         "expected one of 'staged' or 'learning_progress', got 'bandit'"),
        ("curriculum.exploration=0", "curriculum.exploration", "input should be greater than 0, got 0"),
        ("curriculum.exploration=2", "curriculum.exploration", "input should be less than or equal to 1, got 2"),
        ("curriculum.reweight_tolerance=x", "curriculum.reweight_tolerance", "expected a number, got 'x'"),
    ],
)  # fmt: skip
def test_bad_values_from_the_run_config_name_the_key(override, key, problem):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["curriculum.strategy=learning_progress", override])
    assert err.value.key == key and err.value.problem == problem
    cfg = load_config(None, ["curriculum.strategy=learning_progress", "curriculum.exploration=0.2"]).curriculum
    assert (cfg.strategy, cfg.exploration, cfg.reweight_tolerance) == ("learning_progress", 0.2, 0.05)


def test_stage_fields_still_work_for_staged_by_default():
    cfg = CurriculumConfig.model_validate({"stages": [{"name": "a", "mixture": {"hard": 1}, "max_steps": 5}]})
    assert cfg.strategy == "staged"
    m = CurriculumManager(cfg)
    assert m.mixture == {"hard": 1.0} and m.update({"accuracy": 0.1}, step=1).mixture == {"hard": 1.0}
