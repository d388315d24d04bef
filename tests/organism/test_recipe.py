"""The training recipe runs end to end, its losses fall, and the held-out split is never trained on."""
import random
import shutil

import pytest

from llavamech.organism import recipe
from llavamech.organism.world import make_scene, sample_facts
from llavamech.models import Model
from llavamech.paths import MODELS_DIR


def test_held_out_keys_are_never_sampled_for_training():
    rng = random.Random(0)
    for _ in range(500):
        facts, asked = recipe.sample_split(rng, rng.randint(1, 4), held_out=False)
        assert not recipe.is_held_out(facts, asked)
    held = [recipe.sample_split(rng, 3, held_out=True) for _ in range(50)]
    assert all(recipe.is_held_out(f, a) for f, a in held)


def test_one_sampler_draws_the_colour_scenes_on_the_wanted_side_of_the_split():
    rng = random.Random(3)
    for held_out in (True, False):
        for _ in range(40):
            scene, facts, asked = recipe.colour_scene(rng, held_out, sizes=recipe.EVALUATION_SIZES)
            assert recipe.is_held_out(facts, asked) == held_out
            assert scene.image.size[0] in recipe.EVALUATION_SIZES and 1 <= len(scene.animals) <= 3
            assert {a.name for a in scene.animals} == {a for a, _ in facts} and asked in dict(facts)
    # the same draws as sampling the split and then the scene, in that order (what the recipe always did)
    a, b = random.Random(9), random.Random(9)
    scene, facts, asked = recipe.colour_scene(a, True, (2, 3))
    facts_b, asked_b = recipe.sample_split(b, b.randint(2, 3), True)
    scene_b = make_scene(b, size=b.choice(recipe.TRAINING_SIZES), pairs=facts_b)
    assert (facts, asked) == (facts_b, asked_b) and scene.image.tobytes() == scene_b.image.tobytes()
    assert a.random() == b.random()


def test_about_one_key_in_ten_is_held_out():
    rng = random.Random(1)
    keys = [(facts, rng.choice(facts)[0]) for facts in (sample_facts(rng, rng.randint(1, 4)) for _ in range(4000))]
    share = sum(recipe.is_held_out(f, a) for f, a in keys) / len(keys)
    assert 0.08 < share < 0.12


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The recipe for a few steps, each kind trained once for the module: `smoke()` the colour recipe from scratch,
    `smoke(multi=True)` the multi-question one from the shipped toy-clip (as `train-organism --multi` does). Each
    gives (its output folder, its loss history)."""
    trained = {}

    def train(multi=False):
        if multi not in trained:
            out = tmp_path_factory.mktemp("multi" if multi else "organism")
            if multi:
                shutil.copytree(MODELS_DIR / "toy-clip", out / "toy-clip")
            plan = recipe.smoke_recipe(seed=0, multi=multi)
            recipe.run("all", out, plan)
            trained[multi] = out, plan.history
        return trained[multi]

    return train


def mean(xs):
    return sum(xs) / len(xs)


def assert_losses_fall(history, stages):
    """Each stage's mean loss over its last quarter of steps (at least 2) is below its first quarter's."""
    for stage in stages:
        losses = [r["loss"] for r in history if r["stage"] == stage]
        k = max(2, len(losses) // 4)
        assert mean(losses[-k:]) < mean(losses[:k]), (stage, losses)


def test_every_stage_runs_and_its_loss_falls(smoke):
    _, history = smoke()
    assert_losses_fall(history, ("vicuna", "clip", "stage1", "stage2"))


def test_smoke_models_save_and_load_through_llavamech(smoke):
    import llavamech
    out, _ = smoke()
    llava = llavamech.load(str(out / "toy-llava"))
    vicuna = llavamech.load(str(out / "toy-vicuna"))
    assert isinstance(llava, Model) and llava.is_multimodal and not vicuna.is_multimodal
    assert llava.anatomy.n_layers == vicuna.anatomy.n_layers == 4
    assert llava.hf.config.vision_feature_layer == -2 and llava.hf.config.vision_feature_select_strategy == "default"


def test_training_is_deterministic_under_a_seed():
    def losses(seed):
        plan = recipe.Recipe(seed=seed, vicuna_steps=4, vicuna_max_steps=4, batch=8, eval_every=10_000, eval_n=8)
        recipe.train_vicuna(plan)
        return [r["loss"] for r in plan.history]

    assert losses(3) == losses(3)
    assert losses(3) != losses(4)


def test_the_multi_recipe_trains_every_type_and_keeps_the_colour_words_ids(smoke):
    import llavamech
    from llavamech.organism import build

    out, history = smoke(multi=True)
    assert (out / "toy-llava-multi" / "config.json").exists() and not (out / "toy-llava" / "config.json").exists()
    llava = llavamech.load(str(out / "toy-llava-multi"))
    colour_vocab = build.build_tokenizer().get_vocab()
    assert all(llava.tokenizer.get_vocab()[w] == i for w, i in colour_vocab.items())
    assert all(llava.knows(w) for w in ("yes", "no", "three", "left", "right"))
    assert_losses_fall(history, ("vicuna", "stage2"))


def test_chapter_6s_measures_run_on_every_type(smoke):
    import numpy as np
    import llavamech
    from llavamech import question_study as study
    from llavamech.interventions import activation_means

    out, _ = smoke(multi=True)
    llava = llavamech.load(str(out / "toy-llava-multi"))
    sets = study.example_sets(6, seed=0)
    table = study.accuracy(llava, sets, "vqa")
    assert list(table.index) == list(sets) and (table["n"] == 6).all()
    assert table.loc["existence", "chance"] == 0.5 and table.loc["counting", "chance"] == pytest.approx(1 / 3)
    readings = study.head_readings(llava, sets)
    imp = study.imp_of(readings)
    assert imp["counting"].shape == (6, 4, 8) and readings["colour"]["attention"]["entropy"].shape == (6, 4, 8)
    spread = study.attention_spread(readings, {t: study.top_heads(v, 1)[0] for t, v in imp.items()})
    assert all(0 <= e.mean <= 1 for e in spread["relative entropy over patches"])
    means = activation_means(llava, sets["colour"], "vqa")
    shared = study.shared_circuit(llava, sets, study.top_heads(imp["colour"], 2), means, draws=5)
    assert list(shared.index) == list(sets) and all(0 < p <= 1 for p in shared["p (same layers)"])
    mirror = study.mirrored_order(llava, sets["position"])
    assert set(mirror.index) == {"image mirrored", "token order mirrored"} and (mirror["n"] == 6).all()
    features = study.explanation_features(llava, sets["existence"])
    assert np.isfinite(features[list(study.FEATURES)].to_numpy(float)).all()


def test_stage_2_without_the_text_mix_trains_on_images_alone(tmp_path):
    for name in ("toy-vicuna", "toy-clip"):
        shutil.copytree(MODELS_DIR / name, tmp_path / name)
    plan = recipe.smoke_recipe(seed=0)
    plan.tqa_weight = 0.0
    recipe.run("llava", tmp_path, plan)
    stage2 = [r for r in plan.history if r["stage"] == "stage2"]
    assert stage2 and not any("tqa_loss" in r for r in stage2)
    assert (tmp_path / "toy-llava" / "model.safetensors").exists()
