"""A GPU session sends this checkout to a GPU machine whose transfer takes at most 64 MiB of tracked and untracked
files. The whole repository is larger; with the files of tests/gpu/slim.txt left behind (`bash tests/gpu/slim.sh
on`), what the GPU tier needs must fit beside the wheels it carries (`bash tests/gpu/wheels.sh --device`), with room
for a session's own files."""
import subprocess
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks, before a GPU session, the checkout it sends")
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64 * 2 ** 20
FETCHED = ROOT / "tests" / "gpu" / "wheels"   # bash tests/gpu/wheels.sh --device writes them here; they travel too
# What that fetched on 2026-11-28 (46 wheels, 30 MB), or the wheels there now if they are larger.
WHEELS = max([30 * 2 ** 20, sum(p.stat().st_size for p in FETCHED.rglob("*") if p.is_file())])
ROOM = 3 * 2 ** 20   # a session's untracked files and whatever else it writes
TIER_MODELS = ("toy-llava", "toy-vicuna", "toy-clip", "toy-llava-multi", "toy-vicuna-multi")   # chapters load these


def slim_is_on() -> bool:
    exclude = ROOT / ".git" / "info" / "exclude"
    return exclude.is_file() and "tests/gpu/slim.sh: begin" in exclude.read_text()


def tracked(*pathspecs: str) -> list[Path]:
    if slim_is_on():
        pytest.skip("slim is on (bash tests/gpu/slim.sh off): the index lacks what these tests count")
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *pathspecs], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.decode().split("\0") if p]


def slim() -> set[Path]:
    lines = (ROOT / "tests" / "gpu" / "slim.txt").read_text().splitlines()
    specs = [line for line in lines if line and not line.startswith("#")]
    assert all(tracked(spec) for spec in specs), "tests/gpu/slim.txt names a path git does not track"
    return set(tracked(*specs))


def test_a_slim_checkout_fits_the_transfer_to_a_gpu_machine():
    left = slim()
    size = sum(p.stat().st_size for p in tracked() if p not in left and p.is_file())
    assert size + WHEELS + ROOM <= LIMIT, (f"a slim checkout is {size / 2 ** 20:.1f} MiB, its wheels "
                                           f"{WHEELS / 2 ** 20:.0f} MiB; the transfer takes {LIMIT // 2 ** 20} MiB: "
                                           "leave more behind in tests/gpu/slim.txt, or ship less")


def test_a_slim_checkout_keeps_every_model_the_gpu_tier_loads():
    kept = {p.parent.name for p in set(tracked()) - slim() if p.name == "model.safetensors"}
    assert set(TIER_MODELS) <= kept
