#!/usr/bin/env bash
# A checkout small enough to send to a GPU machine (the device tool's limit: 64 MiB of tracked and untracked files
# and carried paths together):
#     bash tests/gpu/slim.sh on     # the paths in tests/gpu/slim.txt leave git's index (the files stay here) and are
#                                   # ignored, so they do not travel; a pre-commit hook refuses commits meanwhile
#     bash tests/gpu/slim.sh off    # back to HEAD's index for those paths, the hook removed, and checked
#     bash tests/gpu/slim.sh size   # the bytes that would travel now, tests/gpu/wheels included if it is there
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=$(grep -v "^#" tests/gpu/slim.txt)
EXCLUDE=$(git rev-parse --git-path info/exclude)
HOOK=$(git rev-parse --git-path hooks/pre-commit)
BEGIN="# tests/gpu/slim.sh: begin" END="# tests/gpu/slim.sh: end"
size() {
    { git ls-files -z; git ls-files -z -o --exclude-standard; [ -d tests/gpu/wheels ] && find tests/gpu/wheels -type f -print0; } \
        | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1
}
case "${1:-}" in
on)
    [ -e "$HOOK" ] && ! grep -q "tests/gpu/slim.sh" "$HOOK" && { echo "slim: $HOOK exists; not replacing it" >&2; exit 1; }
    git rm -r -q --cached --ignore-unmatch -- $FILES
    mkdir -p "$(dirname "$EXCLUDE")" "$(dirname "$HOOK")"
    grep -qxF "$BEGIN" "$EXCLUDE" 2>/dev/null || { echo "$BEGIN"; sed 's|^|/|' <<<"$FILES"; echo "$END"; } >>"$EXCLUDE"
    printf '#!/bin/sh\n# tests/gpu/slim.sh\necho "slim is on: a commit now would delete the shipped files; bash tests/gpu/slim.sh off first" >&2\nexit 1\n' >"$HOOK"
    chmod +x "$HOOK"
    echo "slim: $(size) bytes would travel; commits are refused until 'bash tests/gpu/slim.sh off'" ;;
off)
    git reset -q -- $FILES
    [ -f "$EXCLUDE" ] && sed -i "\\|^$BEGIN\$|,\\|^$END\$|d" "$EXCLUDE"
    [ -f "$HOOK" ] && grep -q "tests/gpu/slim.sh" "$HOOK" && rm -f "$HOOK"
    for spec in $FILES; do
        [ -n "$(git ls-files -- "$spec")" ] || { echo "slim off: $spec is not tracked again (was it committed as deleted?)" >&2; exit 1; }
    done
    echo "slim off: every path of tests/gpu/slim.txt is tracked again ($(size) bytes)" ;;
size)
    size ;;
*)
    echo "usage: bash tests/gpu/slim.sh on|off|size" >&2; exit 2 ;;
esac
