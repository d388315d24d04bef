#!/usr/bin/env bash
# Wheels for the GPU tier, fetched where there is network, for a GPU machine that has none (Linux x86_64):
#     bash tests/gpu/wheels.sh [FOLDER]            # everything in tests/gpu/requirements.txt, CPython 3.11 and 3.12
#     bash tests/gpu/wheels.sh --device [FOLDER]   # only tests/gpu/requirements-device.txt, CPython 3.12: for a
#                                                  # machine that has the scientific stack (about 30 MB)
# FOLDER defaults to tests/gpu/wheels, which tests/gpu/run.sh installs from (with the requirements file used, copied
# there). torch and accelerate are never downloaded.
set -euo pipefail
cd "$(dirname "$0")/../.."
REQS=tests/gpu/requirements.txt PYTHONS="3.11 3.12"
if [ "${1:-}" = "--device" ]; then REQS=tests/gpu/requirements-device.txt PYTHONS=3.12; shift; fi
OUT=${1:-tests/gpu/wheels}
mkdir -p "$OUT"
for PY in $PYTHONS; do
    TARGET=(--only-binary=:all: --implementation cp --python-version "$PY"
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
            --platform any -d "$OUT")
    pip download -q "${TARGET[@]}" -r "$REQS"
    # captum depends on torch: fetched alone (its other dependencies are in the scientific stack). num2words
    # (SmolVLM's processor needs it) depends on docopt, for its command line only, which has no wheel.
    pip download -q "${TARGET[@]}" --no-deps captum==0.9.0 num2words==0.5.14
done
if [ "$REQS" = tests/gpu/requirements-device.txt ]; then
    # transformers' heavy needs that such a machine has in versions that satisfy it stay behind (numpy >= 1.17,
    # huggingface-hub >= 1.31, tokenizers >= 0.23.1, safetensors >= 0.8); everything else travels in case it is absent
    find "$OUT" -name '*.whl' | grep -E '/(numpy|huggingface_hub|hf_xet|tokenizers|safetensors)-' | xargs -r rm -f
fi
cp "$REQS" "$OUT/requirements.txt"
echo "wheels in $OUT: $(ls "$OUT"/*.whl | wc -l), $(du -sh "$OUT" | cut -f1)"
