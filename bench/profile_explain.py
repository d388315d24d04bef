"""Where `explain`'s time goes, phase by phase, at the 7B bench's shape (bench/bench_7b.py: llava-1.5-7b's exact
shape with random weights on a GPU, a scaled-down one on a CPU): preprocessing, the plain and the hooked forward, the
head scores, the map; then PyTorch's profiler over three explains, its operators by their own CPU and GPU time.
Prints; asserts nothing.

    python bench/profile_explain.py [--dtypes bfloat16 float32] [--no-profiler]
"""
import argparse
import random
import torch

import bench_7b
from llavamech import attribution
from llavamech.explain import head_map
from llavamech.organism.world import make_scene
from llavamech.trace import run_trace

GPU = torch.cuda.is_available()


def timed(f, repeats: int = 5) -> float:
    """Median milliseconds of `f` after one warm-up (bench_7b.measure's)."""
    return bench_7b.measure(f, repeats)[0] * 1e3


def profile(dtype: torch.dtype, profiler: bool) -> None:
    model = bench_7b.model_at_shape(dtype, "cuda" if GPU else "cpu")
    image = make_scene(random.Random(0), size=336).image
    inputs = model.inputs(image, bench_7b.QUESTION)

    def forward():
        with torch.no_grad():
            model.hf(**inputs, use_cache=False, logits_to_keep=1)

    trace = run_trace(model.hf, model.anatomy, inputs, model.tokenizer, lean=True)
    heads = attribution.top_heads(attribution.head_scores(trace), 1)
    phases = {
        "preprocessing (model.inputs)": lambda: model.inputs(image, bench_7b.QUESTION),
        "forward, SDPA": forward,
        "hooked forward (run_trace)": lambda: run_trace(model.hf, model.anatomy, inputs, model.tokenizer),
        "lean trace (explain's)": lambda: run_trace(model.hf, model.anatomy, inputs, model.tokenizer, lean=True),
        "head outputs [L, H, d]": lambda: attribution.all_head_outputs(trace),
        "head scores (readout of L*H)": lambda: attribution.head_scores(trace),
        "the map (readout of P positions)": lambda: head_map(trace, heads),
        "explain, all of it": lambda: model.explain(image, question=bench_7b.QUESTION),
    }
    print(f"\n{str(dtype).removeprefix('torch.')}, sequence length {inputs['input_ids'].shape[1]}, "
          f"{'GPU ' + torch.cuda.get_device_name() if GPU else 'CPU, scaled-down shape'}")
    print(f"  {'forward, eager':34s} {bench_7b.eager_measure(model, forward, 5)[0] * 1e3:9.2f} ms")
    for label, f in phases.items():
        print(f"  {label:34s} {timed(f):9.2f} ms")
    if profiler:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if GPU else [])) as p:
            for _ in range(3):
                model.explain(image, question=bench_7b.QUESTION)
            if GPU:
                torch.cuda.synchronize()
        averages = p.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=48))
        if GPU:
            print(averages.table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=48))
    del model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"] if GPU else ["float32"])
    p.add_argument("--no-profiler", action="store_true")
    args = p.parse_args()
    for name in args.dtypes:
        profile(getattr(torch, name), not args.no_profiler)


if __name__ == "__main__":
    main()
