"""The GPU tier: every class, method, command and chapter on CUDA (`bash tests/gpu/run.sh`). Skipped with its
reason where there is no GPU. Tiny and toy models only: no downloads, minutes on one GPU."""
import inspect
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llavamech import patches
from tests.conftest import MODELS, tiny
from tests.gpu import emulated
from tests.unit import test_attribution, test_checks, test_devices, test_trace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the GPU tier: "
                                "bash tests/gpu/run.sh on a GPU machine)")
ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
QUESTION = "What is the color of the dog?"
METHODS = tuple(patches.METHODS)
# Small enough to run every chapter in minutes, large enough for their bootstraps and splits: every size a chapter
# has, not n_examples alone (chapters 5 and 6 ask hundreds of scenes through other sizes: 5 and 6 minutes under the
# emulated GPU with n_examples alone).
CHAPTER_PARAMETERS = {"device": "cuda", "n_examples": 16, "draws": 3, "ig_steps": 4, "control_examples": 8,
                      "curve_examples": 2, "prior_examples": 8, "randomised_examples": 3, "n_absent": 8,
                      "n_pointing": 3, "n_existence": 24, "n_diagnosis": 12}


# First in the file, so that pytest-xdist hands these out first: they are the tier's longest (about 20 s each on an
# H200), and started last they outlast a time limit (TIER_SECONDS) the rest of the tier fits in.
@pytest.mark.parametrize("chapter", sorted(p.name for p in BOOK.glob("*.py")))
def test_every_chapter_runs_on_cuda(chapter):
    from llavamech import chapters
    names = chapters.parameter_names(next(c for c in chapters.read_cells(BOOK / chapter) if "parameters" in c.tags))
    args = [a for name, value in CHAPTER_PARAMETERS.items() if name in names for a in ("-p", name, str(value))]
    done = subprocess.run([sys.executable, "-m", "llavamech.chapters", str(BOOK / chapter), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-5000:]


def on_cuda(model):
    model.hf.to("cuda")
    model.device = "cuda"
    return model


@pytest.fixture(scope="module", params=list(MODELS.values()), ids=list(MODELS))
def cuda_model(request):
    return on_cuda(tiny(*request.param))


@pytest.fixture
def cuda_example(cuda_model):
    from llavamech.organism.world import make_scene
    if cuda_model.is_multimodal:
        image = make_scene(random.Random(7), size=80).image
        image = image.crop((0, 0, 80, 50)) if "next=True" in cuda_model.name else image
        return dict(image=image, question=QUESTION)
    return dict(question=QUESTION, context="The dog is white. The cat is black.")


# appendix A's identities and the book's check of them (the linear logit contribution's test, merged into
# test_attribution.py from its own file, was not part of this tier and is left out of it)
IDENTITIES = [f for module in (test_attribution, test_checks)
              for name, f in inspect.getmembers(module, inspect.isfunction)
              if name.startswith("test_") and "example" in inspect.signature(f).parameters
              and name != "test_layer_logit_contributions_sum_to_the_final_logit"]


@pytest.mark.parametrize("identity", IDENTITIES, ids=lambda f: f.__name__)
def test_identities_hold_on_cuda(cuda_model, cuda_example, identity):
    identity(cuda_model, cuda_example)


def test_scored_attention_equals_eager_on_cuda(cuda_model, cuda_example):
    test_trace.test_scored_attention_equals_eager_attention_weights(cuda_model, cuda_example)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e5])
@pytest.mark.parametrize("n", [256, 32768])   # a layer's head outputs (one product); a readout's width (three, summed)
def test_bfloat16_products_are_float32_products_on_cuda(scale, n):
    """A bfloat16 W (W_O as a per-head view, or W_U) on a GPU meets the float32 factor split into three bfloat16 terms
    (attribution.split_float32), multiplied in place with float32 accumulation (torch.bmm's out_dtype): float32's
    product to its rounding at any magnitude, against float64 on the CPU. float16 and older GPUs take the conversion."""
    from llavamech import attribution
    if os.environ.get(emulated.ENV) == "1":
        pytest.skip("a CUDA kernel (bmm with out_dtype): the emulated GPU has none")
    if not attribution._split(torch.zeros(1, dtype=torch.bfloat16, device="cuda")):
        pytest.skip(f"{torch.cuda.get_device_name()} does not multiply bfloat16 into float32: the conversion serves")
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(n, 4 * 64, generator=g) / 16).to(torch.bfloat16)    # [d, heads * head_dim]
    x = torch.randn(4, 64, 64, generator=g) * scale                      # 64 rows per head
    heads = w.view(n, 4, 64).permute(1, 2, 0)                            # [heads, head_dim, d], a view
    exact = torch.bmm(x.double(), heads.double())
    got = attribution._products(attribution.split_float32(x.cuda()), heads.cuda(), split=True).cpu()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))
    assert not attribution._split(w.to(torch.float16).cuda())   # float16 is converted, not split


def test_a_bfloat16_readout_is_float32_products_on_cuda():
    """A bfloat16 model's frozen-norm readout on a GPU reads W_U in place (the vectors split into three bfloat16
    terms, float32 accumulation): float32's product to its rounding, against float64 on the CPU."""
    import llavamech
    from llavamech import attribution
    if os.environ.get(emulated.ENV) == "1":
        pytest.skip("a CUDA kernel (bmm with out_dtype): the emulated GPU has none")
    from llavamech.organism.world import make_scene
    model = llavamech.load("tiny-random-llava", device="cuda", dtype="bfloat16")
    trace = model.trace(make_scene(random.Random(7), size=80).image, QUESTION)
    a = trace.anatomy
    x = trace.resid_in                                                   # [L, d] float32
    y = (a.gain(a.final_norm) * x / a.rms(trace.final_resid)).double().cpu()
    exact = y @ a.lm_head.weight.detach().double().cpu().T
    got = attribution.readout(trace, x).cpu()
    assert got.dtype == torch.float32 and got.shape == exact.shape
    torch.testing.assert_close(got.double(), exact, rtol=1e-6, atol=1e-6 * float(exact.abs().max()))


def test_results_come_back_on_the_cpu(cuda_model, cuda_example):
    if "next" in cuda_model.name or cuda_model.anatomy.n_kv_heads != cuda_model.anatomy.n_heads:
        pytest.skip("one Llava and one Llama are enough here; the identities cover the other classes")
    test_devices.check_results_are_on_the_cpu(cuda_model, cuda_example)


def test_cpu_and_gpu_agree_on_toy_llava():
    import llavamech
    from llavamech.examples import toy_examples
    cpu, gpu = llavamech.load("toy-llava", device="cpu"), llavamech.load("toy-llava", device="cuda")
    for example in toy_examples(10, seed=11):
        a, b = (m.explain(example.image, question=example.question) for m in (cpu, gpu))
        assert a.answer == b.answer
        torch.testing.assert_close(a.head_scores, b.head_scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.patch_grid, b.patch_grid, atol=1e-4)


def cli(*args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "llavamech", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "toy.jsonl"
    cli("examples", "--n", "20", "--out", str(out))
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("method", METHODS)
def test_every_explain_method_runs_on_cuda(toy_set, method, dtype):
    image = json.loads(toy_set.read_text().splitlines()[0])["image"]
    out = json.loads(cli("explain", str(toy_set.parent / image), "--question", QUESTION, "--method", method,
                         "--device", "cuda", "--dtype", dtype, "--json"))
    assert out["method"] == method and np.isfinite(np.asarray(out["patch_grid"])).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_run_on_cuda(toy_set, tmp_path, dtype):
    summary = cli("run", str(toy_set), "--device", "cuda", "--dtype", dtype, "--out", str(tmp_path / "run"))
    rows = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 20, summary
