"""The paper's patch tool (the book's chapter 5) behind the JSON contract (`Explanation.CONTRACT`; the README's
"Explain an answer").

One fp32 forward pass; Imp of every head; the best head's per-position Imp at the image positions, min-max
normalised then divided by the sum, reshaped row-major to the patch grid.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import attribution, questions, validate
from .errors import LlavamechError
from .imaging import load_image, model_view
from .trace import run_trace

MAP_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")   # what `Explanation.save_map` writes


def normalise_map(scores: torch.Tensor) -> torch.Tensor:
    """Min-max normalise, then divide by the sum (the paper's code). A constant map becomes uniform."""
    span = scores.max() - scores.min()
    unit = (scores - scores.min()) / span if span > 0 else torch.ones_like(scores)
    return unit / unit.sum()


def head_map(trace, heads: list[dict]) -> torch.Tensor:
    """The map over the image patches [P]: the normalised per-position Imp of one head (the paper's tool), or of
    several heads summed and normalised again (our top-k variant)."""
    image_pos = trace.positions.image_positions
    maps = [normalise_map(attribution.position_scores(trace, h["layer"], h["head"], positions=image_pos))
            for h in heads]
    return maps[0] if len(maps) == 1 else normalise_map(torch.stack(maps).sum(0))


@dataclass
class Explanation:
    answer: str
    answer_token_id: int
    answer_prob: float
    top_heads: list[dict]             # [{layer, head, score}], best first
    patch_grid: list[list[float]]     # [rows][cols]; [] for text-only input
    grid_shape: list[int]             # [rows, cols]; [0, 0] for text-only input
    seconds: dict[str, float]         # timing of the phases
    model: str
    question: str
    method: str = "tool"              # how patch_grid was computed (the tool, or a method of llavamech.patches)
    question_type: str | None = None  # the question's type (llavamech.questions); None: explains the top-1 token
    head_scores: torch.Tensor = field(repr=False, default=None)   # [L, H], not part of the JSON contract
    image: object = field(repr=False, default=None)               # the input as a PIL image, or None
    image_processor: object = field(repr=False, default=None)
    trace: object = field(repr=False, default=None)               # a lean trace (run_trace): heads and maps only
    source: Path | None = field(repr=False, default=None)         # the image file it explains, if given as one

    CONTRACT = ("answer", "answer_token_id", "answer_prob", "top_heads", "patch_grid", "grid_shape", "seconds",
                "model", "question", "method", "question_type")

    @property
    def view(self):
        """The image as the model saw it (resized, centre-cropped), or None for text-only input."""
        return None if self.image is None else model_view(self.image, self.image_processor)

    def to_dict(self) -> dict:
        return json.loads(json.dumps({k: getattr(self, k) for k in self.CONTRACT}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save_map(self, path, title: str | None = None) -> Path:
        """The patch map over the image as the model saw it, written to `path` (its ending, one of `MAP_FORMATS`,
        says the format; an existing file is replaced). Returns the path written."""
        from .plots import patch_overlay
        import matplotlib.pyplot as plt

        if self.image is None:
            raise LlavamechError("this explanation has no image (text-only input): there is no patch map to draw")
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise LlavamechError(f"the map's path must be a file name such as map.png, got {path!r}")
        path = Path(path).expanduser()
        if path.is_dir():
            raise LlavamechError(f"{path} is a folder; give a file name such as {path / 'map.png'}")
        if path.suffix.lower() not in MAP_FORMATS:
            raise LlavamechError(f"{path}: give a file ending in {', '.join(MAP_FORMATS)}")
        if not path.parent.is_dir():
            raise LlavamechError(f"{path}: the folder {path.parent} does not exist; create it first")
        if self.source is not None and path.exists() and path.samefile(self.source):
            raise LlavamechError(f"{path} is the image this map explains; write the map to another file")
        fig = patch_overlay(self, title=title)
        try:
            fig.savefig(path, dpi=120, bbox_inches="tight")
        except OSError as e:   # permission denied, a read-only or pseudo file system (/proc), a full disk
            raise LlavamechError(f"{path} cannot be written ({e.strerror or type(e).__name__})") from None
        finally:
            plt.close(fig)
        return path


def explain(model, image=None, question: str = "", context: str | None = None, top_k: int = 10,
            map_heads: int = 1) -> Explanation:
    """The paper's tool: answer + head scores + per-patch map, the map of the `map_heads` best heads (1 = the
    paper; more sums their normalised maps). The other patch methods are in llavamech.patches."""
    a = model.anatomy
    validate.whole("top_k", top_k, 1)
    validate.whole("map_heads", map_heads, 1, a.n_layers * a.n_heads, f" ({model.name}'s heads)")
    if context is not None and not isinstance(context, str):
        raise LlavamechError(f"the context must be text, got {type(context).__name__}")
    if image is None and not (context or "").strip():
        raise LlavamechError("give an image, or the facts as context for a text-only question" if model.is_multimodal
                             else f"{model.name} is a text-only model: give the facts as context")
    t0 = time.perf_counter()
    pil = load_image(image) if image is not None else None
    trace = run_trace(model.hf, a, model.inputs(pil, question, context), model.tokenizer, lean=True)
    t1 = time.perf_counter()
    scores = attribution.head_scores(trace)
    heads = attribution.top_heads(scores, max(top_k, map_heads))
    grid, shape = [], [0, 0]
    if len(trace.positions.image_positions):
        rows, cols = trace.positions.grid_shape
        grid, shape = head_map(trace, heads[:map_heads]).reshape(rows, cols).tolist(), [rows, cols]
    heads = heads[:top_k]
    t2 = time.perf_counter()
    token = trace.top_token
    return Explanation(
        answer=model.tokenizer.decode([token]).strip(), answer_token_id=token,
        answer_prob=float(torch.softmax(trace.logits, -1)[token]), top_heads=heads, patch_grid=grid,
        grid_shape=shape, seconds={"forward": t1 - t0, "scores": t2 - t1, "total": t2 - t0},
        model=model.name, question=question, method="tool" if map_heads == 1 else "top-k", question_type=getattr(questions.parse(question), "type", None),
        head_scores=scores, image=pil, source=Path(image).expanduser() if isinstance(image, (str, Path)) else None,
        image_processor=model.processor.image_processor if pil is not None else None, trace=trace)

