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
# # 2 · The text-QA circuit
#
# Before Llava can see, Vicuna can read. Given the facts as text,
#
# ```text
# USER: The dog is brown. The cat is black.
# What is the color of the dog?
# ASSISTANT: The color of the dog is
# ```
#
# it answers `brown` by an in-context lookup. The paper finds the lookup in deep attention heads whose
# **query–key** side matches the asked animal and whose **value–output** side carries that animal's colour to the
# last position. This chapter locates the heads on the organism's Vicuna, `toy-vicuna`, reads what they move,
# tests the query–key and value–output claims, and checks causally that the heads matter.

# %% tags=["parameters"]
model = "toy-vicuna"       # any Llama-family name llavamech.load accepts, e.g. lmsys/vicuna-7b-v1.5
device = "auto"            # a GPU when there is one ("cuda", "cpu" to choose)
examples = "toy"           # "toy" or a JSONL path whose items carry "colour" and "facts"
n_examples = 200
seed = 0
n_heads = 3                # top heads whose mechanism is read
k = 1                      # important positions per head (the colour word is one token)
ks = [1, 3, 5]             # sizes of the causal check
draws = 200                # random head sets per size and control (all of them where there are fewer)
control_examples = 50      # examples the causal check runs on (the first ones; None = half); heads are ranked on the rest
ablation = "mean"          # "mean" or "zero"

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import llavamech
from llavamech import attribution, circuits, interventions, plots, readouts
from llavamech.examples import check_parameters, load_examples
from llavamech.reference import compare, glue_paper
from llavamech.report import glue, glue_causal_test, glue_estimates, glue_evidence, table
from llavamech.stats import bootstrap, chance_mrr, ranking_agreement

MODE = "tqa"
check_parameters(model=model, device=device, examples=examples, n_examples=n_examples, seed=seed, ablation=ablation,
                 n_heads=n_heads,
                 k=k, ks=ks, draws=draws, **({} if control_examples is None else {"control_examples": control_examples}))
m = llavamech.load(model, device=device)
items = load_examples(examples, n_examples, seed, model=m, needs=("colour", "facts"))
colours = sorted({c for e in items for _, c in e.facts})
print(m)
print(f"{len(items)} examples, e.g.\n{m.prompt(items[0].question, items[0].context)}")

# %% [markdown]
# ## The answer is written by the attention layers, and by a few heads
#
# Mean log-probability increase (Imp) of the model's own answer over the example set, with 95 % bootstrap
# intervals: attention and FFN layers, then every head (top row). Imp saturates — a part that adds to an
# already-certain answer scores little — so the bottom row gives each part's linear logit contribution
# $z(v)_w$ beside it: additive, unbounded, the same readout without the softmax.

# %% tags=["hide-input"]
scores = readouts.collect(m, items, {"heads": readouts.head_imp, "layers": readouts.layer_imp, "heads z": readouts.head_z,
                                 "layers z": readouts.layer_z, "correct": readouts.correct}, mode=MODE)
accuracy = bootstrap(scores["correct"], seed=seed)
heads = bootstrap(scores["heads"], seed=seed)
layers = bootstrap(scores["layers"], seed=seed)
heads_z, layers_z = bootstrap(scores["heads z"], seed=seed), bootstrap(scores["layers z"], seed=seed)
ranked = readouts.top_heads_of(heads.mean, m.anatomy.n_layers * m.anatomy.n_heads)
top = ranked[:n_heads]
glue("accuracy", str(accuracy))
glue("n", len(items))
fig, axes = plt.subplots(2, 2, figsize=(10, 6.2), gridspec_kw={"width_ratios": [1, 1.3]})
plots.layer_bars({"attn": layers.mean[0], "ffn": layers.mean[1]}, f"{m.name} TQA: mean layer Imp (n = {len(items)})",
                 ax=axes[0, 0], errors=(layers.low, layers.high))
plots.head_heatmap(heads.mean, f"{m.name} TQA: mean head Imp", ax=axes[0, 1])
plots.layer_bars({"attn": layers_z.mean[0], "ffn": layers_z.mean[1]}, f"{m.name} TQA: mean layer z(v)_w",
                 ax=axes[1, 0], errors=(layers_z.low, layers_z.high), ylabel="logit contribution")
plots.head_heatmap(heads_z.mean, f"{m.name} TQA: mean head z(v)_w", ax=axes[1, 1], label="logit contribution")
fig.tight_layout()

# %% tags=["hide-input"]
by_z = readouts.top_heads_of(heads_z.mean, len(ranked))
agree = ranking_agreement(heads.mean, heads_z.mean, top=max(ks))
glue("rho_imp_z", agree["spearman"])
glue("imp_z_top", agree["top"])
glue("imp_z_shared", agree["shared top"])
glue("top_head_z", f"{by_z[0][0]}_{by_z[0][1]}")
glue("z_attn_layer", float(layers_z.mean[0].max()))
glue("z_ffn_layer", float(layers_z.mean[1].max()))
glue("z_ffn_layer_min", float(layers_z.mean[1].min()))
pd.DataFrame({"by Imp": [f"{l}_{h} ({heads[l, h].mean:.2f})" for l, h in ranked[:max(ks)]],
              "by z(v)_w": [f"{l}_{h} ({heads_z[l, h].mean:.2f})" for l, h in by_z[:max(ks)]]},
             index=pd.Index(range(1, max(ks) + 1), name="rank (mean over examples)"))

# %% tags=["hide-input"]
top_table = pd.DataFrame([{"head": f"{l}_{h}", "mean Imp (95 % CI)": str(heads[l, h]),
                       "share of examples where it is the top head": float(
                           (scores["heads"].reshape(len(items), -1).argmax(1) == l * m.anatomy.n_heads + h).mean())}
                      for l, h in ranked[:5]]).set_index("head")
glue("top_head", top_table.index[0])
glue("attn_layer_imp", float(layers.mean[0].max()))
glue("ffn_layer_imp", float(layers.mean[1].max()))
glue("working_layer", f"layer {int(np.argmax(layers.mean[0]))} of {m.anatomy.n_layers} (counting from 0)")
top_table

# %% [markdown]
# `toy-vicuna`'s accuracy on these held-out prompts is {glue:text}`accuracy` (n = {glue:text}`n`). The paper locates the
# lookup in attention heads (it reports no FFN figure to compare with); here too the answer comes from attention,
# not from the FFNs: the best attention layer adds
# {glue:text}`attn_layer_imp:.2f` to the log probability of the answer, the best FFN layer
# {glue:text}`ffn_layer_imp:.2f`. Within it, the answer is spread over the heads of one layer: the top head,
# {glue:text}`top_head`, is the single best head on only some of the examples, and several heads of the same
# layer score nearly as high.
#
# The linear logit contribution tells the same story: the best attention layer contributes
# {glue:text}`z_attn_layer:.2f` logits to the answer, no FFN layer more than {glue:text}`z_ffn_layer:.2f`; over all
# heads the two rankings agree (Spearman {glue:text}`rho_imp_z:.3f` between mean Imp and mean $z(v)_w$), the top
# head by $z$ is {glue:text}`top_head_z`, and the top {glue:text}`imp_z_top` by each share
# {glue:text}`imp_z_shared`. Saturation reorders the heads only a little here (table: the top heads by each score).

# %% [markdown]
# ## Where the top heads read from: the colour word
#
# Per-position Imp of the top heads on one prompt: which source tokens each head's output comes from.

# %% tags=["hide-input"]
example = items[0]
trace = m.trace(**example.inputs(MODE))
per_position = {f"head {l}_{h}": attribution.position_scores(trace, l, h) for l, h in top}
fig = plots.token_bars(trace.positions.tokens, per_position,
                       f"{m.name}: per-position Imp of the top heads, asked about the {example.animal} "
                       f"(answer {m.tokenizer.decode([trace.top_token]).strip()!r})")

# %% [markdown]
# On this prompt each top head takes nearly all of its contribution from a single source token: the colour word of
# the fact about the asked animal. One prompt is an illustration; the next section measures, over all
# {glue:text}`n` examples, what each head reads at its highest-scoring position — the head's *important position*.

# %% [markdown]
# ## What the heads move: four readings at the important positions
#
# At each top head's important position $j$ (its highest per-position Imp), the paper reads four vectors
# through the final norm and $W_U$: the **layer input** $h^{l-1}_j$; the **key input**, the part of it written by
# earlier attention layers ($\sum_{l'<l} A^{l'}_j$); the **value input**, the part written by earlier FFN layers
# ($\sum_{l'<l} F^{l'}_j$); and the head's **value output** from $j$, $u_j = \alpha_{T,j} v_j W_O$. The layer input
# is exactly the embedding plus the key and value inputs (a unit test checks it). MRR of the true colour and of
# the asked animal, at the important positions and at random text positions:

# %% tags=["hide-input"]
measures = circuits.measure(m, items, top, k, MODE, colours, seed=seed)
ours = circuits.paper_estimates(measures, MODE, seed=seed)
chance = chance_mrr(m.anatomy.lm_head.out_features)
glue("chance", chance)
glue_paper("circuit.animal_mrr.tqa", "ov.logit_difference.tqa")
glue_estimates(ours)
circuits.rankings_table(measures, seed=seed)

# %% [markdown]
# The **value output** reads as the colour: MRR {glue:text}`circuit_colour_mrr_tqa_est` at the important positions (chance {glue:text}`chance:.3f`) — the
# value–output side carries the colour, as the paper says. The other three readings are *below* their random
# baseline for both words. A likely reason, not tested here: at a word's own position the residual stream is
# trained to predict the *next* token (after "brown" comes "."), so read through $W_U$ it ranks the following
# word, not the word itself.
#
# ```{margin} A non-replication of the reading
# The paper reads the animal in the key input (MRR {glue:text}`paper_circuit_animal_mrr_tqa:.3f` in Vicuna). Through the final norm and $W_U$ the
# organism's key input at the colour word ranks the asked animal *below* chance
# ({glue:text}`circuit_animal_mrr_tqa:.3f`). Is the animal not there, or only not in a direction $W_U$ reads?
# The positive control below answers.
# ```

# %% [markdown]
# **A positive control for the reading.** A readout that finds nothing proves something only if the thing could
# be found. So the same vector — the key input at the top head's important position — is given to the simplest
# linear read-out that does not assume $W_U$'s directions: a nearest-class-mean classifier of the asked animal,
# trained and tested on separate halves of the examples. Beside it, the key input at a random text position.

# %% tags=["remove-input"]
key_probe = circuits.probe(m, items, top[0], MODE, part="key input", seed=seed)
glue("probe_key", str(bootstrap(key_probe["important"], seed=seed)))
glue("probe_key_random", str(bootstrap(key_probe["random"], seed=seed)))
glue("probe_chance", key_probe["chance"])
glue("probe_head", f"{top[0][0]}_{top[0][1]}")

# %% [markdown]
# The key input at head {glue:text}`probe_head`'s important position names the asked animal in
# {glue:text}`probe_key` of the held-out halves' examples; at a random position, {glue:text}`probe_key_random`
# (the most frequent animal alone: {glue:text}`probe_chance:.3f`). The animal *is* there, written by the earlier
# layer where the query can match it, but in directions $W_U$ does not read. What fails to replicate is the
# paper's way of reading the key input, not the query–key mechanism; a 4-layer model, whose residual stream at a
# word need not keep that word's unembedding direction, is where such a reading is most likely to fail.

# %% [markdown]
# ## Query–key: the heads find the animal that was asked about
#
# The share of each top head's attention (from the last position) on its important positions, when the question
# names the asked animal, and when — same facts — it names another animal of the context. Dashed: the share a
# head attending uniformly would put there.

# %% tags=["hide-input"]
uniform = float(np.nanmean(measures["uniform attention"]))
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
plots.estimate_bars({"same animal": ours[f"qk.attention_same.{MODE}"],
                     "another animal": ours[f"qk.attention_different.{MODE}"]},
                    f"{m.name}: attention on the important positions", "attention mass", chance=uniform,
                    chance_label="uniform attention", ax=axes[0],
                    colors=["C3", "grey"])
plots.estimate_bars({"true − other colour": ours[f"ov.logit_difference.{MODE}"]},
                    f"{m.name}: value–output logit difference", "logit difference", chance=0.0,
                    chance_label="no preference", ax=axes[1],
                    colors=["C2"])
fig.tight_layout()
glue("uniform", uniform)

# %% [markdown]
# The query–key claim holds, strongly: asked about the animal, the top heads put
# {glue:text}`qk_attention_same_tqa_est` of their attention on its colour
# word; asked about another animal of the same context, {glue:text}`qk_attention_different_tqa_est` (uniform attention: {glue:text}`uniform:.3f`). The value–output
# vectors from there favour the true colour over a random other colour by {glue:text}`ov_logit_difference_tqa_est` logits (the paper: {glue:text}`paper_ov_logit_difference_tqa:.2f` in Vicuna).

# %% [markdown]
# ## At positions fixed in advance, the same picture
#
# The important positions are chosen by per-position Imp, which grows with the head's attention there and with how
# well its value output reads as the answer — so measuring attention and the value output *at* them favours both
# claims by construction. The control: the same measures at the position where the asked animal's colour is stated
# (the colour word of its fact), found from the text alone, without any head's scores.

# %% tags=["hide-input"]
evidence = circuits.evidence_table(measures, seed=seed)
glue_evidence(measures, MODE, seed=seed)
evidence

# %% [markdown]
# At the asked fact's colour word the top heads' value output reads as the colour with MRR
# {glue:text}`evidence_colour_mrr_tqa`, and they put {glue:text}`evidence_attention_same_tqa` of their attention
# there when asked about its animal, {glue:text}`evidence_attention_different_tqa` when asked about another (uniform:
# {glue:text}`evidence_uniform_tqa:.3f`); the OV logit difference there is {glue:text}`evidence_ov_tqa`. On text the
# important position *is* that word on nearly every example, so the two columns agree: the claims do not rest on
# the selection.

# %% [markdown]
# ## Causal check: the answer needs several heads of one layer at once
#
# Direct-effect scores can mislead (a head can score high while others would do its job). So: replace the
# top-$k$ heads' outputs by their mean over the example set and measure the loss in accuracy and in log
# probability of the true colour. The heads are ranked by Imp on the other {glue:text}`n_rank` examples and tested on
# the first {glue:text}`n_control`, so that the test does not reward heads for scoring high on the examples it
# tests (that ranking's top {glue:text}`k_max` share {glue:text}`held_out_shared` heads with the ranking on all
# {glue:text}`n`). Two controls: $k$ heads drawn at random from **all** heads, and $k$ heads drawn from the **same layers** as
# the top $k$ (as many per layer) — the harder control, since the top heads all sit in one layer. Each control runs
# {glue:text}`draws` random sets per $k$, or every possible set where there are fewer, on the same examples.
#
# The test is paired, example by example: the top $k$'s Δ log p less the random sets' mean Δ log p on the same
# example, and a one-sided sign-flip p-value that this difference is below zero on average — that the top $k$ cost
# more than $k$ random heads do. Its resolution is set by the examples and by its 10,000 random sign flips (no p
# below 1/10,001), not by how many head sets a layer has. Beside it, where the top $k$ fall among the random sets
# (rank 1: costliest), which says whether they are the *most* necessary set; among a layer's few sets that rank
# cannot be significant once adjusted for the six tests (one of 56 sets of three heads at best: 0.018, times six),
# so it is shown, not tested. The sign-flip test assumes the paired differences are symmetric about zero when the
# top heads are no different; the bootstrap interval beside each p does not. Three
# values of $k$ against two controls are six tests, adjusted together (Holm): a claim stands only where its
# adjusted p is under 0.05.

# %% tags=["hide-input"]
means = interventions.activation_means(m, items, MODE)
tested, held_out = interventions.held_out_ranking(items, scores["heads"], control_examples)
causal = interventions.head_ablation_test(m, tested, MODE, held_out, ks=ks, draws=draws, how=ablation, means=means,
                                          seed=seed)
glue("draws", draws)
glue("n_control", len(tested))
glue("n_rank", len(items) - len(tested))
glue("held_out_shared", len(set(held_out[:max(ks)]) & set(ranked[:max(ks)])))
fig = plots.ablation_strip(causal, f"{m.name}: {ablation}-ablating heads, each set on the same {len(tested)} "
                                   f"examples (heads ranked on {len(items) - len(tested)} others)")
table(interventions.shown(causal).T, "causal")   # one column per k: the table fits the page

# %% tags=["remove-input"]
glue_causal_test(causal, held_out)
glue("k_max", int(causal.index[-1]))

# %% [markdown]
# ```{margin} Mean, not zero, ablation
# We replace a head's output (its slice of `o_proj`'s input) by its mean over every position of the example set.
# Zeroing pushes a layer's output somewhere it never goes; the mean keeps it in range, so the loss measures the
# missing *information*. `ablation = "zero"` in the parameters reruns the check the other way.
# ```
#
# **k = 1.** Ablating the single top head ({glue:text}`k1_heads`) costs almost nothing (Δ log p
# {glue:text}`k1_dlogp`). Paired with the other heads of its layer ablated alone, its cost differs from theirs by
# {glue:text}`k1_paired_same_layer` (p = {glue:text}`k1_p_same_layer:.2f`): no detectable difference from the
# other heads of its layer. Paired with every single head of the model ablated alone, it
# {glue:text}`k1_direction_all` on average ({glue:text}`k1_paired_all`): the single top head by Imp is not a
# necessary head on its own. The head whose ablation alone costs most is {glue:text}`worst_single_head` (Δ log p
# {glue:text}`worst_single_dlogp:.2f`), ranked {glue:text}`worst_single_imp_rank` of {glue:text}`n_heads_total` by
# Imp.
#
# **k = 3 and 5, same layers.** Within the working layer the heads ranked first by Imp cost more than sets of as
# many of the layer's other heads do on average, example by example: the paired difference is {glue:text}`k3_paired_same_layer` for the
# top 3 ({glue:text}`k3_heads`; p = {glue:text}`k3_p_same_layer:.2g`, adjusted for the six tests
# {glue:text}`k3_holm_same_layer:.2g`) and {glue:text}`k5_paired_same_layer` for the top {glue:text}`k_max`
# (adjusted p = {glue:text}`k5_holm_same_layer:.2g`; accuracy {glue:text}`k5_dacc`). They are among the costliest
# sets of their layers but not the costliest: rank {glue:text}`k3_rank_same_layer` and
# {glue:text}`k5_rank_same_layer`.
#
# **k = 3 and 5, all heads.** Against random heads of *every* layer the top 3 do not stand out (paired difference
# {glue:text}`k3_paired_all`, p = {glue:text}`k3_p_all:.2f`): the random sets that take a head of another layer which
# the answer needs *indirectly*, as {glue:text}`worst_single_head` above, cost as much. The top
# {glue:text}`k_max` do ({glue:text}`k5_paired_all`, adjusted p = {glue:text}`k5_holm_all:.2g`), though they rank
# only {glue:text}`k5_rank_all` among the random sets: the test is against the sets' average, and some single sets
# cost more. Imp is a direct-effect score: it sees the heads that write the colour to the last position, not a head
# whose effect runs through later layers. What {glue:text}`worst_single_head` does to the answer is not tested here.
#
# What the check carries, then: the answer depends on one layer's heads, several at once (the top
# {glue:text}`k_max` together cost {glue:text}`k5_dlogp` in log p); Imp's top heads of that layer, ranked on other
# examples, cost more than sets of the layer's other heads do on average, and rank near the top of those sets;
# they are not the model's most necessary heads.

# %% [markdown]
# ## Paper and organism, side by side

# %% tags=["hide-input"]
table(compare(ours, chance={f"circuit.colour_mrr.{MODE}": chance, f"circuit.animal_mrr.{MODE}": chance,
                      f"qk.attention_same.{MODE}": uniform, f"ov.logit_difference.{MODE}": 0.0}), "paper-vs-here")

# %% [markdown]
# ## What the organism shows, and what it cannot
#
# **Shows.** A Llama trained only on the task (plus an induction warm-up, see the appendix) solves it with the
# paper's mechanism: attention, not FFNs; heads whose query side finds the asked animal's fact and whose value
# side carries its colour — at the positions their scores pick and at the colour word found from the text alone;
# and removing several of that layer's heads at once costs the answer. The heads Imp ranks first, on other
# examples, cost more than sets of their layer's other heads do on average (k = 3 and 5, after correction for the
# six tests); against random heads of all layers, which include heads the answer needs indirectly, only the top 5
# do, and they rank only {glue:text}`k5_rank_all` among those sets.
#
# **Does not replicate.** The paper's reading of the animal in the *key input* through $W_U$. On the organism the
# matching is visible in the attention pattern, and a linear probe finds the animal in the key input
# ({glue:text}`probe_key`), but not through that projection: the reading through $W_U$ fails, while the
# information the query–key match needs is there. That the match uses it is what the attention pattern shows; no
# intervention on the key input tests it here.
#
# **Cannot.** Vicuna's circuit spans 32 layers and 1,024 heads, with heads that copy, suppress and correct;
# the organism has 32 heads in 4 layers. Its answer is read in one working layer, {glue:text}`working_layer`, not
# in the deep layers where the paper finds Vicuna's heads; and the head whose ablation alone costs most,
# {glue:text}`worst_single_head` (ranked {glue:text}`worst_single_imp_rank` by Imp), acts through a route that Imp,
# a direct-effect score, does not see and that this page does not trace. Rerun this page on
# `lmsys/vicuna-7b-v1.5` with `papermill -p model lmsys/vicuna-7b-v1.5 -p device cuda` to see the real one.
