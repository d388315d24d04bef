"""Where the shipped artefacts live. One setting overrides all: LLAVAMECH_DATA. Otherwise `data/` at the top of
a checkout (editable installs, the book), else the copy installed with the package (`llavamech/_data`, from a
wheel or `pip install git+...`)."""
import os
from pathlib import Path

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


def check_data() -> None:
    """One clear line when the shipped data cannot be found (a source tree without data/, a wrong setting)."""
    if not WORLD_JSON.is_file():
        from .errors import LlavamechError
        raise LlavamechError(f"llavamech's data folder is missing ({DATA_DIR} has no world.json); install the "
                             "package from a wheel or a checkout, or set LLAVAMECH_DATA to a copy of data/")
