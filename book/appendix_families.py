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
# # D · Other model families
#
# The paper studies one model, Llava. Its score and its tool are identities of the architecture, so they carry over
# to any vision-language model whose language model is a stack of attention and FFN blocks adding into a residual
# stream — once three things are known for that family: where its pieces live, which sequence positions are image
# tokens and which rectangle of the image each one covers, and how its prompt is asked. This page gives them for
# the families llavamech reads beyond Llava and LLaVA-NeXT, checks every identity on a tiny random model of each
# (the real classes at a tiny size), and gives the memory one real checkpoint of each needs.

# %% tags=["parameters"]
seed = 0
width, height = 77, 45     # an odd-sized image: neither side a multiple of any patch size
question = "What is the color of the dog?"

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %% tags=["hide-input"]
import random

import matplotlib.pyplot as plt
import pandas as pd
import torch

import llavamech
from llavamech import memory
from llavamech.checks import identity_errors
from llavamech.examples import check_parameters
from llavamech.imaging import patch_boxes
from llavamech.models import TINY_FAMILIES
from llavamech.organism.world import make_scene
from llavamech.report import glue, table

check_parameters(seed=seed, question=question, width=width, height=height)
picture = make_scene(random.Random(seed), size=max(width, height) + 3).image.crop((0, 0, width, height))
models = {name: llavamech.load(name) for name in TINY_FAMILIES}
multimodal = {name: m for name, m in models.items() if m.is_multimodal}

# %% [markdown]
# ## What differs
#
# | family | classes, and what differs from Llava | status |
# |---|---|---|
# | Qwen2-VL | `Qwen2VLForConditionalGeneration` — dynamic resolution: the whole image is resized (no crop) to multiples of 28 px with its pixel count within `[min_pixels, max_pixels]`; each 2 × 2 block of 14 px patches is merged into **one token**, so the grid follows the image and is rarely square; **multimodal RoPE**: each position has a (time, row, column) triple and the rotary angles of q and k come from all three; q/k/v biases | supported |
# | Qwen2.5-VL | `Qwen2_5_VLForConditionalGeneration` — as Qwen2-VL; its vision tower attends within windows (full attention in 4 of its 32 blocks) and uses RMSNorm and SwiGLU — all before the language model, so nothing in the decomposition changes | supported |
# | Qwen3-VL | `Qwen3VLForConditionalGeneration` — as Qwen2-VL (patches of 16), over Qwen3: q/k norms, no q/k/v biases; and **"deepstack"**: the vision tower's blocks 8, 16 and 24 are merged too and **added to the residual stream at the image positions after the first three decoder layers** | supported |
# | Gemma 3 | `Gemma3ForConditionalGeneration`, and `Gemma3ForCausalLM` alone — a SigLIP tower whose patch features are average-pooled to a fixed grid (16 × 16 = 256 tokens) of the whole image, squashed to a square; a language model with √d-scaled embeddings, RMSNorm with gain $1 + g$, q/k norms, **norms on the attention and FFN outputs before they join the residual stream**, five sliding-window layers to each global one, attention among image tokens both ways, and a final logit soft-cap where the config sets one (none in Gemma 3's published configs) | supported |
# | LLaVA-OneVision | `LlavaOnevisionForConditionalGeneration` — LLaVA-NeXT's any-resolution tiles (up to 6 × 6 of 384 px) and base image over Qwen2 with a SigLIP tower (no CLS token); the unpadded high-resolution grid is **pooled bilinearly** to at most 9 tiles' worth of tokens, so a token blends neighbouring patches | supported |
# | Idefics3 | `Idefics3ForConditionalGeneration` — the image resized to multiples of 364 px and split into tiles, plus the whole image squashed to one ("global"); each tile's 26 × 26 patches **pixel-shuffled** 3 × 3 into 81 tokens; each tile's tokens **announced by a text token** (`<row_i_col_j>`, `<global-img>`); Llama 3 | supported |
# | SmolVLM | `SmolVLMForConditionalGeneration` — Idefics3's architecture and layout under classes of its own, over a smaller Llama; its chat turns open with ChatML's im_start token; its processor needs the `num2words` package | supported |
# | InternVL | `InternVLForConditionalGeneration` (InternVL2.5, 3 and 3.5 in transformers' classes) — the image squashed to a grid of 448 px tiles whose aspect ratio is closest to the image's (up to 12 tiles by default), plus the whole image as a **thumbnail** tile; each tile's 32 × 32 patches **pixel-shuffled** 2 × 2 into 256 tokens, all tiles in **one block** between `<img>` and `</img>` with nothing saying where a tile starts; over Qwen2 (InternVL3), Qwen3 (InternVL3.5: q/k norms) or InternLM2 converted to Llama | supported (layout checked on transformers' GotOcr2 tiling; InternVL3.5's own image processor is not in transformers 5.23) |
# | Mistral 3 | `Mistral3ForConditionalGeneration` (Mistral Small 3.1 and 3.2, Magistral Small, Ministral 3) — Pixtral's processing: the whole image downscaled to fit 1,540 px a side (aspect ratio kept) and its sides rounded up to multiples of 28 px, no crop, so the grid follows the image; a **Pixtral tower** (2-D rotary positions on the image's own patch grid) whose 14 px patches the projector's **patch merger** joins 2 × 2 into one token; each row of `[IMG]` tokens ended by an **`[IMG_BREAK]`** text token, the last by `[IMG_END]`, so the image positions are not one block; the resized image's size (`image_sizes`) is an input of the model's forward; over Mistral, or Ministral 3 (YaRN rotary angles; its queries are scaled past `original_max_position_embeddings`, where llavamech stops the prompt) | supported (Pixtral's processor imported without torchvision: `families.processor_class`) |
# | GLM-4.1V | `Glm4vForConditionalGeneration` (GLM-4.1V-Thinking; GLM-4.5V is the mixture-of-experts `Glm4vMoeForConditionalGeneration`, not read) — Qwen2-VL's dynamic resolution and **multimodal RoPE** (the model's own `get_rope_index`, Qwen2-VL's inputs), its `max_pixels` counted over the 2 frames an image is repeated to; 14 px patches merged 2 × 2 by a **strided convolution**, the tokens in one block between `<\|begin_of_image\|>` and `<\|end_of_image\|>`; over GLM-4: **norms on the attention and FFN outputs before they join the residual stream** (gains $g$, as Llama's), a **fused `gate_up_proj`**, q/k/v biases, rotary angles on **half of each head** | supported |
#
# A model of any other family is refused by `llavamech.load` with one line naming what is supported.
#
# **Why multimodal RoPE changes nothing in the decomposition.** Rotary embeddings act on queries and keys only:
# they decide the attention weights $\alpha_{T,j}$, never the values. The trace recomputes $\alpha_{T,j}$ from the
# captured query and keys with the cosines and sines the model itself passed to each attention module — for Qwen2-VL
# already assembled from the three position components — so every identity of [appendix A](appendix_identities)
# holds as it is. What does change is any pass that feeds the language model embeddings directly (the `ablation`,
# `gradient` and `ig` patch methods): the model derives the 3-D positions from the token ids, which such a pass does
# not have, so llavamech captures the positions the model computed and hands them back.
#
# **Qwen3-VL's deepstack additions are terms of their own.** Layer $l$'s output is then
# $h^l = h^{l-1} + A^l + F^l + D^l$, where $D^l$ is the visual feature added after layer $l$ (zero at every text
# position). At the scored position $T$, a text position, $D^l_T = 0$: every decomposition there is the usual one.
# Where the book reads the residual stream at the image positions themselves (chapter 1's lens, chapter 3's
# stream parts), $D^l$ is part of it: the trace keeps it (`visual_added_all`) so that the bookkeeping is exact at
# every position. A pass on the input embeddings alone is handed the same $D^l$, held as the image gave them: the
# patch methods score the input embeddings, not these later additions.
#
# **Why Gemma's norm after attention needs a frozen scale.** In Gemma the attention output $o = \sum_h o_h$ (the
# heads' outputs through $W_O$) joins the residual stream only after an RMSNorm:
# $A^l = (1 + g') \odot o / s_o$ with $s_o = \mathrm{rms}(o)$. That is not linear in $o$: a head's output through the
# norm alone is not its share of $A^l$, and the shares would not add up. Freeze $s_o$ at its value for the whole
# layer at $T$, as the readout freezes the final norm's $s$; the norm is then the linear map
# $o \mapsto (1 + g') \odot o / s_o$, and
# $A^l = \sum_h a^{l,h}$ with $a^{l,h} = (1 + g') \odot o_h / s_o$ exactly — likewise for each source position
# ($u_j$) and, through the norm after the FFN, each neuron. Each share is what its head, position or neuron adds to
# the residual stream *in this example*, with every other head held where it was: the frozen scale is the context
# the other heads set, so ablating a head (a different question) is not the same as removing its share. The final
# norm's gain is $1 + g$ in the readout too. Where a soft-cap $c$ is applied, the model's logits are
# $c \tanh(z/c)$ of the frozen-norm readout $z$, and Imp compares the capped logits of base $+\,v$ and base; the
# linear logit contribution $z(v)_w$ is taken before the cap, which is not additive. In transformers 5,
# `Gemma3ForCausalLM` applies its config's cap and `Gemma3ForConditionalGeneration` does not: the trace reads which
# from the model's own pass. The √d scale of the embeddings is inside the embedding module, so the residual stream
# the trace captures already carries it; the $(1 + g)$ gains of the q/k norms only change $\alpha_{T,j}$, which the
# trace recomputes from the normed queries and keys.
#
# **GLM-4.1V's sandwich norms are Gemma's under other names.** Its decoder layer norms the attention output
# (`post_self_attn_layernorm`) and the FFN output (`post_mlp_layernorm`) before they join the residual stream, and
# its FFN input passes `post_attention_layernorm` (Llama's name and place); the gains are $g$, not $1 + g$. The same
# frozen scales make heads, positions and neurons add up to $A^l$ and $F^l$ exactly. Its FFN computes gate and up in
# one matrix, `gate_up_proj`, and splits the result in two: the neurons are still the inputs of `down_proj`,
# $c^l = \mathrm{SiLU}(\text{gate}) \odot \text{up}$, which is all the decomposition reads. Its rotary angles turn
# the first half of each query and key only, with the model's own function, which the trace calls.
#
# **The prompt.** Each family is asked in its own chat template (the processor's), one user turn holding the image
# and the question, with the question's answer prefix opening the assistant's turn, so that the answer is again the
# next token. For Qwen2-VL, Gemma 3 and GLM-4.1V:

# %% tags=["hide-input"]
for name in ("tiny-random-qwen2-vl", "tiny-random-gemma3", "tiny-random-glm4v"):
    print(f"{name}:\n{models[name].prompt(question, image=True)}\n")

# %% [markdown]
# (Qwen2-VL's real template also opens with a system turn, "You are a helpful assistant."; the tiny model's
# vocabulary has no words for it, so its template leaves it out, as Mistral's default system prompt is left out of
# the tiny Mistral 3's. Gemma 3's processor expands `<start_of_image>` into the image's 256 tokens between blank
# lines. Mistral's answer follows `[/INST]` with no space before it: where the assistant's turn opens on a special
# token or a new line, the answer prefix loses its leading space. GLM-4.1V's real template is written here without
# its system turn and its handling of the model's thinking, which a one-turn question does not reach.)
#
# ## Which token covers which pixels
#
# The layout is read from the model's own code, never from offsets written here; the image tokens are the positions
# holding the image token id. **Qwen-VL** (2, 2.5 and 3): each one's row and column are the height and width
# components of the 3-D rotary position that the model's `get_rope_index` assigns it. **Gemma 3**: the projector's own
# average pooling and flattening are run on the patch grid's coordinates, so each token gets the cell of patches
# pooled into it. **LLaVA-OneVision**: the model's own packing (tiles assembled, padding removed, pooled, a newline
# per row) is run on coordinates, as for LLaVA-NeXT; a pooled token's row and column are where packing put it.
# **Idefics3** (and SmolVLM): the text token announcing each block of image tokens names its tile, and the connector's own pixel
# shuffle, run on coordinates, places each token within its tile (its tokens come tile by tile, so the map's grid is
# assembled from them). **InternVL**: nothing in the prompt marks its tiles, so the image's size goes into the inputs
# (as LLaVA-NeXT's processor gives it) and the processor's own choice of grid for that many tiles is made again;
# within a tile the model's own pixel shuffle, run on coordinates, places each token. **Mistral 3**: the resized image's
# size is among the processor's outputs, and the projector's own patch merger, run on the patch grid's coordinates,
# places each token (row by row); the `[IMG_BREAK]` and `[IMG_END]` tokens after each row are text tokens, so the
# image positions are the `[IMG]` tokens alone. **GLM-4.1V**: as Qwen-VL, the height and width components of the
# 3-D rotary position that its own `get_rope_index` assigns. In each the model sees the whole image (resized, or tiled with the padding removed), so token
# $(r, c)$ of an $R \times C$ grid covers the rectangle $[c\,w/C, (c+1)\,w/C) \times [r\,h/R, (r+1)\,h/R)$ of the
# original $w \times h$ image (`llavamech.imaging.patch_boxes`; for OneVision its centre, as a pooled token also
# blends in its neighbours, and to within the rounding of the unpadding). The unit tests prove it from the other side:
# the processor's pixel values of each merged Qwen token are exactly its rectangle's pixels; each pooled Gemma token
# is the mean of its cell of patches; each OneVision token is the bilinear pooling of the unpadded tiles at its (row,
# col); each Idefics3 token holds exactly the patches of its cell of its announced tile; and what the tower outputs
# $k$-th is what the model puts at the $k$-th image position. Below, each rectangle on the {glue:text}`odd_size` image
# is labelled with its sequence position (Gemma squashes the image to a square, so its cells are as wide as the
# image's aspect ratio makes them; OneVision's base image, Idefics3's global image and InternVL's thumbnail, 16, 4
# and 4 more tokens, are not drawn).

# %% tags=["hide-input"]
glue("odd_size", f"{width} × {height}")
rows = -(-len(multimodal) // 4)   # four a row, so that the models' names stay apart
fig, axes = plt.subplots(rows, 4, figsize=(12, 3.2 * rows))
axes = axes.ravel()
for ax in axes[len(multimodal):]:
    ax.axis("off")
layouts = {}
for ax, (name, m) in zip(axes, multimodal.items()):
    trace = m.trace(picture, question)
    positions = trace.positions
    boxes = patch_boxes(picture.size, m.processor.image_processor, positions.grid_shape)
    ax.imshow(picture, extent=(0, width, height, 0))
    for position in positions.image_positions.tolist():
        row, col = positions.row_col(position)
        x0, y0, x1, y1 = boxes[row, col]
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(position), color="white", ha="center", va="center", fontsize=8)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(f"{name}\n{positions.grid_shape[0]} × {positions.grid_shape[1]} tokens", fontsize=9)
    ax.axis("off")
    inputs = m.inputs(picture, question)
    layouts[name] = {"model input": "×".join(str(n) for n in inputs["pixel_values"].shape),
                     "token grid": "{} × {}".format(*positions.grid_shape),
                     "image positions": f"{int(positions.image_positions[0])}–{int(positions.image_positions[-1])}",
                     "prompt length": trace.seq_len}
table(pd.DataFrame(layouts).T, "layouts")

# %% [markdown]
# (The model input is Qwen-VL's flattened patches — 2 frames of each, as for video — Gemma's square image, and
# OneVision's, Idefics3's and InternVL's tiles with their base, global or thumbnail image, Mistral 3's resized
# image, and GLM-4.1V's flattened patches, as Qwen-VL's.)
#
# ## Every identity, on every family
#
# The largest error of any identity of [appendix A](appendix_identities) (heads sum to the attention output,
# positions to each head, neurons to the FFN output, the residual bookkeeping, the frozen-norm readout of the final
# residual is the logits, Imp against brute force) on each tiny random model, float32, on the image above (the
# text-only Gemma 3 on the question with the facts as text). For Gemma the heads are checked against o_proj's slices
# followed by what the model's own norm after attention does to o_proj's output at $T$, $\mathrm{norm}(o)/o$ (the
# frozen scale, read off the model rather than computed), and brute-force Imp against logits capped as the model caps
# them (`llavamech.checks.identity_errors` does both for every model).

# %% tags=["hide-input"]
def example_for(m) -> dict:
    return dict(image=picture, question=question) if m.is_multimodal else \
        dict(question=question, context="The dog is white. The cat is black.")


# %% tags=["volatile", "hide-input"]
errors = {}
for name, m in models.items():
    errors[name] = identity_errors(m, **example_for(m))
worst = {name: max(e.values()) for name, e in errors.items()}
glue("worst_family_identity", f"{max(worst.values()):.1e}")
table(pd.DataFrame({"class": {n: type(m.hf).__name__ for n, m in models.items()},
                    "heads (kv)": {n: f"{m.anatomy.n_heads} ({m.anatomy.n_kv_heads})" for n, m in models.items()},
                    "RMSNorm eps": {n: f"{m.anatomy.eps:.0e}" for n, m in models.items()},
                    "largest identity error": {n: f"{w:.1e}" for n, w in worst.items()}}), "family-identities")

# %% [markdown]
# Every identity holds to {glue:text}`worst_family_identity` in float32 (the unit tests require $10^{-5}$).
#
# ## The memory one real checkpoint needs
#
# Parameters counted on PyTorch's meta device from each checkpoint's published config (written out in
# `llavamech.memory`; nothing is downloaded), at a prompt of 300 positions for the Qwen-VL models, Gemma 3 and
# GLM-4.1V — about a 448 × 448 image (256 tokens for Qwen2-VL, Qwen2.5-VL and GLM-4.1V, 196 for Qwen3-VL's patches
# of 16; Gemma 3's 256 for any image) and the question; of 7,400 for LLaVA-OneVision — its base image's 729 tokens, its pooled tiles' at
# most 9 × 729 and their newlines; of 1,450 for Idefics3 — 16 tiles and the global image of 81 tokens each,
# their tags, and the question; and of 3,400 for InternVL3 — a 4:3 photograph cut into its default maximum of
# 12 tiles (4 × 3) and a thumbnail, 256 tokens each, and the question; and of 3,000 for Mistral Small 3.1 — a 4:3
# photograph at its 1,540 px, 55 × 42 tokens of 28 px with a break or end after each row (2,352 positions), the
# question, and its template's default system prompt of some hundreds of tokens (`memory.memory_table(config,
# seq_len)` gives any other length). A
# dynamic-resolution model's prompt grows with the image: up to `max_pixels` / 28² tokens
# (1,280 with Qwen2-VL's default `max_pixels` of 28² × 1,280, about a megapixel; GLM-4.1V counts `max_pixels` over
# the 2 frames an image is repeated to, so up to `max_pixels` / 2 / 28²); an image whose tokens alone would
# exceed the model's positions is refused in one line naming `max_pixels`.

# %% tags=["hide-input"]
checkpoints = {"Qwen/Qwen2-VL-7B-Instruct": (memory.qwen2_vl_7b_config(), 300),
               "Qwen/Qwen2.5-VL-7B-Instruct": (memory.qwen2_5_vl_7b_config(), 300),
               "Qwen/Qwen3-VL-8B-Instruct": (memory.qwen3_vl_8b_config(), 300),
               "google/gemma-3-4b-it": (memory.gemma3_4b_config(), 300),
               "llava-hf/llava-onevision-qwen2-7b-ov-hf": (memory.llava_onevision_7b_config(), 7400),
               "HuggingFaceM4/Idefics3-8B-Llama3": (memory.idefics3_8b_config(), 1450),
               "OpenGVLab/InternVL3-8B-hf": (memory.internvl3_8b_config(), 3400),
               "mistralai/Mistral-Small-3.1-24B-Instruct-2503": (memory.mistral_small_31_config(), 3000),
               "zai-org/GLM-4.1V-9B-Thinking": (memory.glm41v_9b_config(), 300)}
rows = []
for checkpoint, (config, seq_len) in checkpoints.items():
    frame = memory.memory_table(config, seq_len=seq_len)
    for dtype in ("float32", "bfloat16"):
        rows.append({"checkpoint": checkpoint, "prompt length": f"{seq_len:,}", "dtype": dtype,
                     **frame.loc[dtype].to_dict()})
frame = pd.DataFrame(rows).set_index(["checkpoint", "prompt length", "dtype"])
frame.attrs["note"] = ("GB, except the prompt length (positions) and parameters (billions); the sum is a lower bound of "
                       "what one GPU needs for explain.")
table(frame, "family-memory", "{:.2f}")

# %% [markdown]
# ## What the organism cannot stand in for
#
# There is no trained organism of these families: the tiny models here are random. They prove everything exact —
# the decompositions, the layout of image tokens on the image, the prompt, every patch method's plumbing — on the
# real classes and processors. They cannot say anything about what a trained Qwen2-VL or Gemma 3 does: which heads
# carry the colour, whether its visual question reuses its text circuit as the paper finds in Llava, whether the
# tool's map points at the evidence as well as it does on the organism — nor what a frozen norm scale does to a trained model's head ranking (on Gemma a head's share depends on
# the other heads through $s_o$). Run the chapters with `-p model Qwen/Qwen2-VL-7B-Instruct` or
# `-p model google/gemma-3-4b-it` on a GPU for that. The causal checks of chapters 2–4 and chapter 5's mean
# baseline run on every family: their passes on the input embeddings are handed what the model derives besides them
# (Qwen-VL's 3-D positions, Gemma's token types, Qwen3-VL's deepstack features), so with nothing ablated they give
# the model's own log-probabilities (a unit test checks it on each family). Patches are ablated at the projector only
# where it outputs the patch grid row by row (Llava, Gemma 3); for the others `interventions.ablated(patches=…)`
# refuses in one line, and `llavamech.patches` removes patches from the input embeddings, which follow each layout.
# There is no memory row for SmolVLM: `llavamech.memory` does not write out its config yet.
