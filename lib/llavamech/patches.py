"""Which image patches drove the answer? The paper's tool and its baselines behind one interface:

    patch_map(model, image, question, method) -> PatchMap   # scores [rows, cols], higher = mattered more

Every method scores the model's own answer (its top-1 next token), as the paper does.
- `tool`: the single best head's per-position Imp over the image patches (the paper's tool, `explain`).
- `top-k`: the sum of the normalised maps of the k best heads (ours).
- `attention`: attention from the last position to each patch, averaged over every layer and head (the paper's
  baseline).
- `ablation`: the drop in log p(answer) when the patch's visual embedding (the projector's output) is replaced —
  by the mean visual embedding of a reference set (`means`), or else the mean of the image's own patches. One
  batched forward pass per patch: the causal ground truth.
- `gradient`: gradient × input of log p(answer) with respect to the visual embeddings, summed over features.
- `ig`: integrated gradients (Captum) on the visual embeddings, from the same baseline as `ablation`.
- `random`: scores drawn uniformly (seeded): the chance level of every evaluation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import families, validate
from .batching import first_batch, halving, in_batches
from .errors import LlavamechError
from .explain import Explanation, explain, head_map
from .hooks import frozen_weights, hooked, inject, language_model_call, sdpa_attention
from .interventions import Means, check_means
from .trace import positions_of

DEFAULT_HEADS = 3   # heads summed by `top-k`


@dataclass
class PatchMap:
    """One method's scores for one image and question."""
    method: str
    scores: np.ndarray          # [rows, cols] row-major over the patch grid; higher = mattered more to the answer
    answer: str
    answer_token_id: int
    answer_prob: float
    seconds: float
    explanation: object = field(repr=False, default=None)   # the tool's Explanation (its trace, heads, view)
    embedded: "Embedded | None" = field(repr=False, default=None)   # the input embeddings, when a method needed them


@dataclass
class Scoring:
    """What every method may read for one image and question: the tool's traced pass (`explanation`), and the
    input embeddings, captured on first use and shared by the methods that perturb them."""
    model: object
    question: str
    explanation: object
    heads: int = DEFAULT_HEADS
    means: "Means | None" = None
    ig_steps: int = 32
    seed: int = 0
    _embedded: "Embedded | None" = field(default=None, repr=False)

    @property
    def embedded(self) -> "Embedded":
        if self._embedded is None:
            x = self.explanation
            self._embedded = embed(self.model, self.model.inputs(x.image, self.question),
                                   x.trace.positions.image_positions)
        return self._embedded

    @property
    def token(self) -> int:
        return self.explanation.answer_token_id


def _tool(s: Scoring):
    return head_map(s.explanation.trace, s.explanation.top_heads[:1])


def _top_k(s: Scoring):
    return head_map(s.explanation.trace, s.explanation.top_heads[:s.heads])


def _attention(s: Scoring):
    trace = s.explanation.trace
    return trace.attn_weights[:, :, trace.positions.image_positions].mean((0, 1))


def _ablation(s: Scoring):
    return ablation_scores(s.model, s.embedded, s.token, s.means)


def _gradient(s: Scoring):
    return gradient_scores(s.model, s.embedded, s.token, s.means)


def _ig(s: Scoring):
    return ig_scores(s.model, s.embedded, s.token, s.means, steps=s.ig_steps)


def _random(s: Scoring):
    rows, cols = s.explanation.grid_shape
    return np.random.default_rng(s.seed).random(rows * cols)


# name -> the function that scores the patches (the module docstring says what each is); the one place a method
# is named, so the CLI, `llavamech run`, the widget and the evaluations all take the same list.
METHODS = {"tool": _tool, "top-k": _top_k, "attention": _attention, "ablation": _ablation,
           "gradient": _gradient, "ig": _ig, "random": _random}


# the options of each method beyond the image and question (Model.explain refuses any other: it would be ignored)
OPTIONS = {"tool": ("top_k", "map_heads"), "top-k": (), "attention": (), "ablation": ("means",),
           "gradient": ("means",), "ig": ("means", "ig_steps"), "random": ("seed",)}


def check_method(method: str, model=None, heads: int | None = None) -> None:
    """One clear error for a method or head count that cannot run on this model."""
    if not isinstance(method, str) or method not in METHODS:
        raise LlavamechError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if model is not None and not model.is_multimodal and method != "tool":
        raise LlavamechError(f"{model.name} is a text-only model: it has no image patches for the {method} "
                             "method; use a Llava model")
    if heads is not None:   # how many heads top-k sums: at most all of them
        total = None if model is None else model.anatomy.n_layers * model.anatomy.n_heads
        validate.whole("heads", heads, 1, total, "" if model is None else f" ({model.name} has {total} heads)")


def patch_maps(model, image, question: str, methods=tuple(METHODS), heads: int = DEFAULT_HEADS,
               means: Means | None = None, ig_steps: int = 32, seed: int = 0) -> dict[str, PatchMap]:
    """Scores of each method over the patch grid for the model's own answer to `question` about `image`. The
    methods share one traced forward pass (and one capture of the input embeddings); each map's `seconds` is
    that shared time plus its own."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods) if hasattr(methods, "__iter__") else ()
    if not methods:
        raise LlavamechError(f"methods must be a list of names among {', '.join(METHODS)}, got {methods!r}")
    for method in methods:
        check_method(method, model, heads)
    if not model.is_multimodal:
        raise LlavamechError(f"{model.name} is a text-only model: it has no image patches to score")
    if image is None:
        raise LlavamechError("patch methods score the patches of an image; give an image")
    if means is not None:
        check_means(model, means, "mean", needs_visual=True)
    validate.whole("ig_steps", ig_steps, 1)
    validate.whole("seed", seed, 0)
    t0 = time.perf_counter()
    x = explain(model, image=image, question=question, top_k=max(10, heads))
    shared = time.perf_counter() - t0
    scoring = Scoring(model, question, x, heads, means, ig_steps, seed)
    maps = {}
    for method in methods:
        t = time.perf_counter()
        scores = METHODS[method](scoring)
        scores = scores.cpu().numpy() if torch.is_tensor(scores) else scores
        maps[method] = PatchMap(method, np.asarray(scores, dtype=np.float64).reshape(x.grid_shape), x.answer,
                                x.answer_token_id, x.answer_prob, shared + time.perf_counter() - t, x,
                                scoring._embedded)
    return maps


def patch_map(model, image, question: str, method: str = "tool", **options) -> PatchMap:
    """One method's map (see `patch_maps` for the options)."""
    return patch_maps(model, image, question, (method,), **options)[method]


def explained(model, image, question: str, method: str, heads: int = DEFAULT_HEADS, **options) -> Explanation:
    """The tool's Explanation (answer, head scores, JSON contract) with `method`'s scores as its `patch_grid`: what
    `Model.explain(method=...)`, the CLI and `llavamech run` return for a method other than the tool."""
    check_method(method, model, heads)
    if image is None:
        raise LlavamechError(f"the {method} method scores image patches; give an image")
    pm = patch_map(model, image, question, method, heads=heads, **options)
    x = pm.explanation
    x.patch_grid, x.method = pm.scores.tolist(), method
    x.seconds = {**x.seconds, "method": pm.seconds - x.seconds["total"], "total": pm.seconds}
    return x


@dataclass
class Embedded:
    """An image and question as the language model receives them: the input embeddings with the visual
    embeddings (the projector's outputs) in place. Patch methods work here, so the vision tower runs once."""
    embeds: torch.Tensor           # [1, S, d] float32
    image_positions: torch.Tensor  # [P] sequence indices of the patches, row-major
    extras: dict = field(default_factory=dict)   # what else a pass needs: Qwen-VL's 3-D positions, Gemma's token types
    injected: dict = field(default_factory=dict)   # what the language model gets of the image besides (Qwen3-VL's
    #                                                deepstack features: held as the image gave them, never scored)

    @property
    def visual(self) -> torch.Tensor:
        return self.embeds[0, self.image_positions]   # [P, d]


def embed(model, inputs: dict, image_positions: torch.Tensor | None = None) -> Embedded:
    """The language model's input embeddings for `inputs` (the vision tower and projector run; the language model
    does not). `image_positions`, when the caller's trace already has them, saves working out the image layout
    again."""
    embeds, extras, injected = language_model_call(model.hf, model.anatomy.language_model, inputs)
    extras.update(families.embeddings_extras(model.hf, inputs))
    if image_positions is None:
        image_positions = positions_of(model.hf, inputs, model.tokenizer).image_positions
    injected = {k: v.cpu() if torch.is_tensor(v) else [x.detach().cpu() for x in v] for k, v in injected.items()}
    return Embedded(embeds.float().cpu(), image_positions, {k: v.cpu() for k, v in extras.items()}, injected)


def _fill(emb: Embedded, means: Means | None) -> torch.Tensor:
    """What a removed patch's visual embedding becomes: the mean visual embedding over a reference set (`means`),
    or without one the mean of this image's own patches (no reference data needed, e.g. in the CLI)."""
    return emb.visual.mean(0) if means is None else means.visual.float().cpu()


def _logprob(model, embeds: torch.Tensor, token: int, extras: dict | None = None,
             injected: dict | None = None) -> torch.Tensor:
    """log p(token) at the last position for a batch of input embeddings [B, S, d] (on the CPU), with the `extras`
    and `injected` of one example (an `Embedded`'s) repeated over the batch."""
    batched = {k: v.expand(*v.shape[:-2], len(embeds), v.shape[-1]).to(model.device) for k, v in (extras or {}).items()}
    with sdpa_attention(model.hf), hooked(model.hf) as hooks:
        inject(hooks, model.anatomy.language_model, injected or {}, len(embeds))
        logits = model.hf(inputs_embeds=embeds.to(model.device, model.dtype), use_cache=False,
                          logits_to_keep=1, **batched).logits[:, -1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))   # half precision read in float32
    return torch.log_softmax(logits, -1)[:, token].cpu()


@torch.no_grad()
def answer_logprob(model, emb: Embedded, token: int, removed: list, means: Means | None = None,
                   batch: int = 64) -> np.ndarray:
    """log p(token), one value per entry of `removed` (a list of patch indices whose visual embeddings are
    replaced as `_fill` says). At most `batch` rows per forward pass, fewer where the device's memory is short."""
    clean = emb.embeds.to(model.device, model.dtype)           # built on the device: one copy in, not one per row
    fill = _fill(emb, means).to(model.device, model.dtype)

    def run(rows):
        embeds = clean.repeat(len(rows), 1, 1)
        for r, patches in enumerate(rows):
            if len(patches):
                embeds[r, emb.image_positions[list(patches)]] = fill
        return _logprob(model, embeds, token, emb.extras, emb.injected).cpu().numpy()

    batch = first_batch(model, len(removed), clean.shape[1], batch)
    return np.concatenate(in_batches(run, removed, "ablation", batch))


def ablation_scores(model, emb: Embedded, token: int, means: Means | None) -> np.ndarray:
    """Per patch: log p(answer) clean minus with that patch removed (positive = the patch supported the answer)."""
    logp = answer_logprob(model, emb, token, [[]] + [[p] for p in range(len(emb.image_positions))], means)
    return logp[0] - logp[1:]


def _with_visual(emb: Embedded, visual: torch.Tensor) -> torch.Tensor:
    """Input embeddings [B, S, d] with the patches' embeddings set to `visual` [B, P, d] (differentiably)."""
    embeds = emb.embeds.repeat(len(visual), 1, 1)
    embeds[:, emb.image_positions] = visual
    return embeds


def gradient_scores(model, emb: Embedded, token: int, means: Means | None = None) -> np.ndarray:
    """Gradient × input of log p(answer) w.r.t. each patch's visual embedding, summed over features."""
    visual = emb.visual[None].clone().requires_grad_(True)
    with frozen_weights(model.hf):
        halving(lambda _: _logprob(model, _with_visual(emb, visual), token, emb.extras, emb.injected).sum().backward(),
                "gradient", 1)
    return (visual.grad * visual).sum(-1)[0].detach().cpu().numpy()


def ig_scores(model, emb: Embedded, token: int, means: Means | None = None, steps: int = 32) -> np.ndarray:
    """Integrated gradients (Captum) of log p(answer) on the visual embeddings, from the removal baseline (the
    same replacement as `ablation`), summed over features. Completeness: the scores sum to log p(answer) clean
    minus with every patch removed, up to the Riemann error of `steps`. The steps run in batches that fit the
    device (the sum is the same in any batching)."""
    from captum.attr import IntegratedGradients   # 0.4 s to import, and only this method needs it

    visual = emb.visual[None]
    baseline = _fill(emb, means).expand_as(visual).clone()
    ig = IntegratedGradients(lambda v: _logprob(model, _with_visual(emb, v), token, emb.extras, emb.injected))
    with frozen_weights(model.hf):
        attributions = halving(lambda batch: ig.attribute(visual, baselines=baseline, n_steps=steps,
                                                          internal_batch_size=batch), "integrated gradients",
                               first_batch(model, steps, emb.embeds.shape[1], steps, backward=True))
    return attributions.sum(-1)[0].detach().cpu().numpy()
