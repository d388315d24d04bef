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
# # 4 · Head transfer: Llava answers with Vicuna's heads
#
# Llava's language model *is* Vicuna, tuned further on images. The paper finds that the heads that answer a
# colour question from text in Vicuna are, largely, the heads that answer it in Llava, from text and from the
# image — {glue:text}`paper_overlap` of the top 10 shared at each step — and concludes that visual tuning *enhances* Vicuna's heads rather
# than building new ones. It leaves open how. This chapter measures the transfer on the organism, where
# `toy-llava`'s language model started from `toy-vicuna`'s weights, against the overlap chance alone would give,
# and then asks the open question directly: which heads' weights moved, and does putting the old weights back
# undo what tuning gave?

# %% tags=["parameters"]
model = "toy-llava"        # the Llava, e.g. llava-hf/llava-1.5-7b-hf
text_model = "toy-vicuna"  # the language model it was tuned from, e.g. lmsys/vicuna-7b-v1.5
device = "auto"            # a GPU when there is one ("cuda", "cpu" to choose)
examples = "toy"           # "toy" or a JSONL path whose items carry "facts" (both settings need them)
n_examples = 200
seed = 0
ks = [3, 5, 10]            # top-k sets compared
n_gainers = 3              # heads that gained most, read and given back their old weights
draws = 20                 # random head sets for the transplant control

# %% tags=["remove-cell"]
import subprocess, sys  # noqa: E401  (Colab has neither lib/ nor data/: install the library, its organism included)
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "llavamech @ git+https://github.com/llavamech/llavamech@main"], check=True)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import llavamech
from llavamech import plots, runs, transfer
from llavamech.examples import load_examples
from llavamech.report import glue, table
from llavamech.stats import bootstrap

llava, vicuna = llavamech.load(model, device=device), llavamech.load(text_model, device=device)
items = load_examples(examples, n_examples, seed, model=llava)
settings = {"Vicuna TQA": (vicuna, "tqa"), "Llava TQA": (llava, "tqa"), "Llava VQA": (llava, "vqa")}
n_heads = llava.anatomy.n_layers * llava.anatomy.n_heads
print(llava, vicuna, sep="\n")
print(f"{len(items)} paired examples; {n_heads} heads")

# %% [markdown]
# ## The same heads answer in all three settings, far beyond chance
#
# Mean head Imp of the model's own answer over the same {glue:text}`n` examples in each setting, and how many of
# the top-$k$ heads two settings share.
#
# ```{margin} Scaling k
# The paper compares the top 10 of Llava-1.5's 1,024 heads, about 1 %. One percent of the organism's
# {glue:text}`n_heads` heads is less than one head, so we compare $k$ = {glue:text}`ks` and give each overlap
# beside the overlap two random top-$k$ sets would share, $k^2/N$, and the chance of sharing at least as many
# (the hypergeometric tail). A large $k$ out of few heads overlaps a lot by chance: read the tail, not the count.
# ```

# %%
scores = {name: runs.collect(m, items, {"heads": runs.head_imp}, mode=mode)["heads"]
          for name, (m, mode) in settings.items()}
means = {name: s.mean(0) for name, s in scores.items()}
pairs = [("Vicuna TQA", "Llava TQA"), ("Llava TQA", "Llava VQA"), ("Vicuna TQA", "Llava VQA")]
overlaps = pd.concat({f"{a} → {b}": transfer.overlap_table(means[a], means[b], ks) for a, b in pairs})
paper = pd.DataFrame([transfer.paper_overlap(key) for key in
                      ["transfer.top10.vicuna_tqa.llava_tqa", "transfer.top10.llava_tqa.llava_vqa"]],
                     index=["paper: Vicuna TQA → Llava TQA", "paper: Llava TQA → Llava VQA"]).set_index("k", append=True)
glue("n", len(items))
glue("n_heads", n_heads)
glue("ks", ", ".join(map(str, ks)))
glue("paper_overlap", int(paper.iloc[0]["overlap"]))
glue("paper_chance", float(paper.iloc[0]["expected by chance"]))
table(pd.concat([overlaps, paper]), "overlaps", "{:.3g}")

# %%
correlations = {f"{a} → {b}": transfer.rank_correlation(scores[a], scores[b], seed=seed) for a, b in pairs}
fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4))
for ax, (a, b) in zip(axes, pairs):
    plots.head_scatter(means[a], means[b], f"{a}: mean head Imp", f"{b}: mean head Imp",
                       f"Spearman {correlations[f'{a} → {b}']}", ax=ax)
fig.suptitle(f"{llava.name} and {vicuna.name}: every head, n = {len(items)} examples", fontsize=10)
fig.tight_layout()
for name, est in correlations.items():
    glue("rho_" + name.split(" → ")[0].replace(" ", "_") + "_" + name.split(" → ")[1].replace(" ", "_"), str(est))
smallest = min(ks)
glue("k_small", smallest)
glue("overlap_vicuna_llava_vqa", int(overlaps.loc[("Vicuna TQA → Llava VQA", smallest), "overlap"]))
glue("p_vicuna_llava_vqa", float(overlaps.loc[("Vicuna TQA → Llava VQA", smallest), "P(overlap ≥ observed | chance)"]))
glue("chance_small", smallest * smallest / n_heads)

# %% [markdown]
# Over all heads, the ranking carries over: Spearman {glue:text}`rho_Vicuna_TQA_Llava_TQA` from Vicuna TQA to
# Llava TQA, {glue:text}`rho_Llava_TQA_Llava_VQA` from Llava TQA to Llava VQA, and
# {glue:text}`rho_Vicuna_TQA_Llava_VQA` from Vicuna's text to Llava's images (95 % intervals by resampling
# examples). The top {glue:text}`k_small` heads of Vicuna TQA and Llava VQA share {glue:text}`overlap_vicuna_llava_vqa`
# where chance expects {glue:text}`chance_small:.2f` (tail probability {glue:text}`p_vicuna_llava_vqa:.2g`). The
# paper's {glue:text}`paper_overlap` of 10 out of 1,024 heads is the stronger statement — its chance level is
# {glue:text}`paper_chance:.2f` of a head — and the
# organism's small head count cannot make one as strong; what it can show is that the ordering of all heads
# carries over, with an interval.

# %% [markdown]
# ## The heads that gained most are not the heads that look at the animal
#
# The paper singles out one head (19_6) whose importance grows most from Vicuna TQA to Llava VQA. The organism's
# largest gains, the head's mean Imp in each setting (the step from Vicuna TQA to Llava TQA is the tuning alone;
# from Llava TQA to Llava VQA the change of input alone), and where those heads look from the last position on
# the scenes:

# %%
gain = transfer.gains(means["Vicuna TQA"], means["Llava VQA"])
gainers = [(int(r.layer), int(r.index)) for r in gain.head(n_gainers).itertuples()]
top_gainer = f"{gainers[0][0]}_{gainers[0][1]}"
by_setting = pd.DataFrame({name: [means[name][l, h] for l, h in gainers] for name in settings},
                          index=pd.Index([f"{l}_{h}" for l, h in gainers], name="head"))
glue("gainers", ", ".join(by_setting.index))
glue("top_gainer", top_gainer)
glue("gain_tuning", float(by_setting.loc[top_gainer, "Llava TQA"] - by_setting.loc[top_gainer, "Vicuna TQA"]))
glue("gain_input", float(by_setting.loc[top_gainer, "Llava VQA"] - by_setting.loc[top_gainer, "Llava TQA"]))
table(by_setting, "gainers", "{:.3f}")

# %%
looks = transfer.where_heads_look(llava, items, gainers, seed=seed)
reader = max(looks.index[:-1], key=lambda h: looks.loc[h, "asked animal's word"].mean)
glue("gainer_box", float(looks.loc[top_gainer, "asked animal's box"].mean))
glue("gainer_text", float(looks.loc[top_gainer, "rest of the text"].mean))
glue("uniform_box", float(looks.loc["uniform attention", "asked animal's box"].mean))
glue("uniform_text", float(looks.loc["uniform attention", "rest of the text"].mean))
glue("reader", reader)
glue("reader_word", float(looks.loc[reader, "asked animal's word"].mean))
glue("uniform_word", float(looks.loc["uniform attention", "asked animal's word"].mean))
table(looks, "where-gainers-look")

# %% [markdown]
# The largest gains are those of {glue:text}`gainers`. Head {glue:text}`top_gainer` gained
# {glue:text}`gain_tuning:.3f` from the tuning alone (Vicuna TQA → Llava TQA) and {glue:text}`gain_input:.3f` from
# the change of input (Llava TQA → Llava VQA). None of these heads looks at the asked animal's patches: head
# {glue:text}`top_gainer` puts {glue:text}`gainer_box:.3f` of its attention on the box, where uniform attention
# would put {glue:text}`uniform_box:.3f`, and {glue:text}`gainer_text:.3f` on the question's other words
# (uniform: {glue:text}`uniform_text:.3f`); head {glue:text}`reader` puts {glue:text}`reader_word:.3f` on the
# asked animal's word (uniform: {glue:text}`uniform_word:.3f`). So in the organism the heads that gain most are
# not a "19_6" that finds the animal in the image — chapter 3's lookup heads ranked high already in Vicuna — but
# heads of the first layer that read the question.

# %% [markdown]
# ## Beyond the paper: how far did each head's weights move?
#
# `toy-llava`'s language model began as `toy-vicuna`. Per head, the relative change of its $W_Q$, $W_K$, $W_V$
# and $W_O$ slices, $\lVert W_\text{Llava} - W_\text{Vicuna}\rVert / \lVert W_\text{Vicuna}\rVert$, against its
# gain in importance.

# %%
change = transfer.weight_change(llava, vicuna)
joined = change.join(gain[["gain"]])
from scipy.stats import spearmanr  # noqa: E402
rho, p_value = spearmanr(joined["all"], joined["gain"])
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
plots.head_scatter(joined["all"].to_numpy(), joined["gain"].to_numpy(), "relative weight change (Q, K, V, O)",
                   "gain in mean Imp, Vicuna TQA → Llava VQA", f"Spearman {rho:.2f} (p = {p_value:.2g}, {n_heads} heads)",
                   ax=axes[0], diagonal=False)
change.groupby("layer")[["q", "k", "v", "o"]].mean().plot.bar(ax=axes[1], rot=0)
axes[1].set_ylabel("mean relative change", fontsize=8)
axes[1].set_title("per layer and projection", fontsize=9)
fig.tight_layout()
glue("rho_weights", float(rho))
glue("p_weights", float(p_value))
glue("median_change", float(change["all"].median()))
glue("gainer_change", float(change.loc[top_gainer, "all"]))

# %% [markdown]
# Every head moved (median relative change {glue:text}`median_change:.2f`; head {glue:text}`top_gainer`
# {glue:text}`gainer_change:.2f`), and how far a head moved tells next to nothing about how much it gained
# (Spearman {glue:text}`rho_weights:.2f`, p = {glue:text}`p_weights:.2g`).

# %% [markdown]
# ## A causal test: give the gainers their old weights back
#
# Put `toy-vicuna`'s weights back into the {glue:text}`n_gainers` most-gaining heads of `toy-llava` (the rest of
# the model stays tuned) and measure Llava VQA; as a control, do the same for as many heads drawn at random,
# {glue:text}`draws` times.

# %%
transplant = transfer.transplant_test(llava, vicuna, items, gainers, mode="vqa", draws=draws, seed=seed)
glue("n_gainers", n_gainers)
glue("draws", draws)
glue("transplant_dacc", str(transplant.loc[0, "Δ accuracy"]))
glue("transplant_random", transplant.loc[0, "random Δ accuracy"])
glue("transplant_share", float(transplant.loc[0, "random draws losing as much"]))
table(transplant.T.rename(columns={0: "Llava VQA"}), "transplant")

# %% [markdown]
# Given their Vicuna weights back, the gainers change Llava VQA's accuracy by {glue:text}`transplant_dacc`; random
# heads given theirs back, by {glue:text}`transplant_random` (mean, and 95 % of draws between), and a share of
# {glue:text}`transplant_share:.2f` of the random draws lost as much log p. The tuned weights of the heads that
# gained are not needed for the answer: with Vicuna's weights back, the model answers as well. With the weight
# change above, this says their rise in importance is not a new ability stored in their own weights.
#
# **What this shows, and what it does not.** A transplant tests whether a head's *own* tuned weights are needed
# in the tuned model. It does not say what the weights learnt, and a transplant that costs nothing does not make
# a head unimportant: chapter 3 found the organism's heads partly redundant, so others may cover for it.

# %% [markdown]
# ## What the organism shows, and what it cannot
#
# **Shows.** The heads that answer from text in the organism's Vicuna keep their ranks in its Llava, from text
# and from images: over all heads the rank correlation is high with a tight interval, and the top sets overlap far
# beyond chance. The paper's reading — visual tuning reuses Vicuna's heads — holds here. Its open question gets a
# first answer on the organism: the heads that gained did not need their own tuned weights.
#
# **Differs.** The paper's most-gaining head finds the animal in the image; the organism's read the question, in
# its first layer.
#
# **Cannot.** {glue:text}`n_heads` heads cannot give an overlap as telling as {glue:text}`paper_overlap` of 10 out of 1,024, and the organism's
# circuit lives in one layer where Llava's spans many. Rerun on the real pair with
# `papermill -p model llava-hf/llava-1.5-7b-hf -p text_model lmsys/vicuna-7b-v1.5 -p device cuda -p examples coco_animals.jsonl`
# (the weight comparison needs the Llava's language model to have started from that Vicuna, as Llava-1.5's did).
