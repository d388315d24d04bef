"""Command line: `llavamech explain`, `run`, `examples`, `coco` and `train-organism`.

Bad input prints one line (`llavamech: error: ...`) and exits 2, never a traceback. No command writes over an
existing file without --force, nor ever over its own input.

Each command imports the library it needs inside its handler: torch and transformers take seconds to load, and
`llavamech --help` or a refused argument should not wait for them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import LlavamechError
from .paths import refuse_overwrite

MODELS_HELP = "toy-llava (default), toy-vicuna, tiny-random-llava, a Hugging Face id or a local folder"


class _Parser(argparse.ArgumentParser):
    """argparse's refusals (an unknown option, --n abc) in the same one line as every other."""

    def error(self, message):
        self.exit(2, f"llavamech: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llavamech", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    e = sub.add_parser("explain", help="answer a question about an image and show which heads and patches drove it")
    e.add_argument("image", nargs="?", help="image file (PNG, JPEG, ...); omit for text-only questions with --context")
    e.add_argument("--question", required=True, help="e.g. 'What is the color of the dog?'")
    e.add_argument("--context", help="TQA facts as text, e.g. 'The dog is white. The cat is black.'")
    _model_options(e)
    e.add_argument("--json", action="store_true", help="print the explanation as JSON")
    e.add_argument("--out", help="write the patch map over the image as the model saw it (PNG)")
    e.add_argument("--force", action="store_true", help="overwrite an existing --out")
    _method_options(e)

    r = sub.add_parser("run", help="explain every item of an example set (JSONL), resumably, over one or more "
                                   "processes (accelerate launch)")
    r.add_argument("examples", help="example file: JSONL, one item a line (see the README)")
    _model_options(r)
    r.add_argument("--out", required=True, help="folder for results.jsonl (one row per item)")
    _method_options(r)
    r.add_argument("--maps", action="store_true", help="also write each item's map as maps/NNNNN.png")
    r.add_argument("--limit", type=int, help="only the first N items")
    r.add_argument("--force", action="store_true", help="replace the results of a different run in --out")

    x = sub.add_parser("examples", help="write held-out toy scenes as an example file (JSONL + PNGs)")
    x.add_argument("--n", type=int, default=200)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--type", default=None, help="a question type of data/world.json (colour, reverse, existence, "
                   "counting, position): items carry their question and answer; default: the colour question with "
                   "2-3 animals a scene, as the chapters ask it")
    x.add_argument("--out", required=True, help="the JSONL file; images go to images/ beside it, named after it")
    x.add_argument("--force", action="store_true", help="overwrite an existing file and images")

    c = sub.add_parser("coco", help="an example file from COCO instance annotations (images with animals, boxes)")
    c.add_argument("instances", help="e.g. annotations/instances_val2017.json")
    c.add_argument("--images", required=True, help="the folder of the annotated images, e.g. val2017/")
    c.add_argument("--out", required=True, help="the JSONL file to write")
    c.add_argument("--limit", type=int, help="at most N items (the paper used 1,000)")
    c.add_argument("--min-area", type=float, default=0.02, help="smallest animal box, as a share of the image")
    c.add_argument("--force", action="store_true", help="overwrite an existing --out (never the annotations)")

    t = sub.add_parser("train-organism", help="train the model organism (toy-vicuna, toy-clip, toy-llava)")
    t.add_argument("--stage", default="all", choices=["vicuna", "clip", "llava", "all"])
    t.add_argument("--out", default="data/models")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--smoke", action="store_true", help="a few steps of each stage (checks the recipe runs)")
    t.add_argument("--multi", action="store_true", help="the multi-question organism (toy-vicuna-multi, "
                   "toy-llava-multi: every question type of data/world.json), from the colour organism's toy-clip")
    t.add_argument("--text-weight", type=float, default=0.5, help="weight of the text QA loss mixed into the "
                   "Llava's stage 2 (default 0.5; 0: visual QA alone)")
    t.add_argument("--force", action="store_true", help="replace the models the stage would write in --out")
    return p


def _model_options(p) -> None:
    p.add_argument("--model", default="toy-llava", help=MODELS_HELP)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device-map", choices=["auto"], help="spread a model too big for one GPU over all (accelerate)")


def _method_options(p) -> None:
    p.add_argument("--method", default="tool", help="how to score the patches: tool (the paper's, default), top-k, "
                                                    "attention, ablation, gradient, ig or random")
    p.add_argument("--heads", type=int, help="heads summed by --method top-k (default 3)")


def _path(value: str | None, what: str) -> Path | None:
    """A path argument (kept a string by argparse: Path('') would silently become the current folder)."""
    if value is None:
        return None
    if not value.strip():
        raise LlavamechError(f"{what} is empty; give a path")
    return Path(value).expanduser()


def _writable_file(path: Path, what: str) -> None:
    """A file we are about to write: its folder must exist and be writable, and it must not be a folder."""
    if path.is_dir():
        raise LlavamechError(f"{what} {path} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise LlavamechError(f"{what} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise LlavamechError(f"{what} {path}: the folder {folder} is not writable")


def _writable_folder(path: Path, what: str) -> None:
    """A folder we may create: it is a folder or can be made under a writable existing ancestor."""
    if path.exists() and not path.is_dir():
        raise LlavamechError(f"{what} {path} is a file; give a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK):
        raise LlavamechError(f"{what} {path}: {ancestor} is not writable")


def _heads(args) -> None:
    """--heads belongs to --method top-k: with another method it would be silently ignored."""
    from .patches import DEFAULT_HEADS
    if args.heads is not None and args.method != "top-k":
        raise LlavamechError(f"--heads is for --method top-k, not --method {args.method}; drop it")
    args.heads = DEFAULT_HEADS if args.heads is None else args.heads


def _positive(value, what: str) -> None:
    if value is not None and value < 1:
        raise LlavamechError(f"{what} must be at least 1, got {value}")


def _explain(args) -> int:
    from .explain import MAP_FORMATS
    from .models import load
    from .patches import check_method
    _heads(args)
    args.out = _path(args.out, "--out")
    if args.image is None and not (args.context or "").strip():
        raise LlavamechError("give an IMAGE, or the facts as --context for a text-only question")
    if args.out is not None:
        if args.image is None:
            raise LlavamechError("--out draws the patch map over the image; give an IMAGE")
        _writable_file(args.out, "--out")
        if args.out.suffix.lower() not in MAP_FORMATS:
            raise LlavamechError(f"--out {args.out}: give a file ending in {', '.join(MAP_FORMATS)}")
        refuse_overwrite([args.out], args.force, inputs=[args.image])
    check_method(args.method)
    if args.method != "tool" and args.image is None:
        raise LlavamechError(f"--method {args.method} scores image patches; give an IMAGE")
    model = load(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map)
    check_method(args.method, model, args.heads)
    result = model.explain(args.image, question=args.question, context=args.context, method=args.method,
                           heads=args.heads if args.method == "top-k" else None)
    if args.out:
        result.save_map(args.out)
    if args.json:
        print(result.to_json())
    else:
        heads = ", ".join(f"{h['layer']}_{h['head']} ({h['score']:.3f})" for h in result.top_heads[:5])
        print(f"{result.model}: {result.question!r} -> {result.answer!r} (p={result.answer_prob:.3f})")
        print(f"top heads (layer_head, log-prob increase): {heads}")
        if result.patch_grid:   # which method made the map, and where it peaks: the map itself is in --json or --out
            rows, cols = result.grid_shape
            peak = max(range(rows * cols), key=lambda i: result.patch_grid[i // cols][i % cols])
            print(f"patch map ({result.method}, {rows} x {cols} patches): largest at row {peak // cols}, "
                  f"column {peak % cols} (0-based, from the top left)")
        if args.out:
            print(f"patch map written to {args.out}")
    return 0


def _run(args) -> int:
    from . import jobs
    _heads(args)
    _positive(args.limit, "--limit")
    args.examples, args.out = _path(args.examples, "EXAMPLES"), _path(args.out, "--out")
    _writable_folder(args.out, "--out")
    summary = jobs.run(args.examples, args.model, args.out, device=args.device, dtype=args.dtype, method=args.method,
                  heads=args.heads, maps=args.maps, force=args.force, device_map=args.device_map, limit=args.limit)
    if "written" in summary:   # the first process speaks for the run
        if args.limit is not None and summary["items"] < args.limit:
            print(f"llavamech: note: --limit {args.limit}, but {args.examples} holds {summary['items']} items; "
                  "all of them were run", file=sys.stderr)
        print(json.dumps(summary))
    return 0


MAX_SCENES = 5000   # every scene is drawn in memory before the file is written: about 0.2 MB each


def _examples(args) -> int:
    from .examples import toy_examples, typed_examples, write_jsonl
    _positive(args.n, "--n")
    if args.n > MAX_SCENES:
        raise LlavamechError(f"--n {args.n}: at most {MAX_SCENES} scenes a file (all are held in memory while drawn); "
                             "write several files with different --seed")
    drawn = toy_examples if args.type is None else lambda n, seed: typed_examples(n, args.type, seed)
    args.out = _path(args.out, "--out")
    _writable_folder(args.out.parent, "--out")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _writable_file(args.out, "--out")
    path = write_jsonl(drawn(args.n, args.seed), args.out, force=args.force)
    kind = "" if args.type is None else f", {args.type} questions"
    print(f"{args.n} held-out toy scenes (seed {args.seed}{kind}) written to {path}")
    return 0


def _coco(args) -> int:
    from .examples import from_coco
    _positive(args.limit, "--limit")
    if not 0 <= args.min_area < 1:
        raise LlavamechError(f"--min-area is a share of the image, between 0 and 1; got {args.min_area}")
    args.instances, args.images = _path(args.instances, "INSTANCES"), _path(args.images, "--images")
    args.out = _path(args.out, "--out")
    _writable_folder(args.out.parent, "--out")
    n = from_coco(args.instances, args.images, args.out, min_area=args.min_area, limit=args.limit, force=args.force)
    print(f"{n} items written to {args.out}")
    return 0


def _train(args) -> int:
    from .cards import write_cards
    from .organism.recipe import STAGES, Recipe, folder, multi_recipe, run, smoke_recipe
    from .question_study import write_card

    args.out = _path(args.out, "--out")
    _writable_folder(args.out, "--out")
    if args.seed < 0:
        raise LlavamechError(f"--seed must be 0 or more, got {args.seed}")
    if not 0 <= args.text_weight < float("inf"):
        raise LlavamechError(f"--text-weight must be 0 or more, got {args.text_weight}")
    recipe = (smoke_recipe(args.seed, args.multi) if args.smoke else
              multi_recipe(args.seed) if args.multi else Recipe(seed=args.seed))
    recipe.tqa_weight = args.text_weight
    if args.multi and args.stage == "clip":
        raise LlavamechError("the multi-question organism has no CLIP of its own: it sees with toy-clip; "
                             "use --stage vicuna, llava or all")
    needs = {"llava": ("vicuna", "clip"), "all": ("clip",) if args.multi else ()}.get(args.stage, ())
    missing = [folder(s, recipe) for s in needs if not (args.out / folder(s, recipe) / "config.json").exists()]
    if missing:
        raise LlavamechError(f"--stage {args.stage} starts from {' and '.join(str(args.out / m) for m in missing)}; "
                             "train them first or copy them there (the shipped ones are in data/models)")
    stages = [s for s in STAGES if not (args.multi and s == "clip")] if args.stage == "all" else [args.stage]
    refuse_overwrite([args.out / folder(s, recipe) for s in stages], args.force)
    run(args.stage, args.out, recipe)
    if not args.smoke and args.stage in ("llava", "all"):
        if args.multi:
            write_card(args.out)
        else:
            write_cards(args.out)
    return 0


COMMANDS = {"explain": _explain, "run": _run, "examples": _examples, "coco": _coco, "train-organism": _train}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LlavamechError as e:
        print(f"llavamech: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a file that vanished or a disk that filled up between the checks and the writing
        print(f"llavamech: error: {e.filename or ''}: {e.strerror or e}".replace(": : ", ": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llavamech: interrupted", file=sys.stderr)
        return 130
