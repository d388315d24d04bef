"""The model cards' accuracy table (llavamech.cards): Wilson intervals, and which bar a model misses."""
from llavamech.cards import accuracy_table, wilson
from llavamech.models import model_card


def test_the_cards_table_gives_intervals_and_says_which_bar_is_missed():
    low, high = wilson(0.5, 100)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60
    cards = {"a": model_card("toy-llava"), "b": model_card("toy-llava-seed1")}
    table = accuracy_table(cards)
    assert table.loc["toy-llava VQA", "a"].startswith(f"{cards['a']['toy-llava VQA']:.3f} [")
    probe = min(c["toy-llava tower probe"]["animal"] for c in cards.values())
    assert table.loc["tower probe: animal", "every model clears it"] == ("yes" if probe >= 0.95 else "no")
