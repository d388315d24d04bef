"""Careless and hostile use of the commands that write: nothing written over an existing file without --force, nor
ever over the command's own input; a run folder that knows what its rows were computed from, is locked for its
run's life, and says in one line what went wrong and how to go on."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

from llavamech import jobs
from llavamech.cli import main
from llavamech.examples import toy_examples, write_jsonl

MODEL = "tiny-random-llava"
ENV = {**os.environ, "TQDM_DISABLE": "1"}
Q = "What is the color of the dog?"


@pytest.fixture(autouse=True)
def no_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


def refused(capsys, argv, expected):
    capsys.readouterr()   # what earlier commands printed
    assert main([str(a) for a in argv]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("llavamech: error: "), out.err
    assert expected in out.err, out.err
    return out.err


def rows(folder):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.fixture
def toy_set(tmp_path):
    return write_jsonl(toy_examples(8, seed=3), tmp_path / "set" / "examples.jsonl")


def coco(tmp_path, annotations):
    (tmp_path / "val").mkdir(exist_ok=True)
    Image.new("RGB", (100, 80)).save(tmp_path / "val" / "1.jpg")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 80}],
                                "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}],
                                "annotations": annotations}))
    return path


# ---- never over an existing file without --force, never over the input ----

def test_no_command_writes_over_a_file_without_force(tmp_path, capsys, toy_set):
    image = toy_set.parent / "images" / "examples-00000.png"
    mine = tmp_path / "mine.jsonl"
    mine.write_text("my own notes\n")
    refused(capsys, ["examples", "--n", 2, "--out", mine], f"{mine} already exists")
    user = tmp_path / "user" / "ex.jsonl"                          # the file is new, but not its images
    (user.parent / "images").mkdir(parents=True)
    (user.parent / "images" / "ex-00001.png").write_bytes(b"my photo")
    refused(capsys, ["examples", "--n", 2, "--out", user], "ex-00001.png already exists")
    annotations = coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [10, 10, 40, 30]}])
    refused(capsys, ["coco", annotations, "--images", tmp_path / "val", "--out", mine], "already exists")
    the_map = tmp_path / "map.png"
    the_map.write_bytes(b"my map")
    refused(capsys, ["explain", image, "--question", Q, "--model", MODEL, "--out", the_map], "already exists")
    assert mine.read_text() == "my own notes\n" and the_map.read_bytes() == b"my map" and not user.exists()
    assert (user.parent / "images" / "ex-00001.png").read_bytes() == b"my photo"
    for argv in (["examples", "--n", 2, "--out", mine], ["examples", "--n", 2, "--out", user],
                 ["coco", annotations, "--images", tmp_path / "val", "--out", mine],
                 ["explain", image, "--question", Q, "--model", MODEL, "--out", the_map]):
        assert main([str(a) for a in [*argv, "--force"]]) == 0
    capsys.readouterr()


def test_no_command_writes_over_its_own_input_even_forced(tmp_path, capsys, toy_set):
    annotations = coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [10, 10, 40, 30]}])
    image = toy_set.parent / "images" / "examples-00000.png"
    before = annotations.read_bytes(), image.read_bytes()
    refused(capsys, ["coco", annotations, "--images", tmp_path / "val", "--out", annotations, "--force"],
            "is also this command's input")
    refused(capsys, ["explain", image, "--question", Q, "--model", MODEL, "--out", image, "--force"],
            "is also this command's input")
    assert (annotations.read_bytes(), image.read_bytes()) == before


@pytest.mark.parametrize("annotations, expected", [
    ([{"id": 7, "image_id": 9, "category_id": 18, "bbox": [1, 1, 5, 5]}], "annotation 7 refers to image id 9"),
    ([{"id": 7, "image_id": 1, "category_id": 18, "bbox": [1, 1, 5]}], "annotation 7 has bbox [1, 1, 5]"),
    ([{"id": 7, "image_id": 1, "category_id": 18, "bbox": ["1", 1, 5, 5]}], "COCO boxes are [x, y, width, height]"),
    ([{"id": 7, "image_id": 1, "bbox": [1, 1, 5, 5]}], "an entry lacks the field 'category_id'"),
], ids=["orphan image id", "short bbox", "bbox of strings", "no category"])
def test_damaged_coco_annotations_are_one_line(tmp_path, capsys, annotations, expected):
    refused(capsys, ["coco", coco(tmp_path, annotations), "--images", tmp_path / "val", "--out", tmp_path / "c.jsonl"],
            expected)


# ---- run folders ----

def test_a_resumed_run_recomputes_exactly_the_items_that_changed(tmp_path, capsys, toy_set):
    """Killed (here: --limit) after some items, the example file regenerated, one line edited, an image replaced:
    the resumed run gives the rows a clean run gives, and recomputes only what changed."""
    out, clean = tmp_path / "run", tmp_path / "clean"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "5"]) == 0
    capsys.readouterr()
    regenerated = write_jsonl(toy_examples(8, seed=4), tmp_path / "other" / "examples.jsonl")
    shutil.copy(regenerated, toy_set)
    shutil.rmtree(toy_set.parent / "images")
    shutil.copytree(regenerated.parent / "images", toy_set.parent / "images")
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ran here"] == 8 and summary["rows dropped as changed"] == 5
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(clean)]) == 0
    assert rows(out) == rows(clean)

    lines = toy_set.read_text().splitlines()
    item = json.loads(lines[2])
    item["animal"], item["colour"] = next(f for f in item["facts"] if f[0] != item["animal"])
    del item["box"]   # the new animal's box comes from "boxes" (a stale "box" would be refused)
    toy_set.write_text("\n".join(lines[:2] + [json.dumps(item)] + lines[3:]) + "\n")
    Image.open(toy_set.parent / "images" / "examples-00005.png").transpose(Image.FLIP_LEFT_RIGHT).save(
        toy_set.parent / "images" / "examples-00005.png")
    capsys.readouterr()
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["ran here"] == 2
    shutil.rmtree(clean)
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(clean)]) == 0
    assert rows(out) == rows(clean)


def test_limit_after_a_full_run_reports_its_own_items(tmp_path, capsys, toy_set):
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    full = rows(out)
    capsys.readouterr()
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["items"], summary["ran here"], summary["written"]) == (5, 0, 5) and rows(out) == full[:5]


def test_a_limit_past_the_end_of_the_file_says_so(tmp_path, capsys, toy_set):
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(tmp_path / "run"), "--limit", "100"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["items"] == 8
    assert captured.err == f"llavamech: note: --limit 100, but {toy_set} holds 8 items; all of them were run\n"


def test_a_locked_run_folder_is_refused_and_left_alone(tmp_path, capsys, toy_set):
    """While another process holds the folder (as a running run's first process does), a second run (other settings,
    the same, or --force) gets one line naming it and deletes nothing; once it is gone the run goes on."""
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out), "--limit", "3"]) == 0
    parts = {p.name: p.read_bytes() for p in out.iterdir() if p.name != jobs.LOCK}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from llavamech import "
                               "jobs; held = jobs.lock(Path(sys.argv[1])); print(flush=True); time.sleep(300)", str(out)],
                              stdout=subprocess.PIPE, env=ENV)
    try:
        holder.stdout.readline()
        for extra in ([], ["--method", "random"], ["--force"]):
            refused(capsys, ["run", toy_set, "--model", MODEL, "--out", out, *extra],
                    f"another run (process {holder.pid}) is writing into {out}")
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != jobs.LOCK} == parts
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0   # released by its end: it goes on


def test_a_corrupt_middle_row_gets_a_way_out_that_keeps_the_rest(tmp_path, capsys, toy_set):
    out = tmp_path / "run"
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    part = out / "part-0.jsonl"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:3] + ["{garbage"] + lines[4:]) + "\n")
    err = refused(capsys, ["run", toy_set, "--model", MODEL, "--out", out], f"{part}:4 is not a result row")
    assert "--force" not in err and f"sed -i 4d {part}" in err and part.read_text().count("\n") == 8
    subprocess.run(["sed", "-i", "4d", str(part)], check=True)
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["ran here"] == 1


@pytest.mark.parametrize("variables, expected", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "but RANK, LOCAL_RANK not"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a number"),
], ids=["alone", "with MASTER_ADDR", "not a number"])
def test_a_stray_launcher_environment_is_one_line_not_a_hang(tmp_path, capsys, monkeypatch, toy_set, variables,
                                                             expected):
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    refused(capsys, ["run", toy_set, "--model", MODEL, "--out", tmp_path / "run"], expected)


def test_a_full_disk_names_the_file_and_the_rerun_resumes(tmp_path, toy_set):
    """A file-size limit makes the part's writes fail as a full disk does, after some rows."""
    out = tmp_path / "run"

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # the write then fails with an error instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    # the same thread count as this process (conftest sets it), so that the resumed rows match to the last bit
    same_threads = {**ENV, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    full = subprocess.run([sys.executable, "-m", "llavamech", "run", str(toy_set), "--model", MODEL, "--out", str(out)],
                          capture_output=True, text=True, env=same_threads, preexec_fn=small_files)
    assert full.returncode == 2 and full.stderr.count("\n") == 1, full.stderr
    assert f"cannot write {out / 'part-0.jsonl'}" in full.stderr and "rerun the same command to resume" in full.stderr
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(out)]) == 0
    assert main(["run", str(toy_set), "--model", MODEL, "--out", str(tmp_path / "clean")]) == 0
    assert rows(out) == rows(tmp_path / "clean")


@pytest.mark.parametrize("argv, expected", [
    (["examples", "--n", "abc", "--out", "x.jsonl"], "argument --n: invalid int value: 'abc'"),
    (["run", "set.jsonl", "--out", "r", "--bogus"], "unrecognized arguments: --bogus"),
    (["explain", "a.png"], "the following arguments are required: --question"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_malformed_options_are_one_line_too(capsys, argv, expected):
    with pytest.raises(SystemExit) as code:
        main(argv)
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1 and err.startswith("llavamech: error: ") and expected in err
