"""The tool-use collapse monitor on scripted RaPR sequences, and the RFT charts."""

from pixelis.core.config import CollapseConfig
from pixelis.train.monitor import CollapseMonitor, plot_rft_history


def _feed(monitor, values):
    return [monitor.update(step, v) for step, v in enumerate(values, start=1)]


def test_a_fall_below_the_floor_alerts_after_patience_steps_then_rearms():
    monitor = CollapseMonitor(CollapseConfig(rapr_floor=0.2, max_drop=1.0, window=2, patience=2))
    alerts = _feed(monitor, [0.5, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0])
    # smoothed: .5 .5 .3 .05 0 0 0 -> low from step 4; alert at 5, re-armed, again at 7
    assert [a["step"] for a in alerts if a] == [5, 7]
    assert "rapr_floor 0.2" in alerts[4]["reason"]


def test_a_relative_drop_alerts_even_above_the_floor():
    monitor = CollapseMonitor(CollapseConfig(rapr_floor=0.0, max_drop=0.5, window=1, patience=1))
    alerts = _feed(monitor, [0.8, 0.7, 0.5, 0.3])
    assert [a["step"] for a in alerts if a] == [4]
    assert "fell by more than 50% from 0.800" in alerts[3]["reason"]


def test_a_brief_dip_does_not_alert():
    monitor = CollapseMonitor(CollapseConfig(rapr_floor=0.2, window=1, patience=3))
    assert not any(_feed(monitor, [0.6, 0.1, 0.1, 0.6, 0.1, 0.1, 0.6]))


def test_state_dict_resumes_the_count():
    cfg = CollapseConfig(rapr_floor=0.2, window=2, patience=3)
    whole = CollapseMonitor(cfg)
    expected = _feed(whole, [0.5, 0.1, 0.0, 0.0, 0.0])
    first = CollapseMonitor(cfg)
    _feed(first, [0.5, 0.1, 0.0])
    second = CollapseMonitor(cfg)
    second.load_state_dict(first.state_dict())
    assert [second.update(4, 0.0), second.update(5, 0.0)] == expected[3:]
    assert expected[4] is not None


def test_the_chart_is_written(tmp_path):
    history = [{"step": s, "reward": 0.1 * s, "reward/task": 0.1 * s, "rapr": 0.5, "accuracy": 0.2,
                "tool_calls": 1.0, "kl": 0.01 * s, "entropy": 1.0} for s in range(1, 4)]
    path = plot_rft_history(history, tmp_path / "rft.png")
    assert path.stat().st_size > 10_000
