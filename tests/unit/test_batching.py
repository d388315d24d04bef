"""Batches that run out of device memory are halved and retried (llavamech.batching), alone and inside the methods
that batch: out-of-memory injected, so this runs on a CPU."""
import contextlib

import numpy as np
import pytest
import torch

from llavamech import patches as P
from llavamech.batching import CPU_ROWS, first_batch, in_batches
from llavamech.errors import LlavamechError

QUESTION = "What is the color of the dog?"


def test_a_batch_out_of_memory_is_halved_and_retried():
    sizes = []

    def run(chunk):
        sizes.append(len(chunk))
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return [2 * x for x in chunk]

    assert sum(in_batches(run, list(range(10)), "ablation", 8), []) == [2 * x for x in range(10)]
    assert sizes == [8, 4, 2, 2, 2, 2, 2]


def test_out_of_memory_at_batch_one_is_one_clear_error():
    def run(chunk):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(LlavamechError) as e:
        in_batches(run, [1, 2, 3], "ablation", 4)
    assert str(e.value).startswith("out of GPU memory in ablation at batch 1;") and "\n" not in str(e.value)


@contextlib.contextmanager
def memory_for(model, rows: int):
    """Inside the block the model 'runs out of memory' on a batch of more than `rows` rows (injected)."""
    def refuse(module, args, kwargs):
        given = kwargs["inputs_embeds"] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"]
        if len(given) > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory at a batch of {len(given)} (injected)")

    handle = model.hf.register_forward_pre_hook(refuse, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def test_ablation_and_integrated_gradients_fit_by_halving(llava, scene):
    emb = P.embed(llava, llava.inputs(scene.image, QUESTION))
    ablation, ig = P.ablation_scores(llava, emb, 5, None), P.ig_scores(llava, emb, 5, steps=8)
    with memory_for(llava, 4):
        np.testing.assert_allclose(P.ablation_scores(llava, emb, 5, None), ablation, atol=1e-5)
        np.testing.assert_allclose(P.ig_scores(llava, emb, 5, steps=8), ig, atol=1e-5)
    with memory_for(llava, 0), pytest.raises(LlavamechError, match="out of GPU memory in ablation at batch 1"):
        P.ablation_scores(llava, emb, 5, None)


def test_causal_checks_fit_by_halving(llava):
    from llavamech.examples import toy_examples
    from llavamech.interventions import answer_scores
    examples = toy_examples(6, seed=4)
    full = answer_scores(llava, examples, "tqa")
    with memory_for(llava, 1):
        small = answer_scores(llava, examples, "tqa")
    np.testing.assert_allclose(small["log p"], full["log p"], atol=1e-5)
    np.testing.assert_array_equal(small["correct"], full["correct"])


def test_the_cpu_runs_at_most_cpu_rows_a_batch_with_the_same_values(llava, scene):
    assert first_batch(llava, 65, 80) == CPU_ROWS < 65
    assert first_batch(llava, 65, 80, cap=4) == 4
    emb = P.embed(llava, llava.inputs(scene.image, QUESTION))
    rows = [[]] + [[p] for p in range(len(emb.image_positions))] * 2   # more rows than CPU_ROWS
    with memory_for(llava, CPU_ROWS):   # a larger batch would fail: the default keeps to CPU_ROWS
        default = P.answer_logprob(llava, emb, 5, rows)
    np.testing.assert_allclose(default, P.answer_logprob(llava, emb, 5, rows, batch=CPU_ROWS // 2), atol=1e-6)


def test_usable_memory_counts_the_allocators_cache_and_keeps_to_the_process_share(monkeypatch):
    """Free memory plus what the allocator holds unused; under set_per_process_memory_fraction (how the bench
    emulates a 24 GB card on a larger one) no more than that share of the card minus what is allocated."""
    from llavamech import batching
    GB = 2 ** 30
    for name, value in dict(mem_get_info=(10 * GB, 140 * GB), memory_allocated=20 * GB, memory_reserved=26 * GB,
                            current_device=0).items():
        monkeypatch.setattr(torch.cuda, name, lambda *a, value=value: value)

    def fraction(share):   # as torch's: a device index, not a bare torch.device("cuda")
        def answer(index):
            assert isinstance(index, int), f"get_per_process_memory_fraction({index!r}) would raise on a GPU"
            return share
        return answer

    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", fraction(1.0))
    assert batching.usable_bytes(torch.device("cuda")) == 16 * GB
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", fraction(24 / 140))
    assert batching.usable_bytes(torch.device("cuda")) == 4 * GB
    assert batching.usable_bytes(torch.device("cuda", 0)) == 4 * GB
