import random

import pytest
import torch

from llavamech.organism import build
from llavamech.models import Model
from llavamech.organism.world import make_scene

torch.set_num_threads(2)


def tiny(kind: str, kv_heads=None, seed=0) -> Model:
    if kind == "llava":
        hf, tok, proc = build.tiny_llava(seed=seed, kv_heads=kv_heads)
        return Model(f"tiny-random-llava(kv={kv_heads})", hf, tok, proc)
    hf, tok = build.tiny_vicuna(seed=seed, kv_heads=kv_heads)
    return Model(f"tiny-random-vicuna(kv={kv_heads})", hf, tok)


@pytest.fixture(scope="session", params=[("llava", None), ("llava", 2), ("llama", None), ("llama", 1)],
                ids=["llava", "llava-gqa", "llama", "llama-mqa"])
def model(request):
    return tiny(*request.param)


@pytest.fixture(scope="session")
def scene():
    return make_scene(random.Random(7), size=80)


@pytest.fixture
def example(model, scene):
    """(model, inputs kwargs) for one VQA example (Llava) or TQA example (Llama)."""
    if model.is_multimodal:
        return dict(image=scene.image, question="What is the color of the dog?")
    return dict(question="What is the color of the dog?", context="The dog is white. The cat is black.")
