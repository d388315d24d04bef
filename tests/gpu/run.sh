#!/usr/bin/env bash
# The GPU tier in one command, on a GPU machine (a checkout, Python with torch + transformers + accelerate):
#     bash tests/gpu/run.sh [PYTEST ARGS]
# Wheels fetched beforehand where there is network (bash tests/gpu/wheels.sh [--device]) are installed from
# tests/gpu/wheels without network, by the requirements file wheels.sh copied there; the package itself from this
# checkout. Then the tier runs, and the 7B-shape benchmark prints its table, whether or not the tier passed. Logs go
# to $OUT when it is set (a remote machine's folder that comes back), else to _build/gpu.
#
# From a machine that sends its checkout to the GPU machine with a size limit (64 MiB): `bash tests/gpu/slim.sh on`
# first, `bash tests/gpu/wheels.sh --device` (about 24 MB, carried as tests/gpu/wheels), and
# `bash tests/gpu/slim.sh off` after.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-tests/gpu/wheels}
LOGS=${OUT:-_build/gpu}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
if [ -f "$WHEELS/requirements.txt" ]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps captum==0.9.0   # needs torch: no deps
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD/lib:${PYTHONPATH:-}"
"$PYTHON" - <<'PY' | tee "$LOGS/versions.txt"
import importlib.metadata as m, torch
assert torch.cuda.is_available(), "no CUDA GPU here"
print(torch.cuda.get_device_name(), "|", ", ".join(f"{p} {m.version(p)}" for p in
      ("torch", "transformers", "accelerate", "pandas", "numpy", "matplotlib", "scipy", "captum", "ipywidgets")))
PY
tier=0
"$PYTHON" -m pytest tests/gpu tests/unit/test_devices.py -v -rs -p no:cacheprovider --durations=25 \
    --junitxml="$LOGS/gpu-tier.xml" "$@" 2>&1 | tee "$LOGS/gpu-tier.log" || tier=$?
bench=0
"$PYTHON" bench/bench_7b.py 2>&1 | tee "$LOGS/bench_7b.txt" || bench=$?
echo "GPU tier: exit $tier; bench: exit $bench (logs in $LOGS)"
[ "$tier" = 0 ] && [ "$bench" = 0 ]
