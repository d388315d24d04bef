"""explain against a plain forward pass where the host bounds both, as on a GPU, measured on a CPU.

On a GPU a pass of llava-1.5-7b is bound by the host launching its operations one by one (an H200 took 33 ms for a
pass whose arithmetic takes 8), so what explain adds costs what its operations and hooked module calls cost the host,
whatever their size. This bench builds llava-1.5-7b's depth (32 language layers of 32 heads, a 24-layer vision
tower) at tiny widths and a 4x4 patch grid, with random weights: the arithmetic is negligible and the time is the
host's, so the ratios track the GPU's host-bound part on a machine without one (not its kernels' own time: the GPU
bench, bench/bench_7b.py, measures that). Each round runs every variant once, in turn, so that a noisy machine slows
them alike; medians over the rounds. Prints; asserts nothing.

    python bench/bench_host.py [--rounds 60]
"""
import argparse
import random
import statistics
import time

import torch

import bench_7b
from args import count

from llavamech import attribution, memory
from llavamech.explain import head_map
from llavamech.models import Model
from llavamech.organism import build
from llavamech.organism.world import make_scene
from llavamech.trace import run_trace

QUESTION = "What is the color of the dog?"


def model_at_depth() -> Model:
    """llava-1.5-7b's config with its depths and head count kept, its widths, vocabulary and image shrunk."""
    _, tokenizer, processor = build.tiny_llava(image_size=56, patch=14)
    config = memory.llava_15_7b_config()
    text, vision = config.text_config, config.vision_config
    text.hidden_size, text.intermediate_size, text.head_dim, text.vocab_size = 64, 128, 2, len(tokenizer)
    vision.hidden_size, vision.intermediate_size, vision.num_attention_heads = 32, 64, 4
    vision.image_size, vision.patch_size = 56, 14
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    return bench_7b.random_model("llava-1.5-7b depth, tiny widths (random weights)", config, tokenizer, processor,
                                 torch.float32, "cpu")


def interleaved(variants: dict, rounds: int) -> dict[str, float]:
    """Median milliseconds of each variant over `rounds` rounds that run every variant once, after a warm-up."""
    for run in variants.values():
        run()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=count, default=60)
    args = p.parse_args()
    torch.set_num_threads(1)   # one thread: tiny operations gain nothing from more, and timings steady
    model = model_at_depth()
    image = make_scene(random.Random(0), size=56).image
    inputs = model.inputs(image, QUESTION)
    trace = run_trace(model.hf, model.anatomy, inputs, model.tokenizer, lean=True)
    best = attribution.top_heads(attribution.head_scores(trace), 1)

    def forward(preprocess=False):
        def run():
            with torch.no_grad():
                model.hf(**(model.inputs(image, QUESTION) if preprocess else inputs), use_cache=False,
                         logits_to_keep=1)
        return run

    ms = interleaved({
        "forward": forward(), "forward from the image": forward(preprocess=True),
        "trace (full)": lambda: run_trace(model.hf, model.anatomy, inputs, model.tokenizer),
        "trace (lean, explain's)": lambda: run_trace(model.hf, model.anatomy, inputs, model.tokenizer, lean=True),
        "head scores": lambda: attribution.head_scores(trace),
        "the map": lambda: head_map(trace, best),
        "explain": lambda: model.explain(image, question=QUESTION)}, args.rounds)
    print(f"{model.name}, sequence length {inputs['input_ids'].shape[1]}, CPU, one thread; medians of {args.rounds} "
          "interleaved rounds")
    for name, t in ms.items():   # the passes beside the forward pass; the readouts are not passes
        beside = "" if name in ("forward", "head scores", "the map") else f"  {t - ms['forward']:+8.2f} over the forward pass"
        print(f"  {name:24s} {t:8.2f} ms{beside}")
    print(f"  explain / forward from the image: {ms['explain'] / ms['forward from the image']:.2f}x")


if __name__ == "__main__":
    main()
