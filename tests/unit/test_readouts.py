import numpy as np
import torch

from llavamech import attribution, load, readouts
from llavamech.examples import toy_examples


def test_collect_keeps_one_value_per_example_and_stacks_them():
    model = load("tiny-random-llava")
    examples = toy_examples(3, seed=9)
    out = readouts.collect(model, examples, {"heads": readouts.head_imp, "layers": readouts.layer_imp, "ok": readouts.correct,
                                         "top": lambda item: item.answer}, mode="vqa")
    a = model.anatomy
    assert out["heads"].shape == (3, a.n_layers, a.n_heads) and out["layers"].shape == (3, 2, a.n_layers)
    assert set(np.unique(out["ok"])) <= {0.0, 1.0}
    second = attribution.head_scores(model.trace(**examples[1].inputs("vqa")))
    assert np.allclose(out["heads"][1], second.numpy(), atol=1e-6)
    assert readouts.top_heads_of(torch.tensor([[0.1, 0.5], [0.9, 0.0]]), 2) == [(1, 0), (0, 1)]


def test_imp_vs_z_agrees_with_itself_and_lists_both_top_sets():
    imp = np.arange(32.0).reshape(4, 8)
    row = readouts.imp_vs_z(imp, imp * 2, np.array([[0.1, 0.5, 0.2, 0.0], [0.0, 0.3, 0.1, 0.2]]), top=3)
    assert row["Spearman, Imp vs z (all heads)"] == "1.000" and row["top 3 shared"] == 3
    assert row["top 3 by Imp"] == row["top 3 by z"] == "3_7, 3_6, 3_5"
    assert row["best attention layer by z"] == 1 and row["largest FFN z"] == "0.300"
    reversed_row = readouts.imp_vs_z(imp, -imp, np.zeros((2, 4)), top=3)
    assert reversed_row["top 3 shared"] == 0 and float(reversed_row["Spearman, Imp vs z (all heads)"]) < -0.99
