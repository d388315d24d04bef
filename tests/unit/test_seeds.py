"""The seed study's bookkeeping: pairs of models one stage apart."""
import pandas as pd

from llavamech import seeds
from llavamech.stats import Estimate


def est(v):
    return Estimate(v, v - 0.05, v + 0.05, 200)


def test_pairs_one_stage_apart_name_the_stage_and_the_change():
    names = ["toy-llava", "toy-llava-seed1", "toy-llava-v0-c1-l1", "toy-llava-v1-c0-l1"]
    by_seed = pd.DataFrame({"pointing: tool": [est(0.9), est(0.8), est(0.92), est(0.75)]}, index=names)
    pairs = seeds.one_stage_apart(by_seed)
    got = {(r["stage whose seed changes"], r["from"], r["to"]): round(r["change"], 3) for _, r in pairs.iterrows()}
    assert got == {("toy-vicuna", "toy-llava-v0-c1-l1", "toy-llava-seed1"): -0.12,
                   ("toy-clip", "toy-llava-v1-c0-l1", "toy-llava-seed1"): 0.05}


def test_the_stage_with_the_largest_change_carries_the_difference():
    pairs = pd.DataFrame({"stage whose seed changes": ["toy-vicuna", "toy-clip", "toy-vicuna", "llava stages"],
                          "change": [-0.12, 0.05, 0.02, -0.03]})
    carrier, by_stage = seeds.stage_effects(pairs)
    assert carrier == "toy-vicuna" and by_stage["toy-vicuna"] == 0.12 and by_stage["toy-clip"] == 0.05


def test_usual_heads_are_listed_per_vicuna_seed():
    by_seed = pd.DataFrame({"toy-vicuna seed": [0, 0, 1], "tool's usual head": ["1_3 (0.9)", "1_4 (0.8)", "1_7 (1.0)"]},
                           index=["a", "b", "c"])
    assert seeds.usual_heads(by_seed).to_dict() == {0: "1_3, 1_4", 1: "1_7"}


def test_variants_without_their_weights_are_set_aside(tmp_path, monkeypatch):
    for name, weights in (("toy-llava", True), ("toy-llava-seed1", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "card.json").write_text("{}")
        if weights:
            (tmp_path / name / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(seeds, "MODELS_DIR", tmp_path)
    assert seeds.with_weights(["toy-llava", "toy-llava-seed1", "my/model"]) == (["toy-llava", "my/model"],
                                                                                ["toy-llava-seed1"])


def test_a_change_between_models_is_paired_over_their_common_scenes():
    study = pd.DataFrame({"scene": [0, 1, 2, 3, 0, 1, 2], "method": ["tool"] * 7,
                          "model": ["a"] * 4 + ["b"] * 3, "pointing": [1, 1, 0, 1, 0, 1, 0]})
    change = seeds.scene_change(study, "a", "b")
    assert change.n == 3 and abs(change.mean - (-1 / 3)) < 1e-12 and change.low <= change.mean <= change.high
    by_seed = pd.DataFrame({"pointing: tool": [est(0.75), est(1 / 3)]}, index=["toy-llava", "toy-llava-v0-c0-l1"])
    named = study.replace({"model": {"a": "toy-llava", "b": "toy-llava-v0-c0-l1"}})
    pairs = seeds.one_stage_apart(by_seed, study=named)
    assert pairs.loc[0, "change on the same scenes"].mean == change.mean
