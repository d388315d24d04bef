#!/usr/bin/env bash
# The GPU tier in one command, on a GPU machine (a checkout, Python with torch + transformers + accelerate):
#     bash tests/gpu/run.sh [PYTEST ARGS]
# Wheels fetched beforehand where there is network (bash tests/gpu/wheels.sh [--device]) are installed from
# tests/gpu/wheels without network, by the requirements file wheels.sh copied there; the package itself from this
# checkout. Then the 7B-shape benchmark prints its table (first: it is short, and its numbers are the goals'), and the
# tier runs whether or not the bench succeeded, spread over pytest-xdist workers where xdist is installed (each a
# subprocess-heavy test: chapters and CLI calls). Logs go to $OUT when it is set (a remote machine's folder that comes
# back), else to _build/gpu.
#
#     GPU_PART=tier|bench|all (default all)   run one part, e.g. one part per call where a call is time-limited
#     TIER_SECONDS=N                           stop the tier after N s with SIGINT, so pytest still writes its
#                                              summary and junit file (default: no limit)
#     BENCH_ARGS="--repeats 2 --ig-steps 8"    passed to bench/bench_7b.py
#     BENCH_SECONDS=N                          stop the bench after N s, so the tier still runs (default: no limit)
#     TIER_WORKERS=N                           xdist workers for the tier (default 8 where pytest-xdist is
#                                              installed, else one process); each worker's threads: OMP_NUM_THREADS=2
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
    # captum needs torch, num2words docopt (its command line only, and no wheel): both without their dependencies
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-deps captum==0.9.0 num2words==0.5.14
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
                                  "captum", "num2words", "ipywidgets")))
PY
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'"
tier=0 bench=0
if [ "$PART" != tier ]; then
    LIMIT=(); [ -n "${BENCH_SECONDS:-}" ] && LIMIT=(timeout -k 10 "$BENCH_SECONDS")
    # shellcheck disable=SC2086
    "${LIMIT[@]}" "$PYTHON" bench/bench_7b.py ${BENCH_ARGS:-} 2>&1 | tee "$LOGS/bench_7b.txt" || bench=$?
fi
if [ "$PART" != bench ]; then
    LIMIT=(); [ -n "${TIER_SECONDS:-}" ] && LIMIT=(timeout -s INT -k 30 "$TIER_SECONDS")
    WORKERS=()
    if "$PYTHON" -c "import xdist" 2>/dev/null && [ "${TIER_WORKERS:-8}" -gt 1 ]; then
        WORKERS=(-n "${TIER_WORKERS:-8}"); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    fi
    "${LIMIT[@]}" "$PYTHON" -m pytest tests/gpu tests/unit/test_devices.py -v -rs -p no:cacheprovider --durations=25 \
        "${WORKERS[@]}" --junitxml="$LOGS/gpu-tier.xml" "$@" 2>&1 | tee "$LOGS/gpu-tier.log" || tier=$?
    # under xdist a run stopped by TIER_SECONDS may still print a summary of passes only: count what never reported
    [ -f "$LOGS/gpu-tier.xml" ] && "$PYTHON" - "$LOGS/gpu-tier.xml" "$LOGS/gpu-tier.log" <<'PY'
import re, sys
from llavamech.bench_results import read_tier
counts = read_tier(sys.argv[1]).sum()
found = re.search(r"\[(\d+) items?\]|collected (\d+) items?", open(sys.argv[2]).read())
collected = int(next(g for g in found.groups() if g)) if found else 0
reported = int(counts[["passed", "failed", "skipped"]].sum())
print(f"GPU tier: {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped"
      + (f"; {collected - reported} of {collected} collected never reported (stopped by TIER_SECONDS?)"
         if collected > reported else ""))
PY
fi
echo "GPU tier ($PART): tier exit $tier, bench exit $bench (logs in $LOGS)"
[ "$tier" = 0 ] && [ "$bench" = 0 ]
