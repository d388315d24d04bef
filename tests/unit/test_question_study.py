"""Chapter 6's measurements: each can fail, on synthetic inputs whose answer is known or on a tiny model."""
import numpy as np
import pandas as pd
import pytest
import torch

import llavamech
from llavamech import question_study as study
from llavamech.examples import Example, typed_examples
from llavamech.hooks import language_model_inputs
from llavamech.trace import positions_of


def test_a_separable_feature_is_found_and_a_random_one_is_at_chance():
    rng = np.random.default_rng(0)
    n = 400
    label = rng.random(n) < 0.3
    features = pd.DataFrame({"attention on image": np.where(label, 0.1, 0.9) + rng.normal(0, 0.01, n),
                             "map peak": rng.random(n), "map entropy": rng.random(n), "best head Imp": rng.random(n),
                             "p(answer)": np.where(label, 0.2, 0.8), "flag": label})
    calibration = rng.random(n) < 0.5
    table = study.detector(features, "flag", calibration)
    separable = table.loc["attention on image"]
    assert separable["precision"].mean == 1 and separable["recall"].mean == 1 and separable["chosen"]
    baseline = table.loc["p(answer)"]   # as separable, and reported beside the features, but never the one chosen
    assert baseline["precision"].mean == 1 and not baseline["chosen"] and table["chosen"].sum() == 1
    assert "≤" in separable["rule"]
    noise = table.loc["map peak"]
    assert abs(noise["precision"].mean - noise["chance precision"]) < 0.15


def test_a_paired_difference_of_detectors_sees_what_overlapping_intervals_cannot():
    rng = np.random.default_rng(2)
    n = 300
    label = rng.random(n) < 0.5
    scene = np.arange(n) // 2                                  # two rows per scene, kept together
    features = pd.DataFrame({"sharp": np.where(label, 0.1, 0.9) + rng.normal(0, 0.01, n),
                             "noise": rng.random(n), "flag": label})
    calibration = np.repeat(rng.random(n // 2) < 0.5, 2)       # a scene's rows on one side of the split
    same = study.detector_difference(features, "flag", calibration, "sharp", "sharp", groups=scene)
    assert same["precision"].mean == same["precision"].low == same["precision"].high == 0
    better = study.detector_difference(features, "flag", calibration, "sharp", "noise", groups=scene)
    assert better["precision"].low > 0 and better["precision"].n == int((~calibration).sum())
    flip = study.detector_difference(features, "flag", calibration, "noise", "sharp")
    assert flip["precision"].mean == pytest.approx(-better["precision"].mean)


def test_auc_compares_two_features_without_a_threshold_and_reads_a_low_flag_as_a_flag():
    rng = np.random.default_rng(3)
    n = 200
    label = rng.random(n) < 0.5
    scene = np.arange(n) // 2
    features = pd.DataFrame({"low when flagged": np.where(label, 0.1, 0.9) + rng.normal(0, 0.01, n),
                             "noise": rng.random(n), "flag": label})
    calibration = np.repeat(rng.random(n // 2) < 0.5, 2)
    auc = study.auc_difference(features, "flag", calibration, "low when flagged", "noise", groups=scene, n_boot=300)
    assert auc["low when flagged"].mean == 1.0 and abs(auc["noise"].mean - 0.5) < 0.2
    assert auc["difference"].low > 0 and auc["difference"].n == int((~calibration).sum())
    same = study.auc_difference(features, "flag", calibration, "noise", "noise", n_boot=50)["difference"]
    assert same.mean == same.low == same.high == 0


def test_the_weighted_auc_is_the_mann_whitney_statistic_of_the_rows_repeated_by_their_weights():
    from scipy.stats import mannwhitneyu
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, 40).astype(float)                 # many ties, which count half
    positive = rng.random(40) < 0.4
    weights = rng.integers(0, 3, (3, 40))
    for w, auc in zip(weights, study._auc(scores, positive, weights)):
        repeated, truth = np.repeat(scores, w), np.repeat(positive, w)
        u = mannwhitneyu(repeated[truth], repeated[~truth]).statistic
        assert auc == pytest.approx(u / (truth.sum() * (~truth).sum()))
    assert np.isnan(study._auc(scores, positive, np.where(positive, 0, 1)[None])[0])   # no positive drawn


def test_a_detectors_intervals_resample_whole_scenes():
    rng = np.random.default_rng(4)
    n = 300
    label = np.tile([False, True], n // 2)                      # each scene asked both ways
    features = pd.DataFrame({f: rng.random(n) for f in study.FEATURES} | {"flag": label})
    calibration = np.repeat(rng.random(n // 2) < 0.5, 2)
    rows = study.detector(features, "flag", calibration, groups=np.arange(n) // 2, n_boot=300)
    alone = study.detector(features, "flag", calibration, n_boot=300)
    for feature in study.FEATURES:   # the same rule and estimates; only the intervals' resampling differs
        assert rows.loc[feature, "precision"].mean == alone.loc[feature, "precision"].mean
        assert rows.loc[feature, "recall"].n == int(label[~calibration].sum())


def test_a_contrast_of_two_sets_resamples_each():
    a = pd.DataFrame({"peak": np.linspace(0.5, 0.7, 40)})
    b = pd.DataFrame({"peak": np.linspace(0.1, 0.3, 30)})
    table = study.contrast(a, b, ["peak"], names=("colour", "position"))
    d = table.loc["peak", "colour − position"]
    assert d.mean == pytest.approx(0.4) and d.low > 0.3 and table.loc["peak", "colour"].n == 40


def test_the_majority_answer_is_the_chance_of_an_unbalanced_type():
    examples = typed_examples(40, "existence", seed=0)
    share = study.majority_rate(examples)
    yes = np.mean([e.expected == "yes" for e in examples])
    assert share == pytest.approx(max(yes, 1 - yes)) and share >= study.chance("existence")


def test_overlap_of_a_type_with_itself_is_complete_and_not_tested():
    rng = np.random.default_rng(1)
    imp = {"colour": rng.random((20, 4, 8)), "other": rng.random((20, 4, 8))}
    table = study.overlap_with(imp, "colour", k=3)
    assert table.loc["colour", "shared with colour"] == 3 and table.loc["colour", "correlation (all heads)"] == "—"
    assert np.isnan(table.loc["colour", "P(≥ shared | chance)"]) and table.loc["other", "P(≥ shared | chance)"] <= 1
    assert -1 <= table.loc["other", "correlation (all heads)"].mean <= 1
    assert table.loc["other", "expected by chance"] == pytest.approx(9 / 32)
    # the within-layer null is stricter, and Holm adjusts each null over the types tested (one here: unchanged)
    assert table.loc["other", "P(≥ shared | their layers)"] >= table.loc["other", "P(≥ shared | chance)"]
    assert table.loc["other", "Holm (their layers)"] == table.loc["other", "P(≥ shared | their layers)"]
    assert np.isnan(table.loc["colour", "Holm (chance)"])


def test_the_correlation_without_the_reference_s_top_head_shows_when_one_shared_head_carries_it():
    """Two types that share only one large head: over all heads they correlate strongly, without it not at all."""
    rng = np.random.default_rng(3)
    colour, other = rng.normal(0, 0.05, (40, 4, 8)), rng.normal(0, 0.05, (40, 4, 8))
    colour[:, 1, 5] += 3.0
    other[:, 1, 5] += 3.0
    table = study.overlap_with({"colour": colour, "other": other}, "colour", k=3)
    assert table.attrs["left out"] == "1_5"
    assert table.loc["other", "correlation (all heads)"].mean > 0.9
    assert table.loc["other", "correlation without 1_5"].high < 0.5
    assert table.loc["colour", "correlation without 1_5"] == "—"


def test_mirroring_rows_moves_only_image_tokens_and_twice_is_the_identity():
    model = llavamech.load("tiny-random-llava")
    inputs = model.inputs(Example(None, "dog").image or _image(), "What is the color of the dog?")
    embeds = language_model_inputs(model.hf, model.anatomy.language_model, inputs)
    positions = positions_of(model.hf, inputs, model.tokenizer)
    once = study.mirror_rows(embeds, positions)
    image = torch.zeros(embeds.shape[1], dtype=torch.bool)
    image[positions.image_positions] = True
    assert torch.equal(once[0, ~image], embeds[0, ~image]) and not torch.equal(once[0, image], embeds[0, image])
    grid = positions.image_positions.reshape(positions.grid_shape)
    assert torch.equal(once[0, grid[0, 0]], embeds[0, grid[0, -1]])
    assert torch.equal(study.mirror_rows(once, positions), embeds)


def _image():
    from PIL import Image
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))


def test_examples_group_by_type_and_free_questions_are_left_out():
    sets = {t: typed_examples(3, t) for t in ("existence", "counting")}
    free = Example(None, "dog", asked="Why is the dog here?")
    grouped = study.by_type(sets["existence"] + sets["counting"] + [free])
    assert list(grouped) == ["existence", "counting"] and all(len(v) == 3 for v in grouped.values())


def test_absent_variants_ask_about_animals_the_scene_does_not_hold():
    colour = typed_examples(10, "colour")
    for original, absent in zip(colour, study.absent_variants(colour)):
        assert absent.animal not in dict(original.facts) and absent.expected is None and absent.box is None


def test_cards_are_tabled_against_their_bars():
    card = {"n": 100, "accuracy": {"toy-llava-multi VQA colour": 0.95, "toy-llava-multi VQA counting": 0.5,
                                   "toy-vicuna-multi TQA colour": 0.99}}
    table = study.card_table({"seed 0": card})
    assert table.loc[("Llava VQA", "colour"), "every model clears it"] == "yes"
    assert table.loc[("Llava VQA", "counting"), "every model clears it"] == "no"
    assert table.loc[("text model TQA", "colour"), "bar"] == "0.95"


def test_only_a_yes_counts_as_a_hallucinated_yes(monkeypatch):
    examples = [e for e in typed_examples(40, "existence", seed=0) if e.expected == "no"][:3]
    monkeypatch.setattr(study, "said", lambda model, items: ["yes", "blue", "no"])   # "blue": wrong, yet no "yes"
    monkeypatch.setattr(study, "explanation_features",
                        lambda model, items: pd.DataFrame({"expected": [e.expected for e in items]}))
    features, rate = study.yes_answers(None, examples)
    assert len(features) == 1 and features["hallucinated"].all() and rate.mean == pytest.approx(1 / 3)


def test_a_users_set_without_every_question_type_is_refused_in_one_line():
    from llavamech.errors import LlavamechError
    sets = {"colour": typed_examples(2, "colour"), "existence": typed_examples(2, "existence")}
    with pytest.raises(LlavamechError, match=r"^mine.jsonl: no reverse, counting, position questions; .*--type TYPE"):
        study.check_types(sets, "mine.jsonl")
    study.check_types({t: typed_examples(1, t) for t in ("colour", "reverse", "existence", "counting", "position")},
                      "mine.jsonl")


def test_a_causal_check_refuses_an_item_without_its_true_answer():
    from llavamech.errors import LlavamechError
    from llavamech.interventions import colour_targets
    unknown = Example(image=None, animal="dog", source="mine.jsonl:4")
    with pytest.raises(LlavamechError, match="^mine.jsonl:4: no true answer"):
        colour_targets(None, [unknown])


def test_absent_variants_refuse_a_scene_whose_animals_are_unknown():
    from llavamech.errors import LlavamechError
    with pytest.raises(LlavamechError, match="^mine.jsonl:2: no facts"):
        study.absent_variants([Example(image=None, animal="dog", colour="brown", source="mine.jsonl:2")])


def test_a_correlation_between_two_sets_resamples_each_on_its_own():
    """Different examples in the two sets: the interval resamples each set independently; a set with itself at
    another size still correlates fully, and the interval stays a correlation's."""
    from scipy.stats import pearsonr
    rng = np.random.default_rng(2)
    signal = rng.exponential(size=(1, 4, 8))
    a, b = signal + rng.normal(0, 0.3, (30, 4, 8)), signal + rng.normal(0, 0.3, (50, 4, 8))
    r = study.correlation(a, b, n_boot=500)
    assert r.mean == pytest.approx(pearsonr(a.mean(0).ravel(), b.mean(0).ravel()).statistic)
    assert -1 <= r.low < r.high <= 1 and r.n == 30
    assert study.correlation(a, a[:10], n_boot=200).high == 1.0
    with pytest.raises(ValueError, match="per-example head scores"):
        study.correlation(a, b[:, :2])


def test_the_two_set_interval_holds_its_value_about_95_percent_of_the_time():
    """Chapter 6's check of its own intervals, on two sets of different sizes sharing their busy heads (the idle
    half of the heads pure noise): the nested bootstrap, each set drawn on its own, finds the interval near 95 %."""
    rng = np.random.default_rng(6)
    busy = np.where(rng.random(32) < 0.5, rng.exponential(0.6, 32), 0.0)

    def noisy(n):
        return (busy + (busy + 0.05) * rng.standard_normal((n, 32))).reshape(n, 4, 8)
    held = study.correlation_coverage(noisy(80), noisy(120), reps=150, n_boot=300)
    assert held.high >= 0.95 and held.mean >= 0.85 and held.n == 150, held
    with pytest.raises(ValueError, match="per-example head scores"):
        study.correlation_coverage(noisy(10), noisy(10)[:, :2])


def test_a_difference_of_two_correlations_with_one_reference_shares_the_reference_s_draws():
    """r(a, ref) - r(b, ref), each set resampled on its own and the reference once for both: against the
    resample-by-resample definition, and a clear difference is told apart where a null one is not."""
    from llavamech.stats import pearson
    rng = np.random.default_rng(4)
    signal = rng.exponential(size=(1, 4, 8))
    ref, close, far = (signal * w + rng.normal(0, 0.5, (n, 4, 8)) for w, n in ((1, 30), (1, 40), (0.0, 35)))
    got = study.correlation_difference(close, far, ref, n_boot=300, seed=9)
    draws = np.random.default_rng(9)
    d_ref, d_a, d_b = (draws.integers(0, len(x), (300, len(x))) for x in (ref, close, far))
    flat = lambda x: x.reshape(len(x), -1)
    boot = np.array([pearson(flat(close)[i].mean(0), flat(ref)[r].mean(0)) - pearson(flat(far)[j].mean(0), flat(ref)[r].mean(0))
                     for r, i, j in zip(d_ref, d_a, d_b)])
    estimate = pearson(flat(close).mean(0), flat(ref).mean(0)) - pearson(flat(far).mean(0), flat(ref).mean(0))
    q_low, q_high = np.percentile(boot, [2.5, 97.5])
    np.testing.assert_allclose([got.mean, got.low, got.high], [estimate, 2 * estimate - q_high, 2 * estimate - q_low],
                               atol=1e-9)
    assert got.low > 0
    same = study.correlation_difference(close, close[::-1].copy(), ref, n_boot=300)
    assert same.low < 0 < same.high
