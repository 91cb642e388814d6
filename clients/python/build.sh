#!/usr/bin/env bash
# Builds the repogate-client wheel into clients/python/dist: generates the
# stubs with `buf generate` (`make stubs`, the repository's buf.gen.yaml),
# copies build/stubs/python/repogate into src/, and builds with pip (offline:
# --no-build-isolation, the setuptools of the Python that runs it).
#
#   PYTHON=.venv/bin/python clients/python/build.sh   -> clients/python/dist/repogate_client-*.whl
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"

make -C "$root" --no-print-directory stubs >&2
rm -rf "$here/src/repogate" "$here/dist" "$here/build"
cp -r "$root/build/stubs/python/repogate" "$here/src/"
# Regular packages, so the wheel ships them without namespace tricks.
find "$here/src/repogate" -type d -exec sh -c 'printf "" > "$1/__init__.py"' _ {} \;
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$here/dist" "$here"
rm -rf "$here/build" "$here"/src/*.egg-info
ls "$here"/dist/repogate_client-*.whl
