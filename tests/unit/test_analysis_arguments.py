"""A hostile user of the analysis API (statistics, causal controls, head transfer, circuits, patch evaluation, example
files, figures): input that cannot give a meaningful answer is one LlavamechError line, never a p-value of 1e-4 from
NaNs, a control against no random set, an image of another file overwritten, or a slice that drops what was asked."""
import json

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from llavamech import circuits, patch_eval, plots, question_study, stats, transfer  # noqa: E402
from llavamech.errors import LlavamechError  # noqa: E402
from llavamech.examples import from_coco, read_jsonl, toy_examples, typed_examples, write_jsonl  # noqa: E402
from llavamech.interventions import (activation_means, answer_scores, head_ablation_test, held_out_ranking,  # noqa: E402
                                     null_sets)
from llavamech.models import load  # noqa: E402

from tests.conftest import tiny  # noqa: E402

Q = "What is the color of the dog?"


@pytest.fixture(scope="module")
def toy():
    return load("toy-llava")


@pytest.fixture(scope="module")
def examples():
    return toy_examples(4, seed=1)


def one_line(call, match: str):
    with pytest.raises(LlavamechError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


# ---- statistics: NaN is left out, never counted as evidence ----
def test_sign_flip_leaves_nan_out_and_gives_nan_where_nothing_is_left():
    d = np.array([[0.5, np.nan], [0.7, np.nan], [np.nan, np.nan], [0.9, np.nan], [0.4, np.nan]])
    p = stats.sign_flip_p(d, seed=3)
    assert abs(p[0] - 1 / 16) < 0.01   # the four examples with a value, all positive: only all signs kept reach it
    assert np.isnan(p[1])   # before: 1e-4, "significant"
    assert stats.sign_flip_p([1.0, np.nan, 2.0]) > 0.2   # two examples can never reach 0.05


def test_holm_keeps_untested_out_of_the_family_and_refuses_what_is_not_a_family():
    adjusted = stats.holm([0.01, np.nan, 0.02])
    assert np.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    one_line(lambda: stats.holm([[0.01, 0.02], [0.03, 0.04]]), "1 dimension")
    one_line(lambda: stats.holm([1.5, -0.1]), r"in \[0, 1\]")
    one_line(lambda: stats.bootstrap([1.0, np.inf]), "infinite")
    one_line(lambda: stats.bootstrap([]), "at least one example")
    one_line(lambda: stats.sign_flip_p([1, 2], n_perm=0), "n_perm")
    one_line(lambda: stats.ranking_agreement(np.ones((2, 2)), np.arange(4)), "same shape")
    assert stats.ranking_agreement([1, 2, 3], [3, 2, 1], top=100)["top"] == 3   # says which top it compared


# ---- causal controls: no test without random sets to test against ----
def test_a_control_without_a_random_set_gives_no_p_value(toy, examples):
    rng = np.random.default_rng(0)
    assert null_sets(4, 8, [(0, h) for h in range(8)], "same-layer", 3, rng) == ([], True)
    whole_layer = [(0, h) for h in range(8)]
    table = head_ablation_test(toy, examples, "vqa", whole_layer + [(1, 0)], ks=(1, 8), draws=3, how="zero",
                               controls=("same-layer",))
    p, holm = table["p (same layers)"], table["p, Holm (same layers)"]
    assert np.isnan(p[8]) and np.isnan(holm[8])   # before: p = 1e-4 against no random set at all
    assert np.isfinite(p[1]) and holm[1] == pytest.approx(p[1])   # the untested row is not counted in the family
    assert len(stats.holm([])) == 0


def test_random_sets_need_heads_draws_and_a_generator():
    rng = np.random.default_rng(0)
    one_line(lambda: null_sets(4, 8, [], "all", 3, rng), "at least one head")
    one_line(lambda: null_sets(4, 8, [(0, 0)], "all", 0, rng), "draws")
    one_line(lambda: null_sets(4, 8, [(0, 0)], "all", 3, None), "Generator")


def test_head_ablation_test_refuses_ks_it_cannot_run(toy, examples):
    ranked = [(3, 1), (2, 0)]
    for ks in [(0,), (3,), (-1,)]:
        one_line(lambda: head_ablation_test(toy, examples, "vqa", ranked, ks=ks, draws=2, how="zero"), "ks")
    one_line(lambda: head_ablation_test(toy, examples, "vqa", [], ks=(1,), draws=2, how="zero"), "empty")
    one_line(lambda: head_ablation_test(toy, examples, "vqa", ranked, ks=(1,), draws=2, how="zero",
                                        control_examples=-1), "control_examples")
    one_line(lambda: head_ablation_test(toy, examples, "vqa", ranked, ks=(1,), draws=2, how="zero",
                                        controls=("al",)), "controls")


def test_held_out_ranking_needs_per_example_scores_of_these_examples(examples):
    scores = np.random.default_rng(0).random((4, 4, 8))
    one_line(lambda: held_out_ranking(examples, scores[:2], 1), r"\[n, layers, heads\]")
    one_line(lambda: held_out_ranking(examples, scores.mean(0), 1), r"\[n, layers, heads\]")
    one_line(lambda: held_out_ranking(examples, scores, -1), "n_test")


# ---- ablations: nothing coerced, nothing silently skipped ----
def test_patches_that_are_not_indices_are_refused(toy, examples):
    mask = [False] * 64
    mask[10] = True
    one_line(lambda: answer_scores(toy, examples, "vqa", patches=mask), "flatnonzero")
    one_line(lambda: answer_scores(toy, examples, "vqa", patches=[1.9]), "whole patch indices")
    one_line(lambda: answer_scores(toy, examples, "vqa", patches=5), "list of patch indices")
    one_line(lambda: answer_scores(toy, examples, "tqa", patches=[1]), "runs without it")
    one_line(lambda: answer_scores(toy, examples, "vqa", head=[(0, 0)]), "no argument 'head'")
    by_index = answer_scores(toy, examples, "vqa", patches=np.array([10]))["log p"]
    assert np.allclose(by_index, answer_scores(toy, examples, "vqa", patches=[10])["log p"])


def test_means_must_be_this_models_and_never_silently_unused(toy, examples):
    means = activation_means(toy, examples[:1], "vqa")
    one_line(lambda: answer_scores(toy, examples, "vqa", heads=[(0, 0)], means=means), "without how")
    zero = answer_scores(toy, examples, "vqa", heads=[(0, 0)], how="zero")["log p"]   # a loop over how may pass them
    assert np.array_equal(zero, answer_scores(toy, examples, "vqa", heads=[(0, 0)], how="zero", means=means)["log p"])
    other = activation_means(tiny("llava"), examples[:1], "vqa")
    one_line(lambda: answer_scores(toy, examples, "vqa", heads=[(0, 0)], how="mean", means=other), "not toy-llava's")
    text_means = activation_means(toy, examples[:1], "tqa")
    one_line(lambda: answer_scores(toy, examples, "vqa", patches=[3], how="mean", means=text_means), "visual means")


# ---- head transfer and circuits: shapes and indices checked ----
def test_head_tables_and_ks_are_checked():
    a = np.random.default_rng(0).random((4, 8))
    one_line(lambda: transfer.top_set(a, -1), "from 1 to 32")
    one_line(lambda: transfer.top_set(np.stack([a, a]), 3), r"\.mean\(0\)")
    one_line(lambda: transfer.overlap_table(a, a[:2], [3]), "same heads")
    one_line(lambda: transfer.gains(a, a, top=-1), "top")
    one_line(lambda: transfer.correlation(a, a), r"\[n, layers, heads\]")
    one_line(lambda: transfer.gain_test(np.stack([a] * 3), np.stack([a] * 2)), "same examples")
    one_line(lambda: transfer.paper_overlap("nope"), "transfer.top10")


def test_circuit_readings_refuse_heads_layers_and_positions_outside_the_trace(toy, examples):
    trace = toy.trace(examples[0].image, examples[0].question, all_positions=True)
    one_line(lambda: circuits.stream_parts(trace, -1, [0]), "layer")
    one_line(lambda: circuits.ov_output(trace, 1, 99, [0]), "head")
    one_line(lambda: circuits.attention_mass(trace, 1, 0, torch.tensor([5, 5])), "twice")
    one_line(lambda: circuits.value_output(trace, 1, 0, [-1]), "positions")
    everything = torch.ones(trace.seq_len, dtype=torch.bool)
    assert circuits.attention_mass(trace, 1, 0, everything) == pytest.approx(1.0, abs=1e-5)
    one_line(lambda: circuits.measure(toy, examples[:1], [(3, 1)], 2, "vqa", ["red"]), "two colours")


# ---- patch evaluation ----
def test_pointing_needs_a_boolean_mask_of_the_maps_grid_and_a_map_without_nan():
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True
    one_line(lambda: patch_eval.pointing(np.full((8, 8), np.nan), mask), "NaN")   # before: True
    one_line(lambda: patch_eval.pointing(np.random.rand(8, 8), np.zeros((4, 4), bool)), "same patch grid")
    one_line(lambda: patch_eval.pointing(np.random.rand(8, 8), mask.astype(int)), "booleans")
    assert patch_eval.pointing(np.eye(8), mask)


# ---- example files ----
def test_two_files_beside_each_other_never_share_an_image(tmp_path):
    a, b = toy_examples(2, seed=0), toy_examples(2, seed=5)
    write_jsonl(a, tmp_path / "a.jsonl")
    write_jsonl(b, tmp_path / "b.jsonl", force=True)
    back = read_jsonl(tmp_path / "a.jsonl")
    assert np.array_equal(np.asarray(Image.open(back[0].image).convert("RGB")), np.asarray(a[0].image.convert("RGB")))
    one_line(lambda: write_jsonl([], tmp_path / "c.jsonl"), "at least one example")
    one_line(lambda: write_jsonl(typed_examples(2, "colour", text=True), tmp_path / "d.jsonl"), "no image")
    one_line(lambda: write_jsonl(a, tmp_path), "is a folder")
    one_line(lambda: write_jsonl(a, tmp_path / "a.json"), "does not end in .jsonl")
    one_line(lambda: read_jsonl(tmp_path / "a.jsonl", vocabulary="x"), "vocabulary")


def test_every_animals_box_survives_a_file_so_patch_maps_can_be_scored_on_it(tmp_path):
    a = toy_examples(3, seed=0)
    back = read_jsonl(write_jsonl(a, tmp_path / "a.jsonl"))
    assert [e.boxes for e in back] == [e.boxes for e in a] and all(e.boxes for e in back)
    assert [e.asking(o).box for e in back for o in e.distractors] == [e.asking(o).box for e in a for o in e.distractors]
    item = {"image": "images/a-00000.png", "animal": a[0].animal, "boxes": {a[0].animal: list(a[0].box)}}
    (tmp_path / "b.jsonl").write_text(json.dumps(item) + "\n")
    assert read_jsonl(tmp_path / "b.jsonl")[0].box == a[0].box        # the asked animal's box, from "boxes"
    for boxes, message in (([1, 2, 3, 4], "map each animal"), ({a[0].animal: [0, 0, 9999, 5]}, "not inside"),
                           ({a[0].animal: "x"}, "entry in \"boxes\" must be")):
        (tmp_path / "c.jsonl").write_text(json.dumps({**item, "boxes": boxes}) + "\n")
        one_line(lambda: read_jsonl(tmp_path / "c.jsonl"), message)
    (tmp_path / "d.jsonl").write_text(json.dumps({**item, "box": [0, 0, 1, 1]}) + "\n")
    one_line(lambda: read_jsonl(tmp_path / "d.jsonl"), "disagree")
    from dataclasses import replace
    one_line(lambda: write_jsonl([replace(a[0], box=(0, 0, 1, 1))], tmp_path / "e.jsonl"), "change both")


def test_coco_boxes_outside_their_image_are_left_out(tmp_path):
    (tmp_path / "img").mkdir()
    for i in (1, 2):
        Image.new("RGB", (100, 100)).save(tmp_path / "img" / f"{i}.jpg")
    coco = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)],
            "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 18, "bbox": [150, 150, 50, 50]},
                            {"id": 6, "image_id": 2, "category_id": 18, "bbox": [10, 10, 50, 50]}]}
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    assert from_coco(tmp_path / "inst.json", tmp_path / "img", tmp_path / "out.jsonl") == 1
    assert [e.box for e in read_jsonl(tmp_path / "out.jsonl")] == [(10, 10, 60, 60)]
    one_line(lambda: from_coco(tmp_path / "inst.json", tmp_path / "img", tmp_path / "o2.jsonl", limit=0), "limit")
    one_line(lambda: from_coco(tmp_path / "inst.json", tmp_path / "img", tmp_path / "o2.jsonl", min_area=-1),
             "min_area")


# ---- the hallucination rule and figures ----
def test_a_rule_needs_both_kinds_of_example_and_a_direction():
    one_line(lambda: question_study.fit_rule(np.random.rand(4), np.ones(4, bool)), "needs both")
    one_line(lambda: question_study.apply_rule(np.random.rand(4), 0.5, "sideways"), "direction")
    one_line(lambda: question_study.chance("colours"), "unknown question type")


def test_figures_take_lists_and_refuse_mismatched_panels():
    assert plots.head_heatmap([[1, 2], [3, 4]], "lists") is not None   # "lists or tensors", as the module promises
    image = Image.new("RGB", (64, 64))
    one_line(lambda: plots.map_grid([image, image], [np.zeros((8, 8))], ["a", "b"]), "one of each per panel")
    one_line(lambda: plots.image_grid([], []), "nothing to draw")
    one_line(lambda: plots.head_heatmap(np.zeros((3, 4, 8)), "t"), r"\.mean\(0\)")
    one_line(lambda: plots.layer_bars({"attn": [1.0, 2.0], "ffn": [0.0, 1.0]}, "t", errors=(np.zeros(2), np.ones(2))),
             r"each \[2, 2\]")
    one_line(lambda: plots.ablation_strip([0.1, 0.2], "t"), "head-ablation table")
    assert plots.head_heatmap(torch.ones(2, 3, dtype=torch.bfloat16), "bf16") is not None   # NumPy has no bfloat16


def test_bfloat16_tensors_reach_numpy_as_float_wherever_they_come_in():
    half = torch.arange(6, dtype=torch.bfloat16).reshape(1, 2, 3)
    assert question_study.top_heads(half, 1) == [(1, 2)]
    assert transfer.head_table("s", half[0]).dtype == np.float64
    assert patch_eval.patch_scores("map", half[0]).shape == (2, 3)
    assert stats.numbers("x", half.ravel()).tolist() == list(range(6))
