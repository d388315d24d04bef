"""Where the shipped artefacts live: `data/` at the top of the repository (override: LLAVAMECH_DATA)."""
import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("LLAVAMECH_DATA", Path(__file__).resolve().parents[2] / "data"))
MODELS_DIR = DATA_DIR / "models"
SPRITES_DIR = DATA_DIR / "sprites"
WORLD_JSON = DATA_DIR / "world.json"
