#!/usr/bin/env bash
# The GPU tier in one command, on a GPU machine (a checkout, Python with torch + transformers + accelerate):
#     bash tests/gpu/run.sh
# Wheels for the other dependencies, fetched beforehand where there is network (bash tests/gpu/wheels.sh), are
# installed from tests/gpu/wheels without network; the package itself from this checkout. Then the tier runs, and
# the 7B-shape benchmark prints its table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
WHEELS=${WHEELS:-tests/gpu/wheels}
if [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" -r tests/gpu/requirements.txt
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps captum==0.9.0   # needs torch: no deps
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD/lib:${PYTHONPATH:-}"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'; print(torch.cuda.get_device_name())"
"$PYTHON" -m pytest tests/gpu tests/unit/test_devices.py -v -rs "$@"
"$PYTHON" bench/bench_7b.py
