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
# # B · The model organism
#
# Llava-1.5-7B and Vicuna-7B cannot be downloaded on the machines that build this book, and there is no GPU.
# So the book runs on a **model organism**: a toy Vicuna and a toy Llava built from the *same Hugging Face
# classes* (`LlamaForCausalLM`, `CLIPModel`, `LlavaForConditionalGeneration`), trained *the same way* the real
# ones were, here, on a toy world with the paper's task. Every `llavamech` call in this book is written to run
# unchanged on the real models (appendix C says what has been checked, and what has not).

# %% tags=["parameters"]
model = "toy-llava"
text_model = "toy-vicuna"
device = "cpu"
n_examples = 100      # fresh held-out examples for the live check below
seed = 0

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %% tags=["hide-input"]
import json
import random

import matplotlib.pyplot as plt
import pandas as pd

import llavamech
from llavamech import plots, question_study, questions
from llavamech.organism import recipe
from llavamech.cards import accuracy_table, curves_figure, wilson
from llavamech.report import glue, table
from llavamech.examples import check_parameters
from llavamech.models import model_card
from llavamech.paths import MODELS_DIR
from llavamech.organism.world import load_world, make_scene

check_parameters(model=model, device=device, n_examples=n_examples, seed=seed)
check_parameters(model=text_model)
llava, vicuna = llavamech.load(model, device=device), llavamech.load(text_model, device=device)
print(llava, vicuna, sep="\n")

# %% [markdown]
# ## The world
#
# Ten animals (emoji glyphs from Noto Color Emoji, rendered once into sprites under `data/sprites/`) in ten
# colours, 1–3 per scene, distinct animals in distinct colours, each 30–50 % of the canvas, anywhere, on a grey
# background (`data/world.json`). The processor resizes any canvas to 64×64 px, which the 8-px patches cut into
# an 8×8 grid: 64 image tokens, where llava-1.5 has 576.

# %% tags=["hide-input"]
rng = random.Random(seed)
scenes = [make_scene(rng, size=rng.choice([64, 96, 128])) for _ in range(8)]
fig = plots.image_grid([s.image for s in scenes],
                       [", ".join(f"{a.colour} {a.name}" for a in s.animals) for s in scenes])

# %% [markdown]
# ## How each model was trained, and how that mirrors Llava
#
# | model | class | Llava's recipe | ours |
# |---|---|---|---|
# | toy-vicuna | `LlamaForCausalLM` (RMSNorm, RoPE, SwiGLU, untied head) | Llama-2 pretraining, then Vicuna chat tuning | from scratch: 75 % TQA prompts (2–4 facts, loss on the answer), 25 % **induction warm-up** (`<s> s s`, loss on the copy) |
# | toy-clip | `CLIPModel` | contrastive on 400 M web (image, text) pairs | contrastive on (scene, caption) pairs **plus two animal-recognition losses** on the layer −2 patch features |
# | toy-llava | `LlavaForConditionalGeneration` | CLIP tower (layer −2, CLS dropped) + 2-layer GELU projector + Vicuna; stage 1 trains the projector on captions, stage 2 the projector and LM on visual instructions; tower frozen | the same, with stage 2 on the VQA prompt of the paper and TQA prompts mixed in at weight 0.5 |
#
# ```{margin} Where the toy departs from Llava
# Two departures, each measured as necessary on this machine (see the model cards). Without the induction
# warm-up, a small Llama stays on the shortcut "name some colour from the context" (TQA ≈ 0.35). Without the
# animal-recognition losses, a small contrastive CLIP sees colours but hardly animals, and the toy Llava
# answers at chance among the colours present. The labels stand in for what web-scale pretraining gives the
# real CLIP: it already knows what a dog looks like.
#
# A third departure is a choice, not a necessity: stage 2 mixes this very task's text prompts back in (weight
# 0.5), which makes the reuse of the text circuit that chapters 3 and 4 find likely by construction. Chapter 4
# sets beside it a Llava tuned without the mix (below).
# ```
#
# Prompts are exactly the paper's, so the answer is the next token after "The color of the dog is".
# Evaluation never touches training data: each prompt's key (its facts and the asked animal) is hashed, one key
# in ten is never trained on, and only those keys are evaluated, on scenes drawn from separate seeds.

# %% [markdown]
# ## Training curves
#
# Loss and held-out accuracy per stage, as logged while training the shipped models.

# %% tags=["hide-input"]
history = [r for stage in ("vicuna", "clip", "llava")
           for r in json.loads((MODELS_DIR / f"training-log-{stage}.json").read_text())["history"]]
fig = curves_figure(history)

# %% [markdown]
# The text model sits on the shortcut plateau (≈ 1/3, the chance of picking the right one of 2–4 colours in the
# context) for hundreds of steps before binding appears abruptly; the eye's animal probe climbs steadily.
#
# ## Accuracy
#
# Each shipped model's card (`data/models/*/card.json`) was written when the model was trained: accuracy on
# {glue:text}`card_n` fresh held-out prompts or scenes per measure (evaluation seed {glue:text}`card_seed`; the
# VQA scenes hold 1–3 animals, so a third of them hold only the asked one), the tower's linear probes, and how often
# `explain()`'s top patch lies on the asked animal. The three full retrains of the recipe, side by side, beside the
# bars the organism must clear:

# %% tags=["hide-input"]
shipped = ["toy-llava", "toy-llava-seed1", "toy-llava-seed2"]
cards = {name: model_card(name) for name in shipped}
accuracies = accuracy_table(cards)
glue("card_n", cards[model]["n"] if model in cards else cards[shipped[0]]["n"])
glue("card_seed", cards[shipped[0]]["eval_seed"])
short = accuracies[accuracies["every model clears it"] == "no"].index.tolist()
glue("bars_verdict", "every model clears every bar" if not short else
     "every model clears the accuracy bars, but not the " + " and ".join(short) + " bar")
glue("probe_animal", float(cards[shipped[0]]["toy-llava tower probe"]["animal"]))
glue("probe_colour", float(cards[shipped[0]]["toy-llava tower probe"]["colour"]))
table(accuracies, "cards")

# %% [markdown]
# By its cards, {glue:text}`bars_verdict`. The tower's probes show why the eye is the weaker link: on the shipped
# model it tells animals apart with accuracy {glue:text}`probe_animal:.3f` from its patch features, colours with
# {glue:text}`probe_colour:.3f` — the toy CLIP sees colours more easily than animals, which chapters 1 and 3 meet
# again. The last row differs across seeds more than any accuracy does; chapter 5 measures why.
#
# **Two evaluation sets.** The cards' VQA scenes hold 1–3 animals; the chapters' held-out scenes
# (`llavamech.examples.toy_examples`) hold 2–3, so every question has a distractor (chapter 3 measures accuracy
# there, with its interval). The bars above are read on the cards' scenes, one in three without a distractor. Both are drawn only from held-out keys. A live check on `n_examples` fresh held-out examples of the
# cards' kind, drawn now with this notebook's seed:

# %% tags=["hide-input"]
live = {"toy-vicuna TQA": recipe.tqa_accuracy(vicuna.hf, vicuna.tokenizer, n_examples, seed + 7),
        "toy-llava VQA": recipe.vqa_accuracy(llava.hf, llava.processor, n_examples, seed + 7),
        "toy-llava TQA": recipe.tqa_accuracy(llava.hf, llava.tokenizer, n_examples, seed + 7)}
card = cards[shipped[0]]
live_vqa, card_vqa = wilson(live["toy-llava VQA"], n_examples), wilson(card["toy-llava VQA"], card["n"])
glue("live_vqa", "{:.3f} [{:.3f}, {:.3f}]".format(live["toy-llava VQA"], *live_vqa))
glue("card_vqa", "{:.3f} [{:.3f}, {:.3f}]".format(card["toy-llava VQA"], *card_vqa))
glue("live_n", n_examples)
glue("live_side", "below" if live["toy-llava VQA"] < card["toy-llava VQA"] else "at or above")
shared_width = min(live_vqa[1], card_vqa[1]) - max(live_vqa[0], card_vqa[0])   # negative: a gap between them
glue("live_vs_card", "do not overlap" if shared_width < 0 else
     f"overlap only at their edges (by {shared_width:.3f})" if shared_width < 0.01 else "overlap")
table(pd.DataFrame({"live accuracy [95 % Wilson interval]": {k: "{:.3f} [{:.3f}, {:.3f}]".format(v, *wilson(v, n_examples))
                                                 for k, v in live.items()}, "n": n_examples,
                    f"the card's (n = {card['n']})": {k: f"{card[k]:.3f}" for k in live}}), "live")

# %% [markdown]
# The live VQA check, {glue:text}`live_vqa` on {glue:text}`live_n` scenes, sits {glue:text}`live_side` the card's
# {glue:text}`card_vqa` on {glue:text}`card_n`; the two intervals {glue:text}`live_vs_card`. Both are samples of
# the same kind of scene, the card's five times larger: read the card's figure as the model's accuracy and the live
# check as a smoke test that the shipped weights are the ones the card measured.

# %% [markdown]
# ## Controls for chapter 4: a second Vicuna, and a Llava tuned without the text mix
#
# Chapter 4 asks whether a Llava's head scores are its own Vicuna's. Its controls: `toy-vicuna-seed1`, the seed-1
# text model, with `toy-llava-v1-c0-l1` tuned from it (the shipped `toy-clip`, Llava stages seeded 1) as
# `toy-llava-v0-c0-l1` was tuned from `toy-vicuna`; and `toy-llava-no-text-mix`, tuned from `toy-vicuna` as
# `toy-llava-v0-c0-l1` was (Llava stages seeded 1, the same image batches drawn) but with the text prompts' loss
# left out of stage 2 (`train-organism --stage llava --seed 1 --text-weight 0`). The seed-1 text model was not
# shipped with the crosses; it was retrained for chapter 4, and shown to be the same model: tuned again, it gives
# `toy-llava-v1-c0-l1`'s weights bit for bit. The Llavas' cards, as above:

# %% tags=["hide-input"]
controls = {name: model_card(name) for name in ("toy-llava-v0-c0-l1", "toy-llava-v1-c0-l1", "toy-llava-no-text-mix")}
glue("no_mix_tqa", float(controls["toy-llava-no-text-mix"]["toy-llava TQA"]))
glue("no_mix_vqa", float(controls["toy-llava-no-text-mix"]["toy-llava VQA"]))
glue("seed1_tqa", float(controls["toy-llava-v1-c0-l1"]["toy-vicuna TQA"]))
glue("seed0_tqa", float(controls["toy-llava-v0-c0-l1"]["toy-vicuna TQA"]))
glue("seed1_child_vqa", float(controls["toy-llava-v1-c0-l1"]["toy-llava VQA"]))
glue("seed0_child_vqa", float(controls["toy-llava-v0-c0-l1"]["toy-llava VQA"]))
glue("vicuna_target", recipe.Recipe().vicuna_target)
glue("eval_n", recipe.Recipe().eval_n)
table(accuracy_table(controls), "control-cards")

# %% [markdown]
# Without the text mix the Llava still answers the visual question ({glue:text}`no_mix_vqa:.3f`), and from text it
# answers {glue:text}`no_mix_tqa:.3f`: the row that says how much of the text skill visual tuning alone keeps.
# The two parents are not equally good: the seed-1 text model answers {glue:text}`seed1_tqa:.3f` of the card's
# text questions, the seed-0 one {glue:text}`seed0_tqa:.3f` (training stops at {glue:text}`vicuna_target:.2f` on
# its own {glue:text}`eval_n` held-out prompts), and their children {glue:text}`seed1_child_vqa:.3f` and
# {glue:text}`seed0_child_vqa:.3f` of the visual ones. Chapter 4's crossing runs from both sides, so a weaker pair cannot by itself make one gap.
#
# **Retraining.** The command on each card retrains its model, but for the seed-0 text model `toy-vicuna` it gives
# a model of the same recipe and seed, not the shipped weights (nor, from it, the shipped Llavas): it was trained
# before the induction warm-up's word list was put in a fixed order (it followed a dictionary's order, which varies
# from run to run: rerun at the commit that shipped them, the first batch's text loss is the shipped log's to every
# digit, its warm-up loss is not). The recipe is deterministic since: two retrains of `--stage vicuna --seed 0`
# agree exactly, and `toy-llava-v1-c0-l1`, trained after the fix, is reproduced bit for bit (whether `toy-llava`'s
# Llava stages, tuned from the shipped `toy-vicuna`, are too was not checked). Every number in this book is
# measured on the shipped weights.

# %% [markdown]
# ## The multi-question organism (chapter 6)
#
# `toy-vicuna-multi` and `toy-llava-multi` are the same recipe with every question type of `data/world.json`
# mixed into each batch: the text model on colour, reverse-lookup, existence and position facts stated as text
# (plus the induction warm-up), trained until each type reaches 0.95 held out; the Llava stages on scenes of all
# five types, with the text types mixed in, starting from the shipped `toy-clip`. The vocabulary is the colour
# organism's with each type's words appended, so every word the colour organism knows keeps its id.
# `toy-llava-multi-seed1` retrains the Llava stages with seed 1 on the same text model and eye.
#
# ```{margin} Position: two attempts, both near chance
# Chance is one in two (left or right). With the vision tower frozen in stage 2, as llava-1.5 keeps it, position
# questions stayed at chance (dotted
# lines below: that first attempt's log, seed 0). The toy CLIP was never asked where anything is, and a head that
# copies a patch's features copies no position (rotary positions act on queries and keys, not values). The
# shipped recipe tunes the tower in stage 2 at a tenth of the rate, as LLaVA-NeXT and LLaVA-OneVision tune theirs:
# counting rose, position did not. Chapter 6 shows what the model does instead.
# ```
#
# The curves, as logged while training (held-out accuracy per type):

# %% tags=["hide-input"]
multi_logs = {name: json.loads((MODELS_DIR / f"training-log-{name}.json").read_text())
              for name in ("vicuna-multi", "llava-multi", "llava-multi-seed1", "llava-multi-frozen-tower")}
stage2 = {name: [r for r in log["history"] if r["stage"] == "stage2"] for name, log in multi_logs.items()}
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
plots.accuracy_curves({"text model": multi_logs["vicuna-multi"]["history"]}, "tqa_",
                      "toy-vicuna-multi: TQA per type", ax=axes[0], types=list(questions.types()))
plots.accuracy_curves({"seed 0": stage2["llava-multi"], "seed 1": stage2["llava-multi-seed1"],
                       "seed 0, tower frozen": stage2["llava-multi-frozen-tower"]},
                      "vqa_", "toy-llava-multi, stage 2: VQA per type", ax=axes[1], types=list(questions.types()))
fig.tight_layout()

# %% [markdown]
# Their cards, measured when they were trained on {glue:text}`multi_card_n` fresh held-out examples per type and
# mode (evaluation seed {glue:text}`multi_card_seed`; scenes of 1–3 animals), beside the bars: every type's VQA
# accuracy at least 0.90, its text counterpart at least 0.95.

# %% tags=["hide-input"]
multi_cards = {name: model_card(name) for name in ("toy-llava-multi", "toy-llava-multi-seed1")}
multi_table = question_study.card_table(multi_cards)
glue("multi_card_n", multi_cards["toy-llava-multi"]["n"])
glue("multi_card_seed", multi_cards["toy-llava-multi"]["eval_seed"])
missed = [f"{qtype} ({mode})" for (mode, qtype), row in multi_table.iterrows() if row["every model clears it"] == "no"]
glue("multi_missed", "every type clears its bar in both seeds" if not missed else
     "the bars are missed by " + ", ".join(missed))
table(multi_table, "multi-cards")

# %% [markdown]
# By their cards, {glue:text}`multi_missed`. Chapter 6 says what the model does where it falls short.

# %% [markdown]
# ## One example, explained
#
# The paper's tool on the organism: the best head's per-patch scores over the image as the model saw it.

# %% tags=["hide-input"]
scene = make_scene(random.Random(seed + 1), size=128, n_animals=3)
asked = scene.animals[0]
result = llava.explain(scene.image, question=f"What is the color of the {asked.name}?")
print(f"truth: {asked.colour}; answer: {result.answer} (p = {result.answer_prob:.2f})")
fig = plots.patch_overlay(result)

# %% [markdown]
# ## What a toy can and cannot stand in for
#
# **Can**: the architecture (the same classes, norms, rotary embeddings, projector, feature layer, image-token
# expansion), the training stages, the prompts, and — because it genuinely solved the task on held-out data —
# a mechanism worth dissecting. Every identity and every score is computed exactly as it would be on the 7B
# model.
#
# **Cannot**: scale (4 layers × 8 heads instead of 32 × 32; 64 patches instead of 576; a 38-word vocabulary),
# the diversity of real images and language, and anything the real Llava learned from data the toy never saw.
# Numbers from the toy sit beside the paper's, never in place of them; where they agree, it is evidence that
# the mechanism is generic, not proof that the 7B model has it.
