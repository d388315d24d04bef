"""Command line: `llavamech explain IMAGE --question Q` and `llavamech train-organism`.

Bad input prints one line (`llavamech: error: ...`) and exits 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LlavamechError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llavamech", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="answer a question about an image and show which heads and patches drove it")
    e.add_argument("image", nargs="?", help="image file (PNG, JPEG, ...); omit for text-only questions with --context")
    e.add_argument("--question", required=True, help="e.g. 'What is the color of the dog?'")
    e.add_argument("--context", help="TQA facts as text, e.g. 'The dog is white. The cat is black.'")
    e.add_argument("--model", default="toy-llava", help="toy-llava (default), toy-vicuna, tiny-random-llava, "
                                                        "a Hugging Face id or a local folder")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    e.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    e.add_argument("--json", action="store_true", help="print the explanation as JSON")
    e.add_argument("--out", type=Path, help="write the patch map over the image as the model saw it (PNG)")
    e.add_argument("--method", default="tool", help="how to score the patches: tool (the paper's, default), top-k, "
                                                    "attention, ablation, gradient, ig or random")
    e.add_argument("--heads", type=int, default=3, help="heads summed by --method top-k (default 3)")
    t = sub.add_parser("train-organism", help="train the model organism (toy-vicuna, toy-clip, toy-llava)")
    t.add_argument("--stage", default="all", choices=["vicuna", "clip", "llava", "all"])
    t.add_argument("--out", type=Path, default=Path("data/models"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--smoke", action="store_true", help="a few steps of each stage (checks the recipe runs)")
    return p


def _explain(args) -> int:
    from .models import load

    if args.image is None and not args.context:
        raise LlavamechError("give an IMAGE, or the facts as --context for a text-only question")
    if args.out and args.image is None:
        raise LlavamechError("--out draws the patch map over the image; give an IMAGE")
    from .patches import check_method

    check_method(args.method)
    if args.method != "tool" and args.image is None:
        raise LlavamechError(f"--method {args.method} scores image patches; give an IMAGE")
    model = load(args.model, device=args.device, dtype=args.dtype)
    check_method(args.method, model, args.heads)
    result = model.explain(args.image, question=args.question, context=args.context, method=args.method,
                           heads=args.heads)
    if args.out:
        result.save_map(args.out)
    if args.json:
        print(result.to_json())
    else:
        heads = ", ".join(f"{h['layer']}_{h['head']} ({h['score']:.3f})" for h in result.top_heads[:5])
        print(f"{result.model}: {result.question!r} -> {result.answer!r} (p={result.answer_prob:.3f})")
        print(f"top heads (layer_head, log-prob increase): {heads}")
        if args.out:
            print(f"patch map written to {args.out}")
    return 0


def _train(args) -> int:
    from .organism.recipe import Recipe, run, smoke_recipe
    from .organism.card import write_cards

    recipe = smoke_recipe(args.seed) if args.smoke else Recipe(seed=args.seed)
    run(args.stage, args.out, recipe)
    if not args.smoke and args.stage in ("llava", "all"):
        write_cards(args.out)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _explain(args) if args.command == "explain" else _train(args)
    except LlavamechError as e:
        print(f"llavamech: error: {e}", file=sys.stderr)
        return 2
