"""The model cards' accuracy table (llavamech.cards): Wilson intervals, and which bar a model misses."""
from llavamech import cards
from llavamech.cards import TOP_PATCH_SCENES, accuracy_table, tower_probe, wilson
from llavamech.models import model_card


def test_the_cards_table_gives_intervals_and_says_which_bar_is_missed():
    low, high = wilson(0.5, 100)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60
    cards = {"a": model_card("toy-llava"), "b": model_card("toy-llava-seed1")}
    table = accuracy_table(cards)
    assert table.loc["toy-llava VQA", "a"].startswith(f"{cards['a']['toy-llava VQA']:.3f} [")
    probe = min(c["toy-llava tower probe"]["animal"] for c in cards.values())
    assert table.loc["tower probe: animal", "every model clears it"] == ("yes" if probe >= 0.95 else "no")
    assert table.loc["toy-llava VQA", "n"] == str(cards["a"]["n"])
    assert table.loc["top patch on asked animal", "n"] == str(TOP_PATCH_SCENES)


def test_the_tower_probe_is_given_on_its_own_held_out_animals():
    card = model_card("toy-llava")
    probe = tower_probe(card)
    n = probe["animal"].n
    assert n >= 256 and probe["colour"].n == n
    for name, estimate in probe.items():   # an accuracy over n animals: a whole number of them right
        assert round(estimate.mean * n, 3) == round(estimate.mean * n) and estimate.low < estimate.mean < estimate.high
    assert accuracy_table({"a": card}).loc["tower probe: animal", "n"] == str(n)


def test_the_training_curves_draw_one_panel_per_stage_two_a_row():
    import matplotlib.pyplot as plt
    from llavamech.cards import curves_figure
    history = [{"stage": stage, "step": step, "loss": 1.0 / step, **({"tqa": 0.5} if step == 2 else {})}
               for stage in ("stage2", "vicuna", "clip") for step in (1, 2)]
    fig = curves_figure(history)
    try:
        titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titled == [cards.STAGE_TITLES[s] for s in ("vicuna", "clip", "stage2")] and len(fig.axes) == 4 + 3   # 2×2 panels and 3 accuracy twins
    finally:
        plt.close(fig)
