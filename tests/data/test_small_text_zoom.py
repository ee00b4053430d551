"""Tool use must matter for small_text: at medium/hard the code is unreadable on the full image and readable
after the golden zoom."""

import pytest

from pixelis.core.trajectory import ToolCall
from pixelis.data.synth.small_text import lines_contain, text_mentions
from pixelis.data.synth.suite import SampleKey, generate_sample
from pixelis.tools.base import ToolContext, ToolLimits


@pytest.mark.parametrize("difficulty", ["medium", "hard"])
def test_full_image_ocr_fails_and_golden_zoom_reads_the_code(registry, difficulty):
    for index in range(3):
        traj = generate_sample(SampleKey("small_text", difficulty, index), 21, 0.0, registry)
        code = traj.target["value"]
        full = registry.execute(ToolCall("read_text", {"image": 0}),
                                ToolContext(images=traj.images, limits=ToolLimits()))
        assert full.error is None and not text_mentions(full, code), (traj.id, full.data)
        zoom, read = traj.steps
        assert zoom.call.name == "zoom_in" and read.call.name == "read_text"
        crop = zoom.observation.images[0]
        again = registry.execute(ToolCall("read_text", {"image": 1}),
                                 ToolContext(images=[traj.images[0], crop], limits=ToolLimits()))
        assert lines_contain(again, code), (traj.id, again.data)
        assert traj.metadata["knobs"]["text_px"] <= 6.0
