"""Question types: every template of data/world.json is recognised in any spelling and asked canonically."""
import pytest

from llavamech import questions


def test_every_template_reads_back_as_its_own_type():
    for name, qtype in questions.types().items():
        slots = {"animal": "dog", "colour": "red"}
        asked = qtype.ask(**{k: v for k, v in slots.items() if "{" + k + "}" in qtype.question})
        parsed = questions.parse(asked.text)
        assert parsed == asked and parsed.type == name


@pytest.mark.parametrize("spelling, type_, asked", [
    ("what is the COLOUR of the dog", "colour", "dog"),
    ("Which  animal is red ?", "reverse", "red"),
    ("is there an elephant?", "existence", "elephant"),
    ("How many animals are there", "counting", None),
    ("is the cat on the left or on the right", "position", "cat"),
])
def test_spellings_are_recognised(spelling, type_, asked):
    parsed = questions.parse(spelling)
    assert parsed.type == type_ and parsed.asked == asked


def test_other_questions_have_no_type():
    for q in ("Why?", "Is it a dog?", "How many dogs are there?", "What is the dog doing?"):
        assert questions.parse(q) is None


def test_answers_fit_their_type():
    ask = questions.types()
    assert questions.fits(ask["existence"].ask(animal="dog"), "yes")
    assert not questions.fits(ask["existence"].ask(animal="dog"), "maybe")
    assert questions.fits(ask["counting"].ask(), "three") and not questions.fits(ask["counting"].ask(), "3")
    assert questions.fits(ask["colour"].ask(animal="dog"), "teal")   # a real model's colours are an open set
    assert not questions.fits(ask["colour"].ask(animal="dog"), "dark red")
