"""Benchmark at llava-1.5-7b's exact shape (random weights from memory.llava_15_7b_config(): speed and memory do not
depend on trained values): a plain forward pass (eager and SDPA), `explain`, every patch method, each one's peak GPU
memory beside the memory table's figure, and explain's items/s, in bfloat16 and float32, measured in one run.
Prints; asserts nothing. Without a GPU it runs a scaled-down shape on the CPU (float32), says so, and exits 0.

    python bench/bench_7b.py [--repeats 5] [--dtypes bfloat16 float32] [--slow-dtypes bfloat16] [--card-gb 24]

On a GPU, PyTorch may take at most 24 GB (--card-gb) in a dtype whose weights fit that: the batched methods size
their batches from what is left, as on a 24 GB card, so the peaks are a 24 GB card's.

The methods that take seconds (ablation, gradient, integrated gradients) run once each, with no warm-up (the forward
passes before them warmed the kernels), and by default in bfloat16 only: in float32 the weights alone (28 GB) overfill
a 24 GB card, and ablation took 97 s there on an H200.
"""
import argparse
import random
import statistics
import time

import torch
import transformers

from args import count

from llavamech import memory, patches
from llavamech.models import Model
from llavamech.organism import build
from llavamech.organism.world import make_scene

QUESTION = "What is the color of the dog?"
GPU = torch.cuda.is_available()


def config_at_shape(image_token_id: int) -> transformers.LlavaConfig:
    """llava-1.5-7b's config on a GPU; on a CPU the same 24x24 patch grid and vocabulary over a narrow, shallow model."""
    config = memory.llava_15_7b_config()
    if not GPU:
        text, vision = config.text_config, config.vision_config
        text.hidden_size, text.intermediate_size, text.num_hidden_layers = 128, 344, 2
        text.num_attention_heads = text.num_key_value_heads = 4
        text.head_dim = 32
        vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, vision.num_attention_heads = 64, 256, 2, 4
    config.image_token_id = image_token_id   # the toy tokenizer's: the shape does not depend on which id it is
    return config


def model_at_shape(dtype: torch.dtype, device: str) -> Model:
    """A random-weight model of the benchmark's shape with the organism's tokenizer and a 336 px processor."""
    _, tokenizer, processor = build.tiny_llava(image_size=336, patch=14)
    config = config_at_shape(tokenizer.convert_tokens_to_ids("<image>"))
    return random_model("llava-1.5-7b shape (random weights)", config, tokenizer, processor, dtype, device)


def random_model(name: str, config, tokenizer, processor, dtype: torch.dtype, device: str) -> Model:
    """A Llava of `config` with random weights (seed 0), read with SDPA as llavamech.load reads a model from a folder
    or the Hub."""
    torch.manual_seed(0)
    with torch.device(device):
        hf = transformers.LlavaForConditionalGeneration(config).to(dtype).eval()
    hf.set_attn_implementation("sdpa")
    return Model(name, hf, tokenizer, processor, device)


SLOW = ("ablation", "gradient", "ig")


def measure(f, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """Median seconds of `f` (after one warm-up unless told not to) and its peak GPU memory in GB (NaN on a CPU)."""
    if warm_up:
        f()
    if GPU:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        if GPU:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 1e9 if GPU else float("nan")


def eager_measure(model: Model, run, repeats: int) -> tuple[float, float]:
    """`measure` with the model switched to eager attention, the switch itself (it walks every module: milliseconds at
    7B) outside the timing; the model is back on SDPA after."""
    model.hf.set_attn_implementation("eager")
    try:
        return measure(run, repeats)
    finally:
        model.hf.set_attn_implementation("sdpa")


def bench(dtype: torch.dtype, repeats: int, ig_steps: int, slow: bool, card_gb: float | None) -> None:
    device = "cuda" if GPU else "cpu"
    model = model_at_shape(dtype, device)
    capped = GPU and card_gb is not None and torch.cuda.memory_allocated() < 0.9 * card_gb * 1e9
    if capped:   # the allocator refuses past this share of the card: what a card of card_gb would hold
        torch.cuda.set_per_process_memory_fraction(card_gb * 1e9 / torch.cuda.get_device_properties(0).total_memory)
    image = make_scene(random.Random(0), size=336).image
    inputs = model.inputs(image, QUESTION)
    seq_len = inputs["input_ids"].shape[1]
    name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    table = memory.memory_table(model.hf.config, seq_len).loc[name]

    def forward(preprocess=False):
        def run():
            with torch.no_grad():
                model.hf(**(model.inputs(image, QUESTION) if preprocess else inputs))
        return run

    # explain starts from the image; so does the like-for-like forward pass (the processor's resizing and
    # normalising, then the pass): the goal's ratio is taken against it, and the ratio to the pass alone is printed too
    rows = {"forward, eager": eager_measure(model, forward(), repeats), "forward, SDPA": measure(forward(), repeats),
            "SDPA, from image": measure(forward(preprocess=True), repeats),
            "explain (tool)": measure(lambda: model.explain(image, question=QUESTION), repeats)}
    for method in list(patches.METHODS)[1:]:
        if method in SLOW and not slow:
            continue
        rows[method] = measure(lambda: patches.patch_map(model, image, QUESTION, method, ig_steps=ig_steps),
                               *((1, False) if method in SLOW else (repeats, True)))
    sdpa, eager, tool = rows["forward, SDPA"][0], rows["forward, eager"][0], rows["explain (tool)"][0]
    from_image = rows["SDPA, from image"][0]
    print(f"\n{name}: sequence length {seq_len}, {table['parameters (B)']:.2f} B parameters; "
          f"memory table: weights {table['weights']:.1f} GB, explain needs at least "
          f"{table['explain needs at least']:.1f} GB")
    if GPU and card_gb is not None:
        print(f"  memory capped at {card_gb:g} GB (torch.cuda.set_per_process_memory_fraction), as on a "
              f"{card_gb:g} GB card" if capped else f"  not capped at {card_gb:g} GB: the weights alone do not fit such a card")
    print(f"  {'':18s} {'ms':>10s} {'x SDPA fwd':>11s} {'x explain':>10s} {'peak GB':>8s}")
    for label, (seconds, peak) in rows.items():
        print(f"  {label:18s} {seconds * 1e3:10.1f} {seconds / sdpa:11.2f} {seconds / tool:10.1f} {peak:8.1f}")
    print(f"  explain / SDPA forward from the image: {tool / from_image:.2f}x (goal <= "
          f"{1.10 if dtype == torch.bfloat16 else 1.05}x); / SDPA forward on ready inputs: {tool / sdpa:.2f}x; "
          f"/ eager forward: {tool / eager:.2f}x; preprocessing alone: {(from_image - sdpa) * 1e3:.1f} ms")
    if not slow:
        print(f"  ({', '.join(SLOW)} not run in {name}: --slow-dtypes names the dtypes they run in)")
    scenes = [make_scene(random.Random(i), size=336).image for i in range(8 if GPU else 3)]
    t = time.perf_counter()
    for scene in scenes:
        model.explain(scene, question=QUESTION)
    if GPU:
        torch.cuda.synchronize()
    print(f"  explain, {len(scenes)} scenes in a row: {len(scenes) / (time.perf_counter() - t):.1f} items/s")
    del model
    if capped:
        torch.cuda.set_per_process_memory_fraction(1.0)
    if GPU:
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=count, default=5 if GPU else 3)
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"] if GPU else ["float32"])
    p.add_argument("--slow-dtypes", nargs="+", default=["bfloat16"] if GPU else ["float32"],
                   help="the dtypes in which ablation, gradient and integrated gradients run")
    p.add_argument("--ig-steps", type=count, default=32 if GPU else 8)
    p.add_argument("--card-gb", type=float, default=24,
                   help="on a GPU, cap the memory PyTorch may take at this many GB, as on a card of that size, in each "
                        "dtype whose weights fit it (0: no cap)")
    args = p.parse_args()
    if GPU:
        print(f"GPU: {torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 1e9:.0f} GB; "
              "llava-1.5-7b's exact shape, random weights: speed and memory only")
    else:
        print("no GPU here: a scaled-down shape on the CPU (llava-1.5-7b's 24x24 patches and vocabulary; 2 layers of "
              "width 128, a 2-layer vision tower), float32; peak memory is measured on GPUs only")
    for name in args.dtypes:
        bench(getattr(torch, name), args.repeats, args.ig_steps, name in args.slow_dtypes, args.card_gb or None)


if __name__ == "__main__":
    main()
