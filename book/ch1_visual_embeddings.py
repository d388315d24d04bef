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
# # 1 · Visual embeddings are already words
#
# Llava's projector turns each image patch into a vector that the language model reads exactly where it would
# read a word's embedding. The paper's first finding is that these vectors already *are* words, in a measurable
# sense: project the projector's output at a patch onto the language model's input embedding matrix $E$, and
# the top tokens name what is in the patch — its colour far more often than chance, its object somewhat more.
#
# This chapter measures that on the model organism `toy-llava`, over a held-out example set, with the paper's
# measure (mean reciprocal rank, MRR, of the colour and animal words at *important* patches against random
# ones), and follows the colour through the layers.

# %% tags=["parameters"]
model = "toy-llava"        # any Llava-family name llavamech.load accepts, e.g. llava-hf/llava-1.5-7b-hf
device = "auto"            # a GPU when there is one ("cuda", "cpu" to choose)
examples = "toy"           # "toy" (held-out scenes of the toy world) or a JSONL path whose items carry "colour"
n_examples = 200
seed = 0
image = None               # a path for the single-example figure; None takes the first example
question = None            # its question; None asks about the first example's animal
k = None                   # important patches per example; None scales the paper's 20 of 576 patches

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import llavamech
from llavamech import lens, plots, readouts
from llavamech.examples import check_parameters, load_examples
from llavamech.imaging import load_image, model_view
from llavamech.reference import compare, glue_paper
from llavamech.report import glue, glue_estimates, table
from llavamech.stats import bootstrap, chance_mrr, scaled_k

check_parameters(model=model, device=device, examples=examples, n_examples=n_examples, seed=seed, image=image,
                 question=question, **({} if k is None else {"k": k}))
m = llavamech.load(model, device=device)
items = load_examples(examples, n_examples, seed, model=m, needs=("colour",))
first = items[0]
picture = load_image(image if image is not None else first.image)
asked = question or first.question
n_patches = int(np.prod(m.trace(picture, asked).positions.grid_shape))
k = k or scaled_k(20, n_patches)
vocab = m.anatomy.lm_head.out_features
print(m)
print(f"{len(items)} examples; {n_patches} image patches per example; k = {k} important patches; vocabulary {vocab}")

# %% [markdown]
# ```{admonition} Our choices
# :class: note
# **Important patches** are the $k$ image positions with the highest per-position Imp in the example's own top
# head (the head the paper's tool uses), for the model's own answer. The paper takes 20 of Llava's 576 patches;
# we keep the share: $k = \mathrm{round}(20 \cdot P / 576)$, {glue:text}`k` of this model's {glue:text}`n_patches`. **Random patches** are
# $k$ image positions drawn uniformly. **Chance** is the MRR of a word whose rank is uniform over the
# vocabulary, $H_V / V$: {glue:text}`chance:.3f` for the organism's {glue:text}`vocab` words,
# {glue:text}`chance_llava:.4f` for Llava's 32,064 — which is why the
# paper's absolute MRRs and ours cannot be compared, only their ordering.
# ```
#
# ## One scene, patch by patch
#
# The top token at each patch of the projector's output (the input of layer 0), projected onto $E$ (left) and,
# for contrast, read out through the final norm and $W_U$ as if it were the last residual (right).

# %% tags=["full-width", "hide-input"]
trace = m.trace(picture, asked, all_positions=True)
view = model_view(picture, m.processor.image_processor)
fig, axes = plt.subplots(1, 2, figsize=(13, 6.8))
plots.token_grid(view, lens.patch_top_tokens(m, trace, 0, "embed"), "projected onto E (input embeddings)", axes[0])
plots.token_grid(view, lens.patch_top_tokens(m, trace, 0, "unembed"), "read out through W_U", axes[1])
shown = "" if image is not None or not first.facts else ": " + ", ".join(f"a {c} {a}" for a, c in first.facts)
fig.suptitle(f"{m.name}: top token of each visual embedding; scene of {first.source}{shown}", fontsize=10);

# %% [markdown]
# Read the left grid as a dictionary lookup: on the default scene, background patches land nearest to `?`, and
# the animals' patches nearest to animal words — not always the right one, often another animal — or to colour
# words, not always the animal's own (the title says what the scene holds). The right colour is rarely the single nearest
# token. A top-1 token is a blunt measure, though: the colour may still rank second or
# third. The mean reciprocal rank, over many scenes, is the measure that counts that.

# %% [markdown]
# ## Over the example set: the colour is readable where the answer comes from
#
# For every example: the reciprocal rank of its true colour and of its asked animal among all vocabulary
# tokens, at the $k$ important patches, at $k$ random patches, and at $k$ random patches **inside the asked
# animal's box** — at the input of every layer, read onto $E$ and onto $W_U$.
#
# ```{margin} Why the in-box control
# The important patches are chosen by the head that writes the answer, so they are chosen *because* they carry
# the colour that head moves: important-vs-random is partly circular. Random patches inside the animal's box are
# chosen without the model, by where the animal is; if they read as the colour nearly as well, the embeddings
# carry the colour wherever the animal is, not only where the head happened to look.
# ```

# %% tags=["hide-input"]
generator = torch.Generator().manual_seed(seed)
animals = sorted({e.animal for e in items} | {a for e in items for a, _ in (e.facts or [])})


colours = sorted({e.colour for e in items} | {c for e in items for _, c in e.facts})
ranks = readouts.collect(m, items, {"rr": lambda it: lens.colour_animal_ranks(m, it, animals, k, generator, colours)},
                         mode="vqa", all_positions=True)["rr"]
rr = {key: bootstrap(value, seed=seed) for key, value in ranks.items()}      # each [L+1] over layers
at_embedding = {key: est[0] for key, est in rr.items()}                      # the projector's outputs
chance = chance_mrr(vocab)
fig = plots.estimate_bars({"colour\nimportant": at_embedding["important embed colour"],
                           "colour\nin box": at_embedding["in-box embed colour"],
                           "colour\nrandom": at_embedding["random embed colour"],
                           "animal\nimportant": at_embedding["important embed animal"],
                           "animal\nin box": at_embedding["in-box embed animal"],
                           "animal\nrandom": at_embedding["random embed animal"]},
                          f"{m.name}: MRR of the visual embeddings projected onto E (n = {len(items)})", "MRR",
                          chance=chance, colors=["C3", "C1", "grey", "C0", "C9", "grey"])

# %% tags=["hide-input"]
ours = {"vis.colour_mrr.important": at_embedding["important embed colour"],
        "vis.colour_mrr.random": at_embedding["random embed colour"],
        "vis.animal_mrr.important": at_embedding["important embed animal"],
        "vis.animal_mrr.random": at_embedding["random embed animal"]}
glue_estimates(ours)
glue_estimates({"vis.colour_mrr.in_box": at_embedding["in-box embed colour"],
                "vis.animal_mrr.in_box": at_embedding["in-box embed animal"]})
glue("n_boxed", at_embedding["in-box embed colour"].n)
in_box, important, rand = (at_embedding[f"{w} embed colour"] for w in ("in-box", "important", "random"))
glue("in_box_vs_random", "above" if in_box.low > rand.high else "not clearly above")
glue("in_box_vs_important", "below" if in_box.high < important.low else "not clearly below")
# a patch that reads as *some* colour ranks every colour high: the true colour is set against the others there
glue("in_box_other_colours", str(at_embedding["in-box embed other colours"]))
this_colour = bootstrap(ranks["in-box embed colour"][:, 0] - ranks["in-box embed other colours"][:, 0], seed=seed)
glue("in_box_true_minus_other", str(this_colour))
glue("in_box_which_colour", "they read as this colour, not as colour in general" if this_colour.low > 0 else
     "they are not told apart from patches that read as any colour")
glue_paper("vis.colour_mrr.random")
glue("chance", chance)
glue("chance_llava", chance_mrr(32064))
glue("vocab", vocab)
glue_paper("vis.colour_mrr.important")
glue("k", k)
glue("n_patches", n_patches)
glue("n", len(items))
table(compare(ours, chance={key: chance for key in ours}, setting=f"top {k} of {n_patches} patches"), "paper-vs-here")

# %% [markdown]
# On the organism the claim holds, and clearly: at the {glue:text}`k` important patches of each example the
# true colour's MRR on $E$ is {glue:text}`vis_colour_mrr_important_est`,
# against {glue:text}`vis_colour_mrr_random:.3f` at random patches, which is chance
# ({glue:text}`chance:.3f`). The animal is readable too, but less: {glue:text}`vis_animal_mrr_important_est` against {glue:text}`vis_animal_mrr_random:.3f` — the paper's ordering
# (colour far above animal, both above random; n = {glue:text}`n` here). The table's last column tests the
# paper's *claim* (important above random, 95 % intervals apart), not its number: the organism's vocabulary
# has {glue:text}`vocab` words, Llava's 32,064, so an MRR here and there are on different scales.
#
# The control that does not depend on the head: $k$ random patches inside the asked animal's box
# (n = {glue:text}`n_boxed` scenes with a box) give the colour an MRR of {glue:text}`vis_colour_mrr_in_box_est` and the animal {glue:text}`vis_animal_mrr_in_box_est`. The colour inside the box is {glue:text}`in_box_vs_random` the random
# patches' (95 % intervals apart) and {glue:text}`in_box_vs_important` the important patches': the visual
# embeddings carry the colour wherever the asked animal is, and the head's choice of patches adds to it. Part of
# the important-vs-random gap is the head's selection, not all of it. Nor is it colour in general: at the same
# in-box patches the *other* colours have an MRR of {glue:text}`in_box_other_colours`, and the true colour's
# reciprocal rank less theirs, scene by scene, is {glue:text}`in_box_true_minus_other`: {glue:text}`in_box_which_colour`.
#
# One difference from the paper's numbers is not one of scale. The paper's random patches give the colour an MRR
# of {glue:text}`paper_vis_colour_mrr_random:.3f` where chance over its vocabulary is
# {glue:text}`chance_llava:.5f`: in Llava even a random patch of a COCO photograph leans towards the asked colour,
# far above chance. The organism's random patches sit at chance, likely because its backgrounds are a flat grey.
#
# ## Layer by layer: when does the colour become the answer?
#
# The same reciprocal ranks at the input of each layer, read out through $W_U$ (the logit lens), at important
# and at random patches.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, word in zip(axes, ("colour", "animal")):
    curves = {"important patches": rr[f"important unembed {word}"], "in the box": rr[f"in-box unembed {word}"],
              "random patches": rr[f"random unembed {word}"]}
    if word == "colour":   # a readout that puts every colour word first scores high on the true colour too
        curves["other colours, important patches"] = rr["important unembed other colours"]
        curves["other colours, random patches"] = rr["random unembed other colours"]
    if word == "animal":
        curves["other animals, important patches"] = rr["important unembed other animals"]
    plots.by_layer(curves, f"{m.name}: {word} MRR through W_U", "MRR", chance=chance, ax=ax)
fig.tight_layout()

# %% tags=["remove-input"]
animal_lens = {where: rr[f"{where} unembed animal"] for where in ("important", "in-box", "random")}
glue("animal_lens_max", float(max(np.nanmax(e.mean) for e in animal_lens.values())))
glue("animal_lens_high_max", float(max(np.nanmax(e.high) for e in animal_lens.values())))
glue("animal_lens_below_everywhere", "every" if all((np.asarray(e.high) < chance).all() for e in animal_lens.values())
     else "not every")
glue("others_lens_max", float(np.nanmax(rr["important unembed other animals"].mean)))
glue("layers_asked_below_others", int(np.sum(np.asarray(rr["important unembed animal"].mean)
                                             < np.asarray(rr["important unembed other animals"].mean))))
glue("n_lens_layers", len(rr["important unembed animal"].mean))
glue("asked_minus_others_max", float(np.nanmax(np.asarray(rr["important unembed animal"].mean)
                                             - np.asarray(rr["important unembed other animals"].mean))))
below_others = np.asarray(rr["important unembed animal"].mean) < np.asarray(rr["important unembed other animals"].mean)
glue("readouts_asked_below_others", ", ".join(("emb" if i == 0 else f"layer {i}") if i < len(below_others) - 1
                                              else "final" for i in np.flatnonzero(below_others)) or "none")
glue("colour_lens_emb_important", float(rr["important unembed colour"].mean[0]))
glue("colour_lens_emb_random", float(rr["random unembed colour"].mean[0]))

# %% tags=["remove-input"]
lens_important = rr["important unembed colour"]
readable = [layer for layer in range(len(lens_important.mean))
            if lens_important.low[layer] > rr["random unembed colour"].high[layer]]
glue("first_readable_layer", readable[0] if readable else "none")
glue("colour_mrr_final_important", float(lens_important.mean[-1]))
glue("colour_mrr_final_random", float(rr["random unembed colour"].mean[-1]))
glue("other_mrr_final_random", float(rr["random unembed other colours"].mean[-1]))
glue("other_mrr_final_important", float(rr["important unembed other colours"].mean[-1]))
for where in ("important", "random"):   # the true colour against the other colours, scene by scene, at the final residual
    own = bootstrap(ranks[f"{where} unembed colour"][:, -1] - ranks[f"{where} unembed other colours"][:, -1], seed=seed)
    glue(f"final_{where}_true_minus_other", str(own))
    glue(f"final_{where}_which", "this colour, not colour in general" if own.low > 0 else
         "colour words in general, the true one not above the others" if own.high >= 0 else
         "the other colours more than the true one")
    # against the colours of the scene's other animals only: the asked animal's colour, or the scene's colours?
    scene = ranks[f"{where} unembed colour"][:, -1] - ranks[f"{where} unembed scene's other colours"][:, -1]
    scene = bootstrap(scene[np.isfinite(scene)], seed=seed)
    glue(f"final_{where}_true_minus_scene", str(scene))
    glue(f"final_{where}_scene_which", "the asked animal's colour above the scene's other colours" if scene.low > 0
         else "the scene's colours alike, the asked animal's not above the others'" if scene.high >= 0
         else "the other animals' colours above the asked animal's")

# %% [markdown]
# Read through $W_U$, the visual embeddings themselves do not read as their colour (the left panel's first point:
# MRR {glue:text}`colour_lens_emb_important:.3f` at the important patches, {glue:text}`colour_lens_emb_random:.3f` at
# random ones, chance {glue:text}`chance:.3f`): the unembedding was never trained to read them, and where the
# colour is, it is read *least* — a pattern the animal shows too (below). The colour becomes the readable *output* at important patches from the input
# of layer {glue:text}`first_readable_layer` on, and by the final residual its MRR there is
# {glue:text}`colour_mrr_final_important:.3f`, against {glue:text}`colour_mrr_final_random:.3f` at random
# patches. The uniform chance line is a weak baseline here: a readout that merely puts the colour words first
# gives *any* colour a high MRR. So the other colours are read beside the true one. At the final residual they
# have MRR {glue:text}`other_mrr_final_important:.3f` at the important patches and
# {glue:text}`other_mrr_final_random:.3f` at the random ones; the true colour's reciprocal rank less theirs, scene
# by scene, is {glue:text}`final_important_true_minus_other` at the important patches — {glue:text}`final_important_which` —
# and {glue:text}`final_random_true_minus_other` at the random ones — {glue:text}`final_random_which`. But most
# of those other colours are absent from the scene. Against the colours of the scene's *other* animals alone, the
# true colour's reciprocal rank is ahead by {glue:text}`final_important_true_minus_scene` at the important patches
# ({glue:text}`final_important_scene_which`) and by {glue:text}`final_random_true_minus_scene` at the random ones
# ({glue:text}`final_random_scene_which`). In the organism the answer is assembled at the last position by layer
# 1's heads (chapter 3); the image positions themselves, being earlier in the sequence, never see the question.
# What a late image position reads as is the scene's content — its own patch's and, through attention to earlier
# patches, others' — written into a form $W_U$ reads; that a random patch, mostly grey background, still reads
# as the scene's colours is that mixing; and where it reads as the asked animal's colour above the other animals',
# that comes from the animal's own patches among the random ones or from attention to them — it cannot come from
# the question, which stands after every image position.
#
# The animal, read through $W_U$, is below chance at {glue:text}`animal_lens_below_everywhere` layer and every
# kind of patch (its MRR at most {glue:text}`animal_lens_max:.3f`, upper 95 % bound
# {glue:text}`animal_lens_high_max:.3f`; chance {glue:text}`chance:.3f`). At the important patches the other
# animals of the vocabulary rank above the asked one at {glue:text}`layers_asked_below_others` of the
# {glue:text}`n_lens_layers` readouts ({glue:text}`readouts_asked_below_others`: their MRR reaches
# {glue:text}`others_lens_max:.3f`); at the others the asked animal is above them, by at most
# {glue:text}`asked_minus_others_max:.3f`. So the patch's own animal is pushed down only early, where the patch
# vector is still close to the projector's output. A likely reason, not tested here: $W_U$ reads a residual as a
# prediction of the *next* token, and in the organism's text a word is rarely followed by itself, so a vector near
# a word's input embedding (as the projection onto $E$ above shows) reads as "that word was just said" — the
# pattern chapter 2 finds at a word's own position. The logit lens measures what a position is ready to say next;
# what a patch *is* is read on $E$, so the below-chance MRR says nothing against the animal being in the patch.

# %% [markdown]
# ## Is the asymmetry already in the eye?
#
# The organism's model card (written when it was trained; the appendix on the model organism) holds linear probes
# on the vision tower's own features — layer −2, averaged over each animal's patches, held-out scenes: how well
# the tower, before the projector, separates the colours and the animals.

# %% tags=["hide-input"]
from llavamech.cards import tower_probe  # noqa: E402
from llavamech.models import model_card  # noqa: E402

try:
    probe = tower_probe(model_card(model))
except (OSError, ValueError):   # not a shipped organism: no card
    probe = None
glue("probe_colour", str(probe["colour"]) if probe else "not measured (no organism card)")
glue("probe_animal", str(probe["animal"]) if probe else "not measured")
glue("probe_n", probe["animal"].n if probe else 0)
glue("probe_apart", "apart" if probe and probe["colour"].low > probe["animal"].high else "overlapping")
table(pd.DataFrame({"accuracy [95 % Wilson interval]": {name: str(e) for name, e in probe.items()},
                    "held-out animals": {name: e.n for name, e in probe.items()}}), "tower-probe") if probe else None

# %% [markdown]
# ## What the organism shows, and what it cannot
#
# **Shows.** In a Llava trained the Llava way, the projector learns to emit vectors that sit near the input
# embedding of the patch's colour word — without ever being told to: stage 1 trains it only to caption scenes
# ("a brown dog and a red cat ."), stage 2 to answer questions. Animals are readable less well than colours,
# as in the paper. Part of that asymmetry is already in the eye: on {glue:text}`probe_n` held-out animals the
# tower's features give the colour to a linear probe with accuracy {glue:text}`probe_colour` and the animal with
# {glue:text}`probe_animal` (95 % intervals {glue:text}`probe_apart`), although the
# organism's eye was given explicit animal supervision (see the appendix on the model organism). The organism
# cannot say how much of the gap the projector adds on top of the eye's.
#
# **Cannot.** The organism's vocabulary is {glue:text}`vocab` words, and its scenes are flat colours on grey: a patch has one
# colour, where a COCO patch has texture, shading and several objects. The paper's
# {glue:text}`paper_vis_colour_mrr_important:.3f` is an MRR over 32,064 tokens — a far stronger statement than
# our {glue:text}`vis_colour_mrr_important:.3f` over {glue:text}`vocab` words — and only the real model can make
# it. Run this page
# on it with `papermill -p model llava-hf/llava-1.5-7b-hf -p device cuda -p examples my_animals.jsonl`, a file whose
# items carry the asked animal's colour (README: example files; `llavamech coco` writes boxes, not colours).
