#!/usr/bin/env bash
# Regenerates generated/ from protos/. Deterministic: CI reruns it and fails
# when the committed files differ.
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(realpath -s "$(command -v "${PYTHON:-python}")")"
rm -rf generated/repogate
mkdir -p generated
protos=$(cd protos && find repogate -name '*.proto' | LC_ALL=C sort)
# google/api (field_behavior, resource) from third_party/: the stubs import them
# from googleapis-common-protos, so only repogate/ is generated.
(cd protos && "$python" -m grpc_tools.protoc -I . -I ../third_party/googleapis \
  --python_out=../generated --pyi_out=../generated --grpc_python_out=../generated \
  $protos)
# The sources too, shipped as package data: `repogate schema export` copies them out
# for clients that generate their own stubs (schema/export.py).
(cd protos && cp --parents $protos ../generated/)
# Regular packages, so `pip install .` ships them without namespace tricks.
find generated/repogate -type d -exec sh -c 'printf "" > "$1/__init__.py"' _ {} \;
