"""Where the shipped artefacts live, and the rule for the files a command writes.

The artefacts: one setting overrides all, LLAVAMECH_DATA. Otherwise `data/` at the top of a checkout (editable
installs, the book), else the copy installed with the package (`llavamech/_data`, from a wheel or
`pip install git+...`)."""
import os
from pathlib import Path

from .errors import LlavamechError

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parents[1] / "data"


def _data_dir() -> Path:
    if os.environ.get("LLAVAMECH_DATA"):
        return Path(os.environ["LLAVAMECH_DATA"]).expanduser()
    return _CHECKOUT if (_CHECKOUT / "world.json").is_file() else _PACKAGE / "_data"


DATA_DIR = _data_dir()
MODELS_DIR = DATA_DIR / "models"
SPRITES_DIR = DATA_DIR / "sprites"
WORLD_JSON = DATA_DIR / "world.json"
REFERENCE_DIR = DATA_DIR / "reference"
SEEDS_DIR = DATA_DIR / "seeds"
GPU_RUNS_DIR = DATA_DIR / "gpu"   # what tests/gpu/run.sh wrote on a GPU machine, read by appendix C


def check_data() -> None:
    """One clear line when the shipped data cannot be found (a source tree without data/, a wrong setting)."""
    if not WORLD_JSON.is_file():
        raise LlavamechError(f"llavamech's data folder is missing ({DATA_DIR} has no world.json); install the "
                             "package from a wheel or a checkout, or set LLAVAMECH_DATA to a copy of data/")


def refuse_overwrite(targets, force: bool, inputs=()) -> None:
    """Files a command is about to write: none may be one of its `inputs` (not even under --force: the command would
    destroy what it reads), and none may already exist unless `force`. Checked before anything is written."""
    for target in map(Path, targets):
        for source in map(Path, inputs):
            if target.resolve() == source.resolve() or (target.exists() and source.exists()
                                                         and os.path.samefile(target, source)):
                raise LlavamechError(f"{target} is also this command's input; write to another file")
    existing = [Path(t) for t in targets if Path(t).exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more files it would write)" if len(existing) > 1 else ""
        raise LlavamechError(f"{existing[0]} already exists{more}; write elsewhere (--out), or overwrite it (--force; force=True in Python)")
