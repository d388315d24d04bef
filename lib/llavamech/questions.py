"""The question types (data/world.json, "question_types"): colour, reverse lookup, existence, counting, position.

Each type has one fixed wording and an answer prefix, so that the answer is the next token: "Is there a dog?" is
asked as `USER: <image>\\nIs there a dog?\\nASSISTANT: The answer is` and answered by " yes" or " no". A question
is recognised in any case and spacing, with or without its "?" ("colour" for "color", "an" for "a"), and asked in
the canonical wording. Any other question is asked as given, and the model's own top-1 next token is explained.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .organism import tasks
from .organism.world import load_world

SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Question:
    type: str                  # colour, reverse, existence, counting or position
    text: str                  # the canonical wording
    answer_prefix: str         # what follows "ASSISTANT:" so that the answer is the next token
    slots: dict                # the filled slots: {"animal": "dog"} or {"colour": "red"}

    @property
    def asked(self) -> str | None:
        """The animal (or, for reverse lookup, the colour) the question is about; None for counting."""
        return self.slots.get("animal", self.slots.get("colour"))


@dataclass(frozen=True)
class QuestionType:
    name: str
    question: str              # template, e.g. "Is there a {animal}?"
    answer_prefix: str
    answers: tuple[str, ...]   # the closed set of answer words
    fact: str | None           # one fact as text, for the type's text counterpart

    def ask(self, **slots) -> Question:
        return Question(self.name, self.question.format(**slots), self.answer_prefix.format(**slots), dict(slots))

    @property
    def pattern(self) -> re.Pattern:
        """The template as a regular expression: any case and spacing, "?" optional (or doubled), color/colour,
        a/an."""
        words = self.question.rstrip("?").split()
        parts = []
        for word in words:
            if SLOT.fullmatch(word):
                parts.append(rf"(?P<{SLOT.fullmatch(word).group(1)}>\w+(?:\s+\w+)*?)")
            else:
                parts.append({"color": "colou?r", "a": "an?"}.get(word.lower(), re.escape(word)))
        return re.compile(r"\s*" + r"\s+".join(parts) + r"\s*\?*\s*", re.IGNORECASE)


@lru_cache(maxsize=None)
def types() -> dict[str, QuestionType]:
    """name -> QuestionType, from data/world.json in its order (colour first)."""
    world = load_world()
    sets = {"colours": world.colour_names, "animals": world.animals}
    out = {}
    for name in tasks.type_names():
        t = tasks.spec(name)
        answers = sets[t["answers"]] if isinstance(t["answers"], str) else t["answers"]
        out[name] = QuestionType(name, t["question"], t["answer_prefix"], tuple(answers), t["fact"])
    return out


def parse(question: str) -> Question | None:
    """The question's type and canonical wording, or None when it matches no type's template."""
    for qtype in types().values():
        match = qtype.pattern.fullmatch(question)
        if match:
            slots = {k: " ".join(v.split()) for k, v in match.groupdict().items()}
            asked = qtype.ask(**slots)
            if qtype.name == "colour":   # keep the asker's spelling of colour/color in the question itself
                spelling = re.search(r"colou?r", question, re.IGNORECASE).group(0).lower()
                asked = Question(asked.type, asked.text.replace("color", spelling), asked.answer_prefix, asked.slots)
            return asked
    return None


def fits(question: Question, answer: str) -> bool:
    """Whether `answer` can answer `question`: one of a closed set (existence, counting, position), a single word
    otherwise (a real model's colours and animals are open sets)."""
    if question.type in ("existence", "counting", "position"):
        return answer in types()[question.type].answers
    return bool(re.fullmatch(r"\w+", answer))
