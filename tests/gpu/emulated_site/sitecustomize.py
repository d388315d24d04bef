"""Puts a subprocess of the emulated GPU tier (python -m llavamech ..., a chapter) on the emulated card too: it is on
PYTHONPATH only while tests.gpu.emulated is active."""
import os
import sys
from pathlib import Path

if os.environ.get("LLAVAMECH_EMULATED_CUDA") == "1":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.gpu import emulated
    emulated.start()
