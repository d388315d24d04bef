#!/usr/bin/env bash
# Wheels for the GPU tier, fetched where there is network, for a GPU machine that has none (Linux x86_64, CPython
# 3.11 and 3.12; torch, transformers and accelerate are already there, so they are never downloaded):
#     bash tests/gpu/wheels.sh [FOLDER]        # default tests/gpu/wheels; tests/gpu/run.sh installs from it
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-tests/gpu/wheels}
mkdir -p "$OUT"
for PY in 3.11 3.12; do
    TARGET=(--only-binary=:all: --implementation cp --python-version "$PY"
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
            --platform any -d "$OUT")
    pip download -q "${TARGET[@]}" -r tests/gpu/requirements.txt
    # captum depends on torch: fetch it alone (its other dependencies are in the list above).
    pip download -q "${TARGET[@]}" --no-deps captum==0.9.0
done
ls "$OUT" | wc -l | xargs echo "wheels in $OUT:"
