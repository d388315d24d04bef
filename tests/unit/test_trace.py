"""The trace's side conditions: hooks gone, outputs unchanged, positions map right."""
import pytest
import torch
import transformers

from llavamech import attribution as A
from llavamech.errors import LlavamechError
from llavamech.trace import run_trace


def all_hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_trace_leaves_the_model_unchanged(model, example):
    inputs = model.inputs(**example)
    with torch.no_grad():
        before = model.hf(**inputs).logits[0, -1]
    hooks_before = all_hooks(model.hf)
    trace = model.trace(**example)
    with torch.no_grad():
        after = model.hf(**inputs).logits[0, -1]
    assert all_hooks(model.hf) == hooks_before
    assert torch.equal(before, after)
    assert torch.allclose(trace.logits, before, atol=1e-6)


def test_hooks_are_removed_when_the_forward_fails(model, example):
    inputs = model.inputs(**example)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], inputs["input_ids"]])  # batch 2 is refused
    hooks_before = all_hooks(model.hf)
    try:
        run_trace(model.hf, model.anatomy, inputs, model.tokenizer)
    except ValueError:
        pass
    bad = dict(model.inputs(**example))
    bad["input_ids"] = bad["input_ids"] + 10_000  # out of vocabulary: the forward itself raises
    try:
        run_trace(model.hf, model.anatomy, bad, model.tokenizer)
    except (IndexError, RuntimeError):
        pass
    assert all_hooks(model.hf) == hooks_before


def test_image_positions_match_the_processor_expansion(model, example):
    if isinstance(model.hf, transformers.LlavaNextForConditionalGeneration):
        return  # tiles: test_next_layout_matches_the_embeddings_the_model_builds
    if model.family is not None:
        return  # dynamic resolution: tests/unit/test_families.py
    if not model.is_multimodal:
        trace = model.trace(**example)
        assert len(trace.positions.image_positions) == 0 and trace.positions.grid_shape == (0, 0)
        return
    text = model.prompt(example["question"], image=True)
    unexpanded = model.tokenizer(text)["input_ids"]
    at = unexpanded.index(model.anatomy.image_token_id)
    vision = model.hf.config.vision_config
    side = vision.image_size // vision.patch_size
    trace = model.trace(**example)
    assert trace.positions.grid_shape == (side, side)
    assert trace.positions.image_positions.tolist() == list(range(at, at + side * side))
    assert trace.seq_len == len(unexpanded) - 1 + side * side
    for k in (0, side + 1, side * side - 1):
        assert trace.positions.row_col(at + k) == divmod(k, side)
    assert trace.positions.row_col(0) is None


def test_all_positions_agree_with_the_last_position(model, example):
    last = model.trace(**example)
    full = model.trace(**example, all_positions=True)
    assert torch.equal(full.resid_in_all[:-1, -1], last.resid_in)
    assert torch.equal(full.resid_in_all[-1, -1], last.final_resid)
    assert torch.equal(full.attn_out_all[:, -1], last.attn_out)
    assert torch.equal(full.mlp_out_all[:, -1], last.mlp_out)
    assert full.resid_in_all.shape == (model.anatomy.n_layers + 1, last.seq_len, model.anatomy.d_model)


def test_the_lean_trace_holds_what_head_scores_and_maps_read_and_says_what_it_does_not(model, example):
    """explain's lean trace hooks five modules a layer instead of eight: what it keeps is the full trace's, bit for
    bit, and so are the head scores and a head's position scores; the rest is None, and the readouts that need it
    say so in one line."""
    inputs = model.inputs(**example)
    full = run_trace(model.hf, model.anatomy, inputs, model.tokenizer)
    lean = run_trace(model.hf, model.anatomy, inputs, model.tokenizer, lean=True)
    for name in ("logits", "resid_in", "final_resid", "attn_weights", "values", "attn_raw", "soft_cap"):
        kept, full_one = getattr(lean, name), getattr(full, name)
        assert (kept is None and full_one is None) if full_one is None else torch.equal(torch.as_tensor(kept),
                                                                                      torch.as_tensor(full_one)), name
    assert torch.equal(A.head_scores(lean), A.head_scores(full))
    best = A.top_heads(A.head_scores(full), 1)[0]
    assert torch.equal(A.position_scores(lean, best["layer"], best["head"]),
                       A.position_scores(full, best["layer"], best["head"]))
    assert lean.attn_out is None and lean.mid is None and lean.mlp_out is None and lean.neuron_acts is None
    for readout in (A.layer_scores, A.layer_logit_contributions, lambda t: A.neuron_scores(t, 0)):
        with pytest.raises(LlavamechError, match="needs a full trace"):
            readout(lean)
    with pytest.raises(ValueError, match="all_positions"):
        run_trace(model.hf, model.anatomy, inputs, model.tokenizer, all_positions=True, lean=True)


def test_next_layout_matches_the_embeddings_the_model_builds(model, example):
    """LLaVA-NeXT: every image token's (tile, row, col) names the projected patch the model really put there
    (tile 0 the base image; rows/cols of later tiles in the assembled grid), and each newline the newline vector."""
    if not isinstance(model.hf, transformers.LlavaNextForConditionalGeneration):
        pytest.skip("tiles are LLaVA-NeXT's")
    seen = {}
    hooks = [model.hf.model.multi_modal_projector.register_forward_hook(lambda m, a, o: seen.update(tiles=o)),
             model.hf.model.language_model.register_forward_pre_hook(
                 lambda m, a, k: seen.update(embeds=k["inputs_embeds"][0]), with_kwargs=True)]
    try:
        trace = model.trace(**example)
    finally:
        for h in hooks:
            h.remove()
    positions, side = trace.positions, model.hf.config.vision_config.image_size // model.hf.config.vision_config.patch_size
    tiles_w = (positions.image_tokens[:, 3].max() + 1) // side
    rows, cols = positions.grid_shape
    assert rows != cols and len(positions.image_positions) == rows * cols    # a non-square grid, padding removed
    assert (positions.image_tokens[:, 1] == -1).sum() >= rows                # a newline per row
    for position, tile, row, col in positions.image_tokens.tolist():
        if tile < 0:
            expected = model.hf.model.image_newline
        elif tile == 0:
            expected = seen["tiles"][0, row * side + col]
        else:
            assert tile - 1 == (row // side) * tiles_w + col // side
            expected = seen["tiles"][tile, (row % side) * side + col % side]
        torch.testing.assert_close(seen["embeds"][position], expected, atol=1e-6, rtol=0)
    assert positions.label(int(positions.image_positions[0])) == "patch 0,0"


def eager_last_row_weights(model, inputs):
    """Eager attention's own weights from the last position, [L, H, S], read with the test's own hooks."""
    assert model.hf.config._attn_implementation == "eager"
    seen = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, o: seen.append(o[1][0, :, -1].clone()))
             for layer in model.anatomy.layers]
    try:
        with torch.no_grad():
            model.hf(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(seen)


def test_scored_attention_equals_eager_attention_weights(model, example):
    """The trace runs with fused attention and recomputes alpha_T from the query at T and the keys after RoPE
    (grouped-query aware, with the q/k biases of Qwen2): it equals eager attention's last row."""
    trace = model.trace(**example)
    expected = eager_last_row_weights(model, model.inputs(**example))
    torch.testing.assert_close(trace.attn_weights, expected, atol=1e-6, rtol=0)
    assert model.hf.config._attn_implementation == "eager"      # the model's own implementation is restored


def test_scored_attention_follows_a_sliding_window():
    """Mistral with a window shorter than the prompt: fused attention then gets a boolean mask, eager a float one;
    both give the same alpha_T, zero outside the window."""
    from tests.conftest import tiny
    model = tiny("llama", 2, 0, "mistral")
    model.hf.config.sliding_window = 6
    example = dict(question="What is the color of the dog?", context="The dog is white. The cat is black.")
    trace = model.trace(**example)
    expected = eager_last_row_weights(model, model.inputs(**example))
    torch.testing.assert_close(trace.attn_weights, expected, atol=1e-6, rtol=0)
    assert (trace.attn_weights[..., :-6] == 0).all() and (trace.attn_weights[..., -6:] > 0).all()
