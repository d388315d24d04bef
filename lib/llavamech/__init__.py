"""llavamech: mechanistic interpretability of Llava in visual question answering (arXiv 2411.10950).

    import llavamech
    model = llavamech.load("toy-llava")
    explanation = model.explain("scene.png", question="What is the color of the dog?")

The device rule. Computation runs on the model's device (`load(..., device="cuda")`; with a device map, readouts
run on the unembedding's device, `Anatomy.readout_device`), in the model's dtype, with readouts in float32.
Everything a user or a chapter receives comes back on the CPU: scores, ranks and positions (tensors indexed by
layer, head, position or neuron), maps, NumPy arrays, tables, `Means`, and an Explanation's fields. What stays on the
model's device is what feeds further computation there: a Trace's captured activations, and the residual-stream
vectors ([..., d]) and logits ([..., V]) computed from them. So a chapter may turn any score into NumPy, index a
CPU tensor with any positions it was given, and plot, without knowing where the model runs; and library code turns
tensors into NumPy only as `.cpu().numpy()` (tests/unit/test_devices.py checks both). tests/gpu proves the rule on
CUDA: `bash tests/gpu/run.sh`.
"""
from .errors import LlavamechError

LAZY = ("Model", "load")   # torch and transformers load on first use, so that the command line can answer Ctrl-C


def __getattr__(name: str):
    if name in LAZY:
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'llavamech' has no attribute '{name}'")


__all__ = ["LlavamechError", "Model", "load"]
__version__ = "0.1.0"
