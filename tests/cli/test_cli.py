"""The explain contract and the CLI's answers to bad input: one line, exit 2, no traceback."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from llavamech.cli import main
from llavamech.explain import Explanation

Q = "What is the color of the dog?"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def png(tmp_path, scene):
    path = tmp_path / "scene.png"
    scene.image.save(path)
    return path


def test_json_contract(capsys, png):
    code, out, err = run(capsys, "explain", str(png), "--question", Q, "--model", "tiny-random-llava", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == list(Explanation.CONTRACT)
    rows, cols = data["grid_shape"]
    assert (rows, cols) == (4, 4) and len(data["patch_grid"]) == rows and all(len(r) == cols for r in data["patch_grid"])
    assert abs(sum(map(sum, data["patch_grid"])) - 1) < 1e-5
    scores = [h["score"] for h in data["top_heads"]]
    assert scores == sorted(scores, reverse=True) and set(data["top_heads"][0]) == {"layer", "head", "score"}
    assert 0 < data["answer_prob"] <= 1 and data["model"] == "tiny-random-llava" and data["question"] == Q
    assert set(data["seconds"]) == {"forward", "scores", "total"}


def test_json_equals_to_json_of_the_library(capsys, png):
    import llavamech
    lib = llavamech.load("tiny-random-llava").explain(str(png), question=Q).to_dict()
    _, out, _ = run(capsys, "explain", str(png), "--question", Q, "--model", "tiny-random-llava", "--json")
    cli = json.loads(out)
    for d in (lib, cli):
        d.pop("seconds")
    assert cli == lib


def test_out_writes_a_png(capsys, png, tmp_path):
    out_png = tmp_path / "map.png"
    code, out, err = run(capsys, "explain", str(png), "--question", Q, "--model", "tiny-random-llava", "--out", str(out_png))
    assert code == 0, err
    assert Image.open(out_png).size[0] > 100 and "->" in out


def test_text_only_question_on_a_text_model(capsys):
    code, out, err = run(capsys, "explain", "--question", Q, "--context", "The dog is white. The cat is black.",
                         "--model", "tiny-random-vicuna", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["patch_grid"] == [] and data["grid_shape"] == [0, 0]


@pytest.mark.parametrize("mode,size", [("L", (50, 40)), ("RGBA", (64, 64)), ("P", (30, 30)), ("RGB", (3, 5)),
                                       ("RGB", (2400, 1600))], ids=["grey", "rgba", "palette", "tiny", "large"])
def test_unusual_images_are_valid(capsys, tmp_path, mode, size):
    path = tmp_path / f"img.png"
    Image.new(mode, size, 120).save(path)
    code, out, err = run(capsys, "explain", str(path), "--question", Q, "--model", "tiny-random-llava", "--json")
    assert code == 0, err
    assert json.loads(out)["grid_shape"] == [4, 4]


def bad_inputs(tmp_path, png):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image at all")
    return {
        "missing image": ([str(tmp_path / "nope.png"), "--question", Q, "--model", "tiny-random-llava"], "not found"),
        "not an image": ([str(tmp_path / "notes.png"), "--question", Q, "--model", "tiny-random-llava"], "not a readable image"),
        "empty file": ([str(tmp_path / "empty.png"), "--question", Q, "--model", "tiny-random-llava"], "empty"),
        "empty question": ([str(png), "--question", "  ", "--model", "tiny-random-llava"], "question is empty"),
        "unknown model": ([str(png), "--question", Q, "--model", "gpt-17"], "unknown model"),
        "hub id offline": ([str(png), "--question", Q, "--model", "nobody/llava-nonexistent"], "not available offline"),
        "image to text model": ([str(png), "--question", Q, "--model", "tiny-random-vicuna"], "text-only"),
        "no gpu": ([str(png), "--question", Q, "--model", "tiny-random-llava", "--device", "cuda"], "no GPU"),
        "out of vocabulary": ([str(png), "--question", "What is the color of the giraffe?", "--model",
                               "tiny-random-llava"], "'giraffe' is out of"),
        "neither image nor context": (["--question", Q, "--model", "tiny-random-vicuna"], "give an IMAGE"),
        "unknown method": ([str(png), "--question", Q, "--model", "tiny-random-llava", "--method", "saliency"],
                           "unknown method 'saliency'"),
        "no heads": ([str(png), "--question", Q, "--model", "tiny-random-llava", "--method", "top-k", "--heads", "0"],
                     "heads must be a whole number from 1 to"),
        "too many heads": ([str(png), "--question", Q, "--model", "tiny-random-llava", "--method", "top-k",
                            "--heads", "9999"], "heads must be a whole number from 1 to"),
        "heads without top-k": ([str(png), "--question", Q, "--model", "tiny-random-llava", "--heads", "2"],
                                "--heads is for --method top-k, not --method tool"),
        "ablation of a text model": (["--question", Q, "--context", "The dog is white.", "--model",
                                      "tiny-random-vicuna", "--method", "ablation"], "give an IMAGE"),
        "ablation on text-only model with image": ([str(png), "--question", Q, "--model", "tiny-random-vicuna",
                                                    "--method", "ablation"], "text-only"),
    }


@pytest.mark.parametrize("case", ["missing image", "not an image", "empty file", "empty question", "unknown model",
                                  "hub id offline", "image to text model", "no gpu", "out of vocabulary",
                                  "neither image nor context", "unknown method", "no heads", "too many heads",
                                  "heads without top-k", "ablation of a text model", "ablation on text-only model with image"])
def test_bad_input_gets_one_line_and_exit_2(capsys, tmp_path, png, case):
    argv, expected = bad_inputs(tmp_path, png)[case]
    code, out, err = run(capsys, "explain", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("llavamech: error: ") and expected in err, err


def test_the_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llavamech", "explain", str(tmp_path / "missing.png"),
                           "--question", Q, "--model", "tiny-random-llava"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("llavamech: error: image not found")


@pytest.mark.parametrize("method", ["top-k", "attention", "ablation", "gradient", "ig", "random"])
def test_every_method_keeps_the_contract(capsys, png, method):
    code, out, err = run(capsys, "explain", str(png), "--question", Q, "--model", "tiny-random-llava", "--json",
                         "--method", method, *(["--heads", "2"] if method == "top-k" else []))
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == list(Explanation.CONTRACT) and data["method"] == method
    assert data["grid_shape"] == [4, 4] and len(data["patch_grid"]) == 4
    tool = json.loads(run(capsys, "explain", str(png), "--question", Q, "--model", "tiny-random-llava", "--json")[1])
    assert tool["method"] == "tool" and data["answer"] == tool["answer"] and data["top_heads"] == tool["top_heads"]
    assert data["patch_grid"] != tool["patch_grid"]


def test_every_question_type_is_named_in_the_json_and_a_free_question_is_null(capsys, tmp_path):
    """The multi-question organism answers each type with one of the type's answers; a question of no type still
    gets an explanation of the model's own next token, with question_type null."""
    from llavamech.examples import typed_examples
    from llavamech.questions import types

    for qtype in ("existence", "counting", "position", "reverse"):
        example = typed_examples(1, qtype)[0]
        path = tmp_path / f"{qtype}.png"
        example.image.save(path)
        code, out, err = run(capsys, "explain", str(path), "--question", example.question, "--model",
                             "toy-llava-multi", "--json")
        assert code == 0, err
        data = json.loads(out)
        assert data["question_type"] == qtype and data["answer"] in types()[qtype].answers
    code, out, err = run(capsys, "explain", str(path), "--question", "Is the dog red?", "--model", "toy-llava-multi",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["question_type"] is None


def test_typed_example_sets_run_and_score_their_answers(capsys, tmp_path):
    code, out, err = run(capsys, "examples", "--n", "6", "--type", "counting", "--out", str(tmp_path / "set.jsonl"))
    assert code == 0, err
    code, out, err = run(capsys, "run", str(tmp_path / "set.jsonl"), "--model", "toy-llava-multi",
                         "--out", str(tmp_path / "out"))
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert all(r["question_type"] == "counting" and r["expected"] in ("one", "two", "three") for r in rows)
    assert all(r["correct"] == (r["answer"] == r["expected"]) for r in rows)
    code, out, err = run(capsys, "examples", "--n", "2", "--type", "weather", "--out", str(tmp_path / "w.jsonl"))
    assert code == 2 and "unknown question type 'weather'" in err and "\n" not in err.strip()
