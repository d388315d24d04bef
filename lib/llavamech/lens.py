"""Projections of residual-space vectors into the vocabulary.

`onto="embed"`: dot products with the input embedding matrix E (the paper's reading of visual embeddings:
projector outputs compared with word embeddings). `onto="unembed"`: the logit lens, W_U applied after the final
norm with the vector's own RMS (for the final residual this is exactly the model's logits, before any final
soft-cap, which keeps their order). Gemma's input embeddings are E scaled by √d, which keeps the order too.

Scores over the vocabulary ([..., V]) stay on the model's device; ranks, tokens and positions come back on the CPU.
"""
from __future__ import annotations

import numpy as np
import torch

from .anatomy import Anatomy
from .attribution import head_scores, position_scores, top_heads
from . import validate
from .errors import LlavamechError


def vocab_scores(anatomy: Anatomy, vectors: torch.Tensor, onto: str = "embed") -> torch.Tensor:
    """[..., d] -> [..., V] scores of every vocabulary token."""
    with torch.no_grad():
        if onto == "embed":
            return vectors @ anatomy.weight(anatomy.embed.weight).T
        if onto == "unembed":
            return anatomy.lm_head(anatomy.final_norm(vectors.to(anatomy.lm_head.weight.dtype))).float()
    raise LlavamechError(f"onto must be 'embed' or 'unembed', not {onto!r}")


def top_tokens(anatomy: Anatomy, tokenizer, vectors: torch.Tensor, onto: str = "embed", k: int = 5):
    """The k best tokens of each vector: a (nested) list over the leading dims of [(token, score), ...]."""
    validate.whole("k", k, 1, anatomy.lm_head.out_features, " (the vocabulary's size)")
    scores, ids = (t.cpu() for t in vocab_scores(anatomy, vectors, onto).topk(k, dim=-1))

    def convert(s, i):
        if s.dim() == 1:
            return list(zip(tokenizer.convert_ids_to_tokens(i.tolist()), s.tolist()))
        return [convert(a, b) for a, b in zip(s, i)]

    return convert(scores, ids)


def token_ranks(anatomy: Anatomy, vectors: torch.Tensor, token: int, onto: str = "embed") -> torch.Tensor:
    """1-based rank of `token` among the vocabulary for each vector: [...] (1 = top; for reciprocal ranks)."""
    token = validate.token("token", token, anatomy.lm_head.out_features)
    scores = vocab_scores(anatomy, vectors, onto)
    return ((scores > scores[..., token:token + 1]).sum(-1) + 1).cpu()


def patch_top_tokens(model, trace, layer: int = 0, onto: str = "embed") -> list[list[str]]:
    """The top token of the residual input of `layer` at every image patch, on the patch grid [rows][cols].
    layer=0 reads the visual embeddings (the projector's outputs). Needs a trace with all_positions=True."""
    if trace.resid_in_all is None:
        raise LlavamechError("patch_top_tokens needs model.trace(..., all_positions=True)")
    positions = trace.positions
    if not len(positions.image_positions):
        raise LlavamechError("this trace has no image positions: trace an image to read its patches")
    n = trace.resid_in_all.shape[0]
    layer = validate.whole("layer", layer, 0, n - 1, f" (0: the visual embeddings; {n - 1}: the final residual)")
    vectors = trace.resid_in_all[layer, positions.image_positions]
    ids = vocab_scores(model.anatomy, vectors, onto).argmax(-1)
    tokens = model.tokenizer.convert_ids_to_tokens(ids.tolist())
    rows, cols = positions.grid_shape
    return [tokens[r * cols:(r + 1) * cols] for r in range(rows)]


# ---- positions: the paper's important positions, random ones of the same kind, and ranks there ----
def positions_of_kind(trace, kind: str) -> torch.Tensor:
    """Sequence positions of one kind: "image" (the patches, row-major) or "text" (every other position but the
    scored last one): [P]."""
    image = trace.positions.image_positions
    if kind == "image":
        return image
    if kind == "text":
        is_text = torch.ones(trace.seq_len, dtype=torch.bool)
        is_text[image] = False
        is_text[-1] = False
        return is_text.nonzero().reshape(-1)
    raise LlavamechError(f"kind must be 'image' or 'text', not {kind!r}")


def important_positions(trace, heads: list[tuple[int, int]], k: int, kind: str, token: int | None = None) -> torch.Tensor:
    """The paper's important positions: the k positions of `kind` with the highest per-position Imp, summed over
    `heads` [(layer, head), ...] (one head: that head's own top positions): [k], best first."""
    a = trace.anatomy
    heads = validate.heads("heads", heads, a.n_layers, a.n_heads)
    if not heads:
        raise LlavamechError("heads is empty: give the (layer, head) pairs whose positions to rank")
    k = validate.whole("k", k, 1)
    candidates = positions_of_kind(trace, kind)
    if len(candidates) < k:
        raise LlavamechError(f"asked for {k} {kind} positions but the prompt has {len(candidates)}; lower k")
    scores = sum(position_scores(trace, layer, head, token, positions=candidates) for layer, head in heads)
    return candidates[scores.argsort(descending=True)[:k]]


def random_positions(trace, k: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """k distinct positions of `kind` drawn uniformly: the baseline of important_positions: [k]."""
    k = validate.whole("k", k, 1)
    if not isinstance(generator, torch.Generator):   # None would draw from the global state: not reproducible
        raise LlavamechError(f"generator must be a seeded torch.Generator, got {generator!r}")
    candidates = positions_of_kind(trace, kind)
    if len(candidates) < k:
        raise LlavamechError(f"asked for {k} {kind} positions but the prompt has {len(candidates)}; lower k")
    return candidates[torch.randperm(len(candidates), generator=generator)[:k]]


def position_ranks(model, trace, positions: torch.Tensor, token: int, onto: str = "unembed",
                   layers=None) -> torch.Tensor:
    """Rank (1 = top) of `token` in the residual stream at `positions`, at the input of each layer in `layers`
    (default all, 0 = the embeddings, L = the final residual): [layers, positions]. Needs all_positions=True."""
    if trace.resid_in_all is None:
        raise LlavamechError("position_ranks needs model.trace(..., all_positions=True)")
    n = trace.resid_in_all.shape[0]
    layers = range(n) if layers is None else validate.layers("layers", layers, n, "the residual stream")
    vectors = trace.resid_in_all[list(layers)][:, positions]
    return token_ranks(model.anatomy, vectors, token, onto)


def word_ranks_at_patches(model, trace, words: dict, k: int, generator: torch.Generator,
                          heads: list[tuple[int, int]] | None = None, inside=None) -> dict[str, torch.Tensor]:
    """Chapter 1's readout: reciprocal rank of each word, averaged over the k important patches (per-position Imp
    in `heads`, default the trace's own top head) and over k random patches, at the input of every layer, read
    onto E and onto W_U: {"<important|random> <embed|unembed> <word>": [L+1]}. A word given as a list of token ids
    (e.g. the animals not asked about) gets the mean reciprocal rank over them (NaN for an empty list). `inside` (row-major patch indices,
    e.g. the asked animal's box) adds "in-box": k random patches among those (all of them when fewer; NaN when
    none), the control that does not use the head's scores. Needs all_positions=True."""
    if heads is None:
        best = top_heads(head_scores(trace), 1)[0]
        heads = [(best["layer"], best["head"])]
    where = {"important": important_positions(trace, heads, k, "image"),
             "random": random_positions(trace, k, "image", generator)}
    if inside is not None:
        inside = torch.as_tensor(inside, dtype=torch.long).reshape(-1)
        chosen = inside[torch.randperm(len(inside), generator=generator)[:k]]
        where["in-box"] = trace.positions.image_positions[chosen.to(trace.positions.image_positions.device)]
    out = {}
    for name, positions in where.items():
        vectors = trace.resid_in_all[:, positions]                    # [L+1, k', d]
        for onto in ("embed", "unembed"):
            for word, tokens in words.items():
                tokens = [tokens] if isinstance(tokens, int) else list(tokens)
                if not len(positions) or not tokens:   # no patch to read, or no word (a scene of one colour)
                    out[f"{name} {onto} {word}"] = torch.full((vectors.shape[0],), float("nan"))
                    continue
                rr = torch.stack([(1.0 / token_ranks(model.anatomy, vectors, t, onto).float()).mean(-1) for t in tokens])
                out[f"{name} {onto} {word}"] = rr.mean(0)
    return out


def colour_animal_ranks(model, item, animals, k: int, generator: torch.Generator,
                        colours=()) -> dict[str, torch.Tensor]:
    """`word_ranks_at_patches` for one colour item (a `readouts.collect` item): the answer colour, the asked animal
    and the scene's other `animals` — and, given `colours`, the colours other than the answer ("other colours": a
    patch that reads as *some* colour scores high on them too, one that reads as this colour does not) — at the top
    head's k important patches, k random patches, and k random patches inside the asked animal's box (the control
    that does not use the head's scores). With `colours`, also "scene's other colours": the colours of the scene's
    other animals (from the item's facts; NaN where none differs from the answer), the control that tells a patch
    reading as the asked animal's colour from one reading as the scene's colours."""
    example = item.example
    mask = example.box_mask(model.processor.image_processor, item.trace.positions.grid_shape)
    inside = [] if mask is None else np.flatnonzero(mask.ravel())
    words = {"colour": item.colour_id, "animal": item.animal_id,
             "other animals": [model.token_id(a) for a in animals if a != example.animal]}
    if colours:
        words["other colours"] = [t for t in map(model.token_id, colours) if t != item.colour_id]
        words["scene's other colours"] = sorted({model.token_id(c) for a, c in example.facts if a != example.animal}
                                                - {item.colour_id})
    return word_ranks_at_patches(model, item.trace, words, k, generator, inside=inside)

