"""The generated suite: coverage, manifest, determinism, and the oracle replay of every golden trajectory."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pixelis.core.trajectory import ToolCall, read_jsonl
from pixelis.data.synth.base import DIFFICULTIES
from pixelis.data.synth.suite import FAMILIES, SampleKey, generate_sample, generate_suite, plan_splits
from pixelis.eval.scoring import score_answer
from pixelis.tools.base import ToolContext, ToolLimits


def dir_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def test_every_family_and_tier_generates(suite):
    cells = Counter((t.metadata["family"], t.metadata["difficulty"]) for t in suite.generated)
    assert cells == Counter({(f, d): 1 for f in FAMILIES for d in DIFFICULTIES})
    for traj in suite.generated:
        meta = traj.metadata
        assert meta["source"] == "synth" and isinstance(meta["trap"], bool) and meta["knobs"]
        assert traj.steps and all(s.call is not None and s.observation is not None for s in traj.steps)
        assert traj.target["type"] in ("text", "number", "choice", "box")
        if meta["family"] in ("track", "temporal"):
            assert traj.video and 8 <= len(traj.video) <= 12 and len(traj.images) == 1
        else:
            assert traj.video is None and len(traj.images) == 1
    assert len({t.id for t in suite.generated}) == len(suite.generated)


def test_difficulty_knobs_grow_harder(suite):
    by = {(t.metadata["family"], t.metadata["difficulty"]): t.metadata["knobs"] for t in suite.generated}
    text = [by["small_text", d]["text_px"] for d in DIFFICULTIES]
    canvas = [by["small_text", d]["canvas"][0] for d in DIFFICULTIES]
    assert text[0] > 2 * max(text[1:]) and canvas[0] < canvas[1] < canvas[2]
    for fam in ("count", "attribute", "track", "temporal"):
        assert by[fam, "hard"]["object_fraction"] < by[fam, "simple"]["object_fraction"]
    assert by["count", "hard"]["distractors"] > by["count", "simple"]["distractors"]
    assert by["track", "hard"]["frames"] > by["track", "simple"]["frames"]


def test_manifest_counts_match_files(suite):
    manifest = json.loads((suite.dir / "manifest.json").read_text())
    assert manifest["seed"] == 11 and manifest["n"] == 15 and manifest["generator_version"]
    for split in ("train", "val", "test"):
        rows = [json.loads(line) for line in (suite.dir / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == manifest["totals"][split]
        seen = Counter((r["metadata"]["family"], r["metadata"]["difficulty"]) for r in rows)
        for fam, per_diff in manifest["counts"][split].items():
            for diff, count in per_diff.items():
                assert seen[fam, diff] == count
    traps = sum(t.metadata["trap"] for t in suite.generated)
    assert sum(v for per in manifest["traps"].values() for v in per.values()) == traps
    assert set(manifest["rejections"]) == set(FAMILIES)
    assert all(set(per) == set(DIFFICULTIES) for per in manifest["rejections"].values())
    assert manifest["knobs"]["small_text"]["hard"]["canvas"] == [1024, 768]


def test_oracle_replay_reproduces_every_observation_and_answers_score(suite, registry):
    loaded = [t for split in ("train", "val", "test") for t in read_jsonl(suite.dir / f"{split}.jsonl")]
    assert len(loaded) == 15
    for traj in loaded:
        images = list(traj.images)
        for i, step in enumerate(traj.steps):
            ctx = ToolContext(images=list(images), video=traj.video, limits=ToolLimits())
            obs = registry.execute(ToolCall(step.call.name, step.call.arguments), ctx)
            where = f"{traj.id} step {i} ({step.call.name})"
            assert obs.text == step.observation.text, where
            assert json.loads(json.dumps(obs.data)) == step.observation.data, where
            assert (obs.error is None) == (step.observation.error is None), where
            if obs.error is not None:
                assert obs.error.kind == step.observation.error.kind, where
            assert len(obs.images) == len(step.observation.images), where
            for a, b in zip(obs.images, step.observation.images):
                assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))), where
            images.extend(step.observation.images)
        assert score_answer(traj.answer, traj.target), traj.id


def test_golden_trajectories_without_traps_are_all_normal_steps(suite):
    for traj in suite.generated:
        kinds = [s.kind for s in traj.steps]
        if not traj.metadata["trap"]:
            assert set(kinds) == {"normal"}, traj.id
            assert all(s.observation.error is None for s in traj.steps), traj.id
        assert len(traj.steps) <= 6


def test_trap_variants_are_marked_and_their_golden_part_scores(registry):
    trajs = [generate_sample(SampleKey(f, "medium", i), 5, 1.0, registry) for f in FAMILIES for i in range(3)]
    kinds_of_trap, malformed_at = set(), set()
    for traj in trajs:
        kinds = [s.kind for s in traj.steps]
        assert traj.metadata["trap"] is True
        at = kinds.index("correction")
        first_trap = kinds.index("trap")
        # the trap steps come right before their correction; every other step is golden
        assert first_trap < at and set(kinds[first_trap:at]) == {"trap"}, (traj.id, kinds)
        assert set(kinds[:first_trap] + kinds[at + 1:]) <= {"normal"}, (traj.id, kinds)
        correction = traj.steps[at]
        assert correction.observation.error is None and correction.thought
        assert score_answer(traj.answer, traj.target)
        trap = traj.steps[at - 1]
        if trap.observation.error:
            kinds_of_trap.add("malformed")
            malformed_at.add(first_trap)
            assert at - first_trap == 1 and not trap.observation.images
            assert correction.thought.startswith(f"That call failed ({trap.observation.error.kind})")
            assert (trap.call.name, trap.call.arguments) != (correction.call.name, correction.call.arguments)
        else:
            kinds_of_trap.add("semantic")
            assert first_trap == 0
    assert kinds_of_trap == {"malformed", "semantic"}
    assert malformed_at - {0}, "malformed traps should also corrupt later golden calls"


def test_same_seed_same_bytes_other_seed_differs(tmp_path, registry):
    """Also across worker counts: two processes drawing samples write the same bytes as one."""
    kwargs = dict(n=6, families=["small_text", "temporal"], difficulties=["simple"], trap_rate=0.5,
                  val_fraction=0.34, test_fraction=0.34, registry=registry, progress=False)
    generate_suite(tmp_path / "a", seed=1, **kwargs)
    generate_suite(tmp_path / "b", seed=1, workers=2, **kwargs)
    generate_suite(tmp_path / "c", seed=2, **kwargs)
    assert dir_hash(tmp_path / "a") == dir_hash(tmp_path / "b")
    assert dir_hash(tmp_path / "a") != dir_hash(tmp_path / "c")


def test_adding_a_family_keeps_the_others_samples(registry):
    key = SampleKey("count", "simple", 0)
    a = generate_sample(key, 9, 0.0, registry)
    generate_sample(SampleKey("attribute", "simple", 0), 9, 0.0, registry)
    b = generate_sample(key, 9, 0.0, registry)
    assert a.question == b.question and np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_existing_suite_is_not_overwritten_silently(suite, registry):
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_suite(suite.dir, n=1, seed=0, registry=registry, progress=False)


def test_split_plan_is_stratified_and_exact():
    plan = plan_splits(0, 60, ["count", "track"], ["simple", "medium", "hard"], 0.2, 0.2)
    assert {s: len(v) for s, v in plan.items()} == {"train": 36, "val": 12, "test": 12}
    for split, keys in plan.items():
        assert Counter((k.family, k.difficulty) for k in keys) == Counter(
            {(f, d): len(keys) // 6 for f in ("count", "track") for d in ("simple", "medium", "hard")})
    all_keys = [k for keys in plan.values() for k in keys]
    assert len(set(all_keys)) == 60
    assert plan == plan_splits(0, 60, ["count", "track"], ["simple", "medium", "hard"], 0.2, 0.2)
    assert plan != plan_splits(1, 60, ["count", "track"], ["simple", "medium", "hard"], 0.2, 0.2)


def test_small_suites_still_get_held_out_samples():
    families, tiers = list(FAMILIES), list(DIFFICULTIES)
    plan = plan_splits(3, 45, families, tiers, 0.15, 0.15)  # 3 per cell: per-cell rounding would hold out none
    assert {s: len(v) for s, v in plan.items()} == {"train": 31, "val": 7, "test": 7}
    keys = [k for v in plan.values() for k in v]
    assert len(set(keys)) == 45
    per_cell = Counter((k.family, k.difficulty) for k in plan["val"] + plan["test"])
    assert max(per_cell.values()) <= 2  # every cell keeps at least one training sample


def test_uneven_n_spreads_the_remainder():
    plan = plan_splits(0, 7, ["count", "track"], ["simple", "hard"], 0.0, 0.0)
    cells = Counter((k.family, k.difficulty) for k in plan["train"])
    assert sorted(cells.values()) == [1, 2, 2, 2] and sum(cells.values()) == 7


@pytest.mark.parametrize("kwargs,match", [
    (dict(families=["count", "nope"]), "unknown families"),
    (dict(difficulties=["easy"]), "unknown difficulties"),
    (dict(trap_rate=1.5), "trap_rate"),
    (dict(val_fraction=0.6, test_fraction=0.5), "val_fraction"),
])
def test_bad_arguments_are_named(tmp_path, registry, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_suite(tmp_path, n=3, seed=0, registry=registry, progress=False, **kwargs)
