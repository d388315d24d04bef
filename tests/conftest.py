import random

import pytest
import torch

from llavamech import report, tiny_vl
from llavamech.organism import build
from llavamech.models import Model
from llavamech.organism.world import make_scene

torch.set_num_threads(2)


def tiny(kind: str, kv_heads=None, seed=0, family="llama", next=False) -> Model:
    if kind == "qwen-vl":   # `family` is the version: "2", "2.5" or "3"
        return Model(f"tiny-random-qwen{family}-vl", *tiny_vl.tiny_qwen_vl(seed=seed, version=family))
    if kind == "gemma3":
        return Model("tiny-random-gemma3", *tiny_vl.tiny_gemma3(seed=seed))
    if kind == "idefics3":
        return Model("tiny-random-idefics3", *tiny_vl.tiny_idefics3(seed=seed))
    if kind == "smolvlm":
        return Model("tiny-random-smolvlm", *tiny_vl.tiny_smolvlm(seed=seed))
    if kind == "internvl":   # `family` is its language model: "qwen2" or "qwen3"
        return Model(f"tiny-random-internvl{'-qwen3' if family == 'qwen3' else ''}",
                     *tiny_vl.tiny_internvl(seed=seed, text="qwen2" if family == "llama" else family))
    if kind == "mistral3":   # `family` is its language model: "mistral" or "ministral3"
        return Model(f"tiny-random-mistral3{'-ministral3' if family == 'ministral3' else ''}",
                     *tiny_vl.tiny_mistral3(seed=seed, text="mistral" if family == "llama" else family))
    if kind == "glm4v":
        return Model("tiny-random-glm4v", *tiny_vl.tiny_glm4v(seed=seed))
    if kind == "llava-onevision":
        return Model("tiny-random-llava-onevision", *tiny_vl.tiny_llava_onevision(seed=seed))
    if kind == "gemma3-text":
        return Model("tiny-random-gemma3-text", *tiny_vl.tiny_gemma3_text(seed=seed))
    if kind == "llava":
        hf, tok, proc = build.tiny_llava(seed=seed, kv_heads=kv_heads, family=family, next=next)
        return Model(f"tiny-random-llava({family}, kv={kv_heads}, next={next})", hf, tok, proc)
    hf, tok = build.tiny_vicuna(seed=seed, kv_heads=kv_heads, family=family)
    return Model(f"tiny-random-{family}(kv={kv_heads})", hf, tok)


def assert_a_seeded_real_class(build, class_name: str):
    """`build(seed=...)` (a tiny-model builder of llavamech.tiny_vl or llavamech.organism.build) gives the real
    transformers class, eager and in eval mode, the same weights for the same seed and others for another."""
    a, b, other = (build(seed=seed)[0] for seed in (0, 0, 1))
    assert type(a).__name__ == class_name and a.config._attn_implementation == "eager" and not a.training
    pairs = list(zip(a.state_dict().values(), b.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(x, y) for x, y, _ in pairs) and not all(torch.equal(x, z) for x, _, z in pairs)


# Every class llavamech reads: Llava over Llama (MHA, GQA), Mistral and Qwen2 (q/k/v biases), LLaVA-NeXT (tiles,
# newlines, a non-square grid) over Llama and Qwen2, the language models alone, and the families beyond Llava
# (llavamech.families): Qwen2-VL, Qwen2.5-VL and Qwen3-VL (dynamic resolution, 2 x 2 merged patches, 3-D rotary
# positions; Qwen3-VL: q/k norms and visual features added after its first layers) and
# Gemma 3 (pooled image tokens, sandwich norms with 1 + g gains, q/k norms, a sliding-window layer), and alone;
# LLaVA-OneVision (SigLIP + Qwen2, any-resolution tiles pooled bilinearly); Idefics3 (tiles announced by text
# tokens plus a global image, pixel shuffle, over Llama) and SmolVLM (the same under its own classes); InternVL (tiles
# chosen by aspect ratio plus a thumbnail, in one block, pixel shuffle) over Qwen2 and over Qwen3 (q/k norms); Mistral 3
# (a Pixtral tower, 2 x 2 patches merged, rows of image tokens ended by break tokens) over Mistral and over Ministral 3
# (YaRN rotary angles); GLM-4.1V (Qwen2-VL's placement; sandwich norms with plain gains, a fused gate_up_proj,
# rotary angles on half of each head).
MODELS = {"llava": ("llava",), "llava-gqa": ("llava", 2), "llava-mistral": ("llava", 2, 0, "mistral"),
          "llava-qwen2": ("llava", 2, 0, "qwen2"), "llava-next": ("llava", None, 0, "llama", True),
          "llava-next-qwen2": ("llava", 2, 0, "qwen2", True),
          "llama": ("llama",), "llama-mqa": ("llama", 1), "mistral": ("llama", 2, 0, "mistral"),
          "qwen2": ("llama", 2, 0, "qwen2"), "qwen2-vl": ("qwen-vl", 2, 0, "2"),
          "qwen2.5-vl": ("qwen-vl", 2, 0, "2.5"), "qwen3-vl": ("qwen-vl", 2, 0, "3"), "gemma3": ("gemma3", 2),
          "gemma3-text": ("gemma3-text", 2), "llava-onevision": ("llava-onevision", 2),
          "idefics3": ("idefics3", 2), "smolvlm": ("smolvlm", 2), "internvl": ("internvl", 2, 0, "qwen2"),
          "internvl-qwen3": ("internvl", 2, 0, "qwen3"), "mistral3": ("mistral3", 2, 0, "mistral"),
          "mistral3-ministral3": ("mistral3", 2, 0, "ministral3"), "glm4v": ("glm4v", 2)}


@pytest.fixture(scope="session", params=list(MODELS.values()), ids=list(MODELS))
def model(request):
    return tiny(*request.param)


@pytest.fixture(scope="module")
def llava():
    """The tiny random Llava, one per test module (a module may change it and put it back)."""
    return tiny("llava")


@pytest.fixture(scope="session")
def scene():
    return make_scene(random.Random(7), size=80)   # square: LLaVA-NeXT's tests use a wide crop of it


@pytest.fixture
def example(model, scene):
    """(model, inputs kwargs) for one VQA example (Llava) or TQA example (Llama)."""
    if model.is_multimodal:   # LLaVA-NeXT gets a wide image, so that its tiles and grid are not square; the other
        # families an odd-sized one (Qwen-VL: resized to a 3 x 5 grid of merged patches)
        image = scene.image.crop((0, 0, 80, 50)) if "next=True" in model.name else \
            scene.image.crop((0, 0, 77, 45)) if model.family is not None else scene.image
        return dict(image=image, question="What is the color of the dog?")
    return dict(question="What is the color of the dog?", context="The dog is white. The cat is black.")


@pytest.fixture
def glued(monkeypatch):
    """What a page would glue, by name: myst-nb's glue replaced by a dict (every glue helper goes through it)."""
    store = {}
    monkeypatch.setattr(report, "_glue", lambda name, value, display=False: store.__setitem__(name, value))
    return store
