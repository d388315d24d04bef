"""Passes that touch a model: hooks removed and settings restored; two threads on one model serialise."""
import threading

import numpy as np
import pytest
import torch

from llavamech import patches as P
from llavamech.hooks import frozen_weights, hooked, sdpa_attention

QUESTION = "What is the color of the dog?"


def hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_hooked_removes_its_hooks_even_when_the_pass_fails(llava):
    before = hook_count(llava.hf)
    with pytest.raises(RuntimeError, match="inside"):
        with hooked(llava.hf) as hooks:
            hooks.after(llava.anatomy.layers[0].mlp, lambda m, a, o: None)
            hooks.before(llava.anatomy.final_norm, lambda m, a: None)
            assert hook_count(llava.hf) == before + 2
            raise RuntimeError("inside")
    assert hook_count(llava.hf) == before


def test_sdpa_and_frozen_weights_restore_the_model(llava):
    assert llava.hf.config._attn_implementation == "eager"
    with sdpa_attention(llava.hf), frozen_weights(llava.hf):
        assert llava.hf.config._attn_implementation == "sdpa"
        assert not any(p.requires_grad for p in llava.hf.parameters())
    assert llava.hf.config._attn_implementation == "eager"
    assert all(p.requires_grad for p in llava.hf.parameters())


def test_gradient_methods_build_no_weight_gradients(llava, scene):
    emb = P.embed(llava, llava.inputs(scene.image, QUESTION))
    P.gradient_scores(llava, emb, 5)
    assert all(p.grad is None and p.requires_grad for p in llava.hf.parameters())


def test_two_threads_explaining_with_one_model_get_what_each_would_alone(llava, scene):
    images = [scene.image, scene.image.transpose(0)]
    alone = [llava.explain(image, QUESTION).to_dict() for image in images]
    got, errors, hooks = {}, [], hook_count(llava.hf)

    def work(i):
        try:
            for _ in range(3):
                got.setdefault(i, []).append(llava.explain(images[i], QUESTION).to_dict())
        except Exception as e:   # a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(2):
        for d in got[i]:
            assert d["answer"] == alone[i]["answer"] and np.allclose(d["patch_grid"], alone[i]["patch_grid"], atol=1e-6)
    assert hook_count(llava.hf) == hooks


def test_two_threads_ablating_leave_the_model_eager(llava, scene):
    emb = P.embed(llava, llava.inputs(scene.image, QUESTION))
    alone = P.ablation_scores(llava, emb, 5, None)
    got, errors = [], []

    def work():
        try:
            for _ in range(3):
                got.append(P.ablation_scores(llava, emb, 5, None))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(np.allclose(g, alone, atol=1e-6) for g in got)
    assert llava.hf.config._attn_implementation == "eager"


def test_visual_rows_pick_each_rows_own_features():
    """A batch's deepstack features are flattened over its image positions row after row: picking rows (repeats
    allowed, in any order) picks each row's mask and its own features; one example repeated is `inject`'s batch."""
    from llavamech.hooks import visual_rows

    masks = torch.tensor([[True, False, True], [False, True, False]])
    features = torch.arange(3.0)[:, None].repeat(1, 4)            # rows 0, 0 then 1 of the batch: features 0, 1, 2
    visual = {"visual_pos_masks": masks, "deepstack_visual_embeds": [features, -features]}
    picked = visual_rows(visual, [1, 0, 1])
    assert torch.equal(picked["visual_pos_masks"], masks[[1, 0, 1]])
    assert picked["deepstack_visual_embeds"][0][:, 0].tolist() == [2, 0, 1, 2]
    assert picked["deepstack_visual_embeds"][1][:, 0].tolist() == [-2, 0, -1, -2]
    assert visual_rows({}, [0, 0]) == {}
