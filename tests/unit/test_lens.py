import random
from dataclasses import replace

import numpy as np
import torch

from llavamech import lens, load, readouts
from llavamech.examples import toy_examples
from llavamech.imaging import box_mask, load_image
from llavamech.lens import token_ranks, word_ranks_at_patches
from llavamech.organism.world import make_scene


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


def test_word_ranks_at_patches_shapes_and_range():
    model = load("tiny-random-llava")
    trace = model.trace(make_scene(random.Random(1), size=64).image, "What is the color of the dog?", all_positions=True)
    out = word_ranks_at_patches(model, trace, {"colour": model.token_id("red")}, 2, torch.Generator().manual_seed(0))
    assert set(out) == {f"{w} {o} colour" for w in ("important", "random") for o in ("embed", "unembed")}
    for value in out.values():
        assert value.shape == (model.anatomy.n_layers + 1,) and ((value > 0) & (value <= 1)).all()


def test_word_ranks_in_the_box_and_over_several_words():
    model = load("tiny-random-llava")
    trace = model.trace(make_scene(random.Random(1), size=64).image, "What is the color of the dog?", all_positions=True)
    ids = [model.token_id(w) for w in ("cat", "cow")]
    out = word_ranks_at_patches(model, trace, {"others": ids}, 2, torch.Generator().manual_seed(0), inside=[5])
    assert "in-box embed others" in out
    # one patch in the box: the in-box reading is that patch's, the mean over the listed words
    vectors = trace.resid_in_all[:, trace.positions.image_positions[5]][:, None]
    expected = torch.stack([(1.0 / token_ranks(model.anatomy, vectors, t, "embed").float()).mean(-1) for t in ids]).mean(0)
    assert torch.allclose(out["in-box embed others"], expected)
    empty = word_ranks_at_patches(model, trace, {"others": ids}, 2, torch.Generator().manual_seed(0), inside=[])
    assert torch.isnan(empty["in-box unembed others"]).all()


def test_colour_animal_ranks_read_the_answer_the_asked_animal_the_others_and_the_box():
    model = load("tiny-random-llava")
    item = readouts.collect(model, toy_examples(1, seed=2), {"item": lambda it: it}, mode="vqa",
                            all_positions=True)["item"][0]
    animals = ["cat", "cow", "dog", "bird"]
    out = lens.colour_animal_ranks(model, item, animals, 2, torch.Generator().manual_seed(0))
    example = item.example
    inside = np.flatnonzero(box_mask(example.box, load_image(example.image).size, model.processor.image_processor,
                                     item.trace.positions.grid_shape).ravel())
    others = [model.token_id(a) for a in animals if a != example.animal]
    expected = word_ranks_at_patches(model, item.trace, {"colour": item.colour_id, "animal": item.animal_id,
                                                         "other animals": others}, 2,
                                     torch.Generator().manual_seed(0), inside=inside)
    assert out.keys() == expected.keys() and "in-box unembed animal" in out
    for key in out:
        assert torch.equal(torch.nan_to_num(out[key], nan=-1.0), torch.nan_to_num(expected[key], nan=-1.0)), key
    colours = ["red", "brown", "black"]
    more = lens.colour_animal_ranks(model, item, animals, 2, torch.Generator().manual_seed(0), colours=colours)
    other = [t for t in map(model.token_id, colours) if t != item.colour_id]
    assert torch.equal(more["important embed colour"], out["important embed colour"])   # the same patches drawn
    assert torch.allclose(more["in-box embed other colours"], word_ranks_at_patches(
        model, item.trace, {"c": other}, 2, torch.Generator().manual_seed(0), inside=inside)["in-box embed c"],
        equal_nan=True)
    scene = sorted({model.token_id(c) for a, c in example.facts if a != example.animal} - {item.colour_id})
    assert scene and torch.allclose(more["random unembed scene's other colours"], word_ranks_at_patches(
        model, item.trace, {"c": scene}, 2, torch.Generator().manual_seed(0), inside=inside)["random unembed c"])
    alone = lens.colour_animal_ranks(model, replace(item, example=replace(example, facts=((example.animal, example.colour),))),
                                     animals, 2, torch.Generator().manual_seed(0), colours=colours)
    assert torch.isnan(alone["important embed scene's other colours"]).all()   # one animal: no other colour to rank
