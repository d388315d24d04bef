"""Ablations through hooks: nothing ablated is the model itself; every head of a layer is that layer's attention;
the model is unchanged afterwards; batched per-row patch ablation equals ablating one image at a time."""
import pytest
import torch

from llavamech import interventions as I
from llavamech.examples import toy_examples


def logits(model, kwargs, **ablation):
    with torch.no_grad(), I.ablated(model, **ablation):
        return model.hf(**model.inputs(**kwargs)).logits[0, -1]


def test_ablating_nothing_is_the_model_itself(model, example):
    before = logits(model, example)
    assert torch.equal(logits(model, example, heads=[], attn_layers=[], ffn_layers=[]), before)


def test_every_head_of_a_layer_is_the_attention_layer(model, example):
    layer = model.anatomy.n_layers - 1
    all_heads = [(layer, h) for h in range(model.anatomy.n_heads)]
    by_heads = logits(model, example, heads=all_heads)
    by_layer = logits(model, example, attn_layers=[layer])
    assert torch.allclose(by_heads, by_layer, atol=1e-5)
    assert not torch.allclose(by_heads, logits(model, example), atol=1e-3)


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())


def test_hooks_are_removed_and_the_model_is_unchanged(model, example):
    before, hooks = logits(model, example), hook_count(model)
    logits(model, example, heads=[(0, 0)], ffn_layers=[0], attn_layers=[1])
    with pytest.raises(RuntimeError):
        with I.ablated(model, heads=[(0, 1)]):
            raise RuntimeError("inside")
    assert torch.equal(logits(model, example), before)
    assert hook_count(model) == hooks


def test_mean_ablation_uses_the_means(model, example):
    examples = toy_examples(3, seed=2)
    mode = "vqa" if model.is_multimodal else "tqa"
    means = I.activation_means(model, examples, mode)
    a = model.anatomy
    assert means.o_proj_in.shape == (a.n_layers, a.n_heads * a.head_dim) and means.ffn.shape == (a.n_layers, a.d_model)
    assert (means.visual is not None) == model.is_multimodal
    seen = []
    with torch.no_grad(), I.ablated(model, ffn_layers=[0], how="mean", means=means):
        hook = a.layers[0].mlp.register_forward_hook(lambda m, args, out: seen.append(out[0, -1].clone()))
        try:  # registered after the ablation's hook, so it sees what the ablation returned
            model.hf(**model.inputs(**example))
        finally:
            hook.remove()
    assert torch.allclose(seen[0], means.ffn[0])
    with pytest.raises(ValueError, match="mean ablation needs means"):
        logits(model, example, heads=[(0, 0)], how="mean")


def test_batched_patch_ablation_equals_one_image_at_a_time():
    from llavamech import load
    model = load("tiny-random-llava")
    example = toy_examples(1, seed=5)[0].inputs("vqa")
    inputs = model.inputs(**example)
    batch = {k: torch.cat([v, v, v]) for k, v in inputs.items()}
    rows = [[], [0, 3], [5]]
    with torch.no_grad(), I.ablated(model, patches=rows):
        batched = model.hf(**batch).logits[:, -1]
    for r, chosen in enumerate(rows):
        alone = logits(model, example, patches=chosen)
        assert torch.allclose(batched[r], alone, atol=1e-5)
    assert torch.equal(logits(model, example, patches=[]), logits(model, example))
    assert not torch.allclose(batched[1], batched[0], atol=1e-6)


def test_text_models_have_no_patches():
    from llavamech import load
    model = load("tiny-random-vicuna")
    with pytest.raises(ValueError, match="text-only"):
        logits(model, dict(question="What is the color of the dog?", context="The dog is red."), patches=[0])


def test_answer_scores_match_single_runs_and_the_ablation_test_runs():
    from llavamech import load
    model = load("tiny-random-llava")
    examples = toy_examples(5, seed=6)
    scores = I.answer_scores(model, examples, "tqa")
    for i, e in enumerate(examples):
        lp = torch.log_softmax(logits(model, e.inputs("tqa")), -1)[model.token_id(e.colour)]
        assert abs(scores["log p"][i] - float(lp)) < 1e-5
    table = I.head_ablation_test(model, examples, "vqa", [(1, 0), (1, 1), (0, 2)], ks=(1, 2), draws=3, how="zero")
    assert list(table.index) == [1, 2] and (table["draws"] == 3).all()
    assert 0 <= table.loc[2, "random draws hurting as much"] <= 1
