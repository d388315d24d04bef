#!/usr/bin/env bash
# The GPU tier in one command, on a GPU machine (a checkout, Python with torch + transformers + accelerate):
#     bash tests/gpu/run.sh [PYTEST ARGS]
# Wheels fetched beforehand where there is network (bash tests/gpu/wheels.sh [--device]) are installed from
# tests/gpu/wheels without network, by the requirements file wheels.sh copied there; the package itself from this
# checkout. Then the tier runs, and the 7B-shape benchmark prints its table whether or not the tier passed. Logs go
# to $OUT when it is set (a remote machine's folder that comes back), else to _build/gpu.
#
#     GPU_PART=tier|bench|all (default all)   run one part, e.g. one part per call where a call is time-limited
#     TIER_SECONDS=N                           stop the tier after N s with SIGINT, so pytest still writes its
#                                              summary and junit file (default: no limit)
#     BENCH_ARGS="--repeats 2 --ig-steps 8"    passed to bench/bench_7b.py
#
# From a machine that sends its checkout to the GPU machine with a size limit (64 MiB): `bash tests/gpu/slim.sh on`
# first, `bash tests/gpu/wheels.sh --device` (about 30 MB, carried as tests/gpu/wheels), and
# `bash tests/gpu/slim.sh off` after.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-tests/gpu/wheels}
LOGS=${OUT:-_build/gpu}
PART=${GPU_PART:-all}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 PIP_BREAK_SYSTEM_PACKAGES=1   # a throwaway machine's system Python may be "externally managed"
if [ -f "$WHEELS/requirements.txt" ]; then
    "$PYTHON" -m pip --version
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps captum==0.9.0   # needs torch: no deps
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD/lib:${PYTHONPATH:-}"
"$PYTHON" - <<'PY' 2>&1 | tee "$LOGS/versions.txt"
import importlib.metadata as m
import torch
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "absent"
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA GPU", "|", ", ".join(
    f"{p} {version(p)}" for p in ("torch", "transformers", "accelerate", "pandas", "numpy", "matplotlib", "scipy",
                                  "captum", "ipywidgets")))
PY
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'"
tier=0 bench=0
if [ "$PART" != bench ]; then
    LIMIT=(); [ -n "${TIER_SECONDS:-}" ] && LIMIT=(timeout -s INT -k 30 "$TIER_SECONDS")
    "${LIMIT[@]}" "$PYTHON" -m pytest tests/gpu tests/unit/test_devices.py -v -rs -p no:cacheprovider --durations=25 \
        --junitxml="$LOGS/gpu-tier.xml" "$@" 2>&1 | tee "$LOGS/gpu-tier.log" || tier=$?
fi
if [ "$PART" != tier ]; then
    # shellcheck disable=SC2086
    "$PYTHON" bench/bench_7b.py ${BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench_7b.txt" || bench=$?
fi
echo "GPU tier ($PART): tier exit $tier, bench exit $bench (logs in $LOGS)"
[ "$tier" = 0 ] && [ "$bench" = 0 ]
