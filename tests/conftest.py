import random

import pytest
import torch

from llavamech.organism import build
from llavamech.models import Model
from llavamech.organism.world import make_scene

torch.set_num_threads(2)


def tiny(kind: str, kv_heads=None, seed=0, family="llama", next=False) -> Model:
    if kind == "llava":
        hf, tok, proc = build.tiny_llava(seed=seed, kv_heads=kv_heads, family=family, next=next)
        return Model(f"tiny-random-llava({family}, kv={kv_heads}, next={next})", hf, tok, proc)
    hf, tok = build.tiny_vicuna(seed=seed, kv_heads=kv_heads, family=family)
    return Model(f"tiny-random-{family}(kv={kv_heads})", hf, tok)


# Every class llavamech reads: Llava over Llama (MHA, GQA), Mistral and Qwen2 (q/k/v biases), LLaVA-NeXT (tiles,
# newlines, a non-square grid) over Llama and Qwen2, and the language models alone.
MODELS = {"llava": ("llava",), "llava-gqa": ("llava", 2), "llava-mistral": ("llava", 2, 0, "mistral"),
          "llava-qwen2": ("llava", 2, 0, "qwen2"), "llava-next": ("llava", None, 0, "llama", True),
          "llava-next-qwen2": ("llava", 2, 0, "qwen2", True),
          "llama": ("llama",), "llama-mqa": ("llama", 1), "mistral": ("llama", 2, 0, "mistral"),
          "qwen2": ("llama", 2, 0, "qwen2")}


@pytest.fixture(scope="session", params=list(MODELS.values()), ids=list(MODELS))
def model(request):
    return tiny(*request.param)


@pytest.fixture(scope="session")
def scene():
    return make_scene(random.Random(7), size=80)   # square: LLaVA-NeXT's tests use a wide crop of it


@pytest.fixture
def example(model, scene):
    """(model, inputs kwargs) for one VQA example (Llava) or TQA example (Llama)."""
    if model.is_multimodal:   # LLaVA-NeXT gets a wide image, so that its tiles and grid are not square
        image = scene.image.crop((0, 0, 80, 50)) if "next=True" in model.name else scene.image
        return dict(image=image, question="What is the color of the dog?")
    return dict(question="What is the color of the dog?", context="The dog is white. The cat is black.")
