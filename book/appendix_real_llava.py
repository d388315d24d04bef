# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Running on the real Llava
#
# Every chapter runs on the toy organism so that it executes anywhere in a couple of minutes. The same calls run on
# `llava-hf/llava-1.5-7b-hf` and `lmsys/vicuna-7b-v1.5`, on newer Llava-family models, and over thousands of your
# own images. This page gives the commands, what each needs in GPU memory, which model classes llavamech reads
# (each checked below on a tiny random model of that class), what half precision changes, and what the organism can
# and cannot stand in for.

# %% tags=["parameters"]
model = "toy-llava"        # the model whose float32 and bfloat16 tools are compared below
device = "cpu"             # bfloat16 is compared on the CPU here; "cuda" on a GPU
n_examples = 30
seed = 0
seq_len = 600              # prompt length with one llava-1.5 image (576 patches + the text)

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %%
import pandas as pd

import llavamech
from llavamech import checks, memory
from llavamech.examples import toy_examples
from llavamech.models import TINY
from llavamech.report import glue, table

# %% [markdown]
# ## The commands
#
# Download the weights once (this needs network; nothing in llavamech downloads at run time), then:
#
# | what | command |
# |---|---|
# | one image | `llavamech explain photo.jpg --question "What is the color of the dog?" --model llava-hf/llava-1.5-7b-hf --device cuda` |
# | a chapter | `cd book && papermill ch3_visual_circuit.ipynb out.ipynb -p model llava-hf/llava-1.5-7b-hf -p text_model lmsys/vicuna-7b-v1.5 -p device cuda -p examples my.jsonl` |
# | Colab | the rocket button of any chapter opens it; its hidden first cell installs llavamech (organism included) |
# | COCO as an example set | `llavamech coco annotations/instances_val2017.json --images val2017 --out coco.jsonl --limit 1000` |
# | a dataset, one GPU | `llavamech run coco.jsonl --model llava-hf/llava-1.5-7b-hf --device cuda --out runs/coco --maps` |
# | a dataset, N GPUs | `accelerate launch --multi_gpu --num_processes N -m llavamech run coco.jsonl --model llava-hf/llava-1.5-7b-hf --device cuda --out runs/coco` |
# | a model bigger than one GPU | add `--device-map auto` (accelerate places the layers; readouts gather on the last device) |
# | the paper's worked example | `LLAVAMECH_COCO_IMAGE=000000219578.jpg pytest tests/gpu` (the paper's head Imp values to 1e-3; skipped without a GPU) |
#
# `llavamech run` writes one JSON row per item (answer, probability, top heads, map, and correctness or pointing
# where the item gives the colour or the box); killed, it restarts where it stopped; under `accelerate launch` each
# process takes every N-th item and the first merges the rows. (On a machine without GPUs the same `--multi_gpu`
# launch starts N CPU processes; accelerate's `--cpu` flag alone starts one.)

# %% [markdown]
# ## What it needs in memory
#
# Computed from llava-1.5-7b's configuration (parameters counted on PyTorch's meta device; the trace's size from
# its shapes — both formulas are unit-tested against real models). The trace keeps its readouts in float32 whatever
# the model's dtype, so half precision halves the weights but not the trace.

# %%
mem = memory.memory_table(seq_len=seq_len)
glue("params_7b", f"{mem.loc['float32', 'parameters (B)']:.2f}")
glue("need_fp32", f"{mem.loc['float32', 'explain needs at least']:.1f}")
glue("need_bf16", f"{mem.loc['bfloat16', 'explain needs at least']:.1f}")
table(mem, "memory", "{:.3f}")

# %% [markdown]
# In GB. llava-1.5-7b has {glue:text}`params_7b` billion parameters: `explain` in float32, as the paper ran it,
# needs at least {glue:text}`need_fp32` GB on one GPU (an A100 40 GB or an 80 GB card); in bfloat16 at least
# {glue:text}`need_bf16` GB (a 24 GB card). The chapters' dataset runs hold one trace at a time, so the table holds
# for them too; the lens chapters keep every position (the "all positions" column).

# %% [markdown]
# ## The model classes llavamech reads
#
# Llava over a Llama, Mistral or Qwen2 language model (grouped-query attention, and Qwen2's biases on q, k and v),
# LLaVA-NeXT (any-resolution tiles plus a base image, a newline token after each row of the high-resolution grid,
# so the grid is not square), and the language models alone. Each row below is a tiny random model of that class:
# the largest error of any identity of [the score](appendix_identities), and the patch grid the map is drawn on,
# for a wide 80 × 56 image. Anything else is refused with one line ("not supported: ...").

# %%
import random
from llavamech.organism.world import make_scene

wide = make_scene(random.Random(seed), size=80).image.crop((0, 0, 80, 56))
classes = {}
for name in TINY:
    tiny = llavamech.load(name)
    args = dict(image=wide, question="What is the color of the dog?") if tiny.is_multimodal else \
        dict(question="What is the color of the dog?", context="The dog is white. The cat is black.")
    errors = checks.identity_errors(tiny, **args)
    trace = tiny.trace(**args)
    classes[name] = {"class": type(tiny.hf).__name__,
                     "language model": type(tiny.hf.model.language_model if tiny.is_multimodal
                                            else tiny.hf.model).__name__.removesuffix("Model"),
                     "heads (kv)": f"{tiny.anatomy.n_heads} ({tiny.anatomy.n_kv_heads})",
                     "patch grid": "—" if not tiny.is_multimodal else "{} × {}".format(*trace.positions.grid_shape),
                     "image tokens": len(trace.positions.image_tokens) if tiny.is_multimodal else 0,
                     "largest identity error": f"{max(errors.values()):.1e}"}
classes = pd.DataFrame(classes).T
glue("worst_identity", max(classes["largest identity error"], key=float))
table(classes, "classes")

# %% [markdown]
# Every identity holds to {glue:text}`worst_identity` in float32 on every class. On LLaVA-NeXT the map covers the
# assembled high-resolution grid (its tiles with the padding removed), and each image token is mapped to its tile,
# row and column by running the model's own packing code on coordinates; since the tiles cover the whole image,
# maps are drawn on the original image, not a centre crop.

# %% [markdown]
# ## Half precision
#
# The tool in bfloat16 against float32 on the same held-out scenes of the organism (weights and activations in
# bfloat16; the readouts in float32):

# %%
items = toy_examples(n_examples, seed)
agreement = checks.dtype_agreement(model, items, "bfloat16", device=device)
same = agreement[agreement["same answer"]]   # where the answers differ, the two explain different tokens
summary = pd.DataFrame({"value": {
    "scenes": len(agreement), "same answer": agreement["same answer"].mean(),
    "same best head (same answer)": same["same best head"].mean(),
    "Δ p(answer) where the answer differs, largest": agreement.loc[~agreement["same answer"], "Δ p(answer)"].max(),
    "Δ head score / largest score (same answer), largest": same["Δ head score / largest"].max(),
    "Δ map value (same answer), median": same["Δ map"].median(),
    "Δ map value (same answer), largest": same["Δ map"].max()}})
anatomy = llavamech.load(model).anatomy
glue("organism_size", f"{anatomy.n_layers}-layer, {anatomy.n_layers * anatomy.n_heads}-head")
glue("bf16_n", len(agreement))
glue("bf16_flips", int((~agreement["same answer"]).sum()))
glue("bf16_head", f"{same['Δ head score / largest'].max():.3f}")
glue("bf16_map", f"{same['Δ map'].max():.3f}")
glue("bf16_map_median", f"{same['Δ map'].median():.4f}")
table(summary, "bf16", "{:.4g}")

# %% [markdown]
# On {glue:text}`bf16_n` scenes bfloat16 changed the answer in {glue:text}`bf16_flips`: near-ties between two
# colours, where a rounding error picks the other one (and the explanation is then of a different token). Where the
# answer is the same, head scores moved by at most {glue:text}`bf16_head` of the largest score, and map values by
# {glue:text}`bf16_map_median` at the median and {glue:text}`bf16_map` at most, against a map whose values average
# 1/64. The paper's worked example needs float32 to reproduce its numbers to 1e-3; for ranking heads and drawing
# maps, half precision serves — check the answer's margin when it is close.

# %% [markdown]
# ## What the organism can and cannot stand in for
#
# **Can.** Everything exact: the decompositions and the score are identities of the architecture, proven on every
# class above whatever the weights. The code path: the real classes, processors, prompts and hooks. And the
# questions themselves — a trained model with a known answer to check every claim against.
#
# **Cannot.** Numbers: a {glue:text}`organism_size` organism on flat sprites is not a 32-layer, 1,024-head Llava on photographs. Head
# indices, how many heads matter, how far from chance the overlaps are, whether the tool's map is trustworthy
# on *your* model — rerun the chapters on it. Where the organism and the paper disagree, the chapters say so; only
# the real model can say which way the real answer lies.
