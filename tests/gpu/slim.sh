#!/usr/bin/env bash
# A checkout small enough to send to a GPU machine (the device tool's limit: 64 MiB of tracked and untracked files):
#     bash tests/gpu/slim.sh on     # the weights listed in tests/gpu/slim.txt leave git's index (the files stay here)
#                                   # and are ignored, so they do not travel
#     bash tests/gpu/slim.sh off    # the index as it was: run it before any commit, which would otherwise delete them
#     bash tests/gpu/slim.sh size   # the bytes that would travel now
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=$(grep -v "^#" tests/gpu/slim.txt)
EXCLUDE=$(git rev-parse --git-path info/exclude)
BEGIN="# tests/gpu/slim.sh: begin" END="# tests/gpu/slim.sh: end"
size() { { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1; }
case "${1:-}" in
on)
    git rm -r -q --cached --ignore-unmatch -- $FILES
    grep -qxF "$BEGIN" "$EXCLUDE" 2>/dev/null || { echo "$BEGIN"; sed 's|^|/|' <<<"$FILES"; echo "$END"; } >>"$EXCLUDE"
    echo "slim: $(size) bytes would travel; run 'bash tests/gpu/slim.sh off' before committing" ;;
off)
    git reset -q -- $FILES
    sed -i "\\|^$BEGIN\$|,\\|^$END\$|d" "$EXCLUDE"
    git diff --cached --quiet -- $FILES && echo "slim off: the index holds every weight again ($(size) bytes)" ;;
size)
    size ;;
*)
    echo "usage: bash tests/gpu/slim.sh on|off|size" >&2; exit 2 ;;
esac
