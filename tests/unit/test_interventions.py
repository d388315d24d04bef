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


def test_patch_ablation_at_the_projector_is_removal_from_the_embeddings(model, example):
    """Where the projector outputs the grid row-major (Llava, Gemma 3), ablating patch p there is zeroing the
    embedding at the p-th image position of a pass on the embeddings alone (with what the model hands its language
    model besides them); every other multimodal model is refused in one line, as its projector's rows are tiles or
    merged tokens in the tower's order."""
    from llavamech import patches as P
    from llavamech.errors import LlavamechError

    if not model.is_multimodal:
        pytest.skip("text-only: test_text_models_have_no_patches")
    grid = model.family.model_type == "gemma3" if model.family else "next=True" not in model.name
    if not grid:
        with pytest.raises(LlavamechError, match="does not output its patches as one grid") as error:
            logits(model, example, patches=[0])
        assert "\n" not in str(error.value)
        return
    emb, w, p = P.embed(model, model.inputs(**example)), 3, 2
    embeds = emb.embeds.clone()
    embeds[0, emb.image_positions[p]] = 0
    with torch.no_grad():
        removed = P._logprob(model, embeds, w, emb.extras, emb.injected).item()
    assert abs(float(torch.log_softmax(logits(model, example, patches=[p]), -1)[w]) - removed) < 1e-5


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
    assert list(table.index) == [1, 2] and (table["sets (all heads)"] == "3").all()
    assert 0 < table.loc[2, "p (all heads)"] <= 1


def test_batched_head_sets_equal_one_ablation_at_a_time():
    """set_scores with ablated(row_heads=...) (one head set per batch row, the image merged once) gives what
    answer_scores gives for each set alone, for zero and mean ablation, in VQA and TQA."""
    import numpy as np
    from llavamech import load
    model = load("tiny-random-llava")
    examples = toy_examples(4, seed=3)
    sets = [[], [(1, 0)], [(0, 1), (1, 2)], [(1, 0), (1, 1), (1, 2), (1, 3)]]
    for mode in ("vqa", "tqa"):
        means = I.activation_means(model, examples, mode)
        encoded = I.encode(model, examples, mode)
        for how in ("zero", "mean"):
            batched = I.set_scores(model, encoded, sets, lambda m, rows: I.ablated(m, row_heads=rows, how=how,
                                                                                   means=means), batch=6)
            for s, chosen in enumerate(sets):
                alone = I.answer_scores(model, examples, mode, heads=chosen, how=how, means=means)
                np.testing.assert_allclose(batched["log p"][s], alone["log p"], atol=1e-4)
                np.testing.assert_array_equal(batched["correct"][s], alone["correct"])


def test_null_sets_exact_when_few_sampled_when_many():
    import numpy as np
    rng = np.random.default_rng(0)
    chosen = [(1, 0), (1, 3)]
    same, exact = I.null_sets(4, 8, chosen, "same-layer", 200, rng)
    assert exact and len(same) == 28 - 1                     # every other pair of layer 1's 8 heads
    assert all(len(s) == 2 and {l for l, _ in s} == {1} for s in same)
    assert frozenset(chosen) not in {frozenset(s) for s in same}
    mixed, exact = I.null_sets(4, 8, [(0, 1), (2, 5), (2, 6)], "same-layer", 1000, rng)
    assert exact and len(mixed) == 8 * 28 - 1 and all(sorted(l for l, _ in s) == [0, 2, 2] for s in mixed)
    drawn, exact = I.null_sets(4, 8, chosen, "all", 50, rng)
    assert not exact and len(drawn) == 50 and all(len(set(s)) == 2 for s in drawn)
    singles, exact = I.null_sets(4, 8, [(1, 0)], "all", 200, rng)
    assert exact and len(singles) == 31
    with pytest.raises(ValueError, match="control"):
        I.null_sets(4, 8, chosen, "nearby", 10, rng)


def test_permutation_p_value():
    import numpy as np
    assert I.p_value(-1.0, np.array([0.0, -0.5, -2.0])) == pytest.approx(2 / 4)
    assert I.p_value(-5.0, np.zeros(199)) == pytest.approx(1 / 200)
    assert I.p_value(0.0, np.zeros(9)) == 1.0


def test_paired_test_has_the_resolution_the_rank_among_few_sets_lacks():
    """Three heads of a 4-head layer: 3 other sets, so the rank among them cannot say p < 1/4. On 40 examples where the
    chosen set costs 0.1 more than the random sets' mean on every example — though one random set costs more on
    average — the paired test is as small as its flips allow; the rank says 2 of 4. Without a difference, it finds
    none."""
    import types

    import numpy as np
    model = types.SimpleNamespace(anatomy=types.SimpleNamespace(n_layers=2, n_heads=4))
    n, rng = 40, np.random.default_rng(0)
    noise = rng.normal(0, 0.5, n)

    def effect(chosen: float):
        """The chosen set's Δ log p `chosen` + noise; the three random sets' -0.7, -1.0, -1.3 + the same noise."""
        logp = np.stack([chosen + noise] + [base + noise for base in (-0.7, -1.0, -1.3)])
        return lambda sets: {"Δ log p": logp[:len(sets)], "Δ accuracy": np.zeros((len(sets), n))}

    heads = [(1, 0), (1, 1), (1, 2)]
    c = I.against_random(model, heads, effect(-1.1), 100, rng, "same-layer")
    assert c.exact and c.sets == 3 and c.rank == 2 and c.rank_p == pytest.approx(2 / 4)
    np.testing.assert_allclose(c.paired, np.full(n, -0.1), atol=1e-12)
    assert c.p_value == pytest.approx(1 / 10_001)
    assert I.against_random(model, heads, effect(-1.0), 100, rng, "same-layer").p_value > 0.4


def test_ablation_test_reports_both_controls():
    from llavamech import load
    model = load("tiny-random-llava")
    table = I.head_ablation_test(model, toy_examples(4, seed=6), "vqa", [(1, 0), (1, 1), (0, 2)], ks=(1, 2), draws=5,
                                 how="zero", control_examples=3)
    assert list(table.index) == [1, 2] and (table["n (control)"] == 3).all()
    for name in ("all heads", "same layers"):
        assert ((0 < table[f"p ({name})"]) & (table[f"p ({name})"] <= 1)).all()
    n_heads = model.anatomy.n_heads
    assert table.loc[1, "sets (same layers)"] == f"{n_heads - 1} (all)"
    assert "_null all" not in I.shown(table).columns


def test_passes_on_embeddings_are_the_models_own_on_every_family(model):
    """encode + set_scores run the language model on the merged embeddings with what the model derives besides them
    (Qwen-VL's 3-D positions, Gemma 3's token types, Qwen3-VL's deepstack features), per batch row: with no head
    ablated they give the plain forward pass's log p, and with a head set what `answer_scores` (the whole model,
    image included) gives; without them, where a family has them, another model. The ablation test runs."""
    import numpy as np

    examples, mode = toy_examples(3, seed=4), "vqa" if model.is_multimodal else "tqa"
    encoded = I.encode(model, examples, mode)
    heads = [(model.anatomy.n_layers - 1, 1)]
    row_heads = lambda m, rows: I.ablated(m, row_heads=rows)
    scores = I.set_scores(model, encoded, [[], heads], row_heads, batch=4)   # chunks that mix examples and sets
    for i, e in enumerate(examples):
        plain = torch.log_softmax(logits(model, e.inputs(mode)), -1)[model.token_id(e.expected)]
        assert abs(scores["log p"][0, i] - float(plain)) < 1e-5
    np.testing.assert_allclose(scores["log p"][1], I.answer_scores(model, examples, mode, heads=heads)["log p"],
                               atol=1e-5)
    if any(inputs["extras"] or inputs["visual"] for _, inputs in encoded.groups):
        for _, inputs in encoded.groups:
            inputs.update(extras={}, visual={})
        bare = I.set_scores(model, encoded, [[]], row_heads)["log p"][0]
        assert np.abs(bare - scores["log p"][0]).max() > 1e-6
    means = I.activation_means(model, examples, mode)
    table = I.head_ablation_test(model, examples, mode, [(1, 0), (0, 1)], ks=(1,), draws=2, means=means)
    assert list(table.index) == [1] and 0 < table.loc[1, "p (all heads)"] <= 1


def test_holm_columns_adjust_every_p_value_of_a_table_together_and_shown_fills_missing_cells():
    import pandas as pd

    table = pd.DataFrame({"p (all heads)": [0.01, 0.2], "p (same layers)": [0.04, 0.5], "clean accuracy": [0.9, None]},
                         index=[1, 3])
    adjusted = I.with_holm(table)
    assert list(adjusted.columns) == ["p (all heads)", "p, Holm (all heads)", "p (same layers)",
                                      "p, Holm (same layers)", "clean accuracy"]
    assert adjusted["p, Holm (all heads)"].tolist() == pytest.approx([0.04, 0.4])
    assert adjusted["p, Holm (same layers)"].tolist() == pytest.approx([0.12, 0.5])
    assert I.with_holm(adjusted).equals(adjusted)   # a table put together again is adjusted afresh, once
    assert I.shown(adjusted).loc[3, "clean accuracy"] == "—"
    assert "[a, b]" in I.shown(adjusted).T.attrs["note"]   # the note on reading the cells survives the transpose


def test_heads_are_ranked_on_the_examples_the_causal_test_does_not_use():
    import numpy as np
    from llavamech.errors import LlavamechError

    scores = np.zeros((6, 2, 3))
    scores[:2, 0, 0] = 10.0   # the test examples favour head 0_0; the others favour 1_2, then 0_1
    scores[2:, 1, 2], scores[2:, 0, 1] = 2.0, 1.0
    test, ranked = I.held_out_ranking(list("abcdef"), scores, 2)
    assert test == ["a", "b"] and ranked[:2] == [(1, 2), (0, 1)] and len(ranked) == 6
    assert I.held_out_ranking(list("abcdef"), scores, None)[0] == ["a", "b", "c"]
    assert I.held_out_ranking(list("abcdef"), scores, 50)[0] == ["a", "b", "c"]   # a chapter at a small n_examples
    with pytest.raises(LlavamechError, match="too few; raise n_examples"):
        I.held_out_ranking(["a"], scores[:1], None)


def test_tied_heads_keep_layer_head_order_wherever_they_are_ranked():
    import numpy as np
    from llavamech.readouts import top_heads_of

    scores = np.zeros((4, 2, 3))
    scores[2:, 1, 0] = scores[2:, 0, 2] = 1.0   # 0_2 and 1_0 tie; the rest tie at zero
    ranked = I.held_out_ranking(list("abcd"), scores, 2)[1]
    assert ranked == [(0, 2), (1, 0), (0, 0), (0, 1), (1, 1), (1, 2)] == top_heads_of(scores[2:].mean(0), 6)
