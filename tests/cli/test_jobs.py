"""`llavamech run` (llavamech.jobs): one row per item, exactly once, across kills, restarts and processes; example
files from toy scenes and from COCO annotations; a different run into the same folder refused."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from llavamech.cli import main
from llavamech.errors import LlavamechError
from llavamech.examples import from_coco, read_jsonl, toy_examples, write_jsonl

MODEL = "tiny-random-llava"
ENV = {**os.environ, "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    return write_jsonl(toy_examples(40, seed=3), tmp_path_factory.mktemp("set") / "examples.jsonl")


def rows(folder):
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def same(a, b):
    """Rows equal but for timings, their floats to float32 noise: processes under a launcher run with one thread
    each, and another thread count sums the same float32 products in another order (about 1e-7 relative, up to
    1e-4 in a map after min-max normalisation of the nearly flat scores of a random model)."""
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    return close(strip(a), strip(b))


def close(x, y) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isclose(x, y, rel_tol=1e-4,
                                                                                          abs_tol=1e-6)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(close(p, q) for p, q in zip(x, y))
    return x == y


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "llavamech", *argv], capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def clean(toy_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    return rows(out)


def test_a_run_writes_one_row_per_item(clean, toy_set):
    items = read_jsonl(toy_set)
    assert [r["index"] for r in clean] == list(range(len(items)))
    r = clean[0]
    assert {"answer", "answer_prob", "top_heads", "patch_grid", "grid_shape", "method", "correct", "pointing"} <= set(r)
    assert r["colour"] == items[0].colour and r["correct"] == (r["answer"] == items[0].colour)


def test_a_box_the_model_cannot_see_gives_no_pointing_not_a_miss(tmp_path):
    from dataclasses import replace
    unseen = [replace(e, box=(0, 0, 1, 1), boxes=()) for e in toy_examples(2, seed=4)]   # holds no patch's centre
    path = write_jsonl(unseen, tmp_path / "unseen.jsonl")
    assert main(["run", str(path), "--model", MODEL, "--out", str(tmp_path / "out")]) == 0
    assert [r["pointing"] for r in rows(tmp_path / "out")] == [None, None]


def test_a_killed_run_restarts_and_completes_every_item_once(toy_set, tmp_path, clean):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "llavamech", "run", str(toy_set), "--model", MODEL, "--out",
                             str(out), "--maps"], env=ENV, stderr=subprocess.DEVNULL)   # maps: slow enough to kill
    part = out / "part-0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (part.exists() and part.read_text().count("\n") >= 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = part.read_text().count("\n")
    assert 5 <= written < len(clean), "the run was not killed halfway"
    done = cli("run", str(toy_set), "--model", MODEL, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ran here"] == len(clean) - written
    assert same(rows(out), clean)


def test_a_line_cut_short_by_a_kill_is_run_again(toy_set, tmp_path, clean):
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "10"]) == 0
    with open(out / "part-0.jsonl", "a") as f:
        f.write('{"index": 10, "answer": "re')   # the write a kill interrupted
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    assert same(rows(out), clean)


def test_two_processes_give_the_same_rows(toy_set, tmp_path, clean):
    """`accelerate launch --multi_gpu --num_processes 2` starts two CPU processes (torchrun) on a machine without
    GPUs; each takes every other item."""
    out = tmp_path / "two"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llavamech", "run",
                           str(toy_set), "--model", MODEL, "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = sorted(out.glob("part-*.jsonl"))
    assert len(parts) == 2 and all(p.read_text().count("\n") == len(clean) // 2 for p in parts)
    assert same(rows(out), clean)


def test_a_different_run_is_refused_unless_forced(toy_set, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "3"]) == 0
    capsys.readouterr()
    assert main(["run", str(toy_set), "--model", "tiny-random-llava-next", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the results of a different run" in err and "--force" in err
    assert len(rows(out)) == 3
    assert main(["run", str(toy_set), "--model", "tiny-random-llava-next", "--out", str(out), "--force",
                 "--limit", "2"]) == 0
    assert [r["index"] for r in rows(out)] == [0, 1] and json.loads((out / "run.json").read_text())["model"] == \
        "tiny-random-llava-next"


def test_a_bad_example_line_is_named_and_the_rows_are_kept(toy_set, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "4"]) == 0
    before = (out / "results.jsonl").read_text()
    broken = toy_set.parent / "broken.jsonl"
    lines = toy_set.read_text().splitlines()
    broken.write_text("\n".join(lines[:2] + ['{"image": "images/00002.png", "animal": '] + lines[3:]) + "\n")
    capsys.readouterr()
    assert main(["run", str(broken), "--model", MODEL, "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{broken}:3: not valid JSON" in err
    assert (out / "results.jsonl").read_text() == before


def test_coco_annotations_become_an_example_set(tmp_path):
    images = tmp_path / "val"
    images.mkdir()
    for i in (1, 2, 3):
        Image.new("RGB", (100, 80), (200, 120, 40)).save(images / f"{i:012d}.jpg")
    coco = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 100, "height": 80} for i in (1, 2, 3, 4)],
            "categories": [{"id": 18, "name": "dog", "supercategory": "animal"},
                           {"id": 17, "name": "cat", "supercategory": "animal"},
                           {"id": 1, "name": "person", "supercategory": "person"}],
            "annotations": [
                {"image_id": 1, "category_id": 18, "bbox": [10, 10, 40, 30]},      # a dog and a larger cat: the cat
                {"image_id": 1, "category_id": 17, "bbox": [50.4, 20, 49.9, 60]},
                {"image_id": 2, "category_id": 18, "bbox": [0, 0, 30, 30]},        # two dogs: "the dog" is ambiguous
                {"image_id": 2, "category_id": 18, "bbox": [40, 0, 30, 30]},
                {"image_id": 3, "category_id": 1, "bbox": [0, 0, 50, 50]},         # a person only
                {"image_id": 4, "category_id": 18, "bbox": [0, 0, 50, 50]}]}       # image file missing
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    out = tmp_path / "sets" / "coco.jsonl"
    assert main(["coco", str(tmp_path / "instances.json"), "--images", str(images), "--out", str(out)]) == 0
    items = read_jsonl(out)
    assert [(x.animal, x.box) for x in items] == [("cat", (50, 20, 100, 80))]
    assert items[0].colour is None and items[0].image == (images / "000000000001.jpg").resolve()
    with pytest.raises(LlavamechError, match="holds a single animal"):   # the cat covers 0.37 of its image
        from_coco(tmp_path / "instances.json", images, tmp_path / "again.jsonl", min_area=0.5)


@pytest.mark.parametrize("argv, expected", [
    (["run", "{set}", "--out", "{tmp}/afile"], "is a file; give a folder"),
    (["run", "{tmp}/nope.jsonl", "--out", "{tmp}/r"], "example file not found"),
    (["run", "{set}", "--out", "{tmp}/r", "--limit", "0"], "--limit must be at least 1"),
    (["run", "{set}", "--out", "{tmp}/r", "--model", "tiny-random-vicuna"], "text-only"),
    (["run", "{set}", "--out", "{tmp}/r", "--method", "nope"], "unknown method 'nope'"),
    (["run", "{set}", "--out", "{tmp}/r", "--model", "tiny-random-llava", "--device-map", "auto"], "not tiny-random"),
    (["run", "{set}", "--out", ""], "--out is empty"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--out", "{tmp}/nodir/map.png"],
     "does not exist; create it first"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--out", "{tmp}"], "is a folder"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--out", "{tmp}/map.txt"], "ending in .png"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--model", ""], "model name is empty"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--model", "{tmp}"], "without a model"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--model", "{tmp}/none"],
     "model folder not found"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--model", "{tmp}/afile"],
     "is a file; give the folder that holds it"),
    (["explain", "{image}", "--question", "What is the color of the <image>?"], "special token"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--out", "{image}", "--force"],
     "is also this command's input"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--device", ""], "unknown device ''"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--device", "mps"], "not available"),
    (["explain", "{image}", "--question", "What is the color of the dog?", "--device", "cuda:x"], "unknown device"),
    (["explain", "--question", "What is the color of the dog?", "--context", "  ", "--model", "tiny-random-vicuna"],
     "give an IMAGE"),
    (["examples", "--n", "0", "--out", "{tmp}/e.jsonl"], "--n must be at least 1"),
    (["examples", "--n", "100000000", "--out", "{tmp}/e.jsonl"], "at most 5000 scenes a file"),
    (["examples", "--n", "2", "--out", "{tmp}/e.json"], "does not end in .jsonl"),
    (["examples", "--out", "{tmp}/afile/e.jsonl"], "is a file"),
    (["coco", "{tmp}/nope.json", "--images", "{tmp}", "--out", "{tmp}/c.jsonl"], "annotations file not found"),
    (["coco", "{set}", "--images", "{tmp}", "--out", "{tmp}/c.jsonl"], "is not JSON"),
    (["coco", "{set}", "--images", "{tmp}", "--out", "{set}", "--force"], "is also this command's input"),
    (["coco", "{tmp}/afile", "--images", "{tmp}", "--out", "{tmp}/c.jsonl", "--min-area", "2"], "--min-area"),
    (["train-organism", "--stage", "llava", "--out", "{tmp}/empty"], "train them first"),
    (["train-organism", "--out", "{tmp}/afile"], "is a file"),
    (["train-organism", "--seed", "-1", "--out", "{tmp}/t"], "--seed must be 0 or more"),
    (["train-organism", "--text-weight", "-0.5", "--out", "{tmp}/t"], "--text-weight must be 0 or more"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_command_answers_bad_input_in_one_line(argv, expected, toy_set, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    image = toy_set.parent / "images" / "examples-00000.png"
    argv = [a.format(set=toy_set, tmp=tmp_path, image=image) for a in argv]
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("llavamech: error: "), out.err
    assert expected in out.err, out.err


def test_a_question_the_model_cannot_be_asked_stops_the_run_before_any_item_is_computed(tmp_path, capsys):
    path = write_jsonl(toy_examples(3, seed=5), tmp_path / "late.jsonl")
    lines = path.read_text().splitlines()
    lines.append(json.dumps({"image": json.loads(lines[0])["image"], "question": "Why is the sky?", "answer": "red"}))
    path.write_text("\n".join(lines) + "\n")
    assert main(["run", str(path), "--model", "toy-llava", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "late.jsonl:4:" in err and "vocabulary" in err and err.count("\n") == 1, err
    assert not any((tmp_path / "out").glob("part-*.jsonl")) or all(
        p.read_text() == "" for p in (tmp_path / "out").glob("part-*.jsonl"))
