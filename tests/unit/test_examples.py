"""Example sets: toy draws are held out and well-formed; JSONL files are read, and every kind of bad line is
refused with its line number before anything is computed."""
import json
from dataclasses import replace

import pytest
from PIL import Image

from llavamech import LlavamechError, load
from llavamech.imaging import box_mask, load_image
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
    (dict(GOOD, colour="turquoise", facts=[]), "'turquoise' is not in the model's vocabulary"),
    (dict(GOOD, animal="cow"), "not among the facts"),
    (dict(GOOD, colour="pink"), "\"colour\" 'pink' disagrees with the facts, which make the dog 'brown'"),
    (dict(GOOD, facts=[["dog", "brown"], ["dog", "pink"]]), "'dog' is in the facts twice"),
    (dict(GOOD, answer="blue"), "\"answer\" 'blue' disagrees with \"colour\" 'brown'"),
    ('{"image": "a.png", "animal": "dog", "colour": "brown", "colour": "red"}', '"colour" is given twice'),
    (dict(GOOD, boxes={"unicorn": [1, 2, 30, 29]}), "'unicorn'"),
    ({"image": "a.png", "question": "Is there a cat?", "answer": "no", "facts": [["dog", "brown"]]},
     "the answer 'no' is not in the model's vocabulary: it was not taught existence questions"),
])
def test_bad_lines_name_the_line_and_the_fix(tmp_path, line, message):
    path = write(tmp_path, [GOOD, line])
    with pytest.raises(LlavamechError, match=message) as err:
        read_jsonl(path, vocabulary=lambda w: w in {"dog", "cat", "cow", "brown", "black"})
    assert "set.jsonl:2" in str(err.value) and "\n" not in str(err.value)


def test_the_same_question_of_the_same_image_twice_is_refused_in_any_spelling(tmp_path):
    path = write(tmp_path, [GOOD, dict(GOOD, animal="cat", colour="black", box=None),
                            {"image": "./a.png", "question": "what is the COLOUR of the dog", "answer": "brown"}])
    with pytest.raises(LlavamechError, match=r"set.jsonl:3: asks the same question of the same image as line 1"):
        read_jsonl(path)


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


def test_a_page_refuses_items_without_what_it_measures_naming_the_first(tmp_path):
    boxless = {"image": "a.png", "animal": "cat", "facts": [["dog", "brown"], ["cat", "black"]]}
    path = write(tmp_path, [GOOD, boxless, {"image": "a.png", "animal": "bird"}])
    assert len(load_examples(str(path), needs=("box",), n_examples=1)) == 1      # only the items it will use count
    with pytest.raises(LlavamechError, match=r"set.jsonl:2: no box; this page needs the asked animal's box"):
        load_examples(str(path), needs=("colour", "box"))
    with pytest.raises(LlavamechError, match=r"set.jsonl:3: no colour; .* or run the page with examples=\"toy\""):
        load_examples(str(path), needs=("colour",))
    assert len(load_examples("toy", 3, needs=("colour", "facts", "box"))) == 3


def test_the_model_vocabulary_check(tmp_path):
    from llavamech import load
    model = load("tiny-random-llava")
    assert model.knows("dog") and not model.knows("unicorn")
    path = write(tmp_path, [dict(GOOD, colour="turquoise")])
    with pytest.raises(LlavamechError, match="turquoise"):
        load_examples(str(path), model=model)


def test_questions_of_every_type_are_read_with_their_answers(tmp_path):
    """A question of any type (or free text) is asked as given; its answer, where given, is what accuracy uses."""
    path = write(tmp_path, [{"image": "a.png", "question": "is there a cat", "answer": "no"},
                            {"image": "a.png", "question": "How many animals are there?", "answer": "two"},
                            {"image": "a.png", "question": "Which animal is brown?", "answer": "dog"},
                            {"image": "a.png", "question": "Why is the sky grey?"},
                            {"image": "a.png", "animal": "dog", "colour": "brown"}])
    cat, count, reverse, free, colour = read_jsonl(path)
    assert (cat.animal, cat.question, cat.expected) == ("cat", "is there a cat", "no")
    assert (count.animal, count.expected, reverse.expected) == ("", "two", "dog")
    assert (free.expected, colour.question, colour.expected) == (None, "What is the color of the dog?", "brown")


def test_modes_need_what_they_read():
    with pytest.raises(LlavamechError, match="no facts"):
        Example(image=None, animal="dog").inputs("tqa")
    with pytest.raises(LlavamechError, match="no image"):
        Example(image=None, animal="dog", facts=(("dog", "red"),)).inputs("vqa")


def test_other_spellings_are_read_and_unknown_keys_refused(tmp_path):
    """`color`, `bbox` and a colour `question` are read; any other key is named with its line rather than ignored
    (a misspelt key used to drop accuracy or pointing without a word)."""
    path = write(tmp_path, [{"image": "a.png", "animal": "dog", "color": "brown", "bbox": [1, 2, 30, 29]},
                            {"image": "a.png", "question": "what is the color of the cat", "colour": "black"}])
    first, second = read_jsonl(path)
    assert (first.colour, first.box, second.animal, second.colour) == ("brown", (1, 2, 30, 29), "cat", "black")
    for line, message in [(dict(GOOD, colur="brown"), "unknown key 'colur'"),
                          (dict(GOOD, color="red"), "\"colour\" 'brown' and \"color\" 'red' disagree"),
                          (dict(GOOD, question="Is there a dog?", answer="maybe"),
                           r"'maybe' cannot answer \"Is there a dog\?\", an existence question \(answers: yes, no\)"),
                          (dict(GOOD, question="How many animals are there?", answer="2 or 3"), "cannot answer"),
                          (dict(GOOD, question="What is the color of the cat?"), "asks about the cat but"),
                          (dict(GOOD, animal="dog?"), "\"animal\" must be a word"),
                          (dict(GOOD, colour=5), "\"colour\" must be a word"),
                          (dict(GOOD, box=[True, 1, 5, 5]), "\"box\" must be"),
                          (dict(GOOD, image="a\x00.png"), "NUL byte")]:
        with pytest.raises(LlavamechError, match=message) as err:
            read_jsonl(write(tmp_path, [GOOD, line]))
        assert "set.jsonl:2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("encode, message", [
    (lambda text: text.replace("brown", "br\xe9wn").encode("latin-1"), ":2: not UTF-8"),
    (lambda text: text.encode("utf-16"), ":1: holds NUL bytes"),
    (lambda text: __import__("gzip").compress(text.encode()), "gzip-compressed"),
], ids=["latin-1", "utf-16", "gzip"])
def test_files_that_are_not_utf8_are_one_line(tmp_path, encode, message):
    path = write(tmp_path, [{"image": "a.png", "animal": "cat"}, GOOD])
    path.write_bytes(encode(path.read_text()))
    with pytest.raises(LlavamechError, match=message):
        read_jsonl(path)


def test_line_ends_and_marks_any_editor_writes_are_read(tmp_path):
    path = write(tmp_path, [GOOD])
    line = json.dumps(dict(GOOD, animal="dog\u2028"), ensure_ascii=False)   # str.splitlines would split at U+2028
    cat = json.dumps(dict(GOOD, animal="cat", colour="black", box=None))
    for text in ("\ufeff" + line + "\n", line + "\r" + cat + "\r", line + "\r\n\r\n" + cat + "\r\n"):
        path.write_bytes(text.encode())
        assert [e.animal for e in read_jsonl(path)] == ["dog", "cat"][:1 + (cat in text)]
        assert read_jsonl(path)[-1].source.endswith(f"set.jsonl:{text.count(chr(13)) if chr(13) in text else 1}")


def test_every_image_is_decoded_before_anything_is_computed(tmp_path):
    import numpy as np
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (60, 60, 3), np.uint8)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:900])   # the header intact
    with pytest.raises(LlavamechError, match="set.jsonl:2: .*cut.jpg is not a readable image \\(truncated"):
        read_jsonl(write(tmp_path, [GOOD, dict(GOOD, image="cut.jpg", box=None)]))


@pytest.mark.parametrize("value", [-5, 0, 2.5, "10", True, None], ids=repr)
def test_n_examples_must_be_a_whole_number(tmp_path, value):
    """papermill hands over what was typed: -5 used to slice off the last five items and compute on."""
    path = write(tmp_path, [dict(GOOD, image=f"a{i}.png") for i in range(12)])
    for i in range(12):
        Image.new("RGB", (40, 30), "grey").save(tmp_path / f"a{i}.png")
    for examples in (str(path), "toy"):
        if value is None and examples != "toy":
            assert len(load_examples(examples, value)) == 12   # None: the whole file
            continue
        with pytest.raises(LlavamechError, match="n_examples must be"):
            load_examples(examples, value)


def test_chapter_parameters_are_checked_in_one_line(tmp_path):
    from llavamech.examples import check_parameters

    check_parameters(model="toy-llava", device="auto", examples="toy", n_examples=200, seed=0, image=None,
                     question="What is the color of the dog?", n_heads=3, ks=[1, 3, 5], k=None)
    for bad, message in [(dict(n_examples=2.5), "n_examples must be a whole number of at least 1, got 2.5"),
                         (dict(n_examples=-5), "got -5"), (dict(n_examples="ten"), "got 'ten'"),
                         (dict(seed=-1), "seed must be a whole number of at least 0"),
                         (dict(device="gpu"), "unknown device 'gpu'"), (dict(model=""), "model must be a name"),
                         (dict(examples=5), "examples must be \"toy\" or"),
                         (dict(examples=str(tmp_path / "none.jsonl")), "example file not found"),
                         (dict(image=str(tmp_path / "none.png")), "image not found"),
                         (dict(question=" "), "question must be text"), (dict(ks=[1, 0]), "ks must be"),
                         (dict(ablation="median"), "ablation must be \"mean\" or \"zero\", got 'median'"),
                         (dict(methods="tool"), "methods must be a list such as"),
                         (dict(methods=[]), "methods must be a list such as"),
                         (dict(files={"seed_study": str(tmp_path / "no.csv")}), "seed_study: file not found")]:
        with pytest.raises(LlavamechError, match=message) as err:
            check_parameters(**bad)
        assert "\n" not in str(err.value)


def test_an_examples_box_mask_is_the_imaging_mask_of_its_box_or_none():
    processor = load("tiny-random-llava").processor.image_processor
    example = toy_examples(1, seed=5)[0]
    assert (example.box_mask(processor, (8, 8)) ==
            box_mask(example.box, load_image(example.image).size, processor, (8, 8))).all()
    assert example.box_mask(processor, (8, 8)).any()
    assert replace(example, box=None).box_mask(processor, (8, 8)) is None
    assert replace(example, box=(0, 0, 1, 1)).box_mask(processor, (8, 8)) is None   # holds no patch's centre
