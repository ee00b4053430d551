"""The region loss of grounding pre-training: coverage targets on the grid, and their alignment with the pixels
the processor puts in each visual token."""

import math

import pytest
import torch

from pixelis.data.grounding import grounding_sample
from pixelis.model.load import load_policy
from pixelis.train.region import RegionHead, RegionTerm, coverage_grid
from pixelis.train.sft_batch import collate_sft, render_sft_sample


def test_coverage_is_the_covered_share_of_each_cell_in_row_major_order():
    assert coverage_grid([[0, 0, 500, 500]], 2, 2).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert coverage_grid([[250, 500, 750, 1000]], 2, 2).tolist() == [0.0, 0.0, 0.5, 0.5]
    # rows are y, columns are x: a tall box in the right column of a 2 x 4 grid
    grid = coverage_grid([[750, 0, 1000, 1000]], 2, 4).reshape(2, 4)
    assert grid[:, 3].tolist() == [1.0, 1.0] and grid[:, :3].sum() == 0
    # two boxes on one cell add up, and the share is capped at 1
    assert coverage_grid([[0, 0, 500, 250], [0, 250, 500, 500]], 2, 2)[0] == pytest.approx(1.0)
    assert coverage_grid([[0, 0, 500, 500], [0, 0, 500, 500]], 2, 2)[0] == 1.0
    assert coverage_grid([], 3, 3).sum() == 0


def _token_contrast(pixel_values: torch.Tensor, tokens: int) -> torch.Tensor:
    """Per visual token: how far its pixels are from the image's typical (background) pixel."""
    patches = pixel_values.reshape(tokens, 4, 3, -1)  # merge 2 x 2 patches, then channel-major patch pixels
    background = patches.transpose(0, 2).reshape(3, -1).median(dim=1).values
    return (patches - background[None, None, :, None]).abs().mean(dim=(1, 2, 3))


def test_targets_sit_on_the_visual_tokens_that_show_the_objects(tiny_model_dir):
    """Rendered through the real processor, the token a target covers most stands out from the background: the row-major
    token layout the loss assumes is the one the processor uses (non-square canvases included)."""
    _, processor = load_policy(tiny_model_dir, dtype="float32", device="cpu")
    shapes = set()
    for index in range(24):
        sample = grounding_sample(0, "train", index, {"box": 1.0})
        rendered = render_sft_sample(processor, sample.trajectory()).rendered
        _, h, w = (int(v) for v in rendered.image_grid_thw[0])
        target = coverage_grid(sample.regions, h // 2, w // 2)
        contrast = _token_contrast(rendered.pixel_values, len(target))
        most, empty = contrast[target.argmax()], contrast[target == 0]
        assert most > 3 * empty.mean(), (sample.id, most, empty.mean())
        shapes.add((h, w))
    assert any(h != w for h, w in shapes), "a non-square canvas was among the checked samples"


def _batch_and_states(model_dir, n=3):
    model, processor = load_policy(model_dir, dtype="float32", device="cpu")
    samples = [grounding_sample(0, "train", i) for i in range(n)]
    batch = collate_sft([render_sft_sample(processor, s.trajectory()) for s in samples],
                        processor.tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                                "mm_token_type_ids")}, output_hidden_states=True).hidden_states
    return model, samples, batch, hidden


def _term(model, samples, coverage=1.0, pointer=1.0, merge=2):
    head = RegionHead(model.config.get_text_config().hidden_size)
    return RegionTerm(head, coverage, pointer, [s.regions for s in samples], [s.box for s in samples],
                      model.config.image_token_id, merge)


def test_the_pointer_is_scored_against_the_asked_about_object(tiny_model_dir):
    """The pointer loss is low when the scores peak on the asked-about box's tokens and high when they peak on
    another object's; it is queried from the token before the response."""
    model, samples, batch, hidden = _batch_and_states(tiny_model_dir)
    term = _term(model, samples)
    args = (hidden, batch["input_ids"], batch["image_grid_thw"], batch["weights"])
    first = term.losses(*args)
    assert first["loss"].item() == pytest.approx((first["loss_region"] + first["loss_pointer"]).item())
    # a head whose pointer reads only the query: uniform over the tokens, so the loss is log(tokens) per sample
    with torch.no_grad():
        term.head.key.weight.zero_()
        term.head.key.bias.zero_()
    tokens = [int((batch["input_ids"][r] == model.config.image_token_id).sum()) for r in range(len(samples))]
    expected = sum(math.log(n) for n in tokens) / len(tokens)
    assert term.losses(*args)["loss_pointer"].item() == pytest.approx(expected, rel=1e-5)
    optimizer = torch.optim.Adam(term.head.parameters(), lr=1e-2)
    for _ in range(40):
        loss = term.losses(*args)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained = term.losses(*args)
    assert trained["loss_pointer"] < first["loss_pointer"] and trained["loss_region"] < first["loss_region"]
    # the same head judged against other objects' boxes scores worse than against the asked-about ones
    others = [next((b for b in s.regions if b != s.box), s.box) for s in samples]
    swapped = RegionTerm(term.head, 1.0, 1.0, term.regions, others, term.image_token_id, 2)
    assert any(o != s.box for o, s in zip(others, samples)), "some sample shows more than one object"
    assert swapped.losses(*args)["loss_pointer"] > trained["loss_pointer"]


def test_a_token_layout_that_does_not_match_is_refused(tiny_model_dir):
    model, samples, batch, hidden = _batch_and_states(tiny_model_dir)
    with pytest.raises(ValueError, match="visual tokens"):
        _term(model, samples, merge=4).losses(hidden, batch["input_ids"], batch["image_grid_thw"], batch["weights"])
