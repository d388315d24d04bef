"""Example sets: toy draws are held out and well-formed; JSONL files are read, and every kind of bad line is
refused with its line number before anything is computed."""
import json

import pytest
from PIL import Image

from llavamech import LlavamechError
from llavamech.examples import Example, load_examples, read_jsonl, toy_examples
from llavamech.organism.recipe import is_held_out


def test_toy_examples_are_held_out_paired_and_boxed():
    items = toy_examples(30, seed=3)
    assert len(items) == 30
    for e in items:
        assert is_held_out(list(e.facts), e.animal)
        assert dict(e.facts)[e.animal] == e.colour and len(e.distractors) == len(e.facts) - 1 >= 1
        x0, y0, x1, y1 = e.box
        assert 0 <= x0 < x1 <= e.image.width and 0 <= y0 < y1 <= e.image.height
        assert e.inputs("vqa") == dict(image=e.image, question=f"What is the color of the {e.animal}?")
        assert f"The {e.animal} is {e.colour}." in e.inputs("tqa")["context"]
    assert [e.animal for e in toy_examples(30, seed=3)] == [e.animal for e in items]
    assert [e.animal for e in toy_examples(30, seed=4)] != [e.animal for e in items]


def test_asking_another_animal_keeps_the_scene():
    e = toy_examples(1, seed=0)[0]
    other = e.asking(e.distractors[0])
    assert other.image is e.image and other.animal == e.distractors[0]
    assert other.colour == dict(e.facts)[other.animal] and other.box == dict(e.boxes)[other.animal] != e.box
    absent = e.asking(next(a for a in ("dog", "cat", "horse", "cow", "bird") if a not in dict(e.facts)))
    assert absent.colour is None and absent.box is None


def write(tmp_path, lines, image_size=(40, 30)):
    Image.new("RGB", image_size, "grey").save(tmp_path / "a.png")
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


GOOD = {"image": "a.png", "animal": "dog", "colour": "brown", "box": [1, 2, 30, 29],
        "facts": [["dog", "brown"], ["cat", "black"]]}


def test_a_good_file_reads_with_paths_relative_to_it(tmp_path):
    path = write(tmp_path, [GOOD, {"image": "a.png", "animal": "cat", "facts": [["dog", "brown"], ["cat", "black"]]}])
    first, second = read_jsonl(path, vocabulary=lambda w: True)
    assert first.image == (tmp_path / "a.png").resolve() and first.box == (1, 2, 30, 29)
    assert second.colour == "black" and second.box is None  # the colour comes from the facts
    assert first.source.endswith("set.jsonl:1")


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ({"animal": "dog"}, '"image" is missing'),
    (dict(GOOD, image="missing.png"), "image not found"),
    (dict(GOOD, box=[0, 0, 50, 10]), "not inside the 40x30 image"),
    (dict(GOOD, box=[5, 5, 2, 9]), "not inside"),
    (dict(GOOD, animal="unicorn", facts=[]), "'unicorn' is not in the model's vocabulary"),
    (dict(GOOD, colour="turquoise"), "'turquoise' is not in the model's vocabulary"),
    (dict(GOOD, animal="cow"), "not among the facts"),
])
def test_bad_lines_name_the_line_and_the_fix(tmp_path, line, message):
    path = write(tmp_path, [GOOD, line])
    with pytest.raises(LlavamechError, match=message) as err:
        read_jsonl(path, vocabulary=lambda w: w in {"dog", "cat", "cow", "brown", "black"})
    assert "set.jsonl:2" in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_image_is_refused(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    path = write(tmp_path, [dict(GOOD, image="bad.png")])
    with pytest.raises(LlavamechError, match="not a readable image"):
        read_jsonl(path)


def test_asking_for_more_examples_than_the_file_holds(tmp_path):
    path = write(tmp_path, [GOOD])
    with pytest.raises(LlavamechError, match="n_examples = 5 but .* holds 1 examples"):
        load_examples(str(path), n_examples=5)
    assert len(load_examples(str(path), n_examples=1)) == 1


def test_the_model_vocabulary_check(tmp_path):
    from llavamech import load
    model = load("tiny-random-llava")
    assert model.knows("dog") and not model.knows("unicorn")
    path = write(tmp_path, [dict(GOOD, colour="turquoise")])
    with pytest.raises(LlavamechError, match="turquoise"):
        load_examples(str(path), model=model)


def test_modes_need_what_they_read():
    with pytest.raises(LlavamechError, match="no facts"):
        Example(image=None, animal="dog").inputs("tqa")
    with pytest.raises(LlavamechError, match="no image"):
        Example(image=None, animal="dog", facts=(("dog", "red"),)).inputs("vqa")
