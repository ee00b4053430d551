import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from pixelis.tools.geometry import box_iou, mask_box, to_grid_box, to_grid_point
from pixelis.tools.properties import COLOR_NAMES, COLOR_PALETTE, color_names
from tool_scenes import KINDS, add_noise, canvas, shape_mask

SIZE = (448, 448)


def test_every_palette_prototype_is_named_as_itself():
    assert set(COLOR_PALETTE) == set(COLOR_NAMES)
    rgb = np.array([list(COLOR_PALETTE.values())], np.uint8)
    assert [COLOR_NAMES[i] for i in color_names(rgb)[0]] == list(COLOR_PALETTE)


def test_colour_names_of_shades():
    shades = {"red": (150, 20, 25), "brown": (100, 60, 25), "gray": (90, 95, 92), "white": (250, 250, 240),
              "pink": (250, 170, 180), "blue": (20, 30, 120), "green": (20, 90, 30), "black": (30, 25, 35),
              "brown": (160, 82, 45), "orange": (210, 105, 30)}
    names = color_names(np.array([list(shades.values())], np.uint8))[0]
    assert [COLOR_NAMES[i] for i in names] == list(shades)


def scene(kind: str, color: str, center=(224, 224), r=60, seed=0):
    img = canvas(SIZE, (60, 60, 60) if color == "white" else (235, 235, 235))
    mask = shape_mask(kind, center, r, SIZE)
    img[mask] = COLOR_PALETTE[color]
    return Image.fromarray(add_noise(img, 4, seed)), mask


@pytest.mark.parametrize("mode", ["point", "bbox"])
@pytest.mark.parametrize("kind, color", list(zip(KINDS, ["red", "blue", "green", "yellow", "purple"])))
def test_shape_and_colour_names(run, kind, color, mode):
    image, mask = scene(kind, color, r=45)
    box = to_grid_box(mask_box(mask), *SIZE)
    args = {"point": [500, 500]} if mode == "point" else {"bbox": box}
    obs = run("get_properties", args, images=[image])
    assert obs.ok, obs.render_text()
    assert (obs.data["shape"], obs.data["color"]) == (kind, color), obs.data
    assert obs.data["area_px"] == pytest.approx(mask.sum(), rel=0.05)
    assert box_iou(obs.data["bbox"], box) > 0.9
    assert kind in obs.text and color in obs.text


def test_other_shapes_are_other(run):
    img = canvas(SIZE)
    cv2.ellipse(img, (224, 224), (120, 50), 0, 0, 360, COLOR_PALETTE["orange"], -1)
    obs = run("get_properties", {"point": [500, 500]}, images=[Image.fromarray(img)])
    assert obs.data["shape"] == "other" and obs.data["color"] == "orange"
    assert obs.data["aspect"] == pytest.approx(240 / 100, rel=0.05)
    hexagon = canvas(SIZE)
    angles = np.arange(6) * np.pi / 3
    cv2.fillPoly(hexagon, [np.stack([224 + 100 * np.cos(angles), 224 + 100 * np.sin(angles)], 1).astype(np.int32)],
                 COLOR_PALETTE["cyan"])
    obs = run("get_properties", {"point": [500, 500]}, images=[Image.fromarray(hexagon)])
    assert (obs.data["shape"], obs.data["vertices"], obs.data["color"]) == ("other", 6, "cyan")


def test_size_and_position(run):
    image, mask = scene("square", "orange", center=(80, 370), r=30)
    obs = run("get_properties", {"point": to_grid_point((80, 370), *SIZE)}, images=[image])
    assert obs.data["region"] == "bottom-left"
    assert obs.data["center"] == pytest.approx(to_grid_point((80, 370), *SIZE), abs=3)
    assert obs.data["size_px"] == [61, 61]
    assert obs.data["area_fraction"] == pytest.approx(61 * 61 / (448 * 448), rel=0.02)


def test_real_photo_mission_patch(run):
    rgb = data.astronaut()
    obs = run("get_properties", {"bbox": to_grid_box((133, 347, 210, 424), 512, 512)}, images=[Image.fromarray(rgb)])
    assert obs.ok and obs.data["object_found"]
    assert obs.data["shape"] == "circle" and obs.data["color"] in ("purple", "blue")


def test_empty_box_describes_the_region(run):
    plain = Image.fromarray(canvas(SIZE, (30, 70, 220)))
    obs = run("get_properties", {"bbox": [100, 100, 400, 300]}, images=[plain])
    assert obs.ok and obs.data["object_found"] is False
    assert obs.data["color"] == "blue" and obs.data["bbox"] == pytest.approx([100, 100, 400, 300], abs=3)


def test_exactly_one_of_bbox_or_point(run):
    image, _ = scene("circle", "red")
    assert run("get_properties", {}, images=[image]).error.kind == "missing_argument"
    obs = run("get_properties", {"bbox": [0, 0, 500, 500], "point": [5, 5]}, images=[image])
    assert obs.error.kind == "extra_argument" and "exactly one" in obs.error.message
    assert run("get_properties", {"point": [5, 1005]}, images=[image]).error.kind == "out_of_bounds"
