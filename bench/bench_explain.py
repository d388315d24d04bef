"""Benchmark: explain() against a plain forward pass on the same input, measured in one run, and the trace's
memory. Prints ratios; asserts nothing (speed goals live here, not in tests).

    .venv/bin/python bench/bench_explain.py [--model tiny-random-llava] [--repeats 20]
"""
import argparse
import random
import statistics
import time
from pathlib import Path

import torch

import llavamech
from llavamech.world import make_scene


def peak_rss_reset():
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set size


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def tensor_bytes(obj) -> int:
    return sum(v.numel() * v.element_size() for v in vars(obj).values() if isinstance(v, torch.Tensor))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-random-llava")
    p.add_argument("--repeats", type=int, default=20)
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

    peak_rss_reset()
    base = peak_rss()
    plain()
    plain_peak = peak_rss() - base
    peak_rss_reset()
    base = peak_rss()
    trace = model.trace(image, question)
    trace_peak = peak_rss() - base
    print(f"model {args.model}, sequence length {inputs['input_ids'].shape[1]}, {args.repeats} interleaved repeats")
    print(f"plain forward (incl. preprocessing)  median {med['plain'] * 1e3:8.2f} ms")
    print(f"explain() (forward + all head scores + map)  median {med['explain'] * 1e3:8.2f} ms")
    print(f"ratio explain / plain forward: {med['explain'] / med['plain']:.2f}x  (goal <= 1.5x)")
    print(f"trace holds {tensor_bytes(trace) / 1e6:.3f} MB of tensors; "
          f"peak RSS growth: trace {trace_peak / 1e6:.1f} MB vs plain forward {plain_peak / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
