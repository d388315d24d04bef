"""Benchmark: explain() against a plain forward pass on the same input, measured in one run, and the memory the
trace holds. Prints ratios; asserts nothing (speed goals live here, not in tests).

    .venv/bin/python bench/bench_explain.py [--model tiny-random-llava] [--repeats 20]
"""
import argparse
import random
import statistics
import time

import torch

from args import count

import llavamech
from llavamech.organism.world import make_scene


def tensor_bytes(obj) -> int:
    return sum(v.numel() * v.element_size() for v in vars(obj).values() if isinstance(v, torch.Tensor))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-random-llava")
    p.add_argument("--repeats", type=count, default=20)
    args = p.parse_args()
    model = llavamech.load(args.model)
    image = make_scene(random.Random(0), size=128).image
    question = "What is the color of the dog?"
    inputs = model.inputs(image, question)

    def plain():
        with torch.no_grad():
            model.hf(**model.inputs(image, question))

    def explain():
        model.explain(image, question=question)

    for f in (plain, explain):  # warm up
        f()
    times = {f.__name__: [] for f in (plain, explain)}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for f in (plain, explain):
            t = time.perf_counter()
            f()
            times[f.__name__].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}

    trace = model.trace(image, question)
    params = sum(p.numel() * p.element_size() for p in model.hf.parameters())
    print(f"model {args.model}, sequence length {inputs['input_ids'].shape[1]}, {args.repeats} interleaved repeats")
    print(f"plain forward (incl. preprocessing)  median {med['plain'] * 1e3:8.2f} ms")
    print(f"explain() (forward + all head scores + map)  median {med['explain'] * 1e3:8.2f} ms")
    print(f"ratio explain / plain forward: {med['explain'] / med['plain']:.2f}x  (goal <= 1.5x)")
    # What the trace keeps beyond a plain forward pass (eager attention computes the weights either way).
    print(f"extra memory held by the trace: {tensor_bytes(trace) / 1e6:.3f} MB "
          f"({tensor_bytes(trace) / params:.3f}x the model's {params / 1e6:.1f} MB of weights)")


if __name__ == "__main__":
    main()
