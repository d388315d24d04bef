import torch

from llavamech import lens


def test_unembed_lens_of_the_final_residual_is_the_logits(model, example):
    trace = model.trace(**example)
    scores = lens.vocab_scores(model.anatomy, trace.final_resid, onto="unembed")
    assert torch.allclose(scores, trace.logits, atol=1e-5)
    best = lens.top_tokens(model.anatomy, model.tokenizer, trace.final_resid, onto="unembed", k=3)
    assert best[0][0] == model.tokenizer.convert_ids_to_tokens(trace.top_token)
    assert lens.token_ranks(model.anatomy, trace.final_resid, trace.top_token, onto="unembed") == 1


def test_embed_projection_is_dot_products_with_E(model, example):
    trace = model.trace(**example, all_positions=True)
    x = trace.resid_in_all[0, :4]  # layer-0 inputs: the embeddings themselves
    E = model.hf.get_input_embeddings().weight
    assert torch.allclose(lens.vocab_scores(model.anatomy, x, onto="embed"), x @ E.T, atol=1e-5)
    nested = lens.top_tokens(model.anatomy, model.tokenizer, x, k=2)
    assert len(nested) == 4 and all(len(row) == 2 for row in nested)
    ranks = lens.token_ranks(model.anatomy, x, 5)
    assert ranks.shape == (4,) and (ranks >= 1).all()


def test_patch_top_tokens_lie_on_the_grid(model, example):
    trace = model.trace(**example, all_positions=True)
    if not model.is_multimodal:
        return
    grid = lens.patch_top_tokens(model, trace, layer=0)
    rows, cols = trace.positions.grid_shape
    assert len(grid) == rows and all(len(r) == cols for r in grid)
    first = trace.resid_in_all[0, trace.positions.image_positions[cols + 1]]
    assert grid[1][1] == model.tokenizer.convert_ids_to_tokens(int((first @ model.anatomy.embed.weight.T).argmax()))
