"""Items of every question type (data/world.json "question_types") for the multi-question organism.

An item is a prompt whose answer is its next token, as a scene (VQA) or as facts stated in text (TQA). The held-out
split is the colour recipe's (recipe.is_held_out): a key made of the type, the facts and the asked animal or colour
is hashed, and one key in ten is never trained on. For the colour type the key is exactly the colour recipe's, so
the colour organism's held-out keys stay held out here.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from .world import Scene, load_world, make_scene, sample_facts

COUNTS = ("one", "two", "three")


def spec(qtype: str) -> dict:
    return load_world().spec["question_types"][qtype]


def type_names(text: bool = False) -> tuple[str, ...]:
    """Every question type in world.json's order; `text`: those with a text counterpart."""
    qtypes = {k: v for k, v in load_world().spec["question_types"].items() if k != "about"}
    return tuple(k for k, v in qtypes.items() if not text or v["fact"] is not None)


@dataclass
class Item:
    type: str
    prompt: str                   # the whole prompt, ending in the answer prefix
    answer: str                   # the answer word (the next token)
    facts: list                   # the scene's (animal, colour) pairs
    asked: str | None             # the asked animal (the asked colour for reverse lookup; None for counting)
    question: str                 # the question's wording
    context: str | None = None    # TQA: the facts as text
    scene: Scene | None = None    # VQA: the scene


def held_out(qtype: str, facts, asked) -> bool:
    key = ";".join(f"{a}={c}" for a, c in sorted(facts)) + "?" + str(asked)
    if qtype != "colour":
        key = qtype + "|" + key
    return zlib.crc32(key.encode()) % 10 == 0


def side(box, width: int) -> str | None:
    """The half of the image that holds the centre of `box`; None within world.json's centre margin of the middle."""
    offset = (box[0] + box[2]) / 2 / width - 0.5
    if abs(offset) < spec("position")["centre_margin"]:
        return None
    return "left" if offset < 0 else "right"


def _question(qtype: str, **slots) -> tuple[str, str]:
    s = spec(qtype)
    return s["question"].format(**slots), s["answer_prefix"].format(**slots)


def _ask(rng: random.Random, qtype: str, facts) -> tuple[str | None, str | None]:
    """(asked animal or colour, answer) for the facts; the position answer needs the scene and is left None."""
    world = load_world()
    if qtype == "colour":
        animal = rng.choice(facts)[0]
        return animal, dict(facts)[animal]
    if qtype == "reverse":
        animal, colour = rng.choice(facts)
        return colour, animal
    if qtype == "existence":
        present = rng.random() < 0.5
        absent = [a for a in world.animals if a not in dict(facts)]
        animal = rng.choice(facts)[0] if present else rng.choice(absent)
        return animal, "yes" if present else "no"
    if qtype == "counting":
        return None, COUNTS[len(facts) - 1]
    return rng.choice(facts)[0], None   # position


def _slots(qtype: str, asked) -> dict:
    return {"colour": asked} if qtype == "reverse" else {} if qtype == "counting" else {"animal": asked}


def scene_item(rng: random.Random, qtype: str, want_held_out: bool, size: int | None = None,
               n_animals: tuple[int, int] = (1, 3)) -> Item:
    """A scene of 1–3 animals and a question of `qtype` about it, on the wanted side of the split."""
    while True:
        facts = sample_facts(rng, rng.randint(*n_animals))
        asked, answer = _ask(rng, qtype, facts)
        if held_out(qtype, facts, asked) != want_held_out:
            continue
        scene = make_scene(rng, size=size or rng.choice([64, 64, 96, 128]), pairs=facts)
        if qtype == "position":
            box = next(a.box for a in scene.animals if a.name == asked)
            answer = side(box, scene.image.width)
            if answer is None:
                continue
        question, prefix = _question(qtype, **_slots(qtype, asked))
        return Item(qtype, f"USER: <image>\n{question}\nASSISTANT:{prefix}", answer, facts, asked, question,
                    scene=scene)


def text_item(rng: random.Random, qtype: str, want_held_out: bool) -> Item:
    """2–4 facts stated as text and a question of `qtype` about them, on the wanted side of the split."""
    while True:
        facts = sample_facts(rng, rng.randint(2, 4))
        asked, answer = _ask(rng, qtype, facts)
        if qtype == "position":
            sides = {a: rng.choice(["left", "right"]) for a, _ in facts}
            answer = sides[asked]
            key_facts = list(sides.items())
        else:
            key_facts = facts
        if held_out(qtype, key_facts, asked) != want_held_out:
            continue
        fact = spec(qtype)["fact"]
        context = " ".join(fact.format(animal=a, colour=c, side=sides[a] if qtype == "position" else "")
                           for a, c in facts)
        question, prefix = _question(qtype, **_slots(qtype, asked))
        return Item(qtype, f"USER: {context}\n{question}\nASSISTANT:{prefix}", answer, facts, asked, question,
                    context=context)
