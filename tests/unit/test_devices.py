"""The device rule (see the package docstring): computation on the model's device, results on the CPU.

Two checks. Statically, library code turns a tensor into NumPy only as `.cpu().numpy()` (a `.numpy()` of a CUDA
tensor raises; the first GPU run hit four of them). Dynamically, every public function that returns data gives
tensors on the CPU and NumPy arrays: `check_results_are_on_the_cpu` runs here on the CPU and in tests/gpu on CUDA,
where it is the real test (real, or emulated by tests/gpu/emulated.py in `make test`)."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

LIB = Path(__file__).resolve().parents[2] / "lib" / "llavamech"


def unsafe_numpy_calls(source: str) -> list[int]:
    """Lines with `.numpy()` called on anything but `.cpu()` (optionally followed by `.detach()`, `.float()`...)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy":
            receiver = node.func.value
            while (isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute)
                   and receiver.func.attr in ("detach", "float", "double", "contiguous")):
                receiver = receiver.func.value
            if not (isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute)
                    and receiver.func.attr == "cpu"):
                lines.append(node.lineno)
    return lines


def test_the_checker_flags_numpy_of_a_tensor_that_may_be_on_a_gpu():
    assert unsafe_numpy_calls("x = logits[:, -1].numpy()") == [1]
    assert unsafe_numpy_calls("x = (a == b).float().numpy()") == [1]
    assert unsafe_numpy_calls("x = grad.cpu().detach().numpy()\ny = g.detach().cpu().numpy()") == []
    assert unsafe_numpy_calls("df.to_numpy()") == []


def test_library_code_turns_tensors_into_numpy_on_the_cpu_only():
    found = {str(path.relative_to(LIB)): unsafe_numpy_calls(path.read_text()) for path in LIB.rglob("*.py")}
    assert not {name: lines for name, lines in found.items() if lines}, "write .cpu().numpy()"


def off_cpu(value, where="result") -> list[str]:
    """Where in a (nested) result a tensor lies off the CPU."""
    if isinstance(value, torch.Tensor):
        return [] if value.device.type == "cpu" else [f"{where} on {value.device}"]
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in off_cpu(v, f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [bad for i, v in enumerate(value) for bad in off_cpu(v, f"{where}[{i}]")]
    if isinstance(value, pd.DataFrame):
        return [bad for c in value.columns for bad in off_cpu(list(value[c]), f"{where}[{c!r}]")]
    return []


def results(model, example) -> dict:
    """What the public functions return for one model and example (Llava: VQA and the patch methods)."""
    from llavamech import attribution as A, circuits, interventions, lens, readouts
    from llavamech.examples import toy_examples

    trace = model.trace(**example, all_positions=True)
    a, top = model.anatomy, A.top_heads(A.head_scores(trace), 1)[0]
    layer, head = top["layer"], top["head"]
    kind = "image" if model.is_multimodal else "text"
    k = 2
    where = lens.important_positions(trace, [(layer, head)], k, kind)
    x = model.explain(**example)
    out = {
        "explain": {f: getattr(x, f) for f in x.CONTRACT + ("head_scores",)},
        "layer_scores": A.layer_scores(trace), "head_scores": A.head_scores(trace),
        "head_logit_contributions": A.head_logit_contributions(trace),
        "position_scores": A.position_scores(trace, layer, head), "neuron_scores": A.neuron_scores(trace, 0),
        "logit_contribution": A.logit_contribution(trace, trace.attn_out),
        "important_positions": where,
        "random_positions": lens.random_positions(trace, k, kind, torch.Generator().manual_seed(0)),
        "token_ranks": lens.token_ranks(a, trace.final_resid, trace.top_token, "unembed"),
        "position_ranks": lens.position_ranks(model, trace, where, trace.top_token),
        "top_tokens": lens.top_tokens(a, model.tokenizer, trace.final_resid, "unembed"),
        "rankings": circuits.rankings(model, trace, layer, head, where, {"answer": trace.top_token}),
        "attention_mass": circuits.attention_mass(trace, layer, head, where),
    }
    examples, mode = toy_examples(2, seed=3), "vqa" if model.is_multimodal else "tqa"
    out["collect"] = readouts.collect(model, examples, {"heads": readouts.head_imp, "layers": readouts.layer_imp}, mode)
    out["answer_scores"] = interventions.answer_scores(model, examples, mode)
    means = interventions.activation_means(model, examples, mode)
    out["means"] = vars(means)
    if model.is_multimodal:
        from llavamech import patches
        out["lens.patch_top_tokens"] = lens.patch_top_tokens(model, trace)
        out["word_ranks_at_patches"] = lens.word_ranks_at_patches(model, trace, {"a": 5}, k,
                                                                  torch.Generator().manual_seed(0))
        maps = patches.patch_maps(model, example["image"], example["question"], means=means, ig_steps=4)
        out["patch_maps"] = {m: {"scores": pm.scores, "embedded": vars(pm.embedded) if pm.embedded else None}
                             for m, pm in maps.items()}
        for m, pm in maps.items():
            assert isinstance(pm.scores, np.ndarray), m
    return out


def check_results_are_on_the_cpu(model, example):
    assert not off_cpu(results(model, example))


@pytest.mark.parametrize("name", ["llava", "llama"])
def test_results_are_on_the_cpu(name, scene):
    from tests.conftest import tiny
    model = tiny(name)
    example = (dict(image=scene.image, question="What is the color of the dog?") if model.is_multimodal else
               dict(question="What is the color of the dog?", context="The dog is white. The cat is black."))
    check_results_are_on_the_cpu(model, example)
