#!/usr/bin/env bash
# Builds the wheel, installs it into a fresh venv (dependencies from the index)
# and runs it from outside the repository, so only what the wheel ships is on
# sys.path: `repogate migrate` on a new SQLite file, `repogate serve` on a unix
# socket, `repogate health` until SERVING, then SIGTERM and a clean exit 0.
#
# PYTHON: interpreter for the fresh venv (default python3; needs >= 3.11).
# The wheel is built with the repo's .venv when there is one, else with $PYTHON.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
if [ -x "$repo/.venv/bin/python" ]; then build_python="$repo/.venv/bin/python"; else build_python="$python"; fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/repogate-wheel-smoke.XXXXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "wheel-smoke: FAIL: $*" >&2
  if [ -s "$tmp/serve.log" ]; then
    echo "--- repogate serve output:" >&2
    cat "$tmp/serve.log" >&2
  fi
  exit 1
}

step() { echo "wheel-smoke: $*"; }

# 1. Build from a clean copy of the sources, so a stale build/ or egg-info in
#    the working tree cannot leak into the wheel.
step "building the wheel"
mkdir -p "$tmp/src" "$tmp/dist"
tar -C "$repo" \
  --exclude=./.venv --exclude=./node_modules --exclude=./.git --exclude=./build \
  --exclude=./clients/node/node_modules --exclude=./clients/go/build \
  --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
  --exclude=.mypy_cache --exclude=.ruff_cache --exclude='*.db' --exclude='*.db-*' \
  -cf - . | tar -C "$tmp/src" -xf -
"$build_python" -m pip wheel -q --no-deps -w "$tmp/dist" "$tmp/src"
wheels=("$tmp"/dist/repogate-*.whl)
[ "${#wheels[@]}" -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in $tmp/dist"
wheel="${wheels[0]}"
step "built $(basename "$wheel")"

# 2. The wheel ships the migrations and the generated code, stubs included.
"$build_python" - "$wheel" <<'EOF' || fail "the wheel is missing files"
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
required = [
    "repositories/migrations/env.py",
    "repositories/migrations/script.py.mako",
    "repositories/migrations/versions/0001_users.py",
    "repogate/v1/user_pb2.py",
    "repogate/v1/user_pb2.pyi",
    "repogate/v1/user_pb2_grpc.py",
    "server/cli.py",
]
missing = [name for name in required if name not in names]
for name in missing:
    print(f"missing from the wheel: {name}", file=sys.stderr)
sys.exit(1 if missing else 0)
EOF

# 3. A fresh venv with the wheel and its dependencies.
step "installing into a fresh venv ($("$python" --version 2>&1))"
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
repogate="$tmp/venv/bin/repogate"
[ -x "$repogate" ] || fail "the wheel installed no repogate script"

# 4. Run from outside the repository with a controlled environment.
cd "$tmp"
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
for var in $(compgen -e REPOGATE_ || true); do unset "$var"; done
export REPOGATE_DATABASE_URL="sqlite:///$tmp/smoke.db"
export REPOGATE_SHUTDOWN_GRACE=5

"$tmp/venv/bin/python" - "$tmp/venv" <<'EOF' || fail "modules are not imported from the fresh venv"
import sys
from pathlib import Path

import repogate.v1.user_pb2
import repositories.migrate
import server.cli

venv = Path(sys.argv[1]).resolve()
for module in (server.cli, repositories.migrate, repogate.v1.user_pb2):
    path = Path(module.__file__).resolve()
    if venv not in path.parents:
        sys.exit(f"{module.__name__} comes from {path}, not from {venv}")
EOF

step "repogate migrate"
"$repogate" migrate || fail "repogate migrate exited $?"
"$tmp/venv/bin/python" - "$tmp/smoke.db" <<'EOF' || fail "migrate did not reach head"
import sqlite3
import sys

from repositories.migrate import head_revision

rows = sqlite3.connect(sys.argv[1]).execute("SELECT version_num FROM alembic_version").fetchall()
if rows != [(head_revision(),)]:
    sys.exit(f"alembic_version is {rows}, head is {head_revision()}")
EOF

sock="unix:$tmp/r.sock"
step "repogate serve --listen $sock"
"$repogate" serve --listen "$sock" >"$tmp/serve.log" 2>&1 &
pid=$!

serving=""
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || fail "repogate serve exited before serving"
  if "$repogate" health --listen "$sock" --timeout 1 >/dev/null 2>&1; then
    serving=1
    break
  fi
  sleep 0.5
done
[ -n "$serving" ] || fail "repogate health never reported SERVING on $sock"
"$repogate" health --listen "$sock" --service repogate.v1.UserService >/dev/null \
  || fail "UserService is not SERVING"

step "SIGTERM"
kill -TERM "$pid"
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
kill -0 "$pid" 2>/dev/null && fail "repogate serve still running 30s after SIGTERM"
if wait "$pid"; then code=0; else code=$?; fi
pid=""
[ "$code" -eq 0 ] || fail "repogate serve exited $code after SIGTERM"

echo "wheel-smoke: OK: $(basename "$wheel") installs, migrates, serves on a unix socket and stops cleanly"
