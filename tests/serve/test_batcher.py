"""The batcher's life cycle: requests are refused (503) while the model loads; a failed load is reported."""

import threading

import pytest

from pixelis.core.config import load_config
from pixelis.serve.batcher import Batcher
from pixelis.serve.metrics import ServerMetrics
from pixelis.serve.protocol import ApiError


def test_requests_wait_for_the_model_and_a_failed_load_is_reported(tiny_model_dir):
    from pixelis.agent import ModelPolicy
    from pixelis.eval.runner import build_agent
    from pixelis.model.load import load_policy

    cfg = load_config(None, ["model.device=cpu"])
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return build_agent(cfg, ModelPolicy(*load_policy(tiny_model_dir))), None

    batcher = Batcher(slow_load, cfg, ServerMetrics())
    batcher.start()
    with pytest.raises(ApiError) as info:
        batcher.submit(object())
    assert info.value.status == 503 and "loading" in info.value.message and batcher.state == "loading"
    release.set()
    for _ in range(300):
        if batcher.state == "ready":
            break
        threading.Event().wait(0.1)
    assert batcher.state == "ready" and batcher.alive()
    batcher.stop(30)
    assert not batcher.alive()

    def broken_load():
        raise OSError("weights unreadable")

    broken = Batcher(broken_load, cfg, ServerMetrics())
    broken.start()
    broken.stop(30)
    assert broken.state == "failed" and "weights unreadable" in broken.error and not broken.alive()
