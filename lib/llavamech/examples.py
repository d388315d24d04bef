"""Paired evaluation sets: the same animal–colour facts as a scene (VQA) and as text (TQA).

Every chapter and the dataset runner read one of these. Drawn from the toy world under a seed (`"toy"`), or read
from a JSONL file, one item a line (paths relative to the file, UTF-8; `colour`, `box`, `facts`, `boxes` optional):

    {"image": "photo.jpg", "animal": "dog", "colour": "brown", "box": [x0, y0, x1, y1],
     "facts": [["dog", "brown"], ["cat", "black"]]}

`box` is the asked animal's bounding box in the image's own pixels; `facts` are the animal–colour pairs of the
scene, which the TQA prompt states as text ("The dog is brown. The cat is black."); `boxes` gives every animal's
box, {"dog": [x0, y0, x1, y1], "cat": [...]}, which the patch-map evaluation needs to tell the asked animal from the
others (`box`, where both are given, must be the asked animal's entry). `color` and `bbox` are read as
`colour` and `box`; a colour `question` ("What is the color of the dog?") may stand for `animal`; any other key is
refused. Other questions are given as `question`, with their true `answer` where known (it must fit the question's
type, llavamech.questions):

    {"image": "photo.jpg", "question": "Is there a cat?", "answer": "no", "animal": "cat"}
    {"image": "photo.jpg", "question": "How many animals are there?", "answer": "two"}
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from .errors import LlavamechError
from .imaging import box_mask, load_image
from .paths import refuse_overwrite
from .validate import whole
from .devices import resolve_device
from .organism import recipe, tasks
from .organism.world import load_world, make_scene, tqa_context
from . import questions

WORDS = re.compile(r"\w+(?: \w+)*")


@dataclass(frozen=True)
class Example:
    image: object                      # a PIL image or a path; None for text-only sets
    animal: str                        # the asked animal
    colour: str | None = None          # its true colour, when known
    box: tuple[int, int, int, int] | None = None   # the asked animal's box (x0, y0, x1, y1) in image pixels
    facts: tuple[tuple[str, str], ...] = ()        # every (animal, colour) of the scene, the asked one included
    source: str = ""                   # where it came from: "toy seed 0 #3" or "my.jsonl:3"
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()   # every animal's box, where known (toy scenes)
    asked: str | None = None           # the question, when it is not the colour question about `animal`
    answer: str | None = None          # its true answer, when it is not `colour`
    stated: str | None = None          # the facts as text, when they are not the animal–colour facts (position)

    @property
    def question(self) -> str:
        return self.asked or f"What is the color of the {self.animal}?"

    @property
    def expected(self) -> str | None:
        """The true answer: `answer`, or for the colour question the animal's `colour`; None when unknown."""
        return self.answer if self.answer is not None else self.colour if self.asked is None else None

    @property
    def context(self) -> str | None:
        """The facts as TQA text, or None when the item has no facts."""
        return self.stated or (tqa_context(list(self.facts)) if self.facts else None)

    @property
    def distractors(self) -> tuple[str, ...]:
        """The other animals of the scene."""
        return tuple(a for a, _ in self.facts if a != self.animal)

    def box_mask(self, image_processor, grid_shape):
        """[rows, cols] booleans: the patches of the model's grid inside the asked animal's box
        (`imaging.box_mask`); None when the item has no box, or none the model sees (a box too small to hold a
        patch's centre, or outside the centre crop): where the map points is then undefined, not a miss."""
        if self.box is None:
            return None
        mask = box_mask(self.box, load_image(self.image).size, image_processor, tuple(grid_shape))
        return mask if mask.any() else None

    def asking(self, animal: str) -> "Example":
        """The same scene, asking about another animal (its colour and box where the facts and boxes know them)."""
        return replace(self, animal=animal, colour=dict(self.facts).get(animal), box=dict(self.boxes).get(animal))

    def inputs(self, mode: str) -> dict:
        """Keyword arguments of Model.trace / Model.inputs: mode "vqa" (image + question) or "tqa" (facts + question)."""
        if mode == "vqa":
            if self.image is None:
                raise LlavamechError(f"{self.source}: no image, so no VQA prompt; use mode 'tqa'")
            return dict(image=self.image, question=self.question)
        if mode == "tqa":
            if not self.context:
                raise LlavamechError(f"{self.source}: no facts, so no TQA prompt; add \"facts\" to the item")
            return dict(question=self.question, context=self.context)
        raise LlavamechError(f"unknown mode '{mode}'; use 'vqa' or 'tqa'")


def example_list(caller: str, examples) -> list[Example]:
    """`examples` as a non-empty list of Example, or one line: a single Example, a path or nothing are refused."""
    if isinstance(examples, Example):
        raise LlavamechError(f"{caller} takes a list of examples: pass [example]")
    if isinstance(examples, (str, bytes)) or not hasattr(examples, "__iter__"):
        raise LlavamechError(f"{caller} takes a list of examples (llavamech.examples), not {type(examples).__name__}: "
                             "read a file with load_examples(path)")
    examples = list(examples)
    if not examples:
        raise LlavamechError(f"{caller} needs at least one example, got none")
    if not all(isinstance(e, Example) for e in examples):
        odd = next(e for e in examples if not isinstance(e, Example))
        raise LlavamechError(f"{caller} takes Example items (llavamech.examples), not {type(odd).__name__}")
    return examples


def toy_examples(n: int, seed: int = 0, animals: tuple[int, int] = (2, 3)) -> list[Example]:
    """n paired examples from the toy world, on held-out keys only (never trained on): scenes of 2–3 animals by
    default (a distractor is always present), canvases of 64–128 px, boxes from the scene generator."""
    whole("n", n, 1)
    whole("seed", seed, 0)
    most = load_world().spec["scene"]["animals_per_scene"][1]
    if not (isinstance(animals, (tuple, list)) and len(animals) == 2):
        raise LlavamechError(f"animals must be (least, most) animals per scene such as (2, 3), got {animals!r}")
    whole("animals: the least", animals[0], 1, most, f" (a scene holds at most {most})")
    whole("animals: the most", animals[1], animals[0], most, f" (a scene holds at most {most})")
    rng = random.Random(f"{seed}:examples")
    out = []
    for i in range(n):
        scene, facts, asked = recipe.colour_scene(rng, True, animals, sizes=recipe.EVALUATION_SIZES)
        boxes = tuple((a.name, a.box) for a in scene.animals)
        out.append(Example(scene.image, asked, dict(facts)[asked], dict(boxes)[asked], tuple(facts),
                           f"toy seed {seed} #{i}", boxes))
    return out


def typed_examples(n: int, qtype: str, seed: int = 0, text: bool = False) -> list[Example]:
    """n held-out examples of one question type (data/world.json "question_types") from the toy world: scenes of
    1–3 animals on canvases of 64–128 px, or with `text` the facts stated as text. `animal` is the animal the
    answer is about (for reverse lookup, the answer itself; "" for counting), with its box where it is in the
    scene. The colour type gives colour examples as `toy_examples` makes them."""
    if qtype not in tasks.type_names(text=text):
        raise LlavamechError(f"unknown question type '{qtype}'; use one of {', '.join(tasks.type_names(text=text))}")
    whole("n", n, 1)
    whole("seed", seed, 0)
    rng = random.Random(f"{seed}:{qtype}:{'text' if text else 'scene'}:examples")
    out = []
    for i in range(n):
        item = tasks.text_item(rng, qtype, True) if text else tasks.scene_item(rng, qtype, True)
        boxes = tuple((a.name, a.box) for a in item.scene.animals) if item.scene else ()
        animal = item.answer if qtype == "reverse" else item.asked or ""
        colour = dict(item.facts).get(animal)
        out.append(Example(item.scene.image if item.scene else None, animal, colour, dict(boxes).get(animal),
                           tuple(item.facts), f"toy {qtype} seed {seed} #{i}", boxes,
                           asked=None if qtype == "colour" else item.question,
                           answer=None if qtype == "colour" else item.answer,
                           stated=item.context if text and qtype == "position" else None))
    return out


def composed(pairs: list[tuple[str, str]], asked: str, layout: int = 0, size: int = 128) -> Example:
    """One toy scene with the given (animal, colour) pairs, laid out under the `layout` seed, asking about `asked`
    (which need not be in the scene)."""
    scene = make_scene(random.Random(f"{layout}:layout"), size=size, pairs=list(pairs))
    boxes = tuple((a.name, a.box) for a in scene.animals)
    return Example(scene.image, asked, dict(pairs).get(asked), dict(boxes).get(asked), tuple(pairs),
                   f"composed layout {layout}", boxes)


def read_jsonl(path, vocabulary=None) -> list[Example]:
    """Read and check an example file. `vocabulary(word) -> bool` says which words the model knows.
    Any problem raises LlavamechError naming the line and what to fix; nothing is computed before that (every
    image is decoded in full here, so a damaged one is found now, not halfway through a run)."""
    if vocabulary is not None and not callable(vocabulary):
        raise LlavamechError("vocabulary must be a function word -> bool (e.g. a model's knows), or None")
    path = example_file(path)
    out, first = [], {}
    for number, line in enumerate(_lines(path), 1):
        if line.strip():
            item = _parse(line, f"{path}:{number}", path.parent, vocabulary)
            # the same question of the same image twice would count twice in every mean and interval
            typed = questions.parse(item.question)
            key = (item.image, (typed.type, tuple(sorted(typed.slots.items()))) if typed else
                   " ".join(item.question.lower().split()))
            if key in first:
                raise LlavamechError(f"{path}:{number}: asks the same question of the same image as line "
                                     f"{first[key]}; remove one (it would count twice)")
            first[key] = number
            out.append(item)
    if not out:
        raise LlavamechError(f"{path} holds no examples (one JSON object a line)")
    return out


def _lines(path: Path) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading byte-order mark allowed), or one line saying what it is instead.
    Lines end at \\n, \\r\\n or \\r only: str.splitlines would also split inside JSON strings at U+2028 and the like."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LlavamechError(f"cannot read the example file {path}: {e.strerror}") from None
    if data.startswith(b"\x1f\x8b"):
        raise LlavamechError(f"{path} is gzip-compressed; decompress it first (gunzip), example files are plain JSONL")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        line = data[:data.find(b"\x00")].count(b"\n") + 1 if b"\x00" in data else 1
        what = "holds NUL bytes" if b"\x00" in data else "starts with a UTF-16 byte-order mark"
        raise LlavamechError(f"{path}:{line}: {what} (a UTF-16 file?); save the file as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise LlavamechError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}; Latin-1?); save the file as "
                             "UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


KEYS = ("image", "animal", "question", "answer", "colour", "box", "facts", "boxes")
ALIASES = {"color": "colour", "bbox": "box"}   # the spellings the prompt and COCO use; colour and box are canonical


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _parse(line: str, where: str, folder: Path, vocabulary) -> Example:
    def fail(what):
        raise LlavamechError(f"{where}: {what}")

    try:
        item = json.loads(line, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        fail(f"not valid JSON ({e.msg}); write one object a line")
    except _DuplicateKey as e:   # JSON would keep the last silently: which one was meant is not ours to guess
        fail(f"\"{e.args[0]}\" is given twice on this line; keep one")
    if not isinstance(item, dict):
        fail("expected a JSON object like {\"image\": ..., \"animal\": ...}")
    item = _canonical_keys(item, fail)
    animal, asked = _asked(item, fail)
    if not isinstance(item.get("image"), str) or not item["image"].strip():
        fail("\"image\" is missing or not a string")
    if "\x00" in item["image"]:
        fail(f"the image path {item['image']!r} holds a NUL byte")
    image = (folder / item["image"]).resolve()
    size = _image_size(image, fail)
    facts = item.get("facts") or []
    if not (isinstance(facts, list) and all(isinstance(f, list) and len(f) == 2 and all(isinstance(w, str) for w in f)
                                            for f in facts)):
        fail("\"facts\" must be a list of [animal, colour] pairs")
    facts = tuple((a.strip(), c.strip()) for a, c in facts)
    twice = next((a for i, (a, _) in enumerate(facts) if a in [b for b, _ in facts[:i]]), None)
    if twice is not None:   # the text prompt would state two colours for one animal
        fail(f"'{twice}' is in the facts twice; give each animal of the scene once")
    colour = item.get("colour")
    if colour is not None and not isinstance(colour, str):
        fail(f"\"colour\" must be a word such as \"brown\", got {colour!r}")
    colour = colour.strip() if colour and colour.strip() else dict(facts).get(animal)
    if colour and dict(facts).get(animal, colour) != colour:   # the prompt states the facts, the score reads colour
        fail(f"\"colour\" '{colour}' disagrees with the facts, which make the {animal} '{dict(facts)[animal]}'")
    if facts and animal and animal not in dict(facts) and (asked is None or asked.type != "existence"):
        fail(f"the asked animal '{animal}' is not among the facts {[a for a, _ in facts]}")
    answer = _answer(item, asked, fail)
    if answer and colour and (asked is None or asked.type == "colour") and answer != colour:
        fail(f"\"answer\" '{answer}' disagrees with \"colour\" '{colour}' for this colour question; give one")
    words = ([animal] if animal else []) + ([colour] if colour else []) + ([answer] if answer else []) + \
        [w for f in facts for w in f]
    unknown = [w for w in words if vocabulary is not None and not vocabulary(w)]
    if unknown and asked is not None and asked.type != "colour" and unknown[0] == answer:
        # the answers of a question type ("yes", "two") are words a model learns only with the type
        fail(f"the answer '{answer}' is not in the model's vocabulary: it was not taught {asked.type} questions "
             "(of the toy organism, toy-llava-multi is)")
    if unknown:
        fail(f"'{unknown[0]}' is not in the model's vocabulary; use words it knows (the toy organism: data/world.json)")
    box = item.get("box")
    if box is not None:
        box = _check_box(box, size, fail)
    boxes = _boxes(item.get("boxes"), size, fail)
    stray = next((a for a, _ in boxes if facts and a not in dict(facts)), None)
    if stray is not None:   # a box for an animal the scene does not hold would be scored as its evidence
        fail(f"\"boxes\" gives a box for '{stray}', which is not among the facts {[a for a, _ in facts]}; give the "
             "boxes of the scene's animals")
    listed = dict(boxes).get(animal)
    if box is not None and listed is not None and listed != box:
        fail(f"\"box\" {list(box)} and the {animal}'s entry in \"boxes\" {list(listed)} disagree; give one")
    box = box if box is not None else listed
    return Example(image, animal, colour, box, facts, where, boxes,
                   asked=None if asked is not None and asked.type == "colour" else item.get("question", "").strip() or None,
                   answer=answer)


def _boxes(boxes, size, fail) -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """Every animal's box, {"dog": [x0, y0, x1, y1], ...}, as Example.boxes."""
    if boxes is None:
        return ()
    if not isinstance(boxes, dict) or not all(isinstance(a, str) and WORDS.fullmatch(a.strip()) for a in boxes):
        fail("\"boxes\" must map each animal to its box, {\"dog\": [x0, y0, x1, y1], \"cat\": [...]}")
    names = [a.strip() for a in boxes]
    if len(set(names)) < len(names):
        fail("an animal is in \"boxes\" twice; give each animal of the scene once")
    return tuple((a.strip(), _check_box(box, size, fail, f'the {a.strip()}\'s entry in "boxes"'))
                 for a, box in boxes.items())


def _canonical_keys(item: dict, fail) -> dict:
    """The item with `color` and `bbox` read as `colour` and `box`; a key llavamech does not read is refused rather
    than ignored (a misspelt "colour" would otherwise silently drop accuracy)."""
    unknown = [k for k in item if k not in KEYS and k not in ALIASES]
    if unknown:
        fail(f"unknown key {', '.join(map(repr, unknown))}; an item has {', '.join(KEYS)} "
             f"({', '.join(f'{a} = {k}' for a, k in ALIASES.items())})")
    out = {k: v for k, v in item.items() if k in KEYS}
    for alias, key in ALIASES.items():
        if alias in item:
            if key in item and item[key] != item[alias]:
                fail(f"\"{key}\" {item[key]!r} and \"{alias}\" {item[alias]!r} disagree; give one of them")
            out[key] = item[alias]
    return out


def _asked(item: dict, fail):
    """(the asked animal, the parsed question or None). A colour question may stand for "animal" (both: they must
    agree); any other question (llavamech.questions' types, or free text) is asked as given, about "animal" where
    its type names one. The animal is words alone; it may be empty for a question about no animal (counting)."""
    animal = item.get("animal")
    if animal is not None and (not isinstance(animal, str) or not WORDS.fullmatch(animal.strip())):
        fail(f"\"animal\" must be a word such as \"dog\", got {animal!r}")
    question = item.get("question")
    if question is None:
        if animal is None:
            fail("\"animal\" is missing (or give a \"question\" such as \"What is the color of the dog?\")")
        return animal.strip(), None
    if not isinstance(question, str) or not question.strip():
        fail(f"\"question\" must be text such as \"What is the color of the dog?\", got {question!r}")
    parsed = questions.parse(question)
    named = parsed.slots.get("animal") if parsed else None
    if named is not None and animal is not None and animal.strip() != named:
        fail(f"\"question\" asks about the {named} but \"animal\" is '{animal.strip()}'")
    return named or (animal.strip() if animal is not None else ""), parsed


def _answer(item: dict, asked, fail) -> str | None:
    """The item's "answer", which must fit its question's type (yes/no, one/two/three, left/right; one word)."""
    answer = item.get("answer")
    if answer is None:
        return None
    if not isinstance(answer, str) or not answer.strip():
        fail(f"\"answer\" must be a word, got {answer!r}")
    answer = answer.strip()
    if asked is not None and not questions.fits(asked, answer):
        allowed = questions.types()[asked.type].answers
        fail(f"\"answer\" '{answer}' cannot answer \"{asked.text}\", {'an' if asked.type[0] in 'aeiou' else 'a'} {asked.type} question"
             + (f" (answers: {', '.join(allowed)})" if asked.type in ("existence", "counting", "position") else
                " (the answer is one word)"))
    if asked is None and not re.fullmatch(r"\w+", answer):
        fail(f"\"answer\" '{answer}' must be one word (the answer is the next token)")
    return answer


def _image_size(image: Path, fail) -> tuple[int, int]:
    """The size of the image as the model will see it (upright), decoding it in full."""
    if image.is_dir():
        fail(f"\"image\" names the folder {image}; name an image file in it")
    if not image.is_file():
        fail(f"image not found: {image} (paths are relative to the example file)")
    try:
        return load_image(image).size
    except LlavamechError as e:
        fail(str(e))


def _check_box(box, size, fail, name: str = '"box"') -> tuple[int, int, int, int]:
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        fail(f"{name} must be [x0, y0, x1, y1] in pixels")
    x0, y0, x1, y1 = box
    w, h = size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        fail(f"box {box} is not inside the {w}x{h} image (need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height; "
             "a box is two corners, not COCO's [x, y, width, height])")
    return tuple(int(round(v)) for v in box)


NEEDS = {"colour": "the asked animal's true colour (\"colour\")", "box": "the asked animal's box (\"box\")",
         "facts": "the scene's facts for the text prompt (\"facts\")"}


def load_examples(examples="toy", n_examples: int | None = None, seed: int = 0, model=None,
                  needs: tuple[str, ...] = ()) -> list[Example]:
    """The chapters' entry point: `"toy"` (drawn under `seed`) or a JSONL path; the first `n_examples` items.
    With a model, every word is checked against its vocabulary before anything is computed. `needs`: fields of
    `NEEDS` that every item must carry for the caller's measures (a COCO file has boxes but no colours): the first
    item without one is named in one line, before anything is computed."""
    _optional_whole("n_examples", n_examples, 1)
    if isinstance(needs, str) or not isinstance(needs, (tuple, list)) or not set(needs) <= NEEDS.keys():
        raise LlavamechError(f"needs must be a tuple of fields among {', '.join(NEEDS)}, such as (\"box\",); "
                             f"got {needs!r}")
    if isinstance(examples, str) and examples == "toy":
        if n_examples is None:
            raise LlavamechError("n_examples must be given for the toy examples (how many scenes to draw)")
        _optional_whole("seed", seed, 0)
        return toy_examples(n_examples, seed)
    items = read_jsonl(examples, vocabulary=model.knows if model is not None else None)
    if n_examples is not None and n_examples > len(items):
        raise LlavamechError(f"n_examples = {n_examples} but {examples} holds {len(items)} examples; "
                             f"lower n_examples to at most {len(items)}")
    items = items[:n_examples]
    for item in items:
        for field in needs:
            if not getattr(item, field):
                raise LlavamechError(f"{item.source}: no {field}; this page needs {NEEDS[field]} on every item: add "
                                     f"it to each line, or run the page with examples=\"toy\"")
    return items


def check_parameters(*, model=None, device=None, examples=None, n_examples=None, seed=None, image=None,
                     question=None, ablation=None, methods=None, files=None, **counts) -> None:
    """A chapter's parameters (papermill's -p), checked in its first cell before anything is loaded: one
    LlavamechError line for the first that cannot work. None is the chapter's default and passes. `ablation`:
    "mean" or "zero"; `methods`: a list of patch method names; `files`: {name: path} that must exist. `counts` are
    further whole numbers that must be at least 1 (n_heads=3, draws=20; a list such as ks=[1, 3, 5] item by item)."""
    _one_line_errors()
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise LlavamechError(f"model must be a name such as toy-llava or llava-hf/llava-1.5-7b-hf, got {model!r}")
    if device is not None:
        if not isinstance(device, str):
            raise LlavamechError(f"device must be cpu, cuda, cuda:N, mps or auto, got {device!r}")
        resolve_device(device)
    if examples is not None and examples != "toy":
        example_file(examples, hint=" (examples is \"toy\" or the path of a JSONL file)")
    _optional_whole("n_examples", n_examples, 1)
    _optional_whole("seed", seed, 0)
    if image is not None:
        load_image(image)
    if question is not None and (not isinstance(question, str) or not question.strip()):
        raise LlavamechError(f"question must be text such as 'What is the color of the dog?', got {question!r}")
    if ablation is not None and ablation not in ("mean", "zero"):
        raise LlavamechError(f"ablation must be \"mean\" or \"zero\", got {ablation!r}")
    if methods is not None and (isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods
                                or not all(isinstance(m, str) for m in methods)):   # each name: patches.check_method
        raise LlavamechError(f"methods must be a list such as [\"tool\", \"ablation\"], got {methods!r} "
                             "(on the command line: -p methods '[\"tool\"]')")
    for name, path in (files or {}).items():
        if path is not None and not Path(str(path)).is_file():
            raise LlavamechError(f"{name}: file not found: {path}")
    for name, value in counts.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            _optional_whole(name, v, 1)


def _optional_whole(name: str, value, least: int) -> None:
    """papermill hands over what was typed: 2.5, -5, "ten" or True must not be sliced or looped on (None: default)."""
    if value is not None:
        whole(name, value, least)


def _one_line_errors() -> None:
    """In a notebook (a chapter under papermill or Jupyter), show a LlavamechError as its one line, as the CLI
    does, instead of a traceback through the library; the cell still fails, so papermill still stops."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((LlavamechError,), lambda self, etype, value, tb, tb_offset=None:
                             self.showtraceback((etype, value, None), exception_only=True))


def example_file(path, hint: str = "") -> Path:
    """`path` as an existing example file (JSONL), or one LlavamechError line saying why it is not one (the
    one check behind read_jsonl, load_examples, check_parameters and `llavamech run`); `hint` ends the line when
    the file is missing."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise LlavamechError(f"examples must be \"toy\" or the path of an example file (JSONL), got {path!r}")
    path = Path(path).expanduser()
    if "\x00" in str(path):
        raise LlavamechError(f"the example file name {str(path)!r} holds a NUL byte")
    if path.is_dir():
        raise LlavamechError(f"{path} is a folder; give the example file (JSONL) inside it")
    if not path.is_file():
        raise LlavamechError(f"example file not found: {path}{hint}")
    return path


def write_jsonl(examples: list[Example], path, images: str = "images", force: bool = False) -> Path:
    """Write an example set as a JSONL file that `read_jsonl` and `llavamech run` take; in-memory images (the toy
    scenes) are saved as PNGs in the folder `images` beside it, named after the file (examples-00000.png for
    examples.jsonl), so that two files beside each other never share an image. Refuses to replace an existing file
    (the JSONL or an image) unless `force`. Returns the path."""
    examples = example_list("write_jsonl", examples)
    imageless = next((i for i, ex in enumerate(examples) if ex.image is None), None)
    if imageless is not None:
        raise LlavamechError(f"example {imageless} has no image: an example file gives every item an image (text-only "
                             "examples, e.g. typed_examples(..., text=True), are made in code, not read from a file)")
    stale = next((i for i, ex in enumerate(examples) if ex.box and dict(ex.boxes).get(ex.animal, ex.box) != ex.box), None)
    if stale is not None:
        ex = examples[stale]
        raise LlavamechError(f"example {stale} has box {ex.box} but its boxes give the {ex.animal} "
                             f"{dict(ex.boxes)[ex.animal]}: change both (dataclasses.replace(example, box=..., boxes=...))")
    path = Path(path).expanduser()
    if path.is_dir():
        raise LlavamechError(f"{path} is a folder: give the JSONL file to write, e.g. {path / 'examples.jsonl'}")
    if path.suffix != ".jsonl":
        # The images are named after the file's stem, so a.jsonl and a.json beside each other would share them.
        raise LlavamechError(f"{path} does not end in .jsonl: an example file is JSONL; write {path.with_suffix('.jsonl')}")
    folder = path.parent / images
    pictures = {i: folder / f"{path.stem}-{i:05d}.png" for i, ex in enumerate(examples)
                if isinstance(ex.image, Image.Image)}
    refuse_overwrite([path, *pictures.values()], force)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, ex in enumerate(examples):
        if i in pictures:
            image = pictures[i]
            ex.image.save(image)
        else:
            image = Path(ex.image)
        item = {"image": os.path.relpath(image, path.parent), **({"animal": ex.animal} if ex.animal else {})}
        item.update({k: v for k, v in (("question", ex.asked), ("answer", ex.answer), ("colour", ex.colour),
                                       ("box", list(ex.box) if ex.box else None),
                                       ("facts", [list(f) for f in ex.facts] or None),
                                       ("boxes", {a: list(b) for a, b in ex.boxes} or None)) if v is not None})
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


COCO_ANIMALS = "animal"   # COCO's supercategory of bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe


def from_coco(instances, images, out, min_area: float = 0.02, limit: int | None = None, force: bool = False) -> int:
    """An example set from COCO-format instance annotations (e.g. instances_val2017.json): one item per image that
    holds an animal of a kind it shows only once (so "the dog" names one animal), asking about the largest such
    animal covering at least `min_area` of the image, with its box. COCO has no colours: items carry none, so
    runs report answers and maps, not accuracy. `out` never replaces `instances`, and replaces another file only
    under `force`. Returns the number of items written to `out`."""
    instances, images, out = Path(instances), Path(images), Path(out)
    if limit is not None:
        limit = whole("limit", limit)
    if not isinstance(min_area, (int, float)) or isinstance(min_area, bool) or not 0 <= min_area < 1:
        raise LlavamechError(f"min_area is the animal's least share of the image, from 0 to under 1, got {min_area!r}")
    refuse_overwrite([out], force, inputs=[instances])
    categories, files, annotations = _read_coco(instances)
    if not images.is_dir():
        raise LlavamechError(f"images folder not found: {images}")
    by_image: dict[int, list[dict]] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    lines, missing = [], 0
    for image_id in sorted(by_image):
        name, w, h = files[image_id]
        kinds = [a["category_id"] for a in by_image[image_id]]
        single = [a for a in by_image[image_id] if kinds.count(a["category_id"]) == 1
                  and a["bbox"][2] * a["bbox"][3] >= min_area * w * h]
        if not single:
            continue
        if not (images / name).is_file():
            missing += 1
            continue
        a = max(single, key=lambda a: a["bbox"][2] * a["bbox"][3])
        x, y, bw, bh = a["bbox"]
        box = [max(0, round(x)), max(0, round(y)), min(w, round(x + bw)), min(h, round(y + bh))]
        if box[0] >= box[2] or box[1] >= box[3]:   # a box outside its image: the annotation is wrong, not the animal
            continue
        lines.append(json.dumps({"image": os.path.relpath(images / name, out.parent), "animal": categories[a["category_id"]],
                                 "box": box}))
        if limit is not None and len(lines) >= limit:
            break
    if not lines:
        raise LlavamechError(f"no image of {instances} in {images} holds a single animal of its kind")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    if missing:   # a partial download is common: say how much of the annotations it leaves out
        print(f"llavamech: note: {missing} annotated images with a usable animal are not in {images}; left out",
              file=sys.stderr)
    return len(lines)


def _read_coco(instances: Path) -> tuple[dict, dict, list[dict]]:
    """COCO's animal categories {id: name}, images {id: (file name, width, height)} and the animals' annotations,
    each checked: an annotation naming an image the file does not list, or a box that is not [x, y, width, height],
    is refused in one line rather than raising halfway through."""
    try:
        coco = json.loads(instances.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LlavamechError(f"annotations file not found: {instances}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LlavamechError(f"{instances} is not JSON; give COCO instance annotations (instances_*.json)") from None
    if not (isinstance(coco, dict) and all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories"))):
        raise LlavamechError(f"{instances} is not COCO instance annotations (it needs the lists \"images\", "
                             "\"annotations\" and \"categories\")")
    try:
        categories = {c["id"]: c["name"] for c in coco["categories"] if c.get("supercategory") == COCO_ANIMALS}
        files = {im["id"]: (str(im["file_name"]), int(im["width"]), int(im["height"])) for im in coco["images"]}
        annotations = [a for a in coco["annotations"] if a["category_id"] in categories and not a.get("iscrowd")]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        field = f"the field {e}" if isinstance(e, KeyError) else "well-formed entries"
        raise LlavamechError(f"{instances} is not COCO instance annotations (an entry lacks {field})") from None
    for a in annotations:
        which = f"{instances}: annotation {a.get('id', '?')}"
        if a.get("image_id") not in files:
            raise LlavamechError(f"{which} refers to image id {a.get('image_id')!r}, which \"images\" does not list; "
                                 "the annotations file is damaged or cut")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                               for v in box) and box[2] >= 0 and box[3] >= 0):
            raise LlavamechError(f"{which} has bbox {box!r}; COCO boxes are [x, y, width, height]")
    return categories, files, annotations
