"""The evaluation of patch maps: metrics on hand-made maps, where the right answer is known."""
import numpy as np
import pandas as pd
import pytest
import torch

from llavamech import patch_eval as E


def test_curve_points_cover_zero_to_all():
    assert list(E.curve_points(64, 8)) == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    assert list(E.curve_points(3, 8)) == [0, 1, 2, 3]


def test_area_is_the_mean_height_over_the_share_of_patches():
    points = np.array([0, 32, 64])
    assert E.area(points, np.array([1.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert E.area(points, np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)


def test_scene_metrics_reward_a_map_on_the_box():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    on_box = np.where(mask, 1.0, 0.0)
    off_box = np.where(mask, 0.0, 1.0 + np.arange(16).reshape(4, 4) * 1e-3)
    curve = {"points": np.array([0, 16]), "deletion": np.array([1.0, 0.0]), "insertion": np.array([0.0, 1.0])}
    good = E.scene_metrics(on_box, mask, on_box, curve)
    bad = E.scene_metrics(off_box, mask, on_box, curve)
    assert good["pointing"] == 1.0 and bad["pointing"] == 0.0
    assert good["mass in box"] == 1.0 and bad["mass in box"] == 0.0
    assert good["agreement"] > 0.5 > bad["agreement"]
    assert np.isnan(E.scene_metrics(on_box, None, on_box, curve)["pointing"])
    assert good["top patches in box"] == 1.0 and bad["top patches in box"] == 0.0


def test_box_metrics_do_not_depend_on_where_a_map_puts_its_zero_or_its_scale():
    rng = np.random.default_rng(0)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True
    scores = rng.random((8, 8)) + 2 * mask   # a map on the box, over a floor spread on every patch
    curve = {"points": np.array([0, 64]), "deletion": np.array([1.0, 0.0]), "insertion": np.array([0.0, 1.0])}
    base = E.scene_metrics(scores, mask, scores, curve)
    for moved in (scores + 10.0, 3 * scores - 1.0, np.exp(scores)):
        other = E.scene_metrics(moved, mask, scores, curve)
        assert other["top patches in box"] == base["top patches in box"] == 1.0
        if not np.allclose(moved, np.exp(scores)):   # mass is invariant to increasing affine moves only
            assert other["mass in box"] == pytest.approx(base["mass in box"])
    # the tool's normalisation (min-max, then over the sum) gives the same mass as the raw map
    from llavamech.explain import normalise_map
    tool = normalise_map(torch.as_tensor(scores)).numpy()
    assert E.scene_metrics(tool, mask, scores, curve)["mass in box"] == pytest.approx(base["mass in box"])


def test_ranking_breaks_ties_at_random_not_top_left_first():
    flat = np.zeros((8, 8))
    firsts = {int(E.ranking(flat, seed)[0]) for seed in range(20)}
    assert len(firsts) > 5
    assert E.ranking(np.arange(64.0).reshape(8, 8))[0] == 63


def test_evaluate_on_a_tiny_model(tmp_path):
    from llavamech import interventions as I
    from llavamech.examples import toy_examples
    from tests.conftest import tiny

    model = tiny("llava")
    items = toy_examples(2, seed=3)
    means = I.activation_means(model, items, "vqa")
    per_scene = E.evaluate(model, items, methods=("tool", "random"), means=means, steps=4, ig_steps=4)
    assert len(per_scene) == 4 and set(per_scene["method"]) == {"tool", "random"}
    assert per_scene[list(E.METRICS)].drop(columns="agreement").notna().all().all()
    table = E.summary(per_scene)
    assert list(table.index) == ["tool", "random", "box's share of the patches"]


def test_the_curves_of_several_maps_in_one_batch_are_each_maps_own():
    """curves runs every map's points of a scene in one set of passes, each distinct set of removed patches once: each
    map's curves are what they are alone (float32, to its rounding), and the shared start and end points agree."""
    from llavamech.examples import toy_examples
    from llavamech.patches import embed
    from tests.conftest import tiny

    model = tiny("llava")
    item = toy_examples(1, seed=3)[0]
    x = model.explain(item.image, question=item.question)
    emb = embed(model, model.inputs(item.image, item.question), x.trace.positions.image_positions)
    rng = np.random.default_rng(0)
    maps = {"a": rng.random(x.grid_shape), "b": rng.random(x.grid_shape), "flat": np.zeros(x.grid_shape)}
    together = E.curves(model, emb, x.answer_token_id, maps, None, steps=4)
    for name, scores in maps.items():
        alone = E.curves(model, emb, x.answer_token_id, {name: scores}, None, steps=4)[name]
        for kind in ("deletion", "insertion"):
            np.testing.assert_allclose(together[name][kind], alone[kind], rtol=1e-5, atol=1e-7)
    assert together["a"]["deletion"][0] == together["b"]["deletion"][0] == together["a"]["insertion"][-1]


def test_absent_animal_asks_both_questions_of_each_scene():
    from llavamech.examples import toy_examples
    from tests.conftest import tiny

    model = tiny("llava")
    items = toy_examples(3, seed=4)
    frame = E.absent_animal(model, items, ["dog", "cat", "horse", "cow", "bird", "fish"], ["white", "black"])
    assert list(frame["asked"]) == ["present", "absent"] * 3
    absent = frame[frame["asked"] == "absent"]
    assert all(a not in dict(e.facts) for a, e in zip(absent["animal"], items))
    assert absent["correct"].isna().all() and frame[frame["asked"] == "present"]["correct"].notna().all()
    assert ((frame["mass on the animals"] >= 0) & (frame["mass on the animals"] <= 1)).all()
    # on an animal of the named colour implies on an animal; no animal of that colour, no hit
    assert (frame["top patch on an animal of that colour"] <= frame["top patch on an animal"]).all()
    assert (frame.loc[frame["a colour of the scene"] == 0, "top patch on an animal of that colour"] == 0).all()
    # its chance: those animals' share of the patches, no more than every animal's
    share = frame["that colour's animals' share of the patches"]
    assert (share <= frame["animals' share of the patches"]).all()
    assert (share[frame["a colour of the scene"] == 0] == 0).all()


def test_the_mask_of_one_colour_covers_only_the_animals_of_that_colour():
    from llavamech.examples import toy_examples
    from llavamech.imaging import load_image
    from tests.conftest import tiny

    model = tiny("llava")
    example = toy_examples(1, seed=4)[0]
    size, grid = load_image(example.image).size, (6, 6)
    every = E.animals_mask(example, size, model.processor.image_processor, grid)
    by_colour = [E.animals_mask(example, size, model.processor.image_processor, grid, colour=c)
                 for c in {c for _, c in example.facts}]
    assert np.array_equal(np.logical_or.reduce(by_colour), every) and all(m.any() for m in by_colour)
    assert not E.animals_mask(example, size, model.processor.image_processor, grid, colour="no such colour").any()


def test_pointing_is_the_top_patch_in_the_mask_and_float_noise_does_not_decide_it():
    from llavamech.patch_eval import pointing
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    scores = np.zeros((3, 3))
    scores[1, 1] = 1.0
    assert pointing(scores, mask) and not pointing(-scores, mask)
    tie = np.full((3, 3), 0.5)
    tie[2, 2] = 0.5 + 1e-9          # below the resolution: a tie, the first patch wins on every machine
    assert not pointing(tie, np.eye(3, dtype=bool)[::-1]) and pointing(tie, np.eye(3, dtype=bool))


def test_randomised_weights_are_restored_and_other_threads_wait_for_them():
    import threading
    import llavamech
    from llavamech.hooks import model_lock

    model = llavamech.load("tiny-random-llava")
    layer = model.anatomy.layers[-1]
    before = layer.mlp.down_proj.weight.clone()
    seen = []
    with E.randomised(model, [layer], seed=0):
        assert not torch.equal(layer.mlp.down_proj.weight, before)
        other = threading.Thread(target=lambda: seen.append(model_lock(model.hf).acquire(timeout=0.2)))
        other.start()
        other.join()
    assert seen == [False] and torch.equal(layer.mlp.down_proj.weight, before)


def test_paired_difference_is_over_the_same_scenes():
    per_scene = pd.DataFrame({"scene": [0, 0, 1, 1, 2, 2], "method": ["tool", "ig"] * 3,
                              "pointing": [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]})
    d = E.paired_difference(per_scene, "tool", "ig", "pointing")
    assert d.mean == pytest.approx(2 / 3) and d.n == 3 and d.low <= d.mean <= d.high
    assert E.paired_difference(per_scene, "ig", "tool", "pointing").mean == pytest.approx(-2 / 3)


def test_a_paired_difference_without_any_scene_is_one_line():
    from llavamech.errors import LlavamechError
    unseen = pd.DataFrame({"scene": [0, 0], "method": ["tool", "ig"], "pointing": [np.nan, np.nan],
                           "deletion": [np.nan, 0.2]})
    with pytest.raises(LlavamechError, match="no scene has a pointing for both tool and ig: pointing needs a box"):
        E.paired_difference(unseen, "tool", "ig", "pointing")
    with pytest.raises(LlavamechError, match="^no scene has a deletion for both tool and ig$"):
        E.paired_difference(unseen, "tool", "ig", "deletion")
