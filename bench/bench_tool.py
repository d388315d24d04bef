"""Benchmark: every patch method's wall-clock against a plain forward pass on the same image, measured in one run,
at the organism's 8x8 grid (toy-llava) and at Llava-1.5's 24x24 (a tiny random Llava with 576 patches). Prints
ratios; asserts nothing (speed goals live here, not in tests).

    .venv/bin/python bench/bench_tool.py [--repeats 5]
"""
import argparse
import random
import statistics
import time

import torch

from args import count

import llavamech
from llavamech import interventions, patches
from llavamech.examples import toy_examples
from llavamech.models import Model
from llavamech.organism import build
from llavamech.organism.world import make_scene

QUESTION = "What is the color of the dog?"


def models():
    yield "toy-llava (8x8 patches)", llavamech.load("toy-llava")
    hf, tok, proc = build.tiny_llava(image_size=336, patch=14)
    yield "tiny random Llava (24x24 patches)", Model("tiny-random-llava-336", hf, tok, proc)


def median_seconds(f, repeats: int) -> float:
    f()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=count, default=5)
    args = p.parse_args()
    image = make_scene(random.Random(0), size=128).image
    print(f"torch threads {torch.get_num_threads()}; median of {args.repeats} runs each; "
          "ablation = one batched forward row per patch; ig = 32 steps")
    for label, model in models():
        means = interventions.activation_means(model, toy_examples(8, seed=5), "vqa")

        def plain():
            with torch.no_grad():
                model.hf(**model.inputs(image, QUESTION))

        base = median_seconds(plain, args.repeats)
        seconds = {m: median_seconds(lambda m=m: patches.patch_map(model, image, QUESTION, m, means=means),
                                     max(1, args.repeats // (5 if m in ("ablation", "ig") else 1)))
                   for m in patches.METHODS}
        n = int(model.inputs(image, QUESTION)["input_ids"].shape[1])
        print(f"\n{label}: sequence length {n}; plain forward {base * 1e3:.1f} ms")
        for method, s in seconds.items():
            print(f"  {method:10s} {s * 1e3:9.1f} ms   {s / base:7.1f}x a forward pass")
        print(f"  causal ablation / the tool: {seconds['ablation'] / seconds['tool']:.0f}x")


if __name__ == "__main__":
    main()
