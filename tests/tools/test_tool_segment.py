import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from pixelis.tools.base import ToolLimits
from pixelis.tools.geometry import box_iou, mask_box, to_grid_box, to_grid_point
from tool_scenes import KINDS, cluttered_scene


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_shape_mask_matches_ground_truth(run, kind, seed):
    rgb, gt, center = cluttered_scene(kind, seed=100 * seed + KINDS.index(kind))
    h, w = gt.shape
    obs = run("segment_object_at", {"point": to_grid_point(center, w, h)}, images=[Image.fromarray(rgb)])
    assert obs.ok, obs.render_text()
    gt_box = to_grid_box(mask_box(gt), w, h)
    assert box_iou(obs.data["bbox"], gt_box) >= 0.8, (obs.data, gt_box)
    assert obs.data["area_px"] == pytest.approx(gt.sum(), rel=0.2)
    assert 0.0 <= obs.data["confidence"] <= 1.0
    (overlay,) = obs.images
    assert overlay.size == (w, h)
    shown = np.asarray(overlay).astype(float)
    tinted = 0.5 * rgb + 0.5 * np.array([0, 255, 0])
    assert np.abs(shown[gt] - tinted[gt]).mean() < 10  # the object is tinted green
    far = cv2.dilate(gt.astype(np.uint8), np.ones((11, 11), np.uint8)) == 0
    assert np.abs(shown[far] - rgb[far]).mean() < 2  # the rest is untouched


# Hand-annotated pixel boxes of objects in scikit-image's sample photographs, and a point on each.
REAL_OBJECTS = [
    ("coffee", (290, 145), (203, 95, 370, 193)),  # the espresso's crema
    ("astronaut", (380, 440), (278, 343, 500, 512)),  # the helmet
    ("astronaut", (150, 400), (133, 347, 210, 424)),  # the mission patch
]


@pytest.mark.parametrize("photo, point, gt", REAL_OBJECTS)
def test_real_photo_object(run, photo, point, gt):
    rgb = getattr(data, photo)()
    h, w = rgb.shape[:2]
    obs = run("segment_object_at", {"point": to_grid_point(point, w, h)}, images=[Image.fromarray(rgb)])
    assert obs.ok, obs.render_text()
    assert 0.001 < obs.data["area_fraction"] < 0.6
    assert box_iou(obs.data["bbox"], to_grid_box(gt, w, h)) >= 0.75, obs.data


def test_large_images_are_segmented_on_a_bounded_copy(run):
    rgb, gt, center = cluttered_scene("circle", seed=7, size=(448, 448))
    big = np.kron(rgb, np.ones((4, 4, 1), np.uint8))  # 1792 px
    obs = run("segment_object_at", {"point": to_grid_point(center, 448, 448)}, images=[Image.fromarray(big)])
    assert obs.ok and max(obs.images[0].size) == 1024
    assert box_iou(obs.data["bbox"], to_grid_box(mask_box(gt), 448, 448)) >= 0.8


def test_point_errors(run):
    img = Image.fromarray(cluttered_scene("circle", 0)[0])
    assert run("segment_object_at", {"point": [500, 1001]}, images=[img]).error.kind == "out_of_bounds"
    assert run("segment_object_at", {"point": [500]}, images=[img]).error.kind == "wrong_type"
    obs = run("segment_object_at", {"bbox": [0, 0, 5, 5]}, images=[img])
    assert obs.error.kind == "missing_argument" and "'point'" in obs.error.message and "'bbox'" in obs.error.message


def test_sam_backend_needs_a_checkpoint(run, tmp_path):
    img = Image.fromarray(cluttered_scene("circle", 0)[0])
    obs = run("segment_object_at", {"point": [500, 500]}, images=[img], limits=ToolLimits(segment_backend="sam"))
    assert obs.error.kind == "execution_error" and "sam_checkpoint" in obs.error.message
    missing = ToolLimits(segment_backend="sam", sam_checkpoint=str(tmp_path / "nope"))
    obs = run("segment_object_at", {"point": [500, 500]}, images=[img], limits=missing)
    assert obs.error.kind == "execution_error" and "nope" in obs.error.message


def test_sam_backend_runs_a_local_checkpoint(run, tmp_path):
    """A SAM of the real architecture, tiny and randomly initialised, saved and loaded offline."""
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessorPil,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(hidden_size=32, output_channels=32, num_hidden_layers=1, num_attention_heads=2,
                             mlp_dim=64, global_attn_indexes=[0], window_size=0, num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32)
    decoder = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    torch.manual_seed(0)
    config = SamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                       mask_decoder_config=decoder.to_dict())
    SamModel(config).save_pretrained(tmp_path)
    SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(tmp_path)
    rgb = data.coffee()
    limits = ToolLimits(segment_backend="sam", sam_checkpoint=str(tmp_path))
    obs = run("segment_object_at", {"point": [483, 362]}, images=[Image.fromarray(rgb)], limits=limits)
    assert obs.ok, obs.render_text()
    assert 0 <= obs.data["area_px"] <= rgb.shape[0] * rgb.shape[1]
    assert set(obs.data) == {"bbox", "area_px", "area_fraction", "confidence"}
