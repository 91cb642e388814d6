#!/usr/bin/env bash
# Builds @repogate/client into clients/node-package/dist: generates the stubs
# with `buf generate` (`make stubs`, the repository's buf.gen.yaml; protobuf-es),
# copies build/stubs/ts into src/gen, installs the pinned packages with
# `npm ci` (the committed lock file) and compiles with tsc.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

make -C "$root" --no-print-directory stubs >&2
rm -rf "$here/src/gen" "$here/dist"
cp -r "$root/build/stubs/ts" "$here/src/gen"
cd "$here"
[ -d node_modules/typescript ] && [ node_modules/.package-lock.json -nt package-lock.json ] ||
  npm ci --no-audit --no-fund
node_modules/.bin/tsc -p .
echo "clients/node-package: built $here/dist"
