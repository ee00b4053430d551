"""CurriculumManager on scripted metric sequences: smoothing, patience, cooldown, rollback, persistence."""

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
from pixelis.core.curriculum import CurriculumConfig, CurriculumManager, CurriculumStage, ExitCriterion

GOOD = 0.9  # well above the default exit thresholds (accuracy >= 0.6, tool_call_validity >= 0.8/0.85)


def feed(manager: CurriculumManager, accuracies: list[float], validity: float = GOOD, steps: int = 25):
    """One evaluation per accuracy, `steps` training steps before each; returns the decisions."""
    out = []
    for acc in accuracies:
        manager.on_train_step(steps)
        out.append(manager.update({"accuracy": acc, "tool_call_validity": validity}, step=manager.global_step))
    return out


def advanced(manager: CurriculumManager) -> list:
    """Feed good metrics until the manager advances; fail if it never does."""
    decisions = []
    for _ in range(50):
        decisions += feed(manager, [GOOD])
        if decisions[-1].action == "advance":
            return decisions
    pytest.fail("manager never advanced on good metrics")


def test_noise_around_threshold_does_not_advance():
    noisy = [0.58, 0.63, 0.57, 0.64] * 4
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=2, cooldown_cycles=3))
    decisions = feed(m, noisy)
    assert [d.action for d in decisions] == ["hold"] * len(noisy)
    assert m.current_stage.name == "simple"
    # The smoothed value does cross 0.6 at times; patience is what stops the advance.
    assert max(d.patience for d in decisions) == 1
    assert any("unmet: accuracy=" in d.reason for d in decisions)
    eager = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=1))
    assert "advance" in [d.action for d in feed(eager, noisy)]


def test_sustained_rise_advances_at_exact_evaluation():
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=2))
    # smoothed: -, -, 0.40, 0.517, 0.617 (patience 1), 0.70 (patience 2 -> advance)
    decisions = feed(m, [0.3, 0.4, 0.5, 0.65, 0.7, 0.75])
    assert [d.action for d in decisions] == ["hold"] * 5 + ["advance"]
    assert [d.patience for d in decisions[:5]] == [0, 0, 0, 0, 1]
    assert "window not full (1/3)" in decisions[0].reason
    assert decisions[-1].stage == "medium" and decisions[-1].previous_stage == "simple"
    assert m.mixture == {"simple": pytest.approx(0.3), "medium": pytest.approx(0.7)}
    assert m.steps_in_stage == 0


@pytest.mark.parametrize("window,patience", [(1, 1), (3, 2), (2, 4)])
def test_advance_index_is_window_plus_patience(window, patience):
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=window, patience_cycles=patience))
    actions = [d.action for d in feed(m, [GOOD] * 10)]
    assert actions.index("advance") == window + patience - 2


@pytest.mark.parametrize("cooldown", [0, 1, 3])
def test_cooldown_blocks_exactly_cooldown_cycles(cooldown):
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=1, cooldown_cycles=cooldown))
    advanced(m)
    # Terrible and excellent metrics alternate during cooldown: nothing may change.
    during = feed(m, [0.0, 1.0, 0.0][:cooldown])
    assert [d.action for d in during] == ["hold"] * cooldown
    assert [d.reason for d in during] == [f"cooldown ({k} left)" for k in range(cooldown - 1, -1, -1)]
    assert m.current_stage.name == "medium"
    # The first evaluation after cooldown acts on the (bad) smoothed value.
    assert feed(m, [0.0])[0].action == "rollback"


def test_cooldown_evaluations_do_not_count_towards_patience():
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=2, cooldown_cycles=3))
    advanced(m)
    actions = [d.action for d in feed(m, [GOOD] * 6)]
    # 3 cooldown holds, then patience 1 (window already full from cooldown evaluations), then advance.
    assert actions == ["hold", "hold", "hold", "hold", "advance", "hold"]
    assert m.current_stage.name == "hard"


def test_drop_after_advance_rolls_back_to_previous_mixture():
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=3, patience_cycles=1, cooldown_cycles=0))
    advanced(m)
    small_drop = feed(m, [0.85])[0]  # 0.05 below the reference 0.9: within rollback_threshold
    assert small_drop.action == "hold"
    d = feed(m, [0.6])[0]  # smoothed (0.85 + 0.6) / 2 = 0.725: 0.175 below 0.9
    assert d.action == "rollback"
    assert (d.previous_stage, d.stage) == ("medium", "simple")
    assert "rollback 1/2 for simple->medium" in d.reason
    assert m.mixture == {"simple": 1.0}
    assert m.current_stage.name == "simple"


def test_max_rollbacks_caps_repeated_rollbacks():
    m = CurriculumManager(
        CurriculumConfig(smoothing_window_size=1, patience_cycles=1, cooldown_cycles=1, max_rollbacks=2)
    )
    actions = []
    for _ in range(3):
        actions += [d.action for d in advanced(m)]
        actions += [d.action for d in feed(m, [0.9, 0.2])]  # cooldown hold, then a drop of 0.7
    assert actions.count("rollback") == 2
    assert m.current_stage.name == "medium"
    last = m.history[-1]
    assert last.action == "hold" and "max_rollbacks (2) reached for simple->medium" in last.reason


def test_max_steps_forces_advance():
    stages = [
        CurriculumStage(name="a", mixture={"simple": 1}, max_steps=100,
                        exit_criteria=[ExitCriterion(metric="accuracy", threshold=0.99)]),
        CurriculumStage(name="b", mixture={"hard": 1}, max_steps=10),
    ]  # fmt: skip
    m = CurriculumManager(CurriculumConfig(stages=stages, cooldown_cycles=0))
    m.on_train_step(99)
    assert m.update({"accuracy": 0.1}, step=99).action == "hold"
    m.on_train_step(1)
    d = m.update({"accuracy": 0.1}, step=100)
    assert d.action == "advance" and d.reason == "max_steps (100 >= 100)" and d.stage == "b"
    m.on_train_step(50)
    # The last stage has nowhere to go: max_steps does not advance; an empty criteria list means "done".
    assert m.update({"accuracy": 0.1}, step=150).reason.startswith("smoothing window not full")


def test_state_roundtrip_mid_cooldown_continues_identically(tmp_path):
    cfg = CurriculumConfig(smoothing_window_size=3, patience_cycles=2, cooldown_cycles=3)
    original = CurriculumManager(cfg)
    advanced(original)
    feed(original, [0.1])  # one cooldown evaluation used, two left
    state = json.loads(json.dumps(original.state_dict()))
    restored = CurriculumManager(cfg)
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    assert (restored.stage_index, restored.global_step, restored.steps_in_stage) == (1, original.global_step, 25)

    further = [0.95, 0.2, 0.3, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95, 0.2, 0.2, 0.2]
    a = [asdict(d) for d in feed(original, further)]
    b = [asdict(d) for d in feed(restored, further)]
    assert a == b
    assert [d["action"] for d in a][:3] == ["hold", "hold", "rollback"]  # cooldown 1 left, 0 left, then drop
    assert restored.state_dict() == original.state_dict()


def test_load_state_dict_rejects_other_stages():
    m = CurriculumManager(CurriculumConfig())
    other = CurriculumManager(CurriculumConfig(stages=[CurriculumStage(name="only")]))
    with pytest.raises(ValueError, match="resume with the same curriculum.stages"):
        other.load_state_dict(m.state_dict())


def test_sample_difficulty_follows_mixture():
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=1, patience_cycles=1))
    rng = random.Random(0)
    assert {m.sample_difficulty(rng) for _ in range(2000)} == {"simple"}
    advanced(m)
    n = 20000
    counts = Counter(m.sample_difficulty(rng) for _ in range(n))
    assert set(counts) == {"simple", "medium"}
    assert abs(counts["simple"] / n - 0.3) < 0.02
    assert abs(counts["medium"] / n - 0.7) < 0.02
    same = [m.sample_difficulty(random.Random(7)) for _ in range(5)]
    assert same == [m.sample_difficulty(random.Random(7)) for _ in range(5)]


def test_decisions_logged_to_jsonl_log_and_span(tmp_path, caplog):
    log_path = tmp_path / "run" / "curriculum.jsonl"
    m = CurriculumManager(
        CurriculumConfig(smoothing_window_size=1, patience_cycles=1, cooldown_cycles=0), log_path=log_path
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.INFO, logger="pixelis.core.curriculum"):
        with provider.get_tracer("test").start_as_current_span("eval"):
            feed(m, [0.3, GOOD, 0.2])
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["action"] for r in rows] == ["hold", "advance", "rollback"]
    assert rows == [asdict(d) for d in m.history]
    assert rows[1]["smoothed"]["accuracy"] == GOOD and rows[2]["stage"] == "simple"
    assert sum("action=advance stage=medium (was simple)" in r.getMessage() for r in caplog.records) == 1
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "curriculum.decision"]
    assert [e.attributes["curriculum.action"] for e in events] == ["hold", "advance", "rollback"]
    assert events[2].attributes["curriculum.smoothed.accuracy"] == pytest.approx(0.2)


def test_plot_writes_png(tmp_path):
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=2, patience_cycles=1, cooldown_cycles=1))
    feed(m, [0.3, 0.7, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    assert {"advance", "rollback"} <= {d.action for d in m.history}
    out = m.plot(tmp_path / "curriculum.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_missing_metric_holds_with_its_name():
    m = CurriculumManager(CurriculumConfig(smoothing_window_size=1, patience_cycles=1))
    d = m.update({"accuracy": 0.95}, step=10)
    assert d.action == "hold" and d.reason == "missing metric(s): tool_call_validity"
    d = m.update({"accuracy": 0.95, "tool_call_validity": float("nan")}, step=20)
    assert d.action == "hold" and "tool_call_validity" in d.reason
    with pytest.raises(TypeError, match="'accuracy' must be a number"):
        m.update({"accuracy": "high"}, step=30)


def test_lower_is_better_primary_metric_rolls_back_on_rise():
    stages = [
        CurriculumStage(name=n, mixture={"simple": 1}, exit_criteria=[ExitCriterion(metric="loss", threshold=1.0,
                        mode="lower")]) for n in ("s1", "s2")
    ]  # fmt: skip
    cfg = CurriculumConfig(stages=stages, smoothing_window_size=1, patience_cycles=1, cooldown_cycles=0,
                           primary_metric="loss", primary_mode="lower")  # fmt: skip
    m = CurriculumManager(cfg)
    assert m.update({"loss": 1.5}, step=1).action == "hold"
    assert m.update({"loss": 0.5}, step=2).action == "advance"
    assert m.update({"loss": 0.55}, step=3).action == "hold"
    assert m.update({"loss": 0.7}, step=4).action == "rollback"


def test_disabled_stays_on_final_stage():
    m = CurriculumManager(CurriculumConfig(enabled=False))
    assert m.current_stage.name == "hard"
    assert {d.action for d in feed(m, [0.0, GOOD, GOOD, GOOD])} == {"hold"}
    assert m.history[-1].reason == "curriculum disabled"


def test_config_from_yaml_dict_and_normalisation():
    cfg = CurriculumConfig.model_validate({
        "smoothing_window_size": 3, "patience_cycles": 2, "cooldown_cycles": 3,
        "stages": [{"name": "warm", "mixture": {"simple": 2, "medium": 2},
                    "exit_criteria": [{"metric": "accuracy", "threshold": 0.5}]}],
    })  # fmt: skip
    assert cfg.stages[0].mixture == {"simple": 0.5, "medium": 0.5}
    assert cfg.stages[0].exit_criteria[0].mode == "higher"
    default = CurriculumConfig()
    assert [s.name for s in default.stages] == ["simple", "medium", "hard"]
    assert all(abs(sum(s.mixture.values()) - 1) < 1e-9 for s in default.stages)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"stages": [{"name": "warm", "mixture": {"simple": 0, "hard": 0}}]}, "'warm': mixture weights are all zero"),
        ({"stages": [{"name": "warm", "mixture": {"easy": 1}}]}, "'warm': unknown difficulty pool(s) ['easy']"),
        ({"stages": [{"name": "warm", "mixture": {"simple": -1, "hard": 2}}]}, "weights must be >= 0"),
        ({"stages": [{"name": "x"}, {"name": "y"}, {"name": "x"}]}, "duplicated: ['x']"),
        ({"stages": []}, "stages"),
        ({"smoothing_window_size": 0}, "smoothing_window_size"),
        ({"patience_cycles": 0}, "patience_cycles"),
        ({"cooldown_cycles": -1}, "cooldown_cycles"),
        ({"stages": [{"name": "w", "min_steps": 50, "max_steps": 10}]}, "max_steps (10) < min_steps (50)"),
        ({"smoothing_window": 3}, "Extra inputs are not permitted"),
    ],
)
def test_config_validation_errors_are_clear(data, message):
    with pytest.raises(ValidationError) as err:
        CurriculumConfig.model_validate(data)
    assert message in str(err.value)


def test_manager_takes_a_config_the_bare_section_or_a_whole_config():
    cfg = CurriculumConfig(patience_cycles=4)
    assert CurriculumManager(cfg).config is cfg
    assert CurriculumManager({"patience_cycles": 4, "cooldown_cycles": 0}).config == CurriculumConfig(
        patience_cycles=4, cooldown_cycles=0
    )
    whole = {"sft": {"max_steps": 10}, "curriculum": {"enabled": False, "stages": [{"name": "only"}]}}
    manager = CurriculumManager(whole)
    assert not manager.config.enabled and manager.current_stage.name == "only"
    assert CurriculumManager({"curriculum": None}).config == CurriculumConfig()  # `curriculum:` left empty


@pytest.mark.parametrize(
    "data,key,message",
    [
        ({"patience_cycles": "x"}, "curriculum.patience_cycles", "expected an integer, got 'x'"),
        ({"curriculum": {"patience": 2}}, "curriculum.patience",
         "unknown key 'patience' (did you mean 'patience_cycles'?)"),
        ({"curriculum": {"stages": [{"name": "a", "exit_criteria": [{"threshold": "high"}]}]}},
         "curriculum.stages[0].exit_criteria[0].threshold", "expected a number, got 'high'"),
        ({"curriculum": 3}, "curriculum", "expected a mapping of keys, got 3"),
    ],
)  # fmt: skip
def test_manager_rejects_bad_mappings_with_a_located_config_error(data, key, message):
    with pytest.raises(ConfigError) as err:
        CurriculumManager(data)
    assert str(err.value) == f"{key}: {message}"
    assert err.value.key == key and err.value.problem == message


@pytest.mark.parametrize(
    "data,key",
    [
        ({"rollback_threshold": float("inf")}, "curriculum.rollback_threshold"),
        ({"stages": [{"name": "a", "exit_criteria": [{"threshold": float("nan")}]}]},
         "curriculum.stages[0].exit_criteria[0].threshold"),
        ({"stages": [{"name": "a", "mixture": {"simple": float("inf")}}]}, "curriculum.stages[0].mixture.simple"),
    ],
)  # fmt: skip
def test_non_finite_floats_are_rejected(data, key):
    with pytest.raises(ValidationError, match="finite number"):
        CurriculumConfig.model_validate(data)
    with pytest.raises(ConfigError, match="finite number") as err:
        CurriculumManager(data)
    assert err.value.key == key


def test_non_finite_floats_are_rejected_from_the_run_config():
    with pytest.raises(ConfigError, match="curriculum.rollback_threshold: input should be a finite number"):
        load_config(None, ["curriculum.rollback_threshold=.inf"])
