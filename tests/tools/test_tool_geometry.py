import pytest

from pixelis.tools.base import ToolArgumentError
from pixelis.tools.geometry import (
    box_iou,
    check_grid_box,
    region_name,
    to_grid_box,
    to_grid_point,
    to_pixels_box,
    to_pixels_point,
)


def test_box_round_trip_on_odd_sizes():
    for w, h in [(448, 448), (600, 400), (37, 91)]:
        px = to_pixels_box([100, 250, 600, 1000], w, h)
        assert px[3] == h and 0 <= px[0] < px[2] <= w
        back = to_grid_box(px, w, h)
        assert all(abs(a - b) <= 1000 / min(w, h) for a, b in zip(back, [100, 250, 600, 1000]))


def test_pixel_box_covers_the_grid_box_and_is_never_empty():
    assert to_pixels_box([0, 0, 1000, 1000], 640, 480) == (0, 0, 640, 480)
    assert to_pixels_box([500, 500, 500.1, 500.1], 100, 100) == (50, 50, 51, 51)


def test_points_round_trip():
    assert to_pixels_point([1000, 1000], 640, 480) == (639, 479)
    assert to_pixels_point([0, 0], 640, 480) == (0, 0)
    assert to_grid_point(to_pixels_point([250, 750], 400, 400), 400, 400) == [251, 751]


def test_check_grid_box_kinds():
    with pytest.raises(ToolArgumentError) as e:
        check_grid_box([0, 0, 1001, 10])
    assert e.value.kind == "out_of_bounds"
    with pytest.raises(ToolArgumentError) as e:
        check_grid_box([500, 10, 400, 20])
    assert e.value.kind == "invalid_box"
    check_grid_box([0, 0, 1000, 1000])


def test_iou_and_regions():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert region_name([100, 100]) == "top-left"
    assert region_name([500, 500]) == "center"
    assert region_name([900, 500]) == "right"
    assert region_name([500, 1000]) == "bottom"
