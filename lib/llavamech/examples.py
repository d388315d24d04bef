"""Paired evaluation sets: the same animal–colour facts as a scene (VQA) and as text (TQA).

Every chapter and the dataset runner read one of these. Drawn from the toy world under a seed (`"toy"`), or read
from a JSONL file, one item a line (paths relative to the file; `colour`, `box`, `facts` optional):

    {"image": "photo.jpg", "animal": "dog", "colour": "brown", "box": [x0, y0, x1, y1],
     "facts": [["dog", "brown"], ["cat", "black"]]}

`box` is the asked animal's bounding box in the image's own pixels; `facts` are the animal–colour pairs of the
scene, which the TQA prompt states as text ("The dog is brown. The cat is black.").
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import LlavamechError
from .organism.world import tqa_context


@dataclass(frozen=True)
class Example:
    image: object                      # a PIL image or a path; None for text-only sets
    animal: str                        # the asked animal
    colour: str | None = None          # its true colour, when known
    box: tuple[int, int, int, int] | None = None   # the asked animal's box (x0, y0, x1, y1) in image pixels
    facts: tuple[tuple[str, str], ...] = ()        # every (animal, colour) of the scene, the asked one included
    source: str = ""                   # where it came from: "toy seed 0 #3" or "my.jsonl:3"
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()   # every animal's box, where known (toy scenes)

    @property
    def question(self) -> str:
        return f"What is the color of the {self.animal}?"

    @property
    def context(self) -> str | None:
        """The facts as TQA text, or None when the item has no facts."""
        return tqa_context(list(self.facts)) if self.facts else None

    @property
    def distractors(self) -> tuple[str, ...]:
        """The other animals of the scene."""
        return tuple(a for a, _ in self.facts if a != self.animal)

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
            if not self.facts:
                raise LlavamechError(f"{self.source}: no facts, so no TQA prompt; add \"facts\" to the item")
            return dict(question=self.question, context=self.context)
        raise LlavamechError(f"unknown mode '{mode}'; use 'vqa' or 'tqa'")


def toy_examples(n: int, seed: int = 0, animals: tuple[int, int] = (2, 3)) -> list[Example]:
    """n paired examples from the toy world, on held-out keys only (never trained on): scenes of 2–3 animals by
    default (a distractor is always present), canvases of 64–128 px, boxes from the scene generator."""
    from .organism.recipe import sample_split
    from .organism.world import make_scene

    rng = random.Random(f"{seed}:examples")
    out = []
    for i in range(n):
        facts, asked = sample_split(rng, rng.randint(*animals), held_out=True)
        scene = make_scene(rng, size=rng.choice([64, 96, 128]), pairs=facts)
        boxes = tuple((a.name, a.box) for a in scene.animals)
        out.append(Example(scene.image, asked, dict(facts)[asked], dict(boxes)[asked], tuple(facts),
                           f"toy seed {seed} #{i}", boxes))
    return out


def composed(pairs: list[tuple[str, str]], asked: str, layout: int = 0, size: int = 128) -> Example:
    """One toy scene with the given (animal, colour) pairs, laid out under the `layout` seed, asking about `asked`
    (which need not be in the scene)."""
    from .organism.world import make_scene

    scene = make_scene(random.Random(f"{layout}:layout"), size=size, pairs=list(pairs))
    boxes = tuple((a.name, a.box) for a in scene.animals)
    return Example(scene.image, asked, dict(pairs).get(asked), dict(boxes).get(asked), tuple(pairs),
                   f"composed layout {layout}", boxes)


def read_jsonl(path, vocabulary=None) -> list[Example]:
    """Read and check an example file. `vocabulary(word) -> bool` says which words the model knows.
    Any problem raises LlavamechError naming the line and what to fix; nothing is computed before that."""
    path = Path(path)
    if not path.is_file():
        raise LlavamechError(f"example file not found: {path}")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            out.append(_parse(line, f"{path}:{number}", path.parent, vocabulary))
    if not out:
        raise LlavamechError(f"{path} holds no examples (one JSON object a line)")
    return out


def _parse(line: str, where: str, folder: Path, vocabulary) -> Example:
    def fail(what):
        raise LlavamechError(f"{where}: {what}")

    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        fail(f"not valid JSON ({e.msg}); write one object a line")
    if not isinstance(item, dict):
        fail("expected a JSON object like {\"image\": ..., \"animal\": ...}")
    for key in ("image", "animal"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            fail(f"\"{key}\" is missing or not a string")
    image = (folder / item["image"]).resolve()
    size = _image_size(image, fail)
    facts = item.get("facts") or []
    if not (isinstance(facts, list) and all(isinstance(f, list) and len(f) == 2 and all(isinstance(w, str) for w in f)
                                            for f in facts)):
        fail("\"facts\" must be a list of [animal, colour] pairs")
    facts = tuple((a.strip(), c.strip()) for a, c in facts)
    animal, colour = item["animal"].strip(), item.get("colour")
    colour = colour.strip() if isinstance(colour, str) and colour.strip() else dict(facts).get(animal)
    if facts and animal not in dict(facts):
        fail(f"the asked animal '{animal}' is not among the facts {[a for a, _ in facts]}")
    words = [animal] + ([colour] if colour else []) + [w for f in facts for w in f]
    unknown = [w for w in words if vocabulary is not None and not vocabulary(w)]
    if unknown:
        fail(f"'{unknown[0]}' is not in the model's vocabulary; use words it knows (the toy organism: data/world.json)")
    box = item.get("box")
    if box is not None:
        box = _check_box(box, size, fail)
    return Example(image, animal, colour, box, facts, where)


def _image_size(image: Path, fail) -> tuple[int, int]:
    if not image.is_file():
        fail(f"image not found: {image} (paths are relative to the example file)")
    try:
        with Image.open(image) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        fail(f"{image} is not a readable image; give a PNG or JPEG")


def _check_box(box, size, fail) -> tuple[int, int, int, int]:
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        fail("\"box\" must be [x0, y0, x1, y1] in pixels")
    x0, y0, x1, y1 = box
    w, h = size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        fail(f"box {box} is not inside the {w}x{h} image (need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")
    return tuple(int(round(v)) for v in box)


def load_examples(examples="toy", n_examples: int | None = None, seed: int = 0, model=None) -> list[Example]:
    """The chapters' entry point: `"toy"` (drawn under `seed`) or a JSONL path; the first `n_examples` items.
    With a model, every word is checked against its vocabulary before anything is computed."""
    if isinstance(examples, str) and examples == "toy":
        if n_examples is None or n_examples < 1:
            raise LlavamechError("n_examples must be a positive number for the toy examples")
        return toy_examples(n_examples, seed)
    items = read_jsonl(examples, vocabulary=model.knows if model is not None else None)
    if n_examples is not None and n_examples > len(items):
        raise LlavamechError(f"n_examples = {n_examples} but {examples} holds {len(items)} examples; "
                             f"lower n_examples to at most {len(items)}")
    return items[:n_examples]



def write_jsonl(examples: list[Example], path, images: str = "images") -> Path:
    """Write an example set as a JSONL file that `read_jsonl` and `llavamech run` take; in-memory images (the toy
    scenes) are saved as PNGs in the folder `images` beside it. Returns the path."""
    path = Path(path)
    folder = path.parent / images
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, ex in enumerate(examples):
        if isinstance(ex.image, Image.Image):
            image = folder / f"{i:05d}.png"
            ex.image.save(image)
        else:
            image = Path(ex.image)
        item = {"image": os.path.relpath(image, path.parent), "animal": ex.animal}
        item.update({k: v for k, v in (("colour", ex.colour), ("box", list(ex.box) if ex.box else None),
                                       ("facts", [list(f) for f in ex.facts] or None)) if v is not None})
        lines.append(json.dumps(item))
    path.write_text("\n".join(lines) + "\n")
    return path


COCO_ANIMALS = "animal"   # COCO's supercategory of bird, cat, dog, horse, sheep, cow, elephant, bear, zebra, giraffe


def from_coco(instances, images, out, min_area: float = 0.02, limit: int | None = None) -> int:
    """An example set from COCO-format instance annotations (e.g. instances_val2017.json): one item per image that
    holds an animal of a kind it shows only once (so "the dog" names one animal), asking about the largest such
    animal covering at least `min_area` of the image, with its box. COCO has no colours: items carry none, so
    runs report answers and maps, not accuracy. Returns the number of items written to `out`."""
    instances, images, out = Path(instances), Path(images), Path(out)
    try:
        coco = json.loads(instances.read_text())
        categories = {c["id"]: c["name"] for c in coco["categories"] if c.get("supercategory") == COCO_ANIMALS}
        files = {im["id"]: (im["file_name"], im["width"], im["height"]) for im in coco["images"]}
        annotations = [a for a in coco["annotations"] if a["category_id"] in categories and not a.get("iscrowd")]
    except FileNotFoundError:
        raise LlavamechError(f"annotations file not found: {instances}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LlavamechError(f"{instances} is not JSON; give COCO instance annotations (instances_*.json)") from None
    except (KeyError, TypeError) as e:
        raise LlavamechError(f"{instances} is not COCO instance annotations (no {e} field)") from None
    if not images.is_dir():
        raise LlavamechError(f"images folder not found: {images}")
    by_image: dict[int, list[dict]] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    lines = []
    for image_id in sorted(by_image):
        name, w, h = files[image_id]
        kinds = [a["category_id"] for a in by_image[image_id]]
        single = [a for a in by_image[image_id] if kinds.count(a["category_id"]) == 1
                  and a["bbox"][2] * a["bbox"][3] >= min_area * w * h]
        if not single or not (images / name).is_file():
            continue
        a = max(single, key=lambda a: a["bbox"][2] * a["bbox"][3])
        x, y, bw, bh = a["bbox"]
        lines.append(json.dumps({"image": os.path.relpath(images / name, out.parent), "animal": categories[a["category_id"]],
                                 "box": [max(0, round(x)), max(0, round(y)), min(w, round(x + bw)), min(h, round(y + bh))]}))
        if limit is not None and len(lines) >= limit:
            break
    if not lines:
        raise LlavamechError(f"no image of {instances} in {images} holds a single animal of its kind")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return len(lines)
