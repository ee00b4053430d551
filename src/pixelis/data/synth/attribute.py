"""`attribute`: colour, shape or size of an object picked out by a spatial relation or a comparison.

Questions: "What colour is the shape left of the blue triangle?", "What shape is the object above the red
circle?", "Which is larger, the green star or the pink square?". Golden: get_properties at the object(s)
(at hard, first at the reference object to confirm it) -> answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import ImageDraw

from pixelis.core.trajectory import ToolCall
from pixelis.data import render
from pixelis.data.synth.base import Episode, Rejected, Scene, TaskFamily, require
from pixelis.data.synth.count import point_call, properties_match, properties_name

RELATIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}


def in_relation(ref: render.Shape, other: render.Shape, relation: str) -> bool:
    """Whether `other` lies clearly in direction `relation` of `ref` (within a narrow cone)."""
    ux, uy = RELATIONS[relation]
    dx, dy = other.center[0] - ref.center[0], other.center[1] - ref.center[1]
    along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
    return along > 0 and across <= 0.6 * along


def related_triples(shapes: list[render.Shape]) -> list[tuple[render.Shape, str, render.Shape]]:
    """(reference, relation, target) where the target is the only object in that direction of the reference,
    and no object lies in the wider cone around it (so the answer is unambiguous)."""
    out = []
    for ref in shapes:
        for relation, (ux, uy) in RELATIONS.items():
            cone = []
            for o in shapes:
                if o is ref:
                    continue
                dx, dy = o.center[0] - ref.center[0], o.center[1] - ref.center[1]
                along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
                if along > 0 and across <= 1.2 * along:
                    cone.append(o)
            if len(cone) == 1 and in_relation(ref, cone[0], relation):
                out.append((ref, relation, cone[0]))
    return out


class Attribute(TaskFamily):
    name = "attribute"
    tiers: dict[str, dict[str, Any]] = {
        # canvas px, objects, object size px, question kinds, whether the reference is confirmed first
        "simple": {"canvas": [384, 384], "objects": [3, 4], "size": [50, 72], "questions": ["color", "shape"],
                   "confirm_reference": False, "lines": 0},
        "medium": {"canvas": [512, 512], "objects": [5, 7], "size": [32, 56],
                   "questions": ["color", "shape", "size"], "confirm_reference": False, "lines": 8},
        "hard": {"canvas": [640, 640], "objects": [8, 11], "size": [22, 44],
                 "questions": ["color", "shape", "size"], "confirm_reference": True, "lines": 16},
    }

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        tier = self.tiers[difficulty]
        canvas = tuple(tier["canvas"])
        n = int(rng.integers(tier["objects"][0], tier["objects"][1] + 1))
        pairs = render.distinct_pairs(rng, n)
        specs = [(k, c, int(rng.integers(tier["size"][0], tier["size"][1] + 1))) for c, k in pairs]
        try:
            shapes = render.scatter_shapes(rng, canvas, specs, gap=12)
        except render.PlacementError as exc:
            raise Rejected("no_room", str(exc)) from None
        img = render.background(rng, canvas)
        draw = ImageDraw.Draw(img)
        for s in shapes:
            render.draw_shape(draw, s)
        if tier["lines"]:
            render.add_clutter(draw, rng, canvas, tier["lines"], 0, [s.box for s in shapes])
        qkind = str(rng.choice(tier["questions"]))
        info: dict[str, Any] = {"canvas": canvas, "shapes": shapes, "qkind": qkind, "difficulty": difficulty,
                                "confirm_reference": tier["confirm_reference"]}
        if qkind == "size":
            pairs_ok = [(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1:]
                        if max(render.shape_area(a), render.shape_area(b))
                        >= 1.4 * min(render.shape_area(a), render.shape_area(b))]
            require(bool(pairs_ok), "no_size_pair")
            a, b = pairs_ok[int(rng.integers(len(pairs_ok)))]
            larger = a if render.shape_area(a) > render.shape_area(b) else b
            question = f"Which is larger, the {a.name} or the {b.name}?"
            answer = f"the {larger.name}"
            target = {"type": "choice", "value": answer, "choices": [f"the {a.name}", f"the {b.name}"]}
            info.update(compared=[a, b], larger=larger)
            steps = 2
        else:
            # The asked attribute must differ from the reference's, so copying it from the question never works.
            attr = "color" if qkind == "color" else "kind"
            triples = [t for t in related_triples(shapes) if getattr(t[0], attr) != getattr(t[2], attr)]
            require(bool(triples), "no_relation")
            ref, relation, obj = triples[int(rng.integers(len(triples)))]
            if qkind == "color":
                question, answer = f"What colour is the shape {relation} the {ref.name}?", obj.color
            else:
                question, answer = f"What shape is the object {relation} the {ref.name}?", obj.kind
            target = {"type": "text", "value": answer}
            info.update(reference=ref, relation=relation, object=obj)
            steps = 2 if tier["confirm_reference"] else 1
        knobs = {"canvas": list(canvas), "objects": n, "question": qkind, "steps": steps,
                 "object_fraction": round(float(np.mean([(s.box[2] - s.box[0]) / canvas[0] for s in shapes])), 3)}
        return Scene(images=[img], question=question, answer=answer, target=target, knobs=knobs, info=info)

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        info, canvas = scene.info, scene.info["canvas"]
        if info["qkind"] == "size":
            a = info["compared"][0]
            return f"Measure the {a.name} first.", point_call(a, canvas)
        if info["confirm_reference"]:
            ref = info["reference"]
            return f"Many shapes here; first confirm which one is the {ref.name}.", point_call(ref, canvas)
        return self._object_step(scene)

    def _object_step(self, scene: Scene) -> tuple[str, ToolCall]:
        info = scene.info
        attr = "colour" if info["qkind"] == "color" else "shape"
        return (f"The object {info['relation']} the {info['reference'].name} is this one; check its {attr}.",
                point_call(info["object"], info["canvas"]))

    def solve(self, ep: Episode, scene: Scene) -> str:
        info = scene.info
        thought, call = self.first_call(scene)
        if info["qkind"] == "size":
            a, b = info["compared"]
            obs_a = ep.call(thought, call.name, call.arguments)
            require(properties_match(obs_a, a), "properties_mismatch", f"{a.name} read as {properties_name(obs_a)}")
            second = point_call(b, info["canvas"])
            obs_b = ep.call(f"The {a.name} covers {obs_a.data.get('area_px')} px. Now measure the {b.name}.",
                            second.name, second.arguments)
            require(properties_match(obs_b, b), "properties_mismatch", f"{b.name} read as {properties_name(obs_b)}")
            area_a, area_b = obs_a.data.get("area_px", 0), obs_b.data.get("area_px", 0)
            require((area_a > area_b) == (info["larger"] is a), "size_disagrees", f"{area_a} vs {area_b}")
            return (f"The {b.name} covers {area_b} px against {area_a} px for the {a.name}, "
                    f"so the {info['larger'].name} is larger.")
        ref, obj = info["reference"], info["object"]
        if info["confirm_reference"]:
            obs = ep.call(thought, call.name, call.arguments)
            require(properties_match(obs, ref), "properties_mismatch", f"{ref.name} read as {properties_name(obs)}")
            thought, call = self._object_step(scene)
            thought = f"That is the {ref.name}. " + thought
        obs = ep.call(thought, call.name, call.arguments)
        require(properties_match(obs, obj), "properties_mismatch", f"{obj.name} read as {properties_name(obs)}")
        return f"The object {info['relation']} the {ref.name} is a {obj.name}, so the answer is {scene.answer}."

    def semantic_trap(self, ep: Episode, scene: Scene, rng: np.random.Generator) -> bool:
        info = scene.info
        relevant = info.get("compared") or [info["reference"], info["object"]]
        wrong = [s for s in info["shapes"] if s not in relevant]
        if not wrong:
            return False
        decoy = wrong[int(rng.integers(len(wrong)))]
        thought, _ = self.first_call(scene)
        call = point_call(decoy, info["canvas"])
        obs = ep.execute(call.name, call.arguments)
        if not properties_match(obs, decoy):
            return False
        ep.record(thought, call, obs, kind="trap")
        if info["qkind"] == "size":
            meant = f"the {info['compared'][0].name}"
        elif info["confirm_reference"]:
            meant = f"the {info['reference'].name}"
        else:
            meant = f"the object {info['relation']} the {info['reference'].name}"
        ep.expect_correction(f"That point is on the {decoy.name}, not {meant}; look again.")
        return True
