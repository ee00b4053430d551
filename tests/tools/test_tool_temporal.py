import numpy as np
import pytest
from PIL import Image

from pixelis.tools.base import ToolLimits
from tool_scenes import add_noise, shape_mask

SIZE = (320, 240)


def video(n=12, show=lambda t: False, center=(220, 150)):
    """Noisy grey frames; a blue circle is drawn in the frames where show(t)."""
    circle = shape_mask("circle", center, 18, SIZE)
    frames = []
    for t in range(n):
        img = np.full((SIZE[1], SIZE[0], 3), 150, np.uint8)
        if show(t):
            img[circle] = (30, 60, 220)
        frames.append(Image.fromarray(add_noise(img, 6, t)))
    return frames


@pytest.mark.parametrize("k", [1, 4, 11])
def test_appearance_is_localized_to_its_frame(run, k):
    frames = video(show=lambda t: t >= k)
    obs = run("localize_event", {"event": "appear"}, video=frames)
    assert obs.ok, obs.render_text()
    assert (obs.data["start_frame"], obs.data["end_frame"]) == (k, 11)
    assert obs.data["matches_event"] is True
    before, at = obs.images
    assert np.array_equal(np.asarray(before), np.asarray(frames[k - 1]))
    assert np.array_equal(np.asarray(at), np.asarray(frames[k]))


def test_region_and_interval(run):
    frames = video(show=lambda t: 3 <= t <= 6, center=(60, 60))
    obs = run("localize_event", {"bbox": [0, 0, 400, 500]}, video=frames)
    assert (obs.data["start_frame"], obs.data["end_frame"]) == (3, 6)
    elsewhere = run("localize_event", {"bbox": [500, 500, 1000, 1000]}, video=frames)
    assert elsewhere.ok and elsewhere.data["start_frame"] is None and "No change" in elsewhere.text


def test_disappearance_is_not_an_appearance(run):
    frames = video(show=lambda t: t < 5)
    obs = run("localize_event", {"event": "disappear"}, video=frames)
    assert obs.data["start_frame"] == 5 and obs.data["matches_event"] is True
    obs = run("localize_event", {"event": "appear"}, video=frames)
    assert obs.data["start_frame"] == 5 and obs.data["matches_event"] is False
    assert "disappears" in obs.text


def test_static_video_has_no_change(run):
    obs = run("localize_event", {}, video=video())
    assert obs.ok and obs.data["start_frame"] is None and not obs.images
    assert obs.text.startswith("No change found")
    assert max(obs.data["scores"]) < 0.001


def test_localize_errors(run):
    assert run("localize_event", {}, images=[video(1)[0]]).error.message == "this sample has no video"
    assert run("localize_event", {"event": "explode"}, video=video(3)).error.kind == "wrong_type"
    assert run("localize_event", {"bbox": [10, 10, 5, 20]}, video=video(3)).error.kind == "invalid_box"


def test_select_frames(run):
    frames = video(show=lambda t: t % 2 == 1)
    obs = run("select_frames", {"frames": [3, 0, 3]}, images=[frames[0]], video=frames)
    assert obs.ok and obs.data["frames"] == [3, 0, 3]
    assert [np.array_equal(np.asarray(a), np.asarray(frames[i])) for a, i in zip(obs.images, [3, 0, 3])] == [True] * 3
    assert "images 1..3" in obs.text
    assert run("select_frames", {"frames": [0, 12]}, video=frames).error.kind == "frame_out_of_range"
    assert run("select_frames", {"frames": []}, video=frames).error.kind == "wrong_type"
    limited = run("select_frames", {"frames": [0, 1, 2]}, video=frames, limits=ToolLimits(max_frames_per_call=2))
    assert limited.error.kind == "limit_exceeded"
    bounded = run("select_frames", {"frames": [0]}, video=frames, limits=ToolLimits(max_output_side=100))
    assert bounded.images[0].size == (100, 75)
