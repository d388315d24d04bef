"""A wheel, installed into a fresh environment, works outside the checkout: the organism, sprites and world
travel inside the package."""
import json
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_works_outside_the_checkout(tmp_path, scene):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-w", str(wheels)], check=True, capture_output=True)
    wheel = next(wheels.glob("llavamech-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    (packages / "deps.pth").write_text(site.getsitepackages()[0] + "\n")   # torch & co. from this environment
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    away = tmp_path / "elsewhere"
    away.mkdir()
    scene.image.save(away / "scene.png")
    where = subprocess.run([python, "-c", "import llavamech.paths as p; print(p.__file__); print(p.DATA_DIR)"],
                           cwd=away, capture_output=True, text=True, check=True).stdout.split()
    assert all(str(venv) in w for w in where), where            # the installed copy and its own data
    done = subprocess.run([venv / "bin" / "llavamech", "explain", "scene.png", "--question",
                           "What is the color of the dog?", "--json"], cwd=away, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "toy-llava" and result["grid_shape"] == [8, 8] and 0 < result["answer_prob"] <= 1
