"""The paper's worked example (the authors' notebook; data/reference/paper.csv, rows worked.*) on the real llava-1.5-7b: COCO val2017 000000219578 (a dog and a
cat on a sofa), "What is the color of the dog?", float32. Needs a GPU, the weights and the image, so it is skipped
here (CI) with the reason; to run it on a GPU machine:

    huggingface-cli download llava-hf/llava-1.5-7b-hf
    wget http://images.cocodataset.org/val2017/000000219578.jpg
    LLAVAMECH_COCO_IMAGE=$PWD/000000219578.jpg .venv/bin/python -m pytest tests/gpu -v

The expected numbers come from data/reference/paper.csv (the authors' notebook), to 1e-3."""
import os
from pathlib import Path

import pytest
import torch

MODEL = os.environ.get("LLAVAMECH_LLAVA", "llava-hf/llava-1.5-7b-hf")
IMAGE = Path(os.environ.get("LLAVAMECH_COCO_IMAGE", "000000219578.jpg"))


def _weights_here() -> bool:
    if Path(MODEL).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(MODEL, "config.json"), str)


pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (llava-1.5-7b in float32: about 30 GB)"),
    pytest.mark.skipif(not _weights_here(), reason=f"{MODEL} is not downloaded (huggingface-cli download {MODEL})"),
    pytest.mark.skipif(not IMAGE.is_file(), reason=f"COCO image {IMAGE} not found (set LLAVAMECH_COCO_IMAGE)"),
]


@pytest.fixture(scope="module")
def worked():
    import llavamech
    model = llavamech.load(MODEL, device="cuda")
    return model.explain(IMAGE, question="What is the color of the dog?")


def paper(key: str) -> float:
    from llavamech.reference import paper_numbers
    return float(paper_numbers().loc[f"worked.{key}", "value"])


def test_the_answer_is_brown(worked):
    assert worked.answer == "brown"


@pytest.mark.parametrize("head", ["22_27", "19_6", "22_17", "15_19", "24_3"])
def test_head_importance_matches_the_paper(worked, head):
    layer, h = map(int, head.split("_"))
    assert abs(float(worked.head_scores[layer, h]) - paper(f"head_{head}")) < 1e-3
    assert (worked.top_heads[0]["layer"], worked.top_heads[0]["head"]) == (22, 27)


def test_the_best_heads_top_position_is_patch_224(worked):
    from llavamech import attribution

    trace = worked.trace
    scores = attribution.position_scores(trace, 22, 27)
    position = int(scores.argmax())
    assert position == 229 and trace.positions.row_col(position) == (9, 8)
    assert abs(float(scores[position]) - paper("top_position_imp")) < 1e-3
    assert abs(float(trace.attn_weights[22, 27, position]) - paper("top_position_attention")) < 1e-3
