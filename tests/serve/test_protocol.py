"""Request checks of the chat-completions API: every bad request is one ApiError naming the field."""

import base64
import io

import pytest
from PIL import Image

from pixelis.core.config import ServeConfig
from pixelis.serve.protocol import ApiError, image_data_uri, parse_request, trajectory_view, usage

LIMITS = ServeConfig(max_images=2, max_image_pixels=64 * 64, max_n=4)
MODEL = "pixelis-tiny"


def image_uri(size=(32, 24)):
    return image_data_uri(Image.new("RGB", size, (10, 200, 30)))


def body(*parts, **extra):
    content = list(parts) if parts else [{"type": "text", "text": "What colour?"},
                                         {"type": "image_url", "image_url": {"url": image_uri()}}]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def parse(b, online=False):
    return parse_request(b, LIMITS, MODEL, agent_max_tokens=64, online=online)


def refused(b, online=False) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(b, online)
    return info.value


def test_a_good_request_becomes_question_images_and_sampling():
    req = parse(body(temperature=0.7, top_p=0.9, n=2, seed=11, max_tokens=1000, stream=True,
                     pixelis={"tool_images": True}))
    assert req.question == "What colour?" and len(req.images) == 1 and req.images[0].size == (32, 24)
    assert req.images[0].getpixel((0, 0)) == (10, 200, 30)  # the pixels survive the data URI
    assert (req.sampling.do_sample, req.sampling.temperature, req.sampling.top_p) == (True, 0.7, 0.9)
    assert (req.n, req.seed, req.stream, req.tool_images) == (2, 11, True, True)
    assert req.max_tokens == 64  # capped at agent.max_new_tokens
    assert parse(body(temperature=0)).sampling.do_sample is False  # temperature 0: greedy
    assert parse(body()).sampling is None  # the server's default sampling


def test_system_text_is_ignored_and_user_texts_join():
    b = body()
    b["messages"].insert(0, {"role": "system", "content": "You are helpful."})
    b["messages"].append({"role": "user", "content": "Answer briefly."})
    assert parse(b).question == "What colour?\nAnswer briefly."


@pytest.mark.parametrize("make, status, param, code", [
    (lambda: {"model": MODEL}, 400, "messages", None),
    (lambda: {"model": MODEL, "messages": []}, 400, "messages", None),
    (lambda: [1, 2], 400, None, None),
    (lambda: body({"type": "text", "text": "no image here"}), 400, "messages", "no_image"),
    (lambda: body({"type": "image_url", "image_url": {"url": image_uri()}}), 400, "messages", None),
    (lambda: body({"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}),
     400, "image_url.url", "remote_image_refused"),
    (lambda: body({"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}),
     400, "image_url.url", "invalid_image"),
    (lambda: body({"type": "text", "text": "q"}, {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()}}),
     400, "image_url.url", "invalid_image"),
    (lambda: body({"type": "text", "text": "q"}, *[{"type": "image_url", "image_url": {"url": image_uri()}}] * 3),
     400, "messages", "too_many_images"),
    (lambda: body({"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": image_uri((65, 64))}}),
     400, "image_url.url", "image_too_large"),
    (lambda: {**body(), "model": "gpt-9"}, 404, "model", "model_not_found"),
    (lambda: body(n=5), 400, "n", None),
    (lambda: body(n=0), 400, "n", None),
    (lambda: body(temperature=2.5), 400, "temperature", None),
    (lambda: body(top_p=0), 400, "top_p", None),
    (lambda: body(max_tokens=0), 400, "max_tokens", None),
    (lambda: body(seed=-1), 400, "seed", None),
    (lambda: body(pixelis={"tool_imgs": True}), 400, "pixelis.tool_imgs", None),
    (lambda: {**body(), "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages[0].role", None),
    (lambda: {**body(), "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400,
     "messages[0].content[0].type", None),
])
def test_each_bad_request_is_one_error_naming_the_field(make, status, param, code):
    err = refused(make())
    assert err.status == status and err.param == param
    assert err.body()["error"]["code"] == code and err.body()["error"]["message"]


def test_truncated_png_is_refused_not_raised():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(buf, format="PNG")
    cut = "data:image/png;base64," + base64.b64encode(buf.getvalue()[:60]).decode()
    err = refused(body({"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": cut}}))
    assert err.code == "invalid_image"


def test_online_mode_takes_one_choice():
    assert refused(body(n=2), online=True).param == "n"


def test_trajectory_view_shows_tool_images_only_on_request(synth_suite):
    traj = next(t for t in synth_suite["train"] if any(s.observation and s.observation.images for s in t.steps))
    with_images = trajectory_view(traj, tool_images=True)
    without = trajectory_view(traj, tool_images=False)
    shown = [im for s in with_images["steps"] if s["observation"] for im in s["observation"]["images"]]
    hidden = [im for s in without["steps"] if s["observation"] for im in s["observation"]["images"]]
    assert shown and all(im.startswith("data:image/png;base64,") for im in shown)
    assert len(hidden) == len(shown) and all(im.startswith("omitted ") for im in hidden)
    assert "images" not in with_images and with_images["tool_calls"] == sum(s.call is not None for s in traj.steps)
    assert usage([traj]) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # no sampled turns
