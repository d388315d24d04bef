"""The training recipe runs end to end, its losses fall, and the held-out split is never trained on."""
import random

import pytest

from llavamech.organism import recipe
from llavamech.models import Model


def test_held_out_keys_are_never_sampled_for_training():
    rng = random.Random(0)
    for _ in range(500):
        facts, asked = recipe.sample_split(rng, rng.randint(1, 4), held_out=False)
        assert not recipe.is_held_out(facts, asked)
    held = [recipe.sample_split(rng, 3, held_out=True) for _ in range(50)]
    assert all(recipe.is_held_out(f, a) for f, a in held)


def test_about_one_key_in_ten_is_held_out():
    from llavamech.organism.world import sample_facts
    rng = random.Random(1)
    keys = [(facts, rng.choice(facts)[0]) for facts in (sample_facts(rng, rng.randint(1, 4)) for _ in range(4000))]
    share = sum(recipe.is_held_out(f, a) for f, a in keys) / len(keys)
    assert 0.08 < share < 0.12


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("organism")
    plan = recipe.smoke_recipe(seed=0)
    recipe.run("all", out, plan)
    return out, plan.history


def mean(xs):
    return sum(xs) / len(xs)


def test_every_stage_runs_and_its_loss_falls(smoke):
    _, history = smoke
    for stage in ("vicuna", "clip", "stage1", "stage2"):
        losses = [r["loss"] for r in history if r["stage"] == stage]
        k = max(2, len(losses) // 4)
        assert mean(losses[-k:]) < mean(losses[:k]), (stage, losses)


def test_smoke_models_save_and_load_through_llavamech(smoke):
    import llavamech
    out, _ = smoke
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


@pytest.fixture(scope="module")
def multi_smoke(tmp_path_factory):
    """The multi-question recipe for a few steps, from the shipped toy-clip (as `train-organism --multi` does)."""
    import shutil
    from llavamech.paths import MODELS_DIR

    out = tmp_path_factory.mktemp("multi")
    shutil.copytree(MODELS_DIR / "toy-clip", out / "toy-clip")
    plan = recipe.smoke_recipe(seed=0, multi=True)
    recipe.run("all", out, plan)
    return out, plan.history


def test_the_multi_recipe_trains_every_type_and_keeps_the_colour_words_ids(multi_smoke):
    import llavamech
    from llavamech.organism import build

    out, history = multi_smoke
    assert (out / "toy-llava-multi" / "config.json").exists() and not (out / "toy-llava" / "config.json").exists()
    llava = llavamech.load(str(out / "toy-llava-multi"))
    colour_vocab = build.build_tokenizer().get_vocab()
    assert all(llava.tokenizer.get_vocab()[w] == i for w, i in colour_vocab.items())
    assert all(llava.knows(w) for w in ("yes", "no", "three", "left", "right"))
    for stage in ("vicuna", "stage2"):
        losses = [r["loss"] for r in history if r["stage"] == stage]
        k = max(2, len(losses) // 4)
        assert mean(losses[-k:]) < mean(losses[:k]), (stage, losses)


def test_chapter_6s_measures_run_on_every_type(multi_smoke):
    import numpy as np
    import llavamech
    from llavamech import question_study as study
    from llavamech.interventions import activation_means

    out, _ = multi_smoke
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
