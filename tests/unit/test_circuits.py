"""The §5 decompositions are exact (float32, 1e-5) on tiny random Llava and Llama, with and without GQA."""
import numpy as np
import pytest
import torch

from llavamech import attribution, circuits, lens, load
from llavamech.examples import toy_examples

ATOL = 1e-5


def test_layer_input_is_embedding_plus_key_input_plus_value_input(model, example):
    """And, where the model adds visual features after its first layers (Qwen3-VL), plus their part."""
    trace = model.trace(**example, all_positions=True)
    positions = torch.arange(trace.seq_len)
    for layer in range(model.anatomy.n_layers + 1):
        parts = circuits.stream_parts(trace, layer, positions)
        assert ("deepstack input" in parts) == (trace.visual_added_all is not None)
        rebuilt = trace.resid_in_all[0] + parts["key input"] + parts["value input"] + parts.get("deepstack input", 0)
        assert torch.allclose(parts["layer input"], rebuilt, atol=ATOL)


def test_value_outputs_are_attention_weighted_ov_outputs_and_sum_to_the_head(model, example):
    """Where a norm follows attention (Gemma), both carry its frozen scale."""
    trace = model.trace(**example, all_positions=True)
    everywhere = torch.arange(trace.seq_len)
    for layer in range(model.anatomy.n_layers):
        head = model.anatomy.n_heads - 1
        u = circuits.value_output(trace, layer, head, everywhere)
        ov = circuits.ov_output(trace, layer, head, everywhere)
        assert torch.allclose(u, trace.attn_weights[layer, head][:, None] * ov, atol=ATOL)
        assert torch.allclose(u.sum(0), attribution.head_outputs(trace, layer)[head], atol=ATOL)
        assert abs(circuits.attention_mass(trace, layer, head, everywhere) - 1.0) < ATOL


def test_important_positions_are_the_best_of_their_kind(model, example):
    trace = model.trace(**example)
    kind = "image" if model.is_multimodal else "text"
    candidates = set(lens.positions_of_kind(trace, kind).tolist())
    heads = [(0, 0), (model.anatomy.n_layers - 1, 1)]
    top = lens.important_positions(trace, heads, 3, kind)
    scores = sum(attribution.position_scores(trace, l, h) for l, h in heads)
    assert set(top.tolist()) <= candidates and trace.seq_len - 1 not in top.tolist()
    assert scores[top].tolist() == sorted(scores[top].tolist(), reverse=True)
    assert scores[top[-1]] >= max(scores[j] for j in candidates - set(top.tolist()))
    drawn = lens.random_positions(trace, 3, kind, torch.Generator().manual_seed(0))
    assert len(set(drawn.tolist())) == 3 and set(drawn.tolist()) <= candidates


def test_ranks_at_the_final_layer_are_the_ranks_in_the_logits(model, example):
    trace = model.trace(**example, all_positions=True)
    token = 9
    ranks = lens.position_ranks(model, trace, torch.tensor([trace.seq_len - 1]), token, layers=[model.anatomy.n_layers])
    assert int(ranks) == int((trace.logits > trace.logits[token]).sum()) + 1
    found = circuits.rankings(model, trace, 1, 0, torch.tensor([1, 2]), {"w": token})
    assert set(found) == {(part, "w") for part in circuits.PARTS} and all(len(r) == 2 for r in found.values())


def test_measure_returns_one_row_per_example_and_head(tmp_path):
    model = load("tiny-random-llava")
    out = circuits.measure(model, toy_examples(4, seed=1), [(1, 0), (1, 2)], k=2, mode="vqa",
                           colours=["red", "blue", "green"], seed=0)
    assert out["correct"].shape == (4,)
    assert out["attention same"].shape == out["MRR value output colour"].shape == (4, 2)
    assert ((out["attention same"] >= 0) & (out["attention same"] <= 1)).all()
    assert ((out["random MRR key input animal"] > 0) & (out["random MRR key input animal"] <= 1)).all()


def test_a_centroid_probe_finds_a_separable_label_and_not_a_random_one():
    rng = np.random.default_rng(0)
    labels = [("cat", "dog", "cow")[i % 3] for i in range(90)]
    centres = {"cat": np.eye(8)[0] * 4, "dog": np.eye(8)[1] * 4, "cow": np.eye(8)[2] * 4}
    separable = np.stack([centres[l] for l in labels]) + rng.normal(size=(90, 8))
    assert circuits.centroid_accuracy(separable, labels).mean() > 0.9
    noise = rng.normal(size=(90, 8))
    assert circuits.centroid_accuracy(noise, labels).mean() < 0.6
    assert set(np.unique(circuits.centroid_accuracy(noise, labels))) <= {0.0, 1.0}


def test_probe_reads_a_part_at_the_important_and_at_a_random_position():
    model = load("tiny-random-vicuna")
    items = toy_examples(6, seed=4)
    out = circuits.probe(model, items, (1, 0), "tqa", seed=0)
    assert out["important"].shape == out["random"].shape == (6,)
    assert 0 < out["chance"] <= 1


def test_evidence_positions_are_the_asked_facts_colour_word_and_the_asked_animals_box():
    """Fixed in advance, without a head's scores: in text the colour word right after "<asked animal> is"; in an
    image the patches the box mask marks. The measures there come out for every example and head."""
    from llavamech.examples import Example

    model = load("tiny-random-llava")
    for e in toy_examples(5, seed=2):
        trace = model.trace(**e.inputs("tqa"))
        where = circuits.evidence_positions(model, trace, e, "tqa")
        tokens = model.tokenizer.convert_ids_to_tokens(trace.input_ids.tolist())
        assert len(where) == 1 and tokens[where[0]] == dict(e.facts)[e.animal]
        assert tokens[where[0] - 2:where[0]] == [e.animal, "is"]
        image = model.trace(**e.inputs("vqa"))
        boxed = circuits.evidence_positions(model, image, e, "vqa")
        mask = e.box_mask(model.processor.image_processor, image.positions.grid_shape)
        assert len(boxed) == mask.sum() > 0 and set(boxed.tolist()) <= set(image.positions.image_positions.tolist())
    assert circuits.evidence_positions(model, trace, Example(None, "dog", "red"), "tqa") is None
    out = circuits.measure(model, toy_examples(3, seed=1), [(1, 0)], k=2, mode="tqa", colours=["red", "blue"], seed=0)
    assert out["evidence attention same"].shape == (3, 1) and not np.isnan(out["evidence MRR value output colour"]).any()
    assert set(circuits.evidence_table(out).index) >= {"attention, same animal", "OV logit difference"}


def test_a_measure_is_averaged_over_heads_for_the_examples_that_have_it():
    import numpy as np
    from llavamech import circuits

    measures = {"m": np.array([[1.0, 3.0], [np.nan, np.nan], [np.nan, 4.0]])}   # example 1 lacks it; 2 in part
    assert circuits.head_mean(measures, "m").tolist() == [2.0, 4.0]
    est = circuits.estimate(measures, "m")
    assert est.mean == 3.0 and est.n == 2


def test_the_text_image_contrasts_are_tested_in_the_papers_direction_and_adjusted_together():
    from llavamech.reference import directional_p
    rng = np.random.default_rng(0)
    n, heads = 60, 3
    text = {"MRR value output colour": rng.random((n, heads)), "OV logit difference": 2 + rng.random((n, heads))}
    falls = {"MRR value output colour": text["MRR value output colour"] - 0.2,        # against the paper's rise
             "OV logit difference": text["OV logit difference"] - 0.5}              # the paper's fall
    p = directional_p(circuits.contrast_differences(text, falls))
    assert p["contrast.colour_mrr.vqa_minus_tqa"] == 1.0
    assert p["contrast.ov_logit_difference.vqa_minus_tqa"] == 2 / 10_001           # Holm doubles the smallest p
    assert circuits.setting_contrast(text, falls)["contrast.ov_logit_difference.vqa_minus_tqa"].mean == \
        pytest.approx(-0.5)


def test_a_probe_on_fewer_examples_than_folds_is_one_line():
    from llavamech.errors import LlavamechError
    with pytest.raises(LlavamechError, match="1 example\\(s\\) are too few; raise n_examples to at least 2"):
        circuits.centroid_accuracy(np.zeros((1, 3)), ["dog"])
