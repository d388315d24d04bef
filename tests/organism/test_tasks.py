"""Items of every question type: answers follow the scene, the split holds, the prompts are the library's."""
import random
from collections import Counter

from llavamech import questions
from llavamech.organism import tasks
from llavamech.organism.recipe import is_held_out


def _question_line(prompt: str) -> str:
    return prompt.split("\n")[-2]


def test_scene_items_answer_what_the_scene_shows():
    rng = random.Random(0)
    for qtype in tasks.type_names():
        for _ in range(40):
            item = tasks.scene_item(rng, qtype, want_held_out=False)
            names = [a.name for a in item.scene.animals]
            asked = questions.parse(_question_line(item.prompt))
            assert asked.type == qtype and item.prompt.endswith(asked.answer_prefix)
            if qtype == "colour":
                assert item.answer == dict(item.facts)[item.asked]
            elif qtype == "reverse":
                assert dict(item.facts)[item.answer] == item.asked
            elif qtype == "existence":
                assert item.answer == ("yes" if item.asked in names else "no")
            elif qtype == "counting":
                assert item.answer == tasks.COUNTS[len(names) - 1]
            else:
                box = next(a.box for a in item.scene.animals if a.name == item.asked)
                assert item.answer == tasks.side(box, item.scene.image.width) is not None


def test_text_items_state_their_facts_and_ask_one_question():
    rng = random.Random(1)
    for qtype in tasks.type_names(text=True):
        item = tasks.text_item(rng, qtype, want_held_out=False)
        context = item.prompt.split("\n")[0].removeprefix("USER: ")
        assert questions.parse(_question_line(item.prompt)).type == qtype
        assert context.count(".") == len(item.facts)
        assert item.answer in questions.types()[qtype].answers


def test_the_split_holds_and_the_colour_type_keeps_the_colour_organisms_keys():
    rng = random.Random(2)
    for qtype in tasks.type_names():
        train = [tasks.scene_item(rng, qtype, want_held_out=False, size=64) for _ in range(30)]
        held = [tasks.scene_item(rng, qtype, want_held_out=True, size=64) for _ in range(10)]
        assert not any(tasks.held_out(qtype, i.facts, i.asked) for i in train)
        assert all(tasks.held_out(qtype, i.facts, i.asked) for i in held)
    item = tasks.scene_item(rng, "colour", want_held_out=True, size=64)
    assert is_held_out(item.facts, item.asked)


def test_closed_answers_are_balanced():
    rng = random.Random(3)
    for qtype, share in (("existence", 0.5), ("position", 0.5), ("counting", 1 / 3)):
        answers = Counter(tasks.scene_item(rng, qtype, False, size=64).answer for _ in range(300))
        assert all(abs(n / 300 - share) < 0.1 for n in answers.values()), (qtype, answers)


def test_side_is_the_half_holding_the_box_centre_outside_the_margin():
    assert tasks.side((0, 0, 20, 20), 100) == "left"
    assert tasks.side((70, 0, 100, 20), 100) == "right"
    assert tasks.side((40, 0, 60, 20), 100) is None      # centre at the middle
    assert tasks.side((45, 0, 64, 20), 100) is None      # 4.5 % right of the middle: within 10 %
