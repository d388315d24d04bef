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
# # A · The score and its identities
#
# The paper's attribution — every layer, head, neuron and position score in this book — is a **log-probability
# increase** of the answer token, computed from vectors that are pieces of the residual stream at the last prompt
# position $T$. (The book's other numbers, MRRs, attention masses, probe accuracies and the Δ log p of ablations,
# are read off the model directly.) This appendix defines the pieces and the score, and checks — numerically, on
# the model named in the parameters below — that each piece is exact.
#
# By default it runs on `tiny-random-llava`, a randomly initialised Llava of the real classes
# (`LlavaForConditionalGeneration` over `LlamaForCausalLM`, with a CLIP tower) at a tiny size
# ({glue:text}`model_size`): exactness does not depend on training or size, so a random model proves the algebra (the unit tests do the same on every
# class llavamech reads: Llava and LLaVA-NeXT over Llama, Mistral and Qwen2, and those language models alone, with
# and without grouped-query attention, to $10^{-5}$ in float32).

# %% tags=["parameters"]
model = "tiny-random-llava"   # any name llavamech.load accepts
device = "cpu"
image = None                  # a path to your own image; None draws a toy scene
question = "What is the color of the dog?"
seed = 0

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %% tags=["hide-input"]
import random

import pandas as pd

import llavamech
from llavamech import attribution, plots
from llavamech.checks import identity_errors
from llavamech.examples import check_parameters
from llavamech.report import glue, math, table
from llavamech.organism.world import make_scene

check_parameters(model=model, device=device, image=image, question=question, seed=seed)
m = llavamech.load(model, device=device)
picture = image if image is not None else make_scene(random.Random(seed), size=96).image
glue("model_size", f"{m.anatomy.n_layers} layers, d = {m.anatomy.d_model}, a vocabulary of "
                   f"{m.anatomy.lm_head.out_features} tokens")
print(m)

# %% [markdown]
# ## The pieces
#
# Write $h^{l-1}$ for the input of layer $l$ at position $T$, $A^l$ for its attention output,
# $m^l = h^{l-1} + A^l$, $F^l$ for its FFN output and $h^l = m^l + F^l$. Then (no output biases in Llama, Mistral or Qwen2):
#
# - **heads**: $A^l = \sum_h a^{l,h}$ with $a^{l,h} = \sum_j \alpha^{l,h}_{T,j}\, v^{l,h}_j W_O^{l,h}$, where
#   $v_j = W_V \,\mathrm{RMSNorm}(h^{l-1}_j) + b_V$ ($b_V = 0$ but in Qwen2; values carry no rotary embedding) and $W_O^{l,h}$ is head $h$'s slice of `o_proj`;
# - **source positions**: $a^{l,h} = \sum_j u^{l,h}_j$ with $u_j = \alpha_{T,j} v_j W_O^{l,h}$;
# - **FFN neurons**: $F^l = \sum_k c^l_k\, W_{down}[:,k]$ with $c = \mathrm{SiLU}(W_{gate}x) \odot W_{up}x$.
#
# ## The score
#
# Read any residual-space vector $x$ out as $z(x) = W_U\,(g \odot x / s)$, with $g$ the final norm's gain and
# $s$ the RMS of the *final* residual $h^L_T$, **frozen** once per example. Then
# $\mathrm{Imp}(v) = \log\mathrm{softmax}(z(\text{base} + v))_w - \log\mathrm{softmax}(z(\text{base}))_w$,
# with base $h^{l-1}$ for attention layers, heads and positions, $m^l$ for FFN layers and neurons, and $w$ the
# model's own top-1 token.
#
# ```{margin} Our choices
# The eps inside $s$ is read from the model's config (llava-1.5 says $10^{-5}$; the authors' code used
# $10^{-6}$). Beside Imp we report the linear logit contribution $z(v)_w$, which, unlike Imp, adds up.
# ```
#
# ## Each identity, checked
#
# Each row compares the library's decomposition with an independent computation through the model's own
# modules: the input of `o_proj` captured by a separate hook, the hidden states the model itself returns, and
# **brute force** — each vector added to its base and read out through the model's own final norm (its scale
# frozen) and unembedding, one vector at a time, instead of the library's batched readout (for neurons, the 16
# largest contributions of the last layer). The row $h^{l-1} + A^l = m^l$ only checks that the hooks capture
# consistent pieces (the model adds exactly those two, so its error is zero). The errors are float32 rounding.
# These rows check the code against the definition, with the final norm's scale frozen as the paper's score
# freezes it; they do not say that a piece's score equals the change in the model's log probability when the piece
# is removed, which the frozen scale and the later layers make different (chapters 2 and 3 measure that change by
# ablation).

# %% tags=["volatile", "hide-input"]
errors = identity_errors(m, picture, question)
table(pd.DataFrame({"max |error|": errors}).rename(index=math).rename_axis("identity"), "identity-errors", "{:.1e}")

# %% [markdown]
# ## Scores of one example
#
# One forward pass gives all of them, for the token the model would say next — on this tiny *random* model an
# arbitrary one (here {glue:text}`random_answer`), since its weights were never trained: the identities hold for any
# token, and the scores below only show what each call returns. Layer scores first: attention and FFN layers, each
# added to its own base.

# %% tags=["hide-input"]
trace = m.trace(picture, question)
answer = m.tokenizer.decode([trace.top_token]).strip()
glue("random_answer", repr(answer))
fig = plots.layer_bars(attribution.layer_scores(trace), f"{m.name}: layers' Imp for {answer!r}")

# %% [markdown]
# Then every head. The paper's tool takes the best of these and looks at where it reads from.

# %% tags=["hide-input"]
heads = attribution.head_scores(trace)
fig = plots.head_heatmap(heads, f"{m.name}: head Imp for {answer!r}")

# %% [markdown]
# ## The patch map
#
# The best head's per-position scores at the image positions, min-max normalised and divided by their sum,
# laid out on the patch grid and drawn over the image **as the model saw it** (resized and centre-cropped); the
# drawing scales the map to its largest value, which is where the image keeps its own colours.
# On a random model the map means nothing; the same call on the trained organism is the subject of chapter 5.

# %% tags=["hide-input"]
result = m.explain(picture, question=question)
fig = plots.patch_overlay(result)
