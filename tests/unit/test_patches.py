"""The patch methods: each gives a grid for the model's own answer; removal through the input embeddings equals
ablation of the projector's output through hooks; integrated gradients are complete; the tool is `explain`'s map;
bad requests get one clear error."""
import numpy as np
import pytest
import torch

from llavamech import interventions as I
from llavamech import patches as P
from llavamech.errors import LlavamechError
from llavamech.examples import toy_examples
from tests.conftest import tiny


@pytest.fixture(scope="module")
def means(llava):
    return I.activation_means(llava, toy_examples(3, seed=1), "vqa")


@pytest.fixture(scope="module")
def maps(llava, scene, means):
    return P.patch_maps(llava, scene.image, "What is the color of the dog?", means=means, ig_steps=64)


def test_every_method_scores_the_grid_for_the_answer(llava, scene, maps):
    x = llava.explain(scene.image, "What is the color of the dog?")
    for method, pm in maps.items():
        assert pm.scores.shape == tuple(x.grid_shape), method
        assert np.isfinite(pm.scores).all(), method
        assert pm.answer_token_id == x.answer_token_id
    assert np.allclose(maps["tool"].scores, np.asarray(x.patch_grid))
    assert not np.allclose(maps["tool"].scores, maps["top-k"].scores)


def test_removal_through_embeddings_equals_projector_ablation(llava, scene, means):
    inputs = llava.inputs(scene.image, "What is the color of the dog?")
    emb, token = P.embed(llava, inputs), 5
    rows = [[], [0], [3, 7], list(range(10))]
    ours = P.answer_logprob(llava, emb, token, rows, means)
    for row, value in zip(rows, ours):
        with torch.no_grad(), I.ablated(llava, patches=row, how="mean", means=means):
            logits = llava.hf(**inputs).logits[0, -1]
        assert value == pytest.approx(torch.log_softmax(logits, -1)[token].item(), abs=1e-5)


def test_ablation_scores_are_the_drop_per_patch(llava, scene, means, maps):
    emb = P.embed(llava, llava.inputs(scene.image, "What is the color of the dog?"))
    token = maps["tool"].answer_token_id
    logp = P.answer_logprob(llava, emb, token, [[], [4]], means)
    assert maps["ablation"].scores.ravel()[4] == pytest.approx(logp[0] - logp[1], abs=1e-6)


def test_integrated_gradients_are_complete(llava, scene, means, maps):
    """IG sums to log p(answer) clean minus with every patch removed (its baseline), to the Riemann error."""
    emb = P.embed(llava, llava.inputs(scene.image, "What is the color of the dog?"))
    token = maps["ig"].answer_token_id
    clean, removed = map(float, P.answer_logprob(llava, emb, token, [[], list(range(maps["ig"].scores.size))], means))
    assert maps["ig"].scores.sum() == pytest.approx(clean - removed, abs=1e-3 + 1e-2 * abs(clean - removed))


def test_gradient_times_input_matches_a_finite_difference(scene):
    """Central difference of log p along the patch's own direction, in float64 (eager attention still takes its
    softmax in float32, hence a coarse step and a 1 % tolerance)."""
    llava = tiny("llava")
    llava.hf.double()
    emb = P.embed(llava, llava.inputs(scene.image, "What is the color of the dog?"))
    emb.embeds = emb.embeds.double()
    token, eps, patch = 5, 1e-2, 2
    grad_x_input = P.gradient_scores(llava, emb, token)[patch]

    def logp(scale):    # d/dε log p(v (1+ε)) at 0 = grad · v
        embeds = emb.embeds.clone()
        embeds[0, emb.image_positions[patch]] *= scale
        with torch.no_grad():
            return P._logprob(llava, embeds, token).item()

    assert grad_x_input == pytest.approx((logp(1 + eps) - logp(1 - eps)) / (2 * eps), rel=1e-2)
    assert abs(grad_x_input) > 1e-4


def test_bad_requests_get_one_clear_error(llava, scene):
    with pytest.raises(LlavamechError, match="unknown method 'saliency'"):
        P.patch_map(llava, scene.image, "What is the color of the dog?", "saliency")
    with pytest.raises(LlavamechError, match="heads must be a whole number from 1 to"):
        P.patch_map(llava, scene.image, "What is the color of the dog?", "top-k", heads=0)
    with pytest.raises(LlavamechError, match="text-only"):
        P.check_method("ablation", tiny("llama"))
    with pytest.raises(LlavamechError, match="text-only"):
        P.patch_map(tiny("llama"), scene.image, "What is the color of the dog?", "tool")


def test_every_method_maps_llava_next_onto_its_non_square_grid(scene):
    """LLaVA-NeXT: the methods score the assembled high-resolution grid (tiles, padding removed) and the map is
    drawn over the whole original image, which its tiles cover."""
    next_ = tiny("llava", next=True)
    wide = scene.image.crop((0, 0, 80, 50))
    maps = P.patch_maps(next_, wide, "What is the color of the dog?", ig_steps=16)
    x = next_.explain(wide, "What is the color of the dog?")
    rows, cols = x.grid_shape
    assert rows != cols
    for method, pm in maps.items():
        assert pm.scores.shape == (rows, cols) and np.isfinite(pm.scores).all(), method
    assert x.view.size == wide.size
    with pytest.raises(ValueError, match="LLaVA-NeXT"):
        with I.ablated(next_, patches=[0]):
            pass


def test_explain_with_a_method_puts_its_map_in_the_contract(llava, scene, means, maps):
    """`Model.explain(method=...)`: the tool's answer and heads, the method's scores as `patch_grid`, and its name."""
    tool = llava.explain(scene.image, "What is the color of the dog?")
    for method in ("top-k", "ablation"):
        x = llava.explain(scene.image, "What is the color of the dog?", method=method,
                          **({"means": means} if method == "ablation" else {}))
        assert x.method == method and x.answer == tool.answer and x.top_heads == tool.top_heads
        assert np.allclose(np.asarray(x.patch_grid), maps[method].scores, atol=1e-6)
        assert x.seconds["total"] >= x.seconds["method"] >= 0
    assert llava.explain(scene.image, "What is the color of the dog?").method == "tool"
    with pytest.raises(LlavamechError, match="without a context"):
        llava.explain(scene.image, "What is the color of the dog?", context="The dog is red.", method="gradient")
    with pytest.raises(LlavamechError, match="give an image"):
        llava.explain(None, "What is the color of the dog?", method="gradient")


def test_the_registry_names_every_method_once_and_captures_embeddings_only_for_those_that_perturb(llava, scene):
    assert list(P.METHODS) == ["tool", "top-k", "attention", "ablation", "gradient", "ig", "random"]
    cheap = P.patch_maps(llava, scene.image, "What is the color of the dog?", ("tool", "top-k", "attention", "random"))
    assert all(pm.embedded is None for pm in cheap.values())
    perturbed = P.patch_maps(llava, scene.image, "What is the color of the dog?", ("tool", "gradient"))
    assert perturbed["gradient"].embedded is not None
